"""Export: TorchScript / ONNX files equal the eager models, carry their metadata, and the released files still load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from danna_sep import SOURCES
from danna_sep.cli import main
from danna_sep.errors import CheckpointError
from danna_sep.export import (
    METADATA_KEY,
    ModelInfo,
    check_contract,
    example_input,
    export_onnx,
    export_torchscript,
    load_model,
    max_relative_error,
    role_from_filename,
    verify,
)
from danna_sep.models import build_model

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    # the full 2049-bin contract, but only the lowest 64 bins modelled: small and quick
    "xumx": {"type": "X_UMX", "args": {"hidden_channels": 16, "nb_layers": 2, "max_bins": 64}},
    "unet": {
        "type": "UNetAttn",
        "args": {"k": 2, "levels": 3, "d_model": 8, "n_heads": 2, "attn_channels": 4, "max_bins": 64},
    },
}
FRAMES = (1, 13, 64, 100)  # shorter than, equal to and not a multiple of the U-Net's 8-frame grid


class TinyWave(nn.Module):
    """A waveform model under the contract: (batch, 2, L) → (batch, 4, 2, L − 8), aligned at the start (like the
    original Demucs, whose output is a little shorter than its input)."""

    domain = "waveform"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 9)

    def forward(self, x):
        return torch.tanh(self.conv(x)).reshape(x.shape[0], 4, 2, -1)


def _tiny(role: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(TINY[role])
    # non-trivial batch-norm statistics, so that eval mode really differs from identity
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _eager(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("role", ["xumx", "unet"])
def test_torchscript_equals_eager_and_keeps_metadata(tmp_path, role):
    model = _tiny(role)
    info = ModelInfo.from_model(model, {"arch": TINY[role]})
    path = tmp_path / f"{role}.pth"
    export_torchscript(model, path, info)
    loaded = load_model(path)
    assert loaded.kind == "torchscript"
    assert loaded.info == info
    assert loaded.info.arch == TINY[role] and loaded.info.domain == "spectral"
    assert loaded.info.frame_multiple == (8 if role == "unet" else 1)
    for i, frames in enumerate(FRAMES):
        x = example_input(info, frames, seed=i)
        assert x.shape == (1, 2, 2049, frames)
        want, got = _eager(model, x), loaded(x)
        assert got.shape == (1, 4, 2, 2049, frames)
        assert max_relative_error(got, want) <= 1e-5
    assert verify(model, loaded, (5, 70)) <= 1e-5


def test_torchscript_waveform_model(tmp_path):
    torch.manual_seed(0)
    model = TinyWave().eval()
    info = ModelInfo.from_model(model)
    export_torchscript(model, tmp_path / "w.pth", info)
    loaded = load_model(tmp_path / "w.pth")
    assert loaded.info.domain == "waveform"
    for length in (9, 1000, 44100 + 3):
        x = example_input(info, length, seed=length)
        assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5


@pytest.mark.parametrize("role", ["xumx", "unet"])
def test_onnx_equals_eager(tmp_path, role):
    ort = pytest.importorskip("onnxruntime")
    model = _tiny(role, seed=1)
    info = ModelInfo.from_model(model, {"arch": TINY[role]})
    path = tmp_path / f"{role}.onnx"
    export_onnx(model, path, info)
    # the contract's tensor names, as the original onnx_convert.py wrote them
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    loaded = load_model(path)
    assert loaded.kind == "onnx" and loaded.info == info
    for i, frames in enumerate(FRAMES):
        x = example_input(info, frames, seed=10 + i)
        assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5


def test_released_files_without_metadata_load_by_name(tmp_path):
    # the released Danna-Sep files are plain torch.jit.save output: no metadata
    model = _tiny("unet")
    plain = tmp_path / "unet_attention.pth"
    torch.jit.save(torch.jit.script(model), str(plain))
    loaded = load_model(plain)
    assert loaded.info.domain == "spectral" and loaded.info.arch is None
    assert loaded.info.frame_multiple == 64 and loaded.info.n_fft == 4096
    x = example_input(loaded.info, 20)
    assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5

    wave = tmp_path / "demucs_4_decoders.pth"
    torch.jit.save(torch.jit.script(TinyWave().eval()), str(wave))
    assert load_model(wave).info.domain == "waveform"

    anonymous = tmp_path / "model.pth"
    torch.jit.save(torch.jit.script(model), str(anonymous))
    with pytest.raises(CheckpointError, match="file name does not tell"):
        load_model(anonymous)
    assert load_model(anonymous, role="unet").info.domain == "spectral"


def test_role_from_filename():
    assert role_from_filename("/x/xumx_mwf.pth") == "xumx"
    assert role_from_filename("xumx.onnx") == "xumx"
    assert role_from_filename("unet_attention.pth") == "unet"
    assert role_from_filename("demucs_4_decoders.pth") == "demucs"
    assert role_from_filename("demucs.pth") == "demucs"  # the competition-time name
    assert role_from_filename("other.pth") is None


def test_contract_violations_are_reported():
    info = ModelInfo("spectral")
    x = torch.zeros(1, 2, 2049, 5)
    check_contract(torch.zeros(1, 4, 2, 2049, 5), x, info)
    with pytest.raises(CheckpointError, match="contract"):
        check_contract(torch.zeros(1, 2, 2049, 5), x, info)
    w = ModelInfo("waveform")
    check_contract(torch.zeros(1, 4, 2, 90), torch.zeros(1, 2, 100), w)
    with pytest.raises(CheckpointError):
        check_contract(torch.zeros(1, 4, 2, 101), torch.zeros(1, 2, 100), w)
    with pytest.raises(CheckpointError, match="domain"):
        ModelInfo("image")
    with pytest.raises(CheckpointError, match="sources"):
        ModelInfo("spectral", sources=("vocals", "drums", "bass", "other"))


def test_metadata_is_json_in_the_archive(tmp_path):
    model = _tiny("xumx")
    export_torchscript(model, tmp_path / "m.pth", ModelInfo.from_model(model, {"arch": TINY["xumx"]}))
    extra = {METADATA_KEY: ""}
    torch.jit.load(str(tmp_path / "m.pth"), _extra_files=extra)
    data = json.loads(extra[METADATA_KEY])
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.pth").stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not private
    assert not list(tmp_path.glob(".*.part"))
    assert data["domain"] == "spectral" and data["sources"] == list(SOURCES) and data["n_fft"] == 4096
    assert data["hop_length"] == 1024 and data["sample_rate"] == 44100 and data["arch"] == TINY["xumx"]


def _checkpoint(tmp_path, role, epoch=7):
    model = _tiny(role)
    path = tmp_path / f"{role}_checkpoint.pt"
    torch.save({"model": model.state_dict(), "config": {"arch": TINY[role]}, "trainer": {"epoch": epoch}}, path)
    return model, path


def test_export_command_from_a_training_checkpoint(tmp_path, capsys):
    model, ckpt = _checkpoint(tmp_path, "xumx")
    out = tmp_path / "models" / "xumx_mwf.pth"
    assert main(["export", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained 7 epochs" in printed and "verified" in printed
    loaded = load_model(out)
    assert loaded.info.arch == TINY["xumx"] and loaded.info.extra["epochs"] == 7
    x = example_input(loaded.info, 33)
    assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5

    onnx_out = tmp_path / "models" / "xumx.onnx"
    assert main(["export", str(ckpt), str(onnx_out), "--no-verify"]) == 0
    assert load_model(onnx_out).kind == "onnx"


def test_jit_convert_is_seed_compatible(tmp_path):
    model, ckpt = _checkpoint(tmp_path, "unet")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"name": "UNet Attention", "arch": TINY["unet"]}))
    out = tmp_path / "unet_attention.pth"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jit_convert.py"), str(config), str(ckpt), str(out), "--no-verify"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(out)
    x = example_input(loaded.info, 16)
    assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5


def test_export_errors_are_one_line(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, "xumx")
    config = tmp_path / "wrong.json"
    config.write_text(
        json.dumps({"arch": {"type": "X_UMX", "args": {"hidden_channels": 32, "nb_layers": 2, "max_bins": 64}}})
    )
    assert main(["export", str(config), str(ckpt), str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "o.pth").exists()

    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "o.pth")]) == 2
    assert "not found" in capsys.readouterr().err

    not_ckpt = tmp_path / "bag.pt"
    torch.save({"weights": [1, 2]}, not_ckpt)
    assert main(["export", str(not_ckpt), str(tmp_path / "o.pth")]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err


def test_demucs_exports(tmp_path):
    demucs = pytest.importorskip("danna_sep.models.demucs")
    torch.manual_seed(0)
    arch = {"type": "DemucsSplit", "args": {"channels": 4, "depth": 2, "lstm_layers": 1}}
    try:
        model = build_model(arch).eval()
    except Exception as exc:  # the tiny arguments may be spelled differently
        pytest.skip(f"tiny DemucsSplit config not accepted: {exc}")
    assert isinstance(model, demucs.DemucsSplit)
    info = ModelInfo.from_model(model, {"arch": arch})
    export_torchscript(model, tmp_path / "demucs_4_decoders.pth", info)
    loaded = load_model(tmp_path / "demucs_4_decoders.pth")
    assert loaded.info.domain == "waveform"
    assert loaded.info.itemwise_batches  # the separator may give it several segments per call
    assert verify(model, loaded, (4410, 5001)) <= 1e-5


def test_waveform_onnx_has_a_fixed_length(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = TinyWave().eval()
    assert not ModelInfo.from_model(model).itemwise_batches  # only models that declare it
    claimed = ModelInfo(**{**ModelInfo.from_model(model).__dict__, "itemwise_batches": True})
    info = export_onnx(model, tmp_path / "demucs.onnx", claimed, fixed_length=6000)
    loaded = load_model(tmp_path / "demucs.onnx")
    assert loaded.info.fixed_length == info.fixed_length == 6000 and loaded.info.domain == "waveform"
    assert not loaded.info.itemwise_batches  # the traced graph runs a batch as a whole
    assert verify(model, loaded, (6000,)) <= 1e-5
    with pytest.raises(CheckpointError, match="exactly 6000 samples"):
        loaded(torch.zeros(1, 2, 5000))


@pytest.mark.parametrize("legacy", [False, True])
def test_demucs_onnx_equals_eager(tmp_path, legacy):
    """The real DemucsSplit (resampling, valid-length padding, BiLSTM) through ONNX, at its fixed length and in a
    batch: traced shape arithmetic must not truncate where Python floors (it did, in ceil divisions)."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    arch = {"type": "DemucsSplit", "args": {"channels": 4, "depth": 3, "lstm_layers": 1, "legacy": legacy}}
    model = build_model(arch).eval()
    info = export_onnx(
        model, tmp_path / "demucs.onnx", ModelInfo.from_model(model, {"arch": arch}), fixed_length=44100 + 3
    )
    loaded = load_model(tmp_path / "demucs.onnx")
    assert loaded.kind == "onnx" and loaded.info.fixed_length == info.fixed_length == 44103
    x = example_input(info, 44103, seed=3).repeat(2, 1, 1)
    x[1] *= -0.5
    assert max_relative_error(loaded(x), _eager(model, x)) <= 1e-5


class Unexportable(nn.Module):
    """Exports without error but computes something else in onnxruntime (a data-dependent Python branch)."""

    domain = "spectral"

    def forward(self, mag):
        scale = 2.0 if float(mag.mean()) > 1.0 else 0.5  # frozen by the tracer
        return (scale * mag)[:, None].expand(-1, 4, -1, -1, -1)


def test_onnx_export_that_does_not_reproduce_the_model_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    info = ModelInfo("spectral")
    with pytest.raises(CheckpointError, match="does not reproduce"):
        export_onnx(Unexportable(), tmp_path / "bad.onnx", info)
    assert not (tmp_path / "bad.onnx").exists()
