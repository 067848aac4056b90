"""Separation: chunked streaming equals the whole-track computation, bounded reads, outputs, the CLI's contract."""

import itertools
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from danna_sep import SOURCES
from danna_sep.blend import Bag
from danna_sep.cli import main
from danna_sep.errors import CheckpointError, ConfigError
from danna_sep.export import LoadedModel, ModelInfo, export_torchscript
from danna_sep.separate import (
    WAVEFORM_BATCH,
    Separator,
    StreamingISTFT,
    TensorReader,
    _equal_length_groups,
    _read_padded,
    find_model_files,
    plan_segments,
    resolve_device,
    stem_plan,
)
from danna_sep.separate.streams import _spectral_stream, _waveform_stream
from danna_sep.spectral import STFT
from danna_sep.wiener import wiener, wiener_windowed

SR = 44100


pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(
    n_fft=256, hop_length=64
)  # a cheap STFT for the exactness tests (the separator reads it from the metadata)


# ------------------------------------------------------------------------------------------ contract-conforming models


class PointSpec(nn.Module):
    """Spectral: each mask value depends only on the magnitude at the same bin and frame."""

    domain = "spectral"

    def __init__(self, bins: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(4, 1, bins, 1, generator=g))

    def forward(self, mag):
        return torch.sigmoid(self.a * torch.log1p(mag)[:, None] - 1.0)


class LocalSpec(nn.Module):
    """Spectral with a finite receptive field: ±3 frames."""

    domain = "spectral"

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 8, (3, 7), padding=(1, 3))

    def forward(self, mag):
        b, c, f, t = mag.shape
        return torch.sigmoid(self.conv(torch.log1p(mag))).reshape(b, 4, c, f, t)


class PointWave(nn.Module):
    """Waveform: a per-source memoryless curve; returns 100 samples fewer than it gets, like the original Demucs."""

    domain = "waveform"

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.g = nn.Parameter(1 + torch.rand(4, 1, 1, generator=g))

    def forward(self, x):
        return torch.tanh(self.g * x[:, None])[..., : x.shape[-1] - 100]


class LocalWave(nn.Module):
    """Waveform with a finite receptive field (±16 samples)."""

    domain = "waveform"

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(2, 8, 33, padding=16)

    def forward(self, x):
        return self.conv(x).reshape(x.shape[0], 4, 2, -1)


class EvenSpec(nn.Module):
    """Spectral: every source gets a quarter of the mixture."""

    domain = "spectral"

    def forward(self, mag):
        return torch.full_like(mag, 0.25)[:, None].expand(-1, 4, -1, -1, -1)


class EvenWave(nn.Module):
    domain = "waveform"

    def forward(self, x):
        return 0.25 * x[:, None].expand(-1, 4, -1, -1)


def spec_model(module, **info):
    return LoadedModel.from_module(module.eval(), ModelInfo("spectral", **{**SMALL, **info}))


def wave_model(module):
    return LoadedModel.from_module(module.eval(), ModelInfo("waveform"))


BLEND = Bag(
    models=["xumx", "unet", "demucs"], weights=[[0.2, 0.1, 0.0, 0.2], [0.2, 0.17, 0.5, 0.4], [0.6, 0.73, 0.5, 0.4]]
)


def point_models():
    return {
        "xumx": spec_model(PointSpec(129, seed=1)),
        "unet": spec_model(PointSpec(129, seed=2), frame_multiple=16),
        "demucs": wave_model(PointWave(seed=3)),
    }


