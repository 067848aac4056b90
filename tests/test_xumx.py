"""X-UMX: size, layout, scripting, and the Asteroid weight converter against a plain per-source reference."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from danna_sep import SOURCES
from danna_sep.cli import main
from danna_sep.errors import CheckpointError, ConfigError
from danna_sep.models import build_model
from danna_sep.models.xumx import X_UMX
from danna_sep.release.asteroid_xumx import convert_asteroid_xumx, convert_file

REPO = Path(__file__).resolve().parents[1]
ASTEROID_ORDER = ["bass", "drums", "vocals", "other"]  # the order of Asteroid's MUSDB recipe


# ---------------------------------------------------------------------------------------------------------------
# An Asteroid-XUMX look-alike: the same module tree (hence the same state_dict keys and shapes) and the same
# per-source maths, written with plain nn.Linear / nn.BatchNorm1d / nn.LSTM per source.


class _Window(nn.Module):
    def __init__(self, n_fft):
        super().__init__()
        self.window = nn.Parameter(torch.hann_window(n_fft), requires_grad=False)


class _Enc(nn.Module):
    def __init__(self, in_features, hidden):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden))


class _Dec(nn.Module):
    def __init__(self, hidden, out_features):
        super().__init__()
        self.dec = nn.Sequential(
            nn.Linear(2 * hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features, bias=False),
            nn.BatchNorm1d(out_features),
        )


class AsteroidXUMX(nn.Module):
    def __init__(self, sources=ASTEROID_ORDER, n_fft=4096, hidden=512, nb_channels=2, nb_layers=3, max_bin=1487):
        super().__init__()
        self.sources, self.hidden, self.max_bin, self.nb_channels = list(sources), hidden, max_bin, nb_channels
        self.n_fft, self.nb_layers, self.bins = n_fft, nb_layers, n_fft // 2 + 1
        self.encoder = nn.Sequential(_Window(n_fft))
        self.layer_enc = nn.ModuleDict({s: _Enc(nb_channels * max_bin, hidden) for s in sources})
        self.layer_lstm = nn.ModuleDict(
            {s: nn.LSTM(hidden, hidden // 2, nb_layers, bidirectional=True, dropout=0.4) for s in sources}
        )
        self.layer_dec = nn.ModuleDict({s: _Dec(hidden, nb_channels * self.bins) for s in sources})
        ms = {}
        for s in sources:
            ms[f"input_mean_{s}"] = nn.Parameter(torch.zeros(max_bin))
            ms[f"input_scale_{s}"] = nn.Parameter(torch.ones(max_bin))
            ms[f"output_mean_{s}"] = nn.Parameter(torch.ones(self.bins))
            ms[f"output_scale_{s}"] = nn.Parameter(torch.ones(self.bins))
        self.mean_scale = nn.ParameterDict(ms)
        self.decoder = _Window(n_fft)

    def randomize(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "window" in name:
                    continue
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.3))
                if "output_mean" in name or "input_scale" in name:
                    p.add_(1.0)
            for name, b in self.named_buffers():
                if name.endswith("running_mean"):
                    b.copy_(torch.randn(b.shape, generator=g) * 0.1)
                elif name.endswith("running_var"):
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)
                elif name.endswith("num_batches_tracked"):
                    b.fill_(int(torch.randint(1, 1000, (), generator=g)))
        return self

    def serialize(self):
        return {
            "model_name": "XUMX",
            "state_dict": self.state_dict(),
            "model_args": {
                "window_length": self.n_fft,
                "in_chan": self.n_fft,
                "n_hop": 1024,
                "sample_rate": 44100.0,
                "sources": self.sources,
                "hidden_size": self.hidden,
                "nb_channels": self.nb_channels,
                "input_mean": None,
                "input_scale": None,
                "max_bin": self.max_bin,
                "nb_layers": self.nb_layers,
                "bidirectional": True,
                "spec_power": 1,
                "return_time_signals": False,
            },
            "infos": {"software_versions": {"torch_version": "1.8.1", "asteroid_version": "0.5.1"}},
        }

    def masks(self, spec):
        """Per-source reference: (batch, channels, bins, frames) → (batch, 4, channels, bins, frames), SOURCES order."""
        x = spec.permute(3, 0, 1, 2)[..., : self.max_bin]  # (frames, batch, channels, max_bin)
        frames, batch = x.shape[:2]
        enc = {}
        for s in self.sources:
            xs = (x + self.mean_scale[f"input_mean_{s}"]) * self.mean_scale[f"input_scale_{s}"]
            enc[s] = torch.tanh(self.layer_enc[s].enc(xs.reshape(frames * batch, -1)).reshape(frames, batch, -1))
        cross_1 = sum(enc.values()) / len(self.sources)
        cross_2 = sum(torch.cat([enc[s], self.layer_lstm[s](cross_1)[0]], -1) for s in self.sources) / 4
        out = {}
        for s in self.sources:
            y = self.layer_dec[s].dec(cross_2.reshape(frames * batch, -1))
            y = y.reshape(frames, batch, self.nb_channels, self.bins)
            y = y * self.mean_scale[f"output_scale_{s}"] + self.mean_scale[f"output_mean_{s}"]
            out[s] = torch.relu(y).permute(1, 2, 3, 0)
        return torch.stack([out[s] for s in SOURCES], 1)


SMALL = dict(n_fft=256, hidden=16, nb_channels=2, nb_layers=2, max_bin=60)


@pytest.fixture(scope="module")
def asteroid_small():
    return AsteroidXUMX(**SMALL).randomize().eval()


@pytest.fixture()
def asteroid_file(tmp_path, asteroid_small):
    path = tmp_path / "pretrained_xumx.pth"
    torch.save(asteroid_small.serialize(), path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# model


def test_reference_size_is_35_573_392_parameters():
    model = build_model(
        {
            "type": "X_UMX",
            "args": {"n_fft": 4096, "hidden_channels": 512, "max_bins": 1487, "nb_channels": 2, "nb_layers": 3},
        }
    )
    assert isinstance(model, X_UMX) and X_UMX.domain == "spectral"
    assert sum(p.numel() for p in model.parameters()) == 35_573_392


def test_shapes_range_and_batch_independence():
    torch.manual_seed(0)
    model = X_UMX(hidden_channels=32, nb_layers=1).eval()  # the tiny-config width
    spec = torch.rand(3, 2, 2049, 6) * 5
    with torch.no_grad():
        masks = model(spec)
        alone = model(spec[1:2])
    assert masks.shape == (3, 4, 2, 2049, 6) and masks.is_contiguous()
    assert masks.min() >= 0 and masks.max() > 0
    # each item's masks depend on that item only (catches any mix-up of batch and frame axes)
    torch.testing.assert_close(alone[0], masks[1], rtol=1e-5, atol=1e-6)


def test_scripted_model_matches_eager():
    torch.manual_seed(1)
    model = X_UMX(n_fft=512, hidden_channels=32, max_bins=100, nb_layers=2).eval()
    scripted = torch.jit.script(model)
    spec = torch.rand(2, 2, 257, 9)
    with torch.no_grad():
        torch.testing.assert_close(scripted(spec), model(spec))


def test_training_mode_backward_reaches_every_parameter():
    torch.manual_seed(2)
    model = X_UMX(n_fft=512, hidden_channels=16, max_bins=80, nb_layers=2).train()
    model(torch.rand(2, 2, 257, 7)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_input_and_bad_config():
    model = X_UMX(n_fft=512, hidden_channels=16, nb_layers=1, max_bins=None)
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(1, 2, 256, 4))
    with pytest.raises(ConfigError, match="even"):
        X_UMX(hidden_channels=33)
    with pytest.raises(ConfigError, match="max_bins"):
        X_UMX(n_fft=512, max_bins=300)
    with pytest.raises(ConfigError, match=r"arch\.args"):
        build_model({"type": "X_UMX", "args": {"hidden": 8}})


# ---------------------------------------------------------------------------------------------------------------
# converter


def _load_converted(path):
    ckpt = torch.load(path, weights_only=True)
    model = build_model(ckpt["config"]["arch"]).eval()
    model.load_state_dict(ckpt["model"])
    return ckpt, model


def test_converted_model_equals_per_source_reference(tmp_path, asteroid_file, asteroid_small):
    out = tmp_path / "xumx.pt"
    convert_file(asteroid_file, out)
    ckpt, model = _load_converted(out)
    assert ckpt["config"]["arch"] == {
        "type": "X_UMX",
        "args": {"n_fft": 256, "hidden_channels": 16, "max_bins": 60, "nb_channels": 2, "nb_layers": 2},
    }
    assert ckpt["converted_from"]["model_args"]["sources"] == ASTEROID_ORDER
    spec = torch.rand(2, 2, 129, 11) * 3
    with torch.no_grad():
        expected = asteroid_small.masks(spec)
        got = model(spec)
    assert expected.abs().sum() > 0 and (expected == 0).any()  # the reference exercises both ReLU branches
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the BatchNorm step counter survives (one counter here, four there: the largest)
    counters = [b for n, b in asteroid_small.named_buffers() if n.startswith("layer_enc") and "num_batches" in n]
    assert ckpt["model"]["encoder_bn.num_batches_tracked"] == max(counters)


def test_cli_and_seed_script(tmp_path, asteroid_file, capsys):
    out = tmp_path / "cli.pt"
    assert main(["convert-xumx", str(asteroid_file), str(out)]) == 0
    assert "X_UMX" in capsys.readouterr().out
    out2 = tmp_path / "seed.pt"
    proc = subprocess.run(
        [sys.executable, str(REPO / "xumx_weights_convert.py"), str(asteroid_file), str(out2)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    a, b = torch.load(out, weights_only=True), torch.load(out2, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_full_size_checkpoint_converts():
    package = AsteroidXUMX().serialize()  # the official file's keys and shapes (values irrelevant here)
    ckpt = convert_asteroid_xumx(package, name="pretrained_xumx_musdb18HQ.pth")
    assert ckpt["config"]["arch"]["args"] == {
        "n_fft": 4096,
        "hidden_channels": 512,
        "max_bins": 1487,
        "nb_channels": 2,
        "nb_layers": 3,
    }
    n = sum(v.numel() for k, v in ckpt["model"].items() if "running" not in k and "num_batches" not in k)
    assert n == 35_573_392
    # drums is Asteroid's 2nd source and our slot 0
    drums = package["state_dict"]["layer_dec.drums.dec.3.weight"]
    torch.testing.assert_close(ckpt["model"]["decoder2.weight"][0], drums)


def _edited(asteroid_small, edit):
    package = asteroid_small.serialize()
    package["state_dict"] = dict(package["state_dict"])
    edit(package["state_dict"])
    return package


def test_missing_unexpected_and_misshaped_keys_are_all_listed(asteroid_small):
    def edit(sd):
        del sd["layer_lstm.vocals.weight_hh_l1_reverse"]
        sd["layer_enc.drums.enc.2.weight"] = torch.zeros(3)
        sd["layer_dec.bass.dec.3.weight"] = torch.zeros(5, 16)

    with pytest.raises(CheckpointError) as err:
        convert_asteroid_xumx(_edited(asteroid_small, edit), name="f.pth")
    msg = str(err.value)
    assert "1 missing: layer_lstm.vocals.weight_hh_l1_reverse" in msg
    assert "1 unexpected: layer_enc.drums.enc.2.weight" in msg
    assert "1 mis-shaped: layer_dec.bass.dec.3.weight (5, 16) (expected (258, 16))" in msg


def test_a_different_width_is_rejected_not_partially_loaded(asteroid_small):
    package = asteroid_small.serialize()
    package["model_args"] = dict(package["model_args"], hidden_size=32)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        convert_asteroid_xumx(package)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p: p.pop("model_args"), "not Asteroid's model serialisation"),
        (lambda p: p.update(model_name="ConvTasNet"), "model_name"),
        (lambda p: p["model_args"].update(sources=["vocals", "accompaniment"]), "sources"),
        (lambda p: p["model_args"].update(spec_power=2), "spec_power"),
        (lambda p: p["model_args"].update(bidirectional=False), "unidirectional"),
    ],
)
def test_unsupported_packages(asteroid_small, change, match):
    package = asteroid_small.serialize()
    package["model_args"] = dict(package["model_args"])
    change(package)
    with pytest.raises(CheckpointError, match=match):
        convert_asteroid_xumx(package)


class _Payload:  # a pickled object: weights_only loading must refuse it
    pass


def test_unreadable_files_are_checkpoint_errors(tmp_path, capsys):
    bad = tmp_path / "code.pth"
    torch.save({"state_dict": {}, "model_args": {}, "hook": _Payload()}, bad)
    with pytest.raises(CheckpointError, match="weights-only"):
        convert_file(bad, tmp_path / "out.pt")
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    assert main(["convert-xumx", str(text), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="no such file"):
        convert_file(tmp_path / "absent.pth", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
