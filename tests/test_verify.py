"""verify_file: a released file must be a readable model of its entry's size (parameters) and I/O contract."""

import warnings

import pytest
import torch
from test_xumx import SMALL, AsteroidXUMX
from torch import nn

from danna_sep.errors import CheckpointError
from danna_sep.export import ModelInfo, _quiet_jit, export_onnx, export_torchscript
from danna_sep.models import build_model
from danna_sep.release.registry import ReleasedFile
from danna_sep.release.verify import count_params, sha256_of, verify_file

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = {
    "type": "UNetAttn",
    "args": {"k": 2, "levels": 2, "d_model": 4, "n_heads": 1, "attn_channels": 2, "max_bins": 32},
}


def _entry(params, name="unet_attention.pth", role="unet", fmt="torchscript"):
    return ReleasedFile(name=name, role=role, format=fmt, title="test", size=None, params=params)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """A tiny exported U-Net and its parameter count as TorchScript loads it."""
    path = tmp_path_factory.mktemp("unet") / "unet_attention.pth"
    model = build_model(ARCH)
    export_torchscript(model, path, ModelInfo.from_model(model, {"arch": ARCH}))
    with _quiet_jit():
        params = sum(p.numel() for p in torch.jit.load(str(path)).parameters())
    return path, params, model


def test_a_good_file(unet):
    path, params, _ = unet
    v = verify_file(path, _entry(params))
    assert (v.params, v.size, v.sha256) == (params, path.stat().st_size, sha256_of(path))
    assert v.detail == f"TorchScript, {params:,} parameters, I/O contract ok"
    assert count_params(path, _entry(params)) == params
    assert verify_file(path, _entry(round(params * 1.009))).params == params  # within 1 %


def test_parameter_count_outside_one_percent(unet):
    path, params, _ = unet
    with pytest.raises(CheckpointError, match=rf"{path}: {params:,} parameters, but unet_attention.pth has"):
        verify_file(path, _entry(round(params * 1.02)))


def test_html_page_truncated_and_empty_files(unet, tmp_path):
    path, params, _ = unet
    page = tmp_path / "page.pth"
    page.write_bytes(b"\n  <!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>")
    with pytest.raises(CheckpointError, match=f"{page}: an HTML page was saved instead of the model"):
        verify_file(page, _entry(params))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{cut}: not a complete TorchScript archive"):
        verify_file(cut, _entry(params))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}: empty file"):
        verify_file(empty, _entry(params))
    with pytest.raises(CheckpointError, match="cannot read"):
        verify_file(tmp_path / "absent.pth", _entry(params))


class _OneSource(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x * self.scale).unsqueeze(1)  # (batch, 1, channels, bins, frames): one source, not four


class _NaN(_OneSource):
    def forward(self, x):
        y = (x * self.scale).unsqueeze(1).expand(-1, 4, -1, -1, -1)
        return y / (y - y)


@pytest.mark.parametrize(
    "module, words", [(_OneSource, r"the contract needs \(1, 4, 2, 2049, 64\)"), (_NaN, "non-finite output")]
)
def test_contract_and_finite_output_on_a_short_signal(tmp_path, module, words):
    path = tmp_path / "unet_attention.pth"  # a file without metadata, as the release: its role gives the domain
    with _quiet_jit():
        torch.jit.save(torch.jit.script(module()), str(path))
    with pytest.raises(CheckpointError, match=words):
        verify_file(path, _entry(1))


def test_a_model_of_another_domain(unet):
    path, params, _ = unet
    with pytest.raises(CheckpointError, match=r"a spectral model, but demucs_4_decoders.pth \(demucs\) is waveform"):
        verify_file(path, _entry(params, name="demucs_4_decoders.pth", role="demucs"))


def test_asteroid_baseline_is_converted_and_checked(tmp_path):
    asteroid = AsteroidXUMX(**SMALL).randomize().eval()
    path = tmp_path / "pretrained_xumx_musdb18HQ.pth.part"
    torch.save(asteroid.serialize(), path)
    weights = sum(p.numel() for n, p in asteroid.named_parameters() if "window" not in n)
    entry = _entry(weights, name="pretrained_xumx_musdb18HQ.pth", role="xumx-baseline", fmt="asteroid")
    v = verify_file(path, entry)
    assert v.params == count_params(path, entry) == weights
    assert v.detail == f"Asteroid X-UMX, {weights:,} parameters, I/O contract ok"
    with pytest.raises(CheckpointError, match=r"parameters, but pretrained_xumx_musdb18HQ.pth has"):
        verify_file(path, _entry(2 * weights, name=entry.name, role=entry.role, fmt="asteroid"))
    torch.save({"state_dict": {}, "model_args": {}}, path)
    with pytest.raises(CheckpointError, match="model_args lacks"):
        verify_file(path, entry)


def test_onnx_under_a_part_name(unet, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    _, params, model = unet
    path = tmp_path / "xumx.onnx.part"  # a download in progress: no ".onnx" suffix to tell the format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, tmp_path / "u.onnx", ModelInfo.from_model(model, {"arch": ARCH}))
    (tmp_path / "u.onnx").rename(path)
    entry = _entry(params, name="xumx.onnx", fmt="onnx")
    v = verify_file(path, entry)
    assert v.detail.startswith("ONNX, ") and entry.params_ok(v.params)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(path)):
        verify_file(path, entry)