def music(
    seconds: float, channels: int = 2, rate: int = SR, seed: int = 0, noise: float = 0.01, tones: int = 6
) -> torch.Tensor:
    """Test audio: decaying tones (in octaves from 80 Hz, up to 10 kHz) over quiet white noise, per channel."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    out = torch.zeros(channels, t.numel())
    for c in range(channels):
        for k in range(tones):
            f = 80 * 2 ** (k + float(torch.rand((), generator=g)))
            out[c] += 0.1 * torch.sin(2 * math.pi * f * t + c) * torch.exp(-((t * (k + 1)) % 1.3))
        out[c] += noise * torch.randn(t.numel(), generator=g)
    return out


def reference(models, bag, wav, niter=1, window=300):
    """The whole track in one pass per model, written directly with the building blocks."""
    length = wav.shape[-1]
    total = torch.zeros(4, wav.shape[0], length)
    for m, role in enumerate(bag.models):
        model = models[role]
        if model.info.domain == "spectral":
            stft = STFT(model.info.n_fft, model.info.hop_length)
            X = stft(wav)
            mask = model(X.abs()[None])[0]
            if niter == 0:
                Y = mask * X
            elif window is None:
                Y = wiener(mask * X.abs(), X, niter)
            else:
                Y = wiener_windowed(mask * X.abs(), X, niter, window=window)
            y = stft.inverse(Y, length)
        else:
            y = F.pad(model(wav[None])[0], (0, 100))[..., :length]  # PointWave is memoryless: the tail is known
            y[..., length - 100 :] = model(F.pad(wav[None], (0, 100)))[0][..., length - 100 : length]
        total += torch.as_tensor(bag.weights[m], dtype=torch.float32)[:, None, None] * y
    return total


def stacked(stems):
    return torch.stack([stems[s] for s in SOURCES])


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ------------------------------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize(
    "total,segment,stride,multiple",
    [
        (1000, 512, 384, 64),
        (512, 512, 384, 64),
        (300, 512, 384, 64),
        (513, 512, 384, 64),
        (2000, 100, 75, 1),
        (10_000, 441, 331, 1),
        (901, 512, 512, 64),
    ],
)
def test_plan_segments_cover_the_track(total, segment, stride, multiple):
    segs = plan_segments(total, segment, stride, multiple)
    assert segs[0][0] == 0 and segs[-1][1] == total
    for (a, b), (c, _d) in itertools.pairwise(segs):
        assert c > a and c <= b  # increasing starts, no gap
        assert a % multiple == 0 and c % multiple == 0
        assert b - a == segment
    assert segment <= segs[-1][1] - segs[-1][0] < segment + multiple or len(segs) == 1


def test_streaming_istft_equals_torch_istft():
    torch.manual_seed(0)
    n_fft, hop = 512, 128
    spec = torch.randn(3, 257, 41, dtype=torch.complex64)
    window = torch.hann_window(n_fft)
    for length in (40 * hop, 40 * hop + 77, 38 * hop + 5, 45 * hop):
        ist = StreamingISTFT(n_fft, hop, length)
        pieces, start = [], 0
        for n in (1, 7, 13, 3, 17):
            pieces.append(ist.push(spec[..., start : start + n]))
            start += n
        pieces.append(ist.finish())
        got = torch.cat(pieces, -1)
        want = torch.istft(spec, n_fft, hop, window=window, center=True, length=length)
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-5


def test_padded_read_matches_stft_padding():
    wav = torch.randn(2, 3000)
    reader = TensorReader(wav)
    padded = F.pad(wav[None], (256, 256), mode="reflect")[0]
    for start, stop in ((-256, 300), (2900, 3256), (-256, 3256), (100, 200)):
        assert torch.equal(_read_padded(reader, start, stop, True), padded[:, start + 256 : stop + 256])


# ------------------------------------------------------------------------------------------ chunked = whole track


@pytest.mark.parametrize(
    "options",
    [
        dict(),  # defaults: 512-frame spectral segments (here 0.74 s), 10 s waveform segments, 25 % overlap
        dict(segment=0.3, overlap=0.5, wiener_window=97, niter=2),
        dict(segment=0.25, overlap=0.0, niter=0),
        dict(split=False, wiener_window=None),
    ],
)
def test_chunked_separation_equals_the_whole_track(options):
    models = point_models()
    wav = music(2.0)
    sep = Separator(models, BLEND, **options)
    got = stacked(sep.separate(wav, SR))
    want = reference(models, BLEND, wav, niter=options.get("niter", 1), window=options.get("wiener_window", 300))
    assert got.shape == (4, 2, wav.shape[-1])
    assert rel(got, want) < 1e-5


def test_fixed_length_waveform_model():
    # an ONNX Demucs takes exactly one input length: the separator feeds it segments of that size
    models = {
        **point_models(),
        "demucs": LoadedModel.from_module(PointWave(seed=3).eval(), ModelInfo("waveform", fixed_length=12000)),
    }
    calls = []
    inner = models["demucs"]._fn
    models["demucs"]._fn = lambda x: calls.append(x.shape[-1]) or inner(x)
    wav = music(1.3)
    got = stacked(Separator(models, BLEND, niter=0).separate(wav, SR))
    assert set(calls) == {12000} and len(calls) > 3
    assert rel(got, reference(models, BLEND, wav, niter=0)) < 1e-5


def test_equal_length_groups():
    segments = [(0, 10), (7, 17), (14, 24), (21, 31), (28, 38), (35, 40)]
    assert list(_equal_length_groups(segments, 3)) == [segments[:3], segments[3:5], segments[5:]]
    assert list(_equal_length_groups(segments, 1)) == [[s] for s in segments]
    assert list(_equal_length_groups([], 3)) == []


def test_waveform_segments_go_three_per_call_on_cpu():
    models = point_models()
    models["demucs"].info = ModelInfo("waveform", itemwise_batches=True)  # as DemucsSplit declares
    batches = []
    inner = models["demucs"]._fn
    models["demucs"]._fn = lambda x: batches.append(x.shape[0]) or inner(x)
    wav = music(2.0)
    got = stacked(Separator(models, BLEND, segment=0.25, niter=0).separate(wav, SR))
    assert max(batches) == WAVEFORM_BATCH == 3 and sum(batches) > 9  # many segments, up to three per call
    assert rel(got, reference(models, BLEND, wav, niter=0)) < 1e-5
    # models that do not declare it (an ONNX graph, the original release, older exports): one segment per call
    for info in (ModelInfo("waveform", fixed_length=12000), ModelInfo("waveform")):
        models["demucs"].info = info
        batches.clear()
        Separator(models, BLEND, segment=0.25, niter=0).separate(wav, SR)
        assert set(batches) == {1}


def test_local_models_are_seamless_away_from_the_edges():
    models = {"unet": spec_model(LocalSpec(seed=0)), "demucs": wave_model(LocalWave(seed=1))}
    bag = Bag(models=["unet", "demucs"], weights=[[0.5] * 4, [0.5] * 4])
    wav = music(3.0)
    # no Wiener filter: the seams of the models themselves are under test (the filter is exact, see above)
    whole = stacked(Separator(models, bag, split=False, niter=0).separate(wav, SR))
    chunked = stacked(Separator(models, bag, segment=0.8, overlap=0.25, niter=0).separate(wav, SR))
    err = (chunked - whole)[..., 2048:-2048]
    snr = 10 * torch.log10(whole[..., 2048:-2048].square().sum() / err.square().sum())
    assert snr > 40, f"seams: chunked differs from the whole-track output by {snr:.1f} dB SNR"


def test_tiny_unet_chunked_is_close_to_whole_track():
    from danna_sep.models import build_model

    torch.manual_seed(0)
    unet = build_model(
        {
            "type": "UNetAttn",
            "args": {
                "k": 2,
                "levels": 2,
                "d_model": 4,
                "n_heads": 1,
                "attn_channels": 2,
                "max_bins": 32,
                "attn_layers": 1,
            },
        }
    ).eval()
    models = {"unet": LoadedModel.from_module(unet, ModelInfo.from_model(unet))}
    bag = Bag(models=["unet"], weights=[[1.0] * 4])
    wav = music(5.0)
    whole = stacked(Separator(models, bag, split=False, niter=0).separate(wav, SR))
    chunked = stacked(Separator(models, bag, segment=2.0, niter=0).separate(wav, SR))
    inner = slice(4096, -4096)
    snr = 10 * torch.log10(whole[..., inner].square().sum() / (chunked - whole)[..., inner].square().sum())
    assert snr > 25, f"chunked U-Net differs from its whole-track output by {snr:.1f} dB SNR"


class CountingReader(TensorReader):
    def __init__(self, wav):
        super().__init__(wav)
        self.largest = 0
        self.furthest = 0

    def read(self, start, frames):
        self.largest = max(self.largest, frames)
        self.furthest = max(self.furthest, start + frames)
        return super().read(start, frames)


def test_reads_and_pieces_are_bounded_by_the_segment():
    models = point_models()
    wav = music(8.0, noise=0.0)
    reader = CountingReader(wav)
    sep = Separator(models, BLEND, segment=0.5, wiener_window=50, niter=0)
    stream = sep.stream(reader)
    first = next(stream)
    # the first piece comes out long before the track has been read: nothing waits for the whole song
    assert reader.furthest < 1.5 * SR
    sizes = [first.shape[-1]] + [p.shape[-1] for p in stream]
    assert sum(sizes) == wav.shape[-1]
    assert max(sizes) <= SR
    assert reader.largest <= SR // 2 + 4096 + 256  # a segment and its margin, never the track


def test_streams_hold_no_segment_temporaries_between_pieces():
    """While one model's stream waits at a piece, the others run: its spectrogram, masks and model output of the
    last segment must be gone by then (they were 220 MB at full size), only the running state kept."""
    models = point_models()
    reader = TensorReader(music(4.0))
    sep = Separator(models, BLEND, segment=0.5, wiener_window=50)
    calls, options = sep._calls, sep._stream_options()
    for stream, allowed in (
        (_spectral_stream(models["unet"], reader, lambda f: None, calls, options), {"window"}),
        (_waveform_stream(models["demucs"], reader, lambda f: None, calls, options), set()),
    ):
        for _ in range(3):
            next(stream)
            held = {name for name, value in stream.gi_frame.f_locals.items() if isinstance(value, torch.Tensor)}
            assert held <= allowed, held
        stream.close()


# --------------------------------------------------------------------------------------------- stems, rates, shifts


def test_shifts_keep_alignment():
    # an even split is shift-invariant: averaging shifted runs must give the plain result back
    models = {"unet": spec_model(EvenSpec()), "demucs": wave_model(EvenWave())}
    bag = Bag(models=["unet", "demucs"], weights=[[0.5] * 4, [0.5] * 4])
    wav = music(1.5)
    one = stacked(Separator(models, bag, segment=0.5).separate(wav, SR))
    three = stacked(Separator(models, bag, segment=0.5, shifts=3).separate(wav, SR))
    assert rel(three, one) < 1e-5
    assert rel(one.sum(0), wav) < 1e-5  # and the stems add up to the mixture


def test_mono_input_at_another_rate(tmp_path):
    models = {"unet": spec_model(EvenSpec()), "demucs": wave_model(EvenWave())}
    bag = Bag(models=["unet", "demucs"], weights=[[0.5] * 4, [0.5] * 4])
    wav = music(3.0, channels=1, rate=22050, noise=0.0, tones=5)  # nothing near Nyquist: resampling is transparent
    path = tmp_path / "mono.flac"
    sf.write(path, wav[0].numpy(), 22050, subtype="PCM_24")
    sep = Separator(models, bag)
    native = sep.separate_file(path)
    assert set(native) == set(SOURCES)
    assert native["vocals"].shape == (1, 2 * wav.shape[-1])  # mono stays mono, 44.1 kHz by default
    kept = sep.separate_file(path, keep_rate=True, two_stems="vocals")
    assert set(kept) == {"vocals", "accompaniment"}
    mix = kept["vocals"] + kept["accompaniment"]
    assert abs(mix.shape[-1] - wav.shape[-1]) <= 2
    n = min(mix.shape[-1], wav.shape[-1])
    # back at 22050 Hz the stems add up to the input (up to the resamplers' edge transients)
    assert (mix[..., 2000 : n - 2000] - wav[..., 2000 : n - 2000]).abs().max() < 2e-3


def test_stem_plan():
    assert stem_plan() == {"drums": (0,), "bass": (1,), "other": (2,), "vocals": (3,)}
    assert stem_plan(["vocals", "drums"]) == {"drums": (0,), "vocals": (3,)}
    assert stem_plan(two_stems="vocals") == {"vocals": (3,), "accompaniment": (0, 1, 2)}
    assert stem_plan(two_stems="bass") == {"bass": (1,), "no_bass": (0, 2, 3)}
    for bad in (dict(stems=["guitar"]), dict(two_stems="piano"), dict(stems=["vocals"], two_stems="vocals")):
        with pytest.raises(ConfigError):
            stem_plan(**bad)


def test_progress_reaches_one_and_never_goes_back():
    seen = []
    sep = Separator(point_models(), BLEND, segment=0.5, niter=0, progress=lambda p: seen.append(p.fraction))
    sep.separate(music(1.5), SR)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(seen))


class Broken(nn.Module):
    domain = "waveform"

    def forward(self, x):
        return x  # (batch, 2, samples): not the contract's (batch, 4, 2, samples)


def test_parallel_streams_give_the_same_result_and_pass_errors_on():
    models = point_models()
    wav = music(1.5)
    serial = stacked(Separator(models, BLEND, segment=0.4).separate(wav, SR))
    parallel = stacked(Separator(models, BLEND, segment=0.4, parallel=True).separate(wav, SR))
    assert torch.equal(serial, parallel)

    before = threading.active_count()
    broken = {**models, "demucs": wave_model(Broken())}
    with pytest.raises(CheckpointError, match="contract"):
        Separator(broken, BLEND, segment=0.4, parallel=True).separate(wav, SR)
    for _ in range(50):  # the other models' threads stop at their next hand-over
        if threading.active_count() <= before:
            break
        time.sleep(0.1)
    assert threading.active_count() <= before


def test_bad_options_and_devices():
    models = point_models()
    for bad in (dict(overlap=1.0), dict(segment=0.0), dict(niter=-1), dict(shifts=0), dict(wiener_window=0)):
        with pytest.raises(ConfigError):
            Separator(models, BLEND, **bad)
    with pytest.raises(ConfigError, match="no such model"):
        Separator({"unet": models["unet"]}, BLEND)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------------------ checkpoints, CLI


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A checkpoint folder with the released file names: two spectral models and one waveform model."""
    return write_point_models(tmp_path_factory.mktemp("checkpoints"))


def write_point_models(folder: Path) -> Path:
    """Three cheap TorchScript models under the released file names in ``folder`` (two spectral, one waveform)."""
    export_torchscript(PointSpec(129, seed=1), folder / "xumx_mwf.pth", ModelInfo("spectral", **SMALL))
    export_torchscript(
        PointSpec(129, seed=2), folder / "unet_attention.pth", ModelInfo("spectral", frame_multiple=16, **SMALL)
    )
    export_torchscript(PointWave(seed=3), folder / "demucs_4_decoders.pth", ModelInfo("waveform"))
    return folder


def write(path, wav, rate=SR, subtype="PCM_24"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.T.numpy(), rate, subtype=subtype)
    return path


def test_from_checkpoints_and_missing_files(checkpoints, tmp_path, monkeypatch):
    sep = Separator.from_checkpoints(checkpoints, device="cpu")
    assert sorted(sep.models) == ["demucs", "unet", "xumx"]
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(checkpoints))
    assert sorted(Separator.from_checkpoints(fast=True, device="cpu").models) == ["demucs", "unet"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "unet_attention.pth").write_bytes((checkpoints / "unet_attention.pth").read_bytes())
    with pytest.raises(CheckpointError) as info:
        find_model_files(empty, ["xumx", "unet", "demucs"])
    message = str(info.value)
    assert "xumx_mwf.pth or xumx.onnx" in message and "demucs_4_decoders.pth" in message
    assert "unet_attention" not in message.split("Export")[0].split(":", 1)[1]  # present, so not listed
    assert str(empty) in message and "--checkpoints" in message and "danna export" in message
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match=r"\$DANNA_CHECKPOINTS, which does not exist"):
        find_model_files(None, ["unet"])


def test_xumx_onnx_alternative(checkpoints, tmp_path):
    pytest.importorskip("onnxruntime")
    from danna_sep.export import export_onnx

    folder = tmp_path / "ck"
    folder.mkdir()
    for name in ("unet_attention.pth", "demucs_4_decoders.pth"):
        (folder / name).write_bytes((checkpoints / name).read_bytes())
    export_onnx(PointSpec(129, seed=1).eval(), folder / "xumx.onnx", ModelInfo("spectral", **SMALL))
    onnx_sep = Separator.from_checkpoints(folder, device="cpu", segment=0.4)
    assert onnx_sep.models["xumx"].kind == "onnx"
    jit_sep = Separator.from_checkpoints(checkpoints, device="cpu", segment=0.4)
    wav = music(1.0)
    assert rel(stacked(onnx_sep.separate(wav, SR)), stacked(jit_sep.separate(wav, SR))) < 1e-5


def test_cli_writes_stems_and_never_overwrites(checkpoints, tmp_path, capsys):
    song = write(tmp_path / "in" / "song.wav", music(1.0))
    out = tmp_path / "out"
    args = ["separate", "--checkpoints", str(checkpoints), "-o", str(out), "--segment", "0.7", str(song)]
    assert main([*args, "-q"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"song/{s}.wav" for s in sorted(SOURCES)]
    info = sf.info(out / "song" / "vocals.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 2, SR, "PCM_16")
    # the file matches the API's result up to 16-bit rounding
    stems = Separator.from_checkpoints(checkpoints, device="cpu", segment=0.7).separate_file(song)
    written, _ = sf.read(out / "song" / "vocals.wav", dtype="float32")
    assert np.abs(written.T - stems["vocals"].numpy()).max() < 1e-4

    before = (out / "song" / "drums.wav").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "-q"]) == 0  # complete stems: skipped (tests/test_separate_cli.py has the rest)
    assert main([*args, "-q", "--no-skip-existing"]) == 1
    err = capsys.readouterr().err
    assert "exist" in err and "--force" in err and "Traceback" not in err
    assert (out / "song" / "drums.wav").stat().st_mtime_ns == before
    assert main([*args, "-q", "--force"]) == 0


def test_cli_one_bad_file_does_not_stop_the_others(checkpoints, tmp_path, capsys):
    folder = tmp_path / "music"
    write(folder / "a.wav", music(1.0))
    (folder / "b.wav").write_bytes(b"RIFF not really a wav file")
    write(folder / "sub" / "c.flac", music(1.0, channels=1, rate=32000), rate=32000, subtype="PCM_16")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    code = main(["separate", "--checkpoints", str(checkpoints), "-o", str(out), "-q", "--fast", str(folder)])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 3 file(s) failed" in err and "b.wav" in err and "Traceback" not in err
    assert sf.info(out / "a" / "vocals.wav").channels == 2
    c = sf.info(out / "c" / "vocals.wav")
    assert (c.channels, c.samplerate) == (1, SR)  # mono in, mono out, at 44.1 kHz unless --keep-rate


def test_cli_parallel_jobs_and_outputs_inside_the_input_folder(checkpoints, tmp_path):
    folder = tmp_path / "music"
    write(folder / "a.wav", music(0.6))
    write(folder / "b.flac", music(0.6, seed=1))
    out = folder / "separated"  # inside the searched folder: its stems must not become inputs
    args = [
        "separate",
        "--checkpoints",
        str(checkpoints),
        "-o",
        str(out),
        "-q",
        "-j",
        "2",
        "--fast",
        "--parallel",
        str(folder),
    ]
    assert main(args) == 0
    assert main([*args, "--force"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert files == [f"{t}/{s}.wav" for t in "ab" for s in sorted(SOURCES)]


def test_cli_formats_stems_and_templates(checkpoints, tmp_path):
    song = write(tmp_path / "My Song.wav", music(1.0, rate=48000), rate=48000)
    out = tmp_path / "out"
    base = ["separate", "--checkpoints", str(checkpoints), "-o", str(out), "-q"]
    assert main([*base, "--two-stems", "vocals", "--flac", "--int24", "--keep-rate", str(song)]) == 0
    for stem in ("vocals", "accompaniment"):
        info = sf.info(out / "My Song" / f"{stem}.flac")
        assert (info.format, info.subtype, info.samplerate, info.frames) == ("FLAC", "PCM_24", 48000, 48000)
    assert main([*base, "--stems", "bass,drums", "--float32", "--filename", "{track}_{stem}.{ext}", str(song)]) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == ["My Song_bass.wav", "My Song_drums.wav"]
    assert sf.info(out / "My Song_bass.wav").subtype == "FLOAT"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--filename", "{track}.{ext}"], "{stem}"),
        (["--filename", "{song}/{stem}.{ext}"], "unknown placeholder"),
        (["--stems", "guitar"], "unknown source"),
        (["--flac", "--float32"], "FLAC"),
        (["--overlap", "1.5"], "overlap"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        (["--bag", "/nonexistent/bag.json"], "does not exist"),
    ],
)
def test_cli_usage_errors_are_one_line(checkpoints, tmp_path, capsys, extra, message):
    song = write(tmp_path / "s.wav", music(0.5))
    code = main(["separate", "--checkpoints", str(checkpoints), "-o", str(tmp_path / "o"), *extra, str(song)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_bag_file(checkpoints, tmp_path):
    bag = tmp_path / "bag.json"
    bag.write_text(json.dumps({"models": ["demucs"], "weights": [[1, 1, 1, 1]]}))
    song = write(tmp_path / "s.wav", music(1.0))
    assert (
        main(
            [
                "separate",
                "--checkpoints",
                str(checkpoints),
                "-o",
                str(tmp_path / "o"),
                "-q",
                "--bag",
                str(bag),
                str(song),
            ]
        )
        == 0
    )
    vocals, _ = sf.read(tmp_path / "o" / "s" / "vocals.wav", dtype="float32")
    mix, _ = sf.read(song, dtype="float32")
    g = PointWave(seed=3).g[3].item()
    assert np.abs(vocals - np.tanh(g * mix)).max() < 2e-4  # the Demucs stand-in alone, weight 1


def test_danna_sep_entry_point_reports_missing_checkpoints(tmp_path):
    song = write(tmp_path / "s.wav", music(0.5))
    code = (
        "import sys; from danna_sep.cli import separate_main; "
        f"sys.exit(separate_main(['--checkpoints', {str(tmp_path / 'none')!r}, {str(song)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "xumx_mwf.pth" in proc.stderr and "danna download" in proc.stderr and "Traceback" not in proc.stderr


def test_real_tiny_models_end_to_end(tmp_path):
    """The three real architectures, tiny, exported to TorchScript and blended at the full 4096-point STFT."""
    from danna_sep.models import build_model

    pytest.importorskip("danna_sep.models.demucs")
    folder = tmp_path / "ck"
    archs = {
        "xumx_mwf.pth": {"type": "X_UMX", "args": {"hidden_channels": 8, "nb_layers": 1, "max_bins": 32}},
        "unet_attention.pth": {
            "type": "UNetAttn",
            "args": {"k": 2, "levels": 2, "d_model": 4, "n_heads": 1, "attn_channels": 2, "max_bins": 32},
        },
        "demucs_4_decoders.pth": {"type": "DemucsSplit", "args": {"channels": 4, "depth": 2, "lstm_layers": 1}},
    }
    torch.manual_seed(0)
    for name, arch in archs.items():
        model = build_model(arch).eval()
        export_torchscript(model, folder / name, ModelInfo.from_model(model, {"arch": arch}))
    song = write(tmp_path / "s.wav", music(1.5))
    assert (
        main(["separate", "--checkpoints", str(folder), "-o", str(tmp_path / "o"), "-q", "--segment", "1", str(song)])
        == 0
    )
    for stem in SOURCES:
        data, rate = sf.read(tmp_path / "o" / "s" / f"{stem}.wav")
        assert data.shape == (int(1.5 * SR), 2) and rate == SR and np.abs(data).max() > 0
