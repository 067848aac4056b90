"""``--original`` against danna-sep 1.0.2 (the pipeline of ``tests/original_release``) on tiny files of the
release's layout, Demucs segments on the original's stride grid in the default mode, and ``danna-sep``'s download
on first use (from a local HTTP server).

The SDRs measured here are printed (``pytest -s``): 1.0.2 reproduced is float rounding, ≫ 100 dB.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from original_release import (
    FAST_WEIGHTS,
    FILES,
    ONNX_FILE,
    WEIGHTS,
    example_mix,
    model_estimates,
    pipeline,
    separate_original,
    write_release,
)
from torch import Tensor

import danna_sep.separate.streams as streams_module
from danna_sep import HOP_LENGTH, SAMPLE_RATE, SOURCES
from danna_sep.blend import Bag
from danna_sep.cli import separate_main
from danna_sep.errors import DannaError
from danna_sep.export import ORIGINAL_DEMUCS_GRID, ORIGINAL_DEMUCS_LEAD, LoadedModel, load_model
from danna_sep.release import download
from danna_sep.release.convert import import_released
from danna_sep.release.download import read_lock
from danna_sep.release.registry import REGISTRY_ENV
from danna_sep.separate import ORIGINAL_END_PAD, WAVEFORM_MARGIN, Separator, TensorReader

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

SR = SAMPLE_RATE
MIN_SDR = 45.0  # dB per stem: "the same numbers" (float rounding gives > 100 dB)
MIX_SAMPLES = 6 * SR + 321  # the song of the comparisons: 6 s, not a whole number of hops
SHORT_CHUNK = 130  # U-Net chunk (frames) for the short-tail test, instead of 2584: a 3 s clip has a short tail
IMPORTED = {role: f"{role}_imported.pt" for role in FILES}
NAMES = {"xumx": "X-UMX", "unet": "U-Net", "demucs": "Demucs"}


# ------------------------------------------------------------------------------------------------------ helpers


def sdr(reference: Tensor, estimate: Tensor) -> Tensor:
    """Per source of ``(4, channels, samples)``: 10 log10(|ref|² / |ref − est|²) in dB, in float64."""
    ref, est = reference.double(), estimate.double()
    return 10 * torch.log10(ref.square().sum((-1, -2)) / (ref - est).square().sum((-1, -2)))


def report(label: str, values: Tensor) -> None:
    print(f"\n{label}: " + ", ".join(f"{s} {v:.1f} dB" for s, v in zip(SOURCES, values.tolist(), strict=True)))


def stacked(stems: Mapping[str, Tensor]) -> Tensor:
    """``{source: (2, n)}`` → ``(4, 2, n)`` in the order of SOURCES."""
    return torch.stack([stems[s] for s in SOURCES])


def original_blend(estimates: Mapping[str, Tensor], fast: bool) -> Tensor:
    """What :func:`separate_original` returns from these model estimates (its blend, tested in
    test_original_release.py), so that the pipeline runs once for the full and the fast blend."""
    weights = FAST_WEIGHTS if fast else WEIGHTS
    return sum(weights[role][:, None, None] * estimates[role] for role in weights)


def pipeline_files(folder: Path, fast: bool = False) -> dict[str, Path]:
    """role → release file as 1.0.2 runs them (X-UMX as ONNX; ``fast``: no X-UMX)."""
    files = {"xumx": folder / ONNX_FILE, "unet": folder / FILES["unet"], "demucs": folder / FILES["demucs"]}
    return {r: p for r, p in files.items() if not (fast and r == "xumx")}


def copy_files(src: Path, dest: Path, names: Sequence[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(src / name, dest / name)
    return dest


def write_song(path: Path, wav: Tensor) -> Path:
    """``wav (2, n)`` as a float WAV (exact: the separator reads back the same float32 samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.T.numpy(), SR, subtype="FLOAT")
    return path


def read_stems(folder: Path) -> Tensor:
    return torch.stack([torch.from_numpy(sf.read(folder / f"{s}.wav", dtype="float32")[0].T.copy()) for s in SOURCES])


def describe(roles_files: Mapping[str, str], kind: Mapping[str, str]) -> list[str]:
    """The lines :meth:`Separator.describe_models` should give, for role → file name and role → format."""
    return [f"{NAMES[role]}: {name} ({kind[role]}, cpu)" for role, name in roles_files.items()]


@contextmanager
def recording(model: LoadedModel) -> Iterator[list[Tensor]]:
    """While inside: every input ``model`` is called with (after the loaded model's own preparation)."""
    calls: list[Tensor] = []
    inner = model._fn

    def recorded(x: Tensor) -> Tensor:
        calls.append(x.detach().clone())
        return inner(x)

    def recorded_tiled(x: Tensor, tile: int) -> Tensor:
        calls.append(x.detach().clone())
        return tiled(x, tile)

    model._fn = recorded
    # --original runs an eager U-Net's chunks through its forward_tiled (the same masks, less memory)
    tiled = getattr(model.module, "forward_tiled", None)
    if tiled is not None:
        model.module.forward_tiled = recorded_tiled
    try:
        yield calls
    finally:
        model._fn = inner
        if tiled is not None:
            del model.module.forward_tiled


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The tiny release: xumx_mwf.pth, xumx.onnx, unet_attention.pth, demucs_4_decoders.pth."""
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("release")
    write_release(folder, size="tiny", seed=0)
    return folder


@pytest.fixture(scope="module")
def imported(release, tmp_path_factory) -> Path:
    """A copy of the release with its imports into our models (``*_imported.pt``)."""
    folder = copy_files(release, tmp_path_factory.mktemp("imported"), [*FILES.values(), ONNX_FILE])
    import_released(folder, quiet=True)
    assert all((folder / name).is_file() for name in IMPORTED.values())
    return folder


@pytest.fixture(scope="module")
def torchscript_only(release, tmp_path_factory) -> Path:
    """The release's TorchScript files without xumx.onnx (danna-sep ≤ 1.0.1's layout)."""
    return copy_files(release, tmp_path_factory.mktemp("torchscript"), list(FILES.values()))


@pytest.fixture(scope="module")
def mix() -> Tensor:
    return example_mix(MIX_SAMPLES, seed=21)


@pytest.fixture(scope="module")
def estimates(release, mix) -> dict[str, Tensor]:
    """danna-sep 1.0.2's per-model estimates of ``mix`` (before the blend)."""
    return model_estimates(mix, pipeline_files(release))


# ---------------------------------------------------------------------------- the preset reproduces 1.0.2's numbers


RELEASED_KINDS = {"xumx": "ONNX", "unet": "TorchScript", "demucs": "TorchScript"}


@pytest.mark.parametrize(
    "folder, imported_files, fast, files, kinds",
    [
        (
            "release",
            False,
            False,
            {"xumx": ONNX_FILE, "unet": FILES["unet"], "demucs": FILES["demucs"]},
            RELEASED_KINDS,
        ),
        ("release", False, True, {"unet": FILES["unet"], "demucs": FILES["demucs"]}, RELEASED_KINDS),
        ("imported", True, False, IMPORTED, dict.fromkeys(FILES, "danna-sep model")),
        ("imported", True, True, {r: IMPORTED[r] for r in ("unet", "demucs")}, dict.fromkeys(FILES, "danna-sep model")),
        # the X-UMX as TorchScript: its .view needs a contiguous input, which the STFT's magnitude is not
        ("torchscript_only", False, False, FILES, dict.fromkeys(FILES, "TorchScript")),
    ],
    ids=["released", "released-fast", "imported", "imported-fast", "torchscript-xumx"],
)
def test_original_preset_gives_the_numbers_of_1_0_2(
    request, estimates, mix, folder, imported_files, fast, files, kinds
):
    """``Separator.from_checkpoints(..., original=True)`` on the release's files (or their imports) gives the
    stems of danna-sep 1.0.2 (xumx.onnx preferred over xumx_mwf.pth where onnxruntime is installed)."""
    sep = Separator.from_checkpoints(
        request.getfixturevalue(folder), fast=fast, imported=imported_files, original=True, device="cpu"
    )
    assert sep.describe_models() == describe(files, kinds)
    assert (sep.split, sep.niter, sep.wiener_window, sep.shifts) == (False, 1, None, 1)
    got = stacked(sep.separate(mix, SR))
    assert got.shape == (4, 2, MIX_SAMPLES) and torch.isfinite(got).all()
    values = sdr(original_blend(estimates, fast), got)
    report(f"--original vs 1.0.2 ({request.node.callspec.id})", values)
    assert (values >= MIN_SDR).all(), values


def test_released_torchscript_xumx_gets_a_contiguous_input(torchscript_only):
    """The STFT's magnitude is transposed in memory: the released X-UMX fails on it (``.view``) unless the loaded
    model hands it a contiguous copy, which gives the same masks."""
    model = load_model(torchscript_only / FILES["xumx"], device="cpu")
    wav = example_mix(70 * HOP_LENGTH, seed=4)
    spec = torch.stft(wav, 4096, HOP_LENGTH, window=torch.hann_window(4096), center=False, return_complex=True)
    mag = spec.abs()[None]  # as the separator computes it
    assert not mag.is_contiguous()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="view"):
            model.module(mag)
        expected = model.module(mag.contiguous())
    masks = model(mag)
    assert masks.shape == (1, 4, 2, 2049, mag.shape[-1]) and torch.equal(masks, expected)


# ------------------------------------------------------------------------------------ the U-Net's short last chunk


@pytest.mark.parametrize(
    "folder, imported_files, tail",
    [("release", False, 1), ("imported", True, 2)],
    ids=["released-1-frame", "imported-2-frames"],
)
def test_short_last_unet_chunk_is_padded_as_the_gpu_path(request, release, monkeypatch, folder, imported_files, tail):
    """A last U-Net chunk of 1–2 frames: 1.0.2 crashes on it (its CPU path); ours runs it zero-padded to 128
    frames and cropped, the numbers of its GPU path ("pad128")."""
    monkeypatch.setattr(streams_module, "ORIGINAL_UNET_CHUNK", SHORT_CHUNK)
    monkeypatch.setattr(pipeline, "UNET_CHUNK", SHORT_CHUNK)
    n = (SHORT_CHUNK - 2 + tail) * HOP_LENGTH + 100
    assert 1 + (n + ORIGINAL_END_PAD) // HOP_LENGTH == SHORT_CHUNK + tail  # frames after the 1024-sample pad
    wav = example_mix(n, seed=30 + tail)
    files = pipeline_files(release, fast=True)
    with torch.no_grad(), pytest.raises(RuntimeError):
        separate_original(wav, files, fast=True, short_chunk="crash")
    expected = separate_original(wav, files, fast=True, short_chunk="pad128")

    sep = Separator.from_checkpoints(
        request.getfixturevalue(folder), fast=True, imported=imported_files, original=True, device="cpu"
    )
    with recording(sep.models["unet"]) as calls:
        got = stacked(sep.separate(wav, SR))
    assert [x.shape[-1] for x in calls] == [SHORT_CHUNK, pipeline.PAD_FRAMES]  # 128
    assert (calls[1][..., tail:] == 0).all() and (calls[1][..., :tail] != 0).any()
    values = sdr(expected, got)
    report(f"short U-Net tail ({request.node.callspec.id}) vs 1.0.2 pad128", values)
    assert torch.isfinite(got).all() and (values >= MIN_SDR).all(), values


# ------------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "extra, refused",
    [
        (["--shifts", "2"], ["--shifts"]),
        (["--niter", "2"], ["--niter"]),
        (["--segment", "5"], ["--segment"]),
        (["--overlap", "0.5"], ["--overlap"]),
        (["--wiener-window", "100"], ["--wiener-window"]),
        (["--bag", "blend.json"], ["--bag"]),
        (["--parallel"], ["--parallel"]),
        (["--shifts", "3", "--parallel", "--niter", "0"], ["--shifts", "--niter", "--parallel"]),
    ],
)
def test_cli_original_refuses_options_that_change_the_computation(release, tmp_path, capsys, extra, refused):
    song = write_song(tmp_path / "s.wav", example_mix(SR // 2, seed=1))
    out = tmp_path / "out"
    code = separate_main(["--original", "--checkpoints", str(release), "-o", str(out), *extra, str(song)])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("danna-sep: error: --original computes exactly what danna-sep 1.0.2 did")
    assert err.rstrip().endswith("drop " + ", ".join(refused))
    assert "models:" not in err and not out.exists()


@pytest.mark.parametrize(
    "flags, files",
    [
        ([], list(IMPORTED.values())),
        (["--released-files", "--fast"], [FILES["unet"], FILES["demucs"]]),
        (["--wiener-window", "0", "--niter", "1", "--shifts", "1", "--no-split"], list(IMPORTED.values())),
    ],
    ids=["imported", "released-files-fast", "the-original-values-given"],
)
def test_cli_original_writes_the_stems_of_1_0_2(imported, estimates, mix, tmp_path, capsys, flags, files):
    """``danna-sep --original`` writes 1.0.2's stems; its "models:" line names the files that ran."""
    song = write_song(tmp_path / "song.wav", mix)
    out = tmp_path / "out"
    code = separate_main(["--original", "--checkpoints", str(imported), "-o", str(out), "--float32", *flags, str(song)])
    err = capsys.readouterr().err
    assert code == 0, err
    [models] = [line for line in err.splitlines() if line.startswith("models: ")]
    assert [part.split(":")[1].split()[0] for part in models[len("models: ") :].split("; ")] == files
    values = sdr(original_blend(estimates, fast="--fast" in flags), read_stems(out / "song"))
    report(" ".join(["danna-sep --original", *flags, "vs 1.0.2"]), values)
    assert (values >= MIN_SDR).all(), values


# ---------------------------------------------------------------------------------------- download on first use


def _registry(release: Path, base: str, path: Path) -> Path:
    """A registry of the tiny release (their sizes and parameter counts) with URLs on the local server."""
    entries = []
    for role, name in FILES.items():
        params = sum(p.numel() for p in torch.jit.load(str(release / name)).parameters())
        entries.append(
            {
                "name": name,
                "role": role,
                "format": "torchscript",
                "title": f"tiny {role}",
                "size": (release / name).stat().st_size,
                "params": params,
                "sha256": None,
                "sources": [f"{base}/drive/{name}"],
                "imported": IMPORTED[role],
            }
        )
    names = list(FILES.values())
    path.write_text(json.dumps({"files": entries, "sets": {"default": names, "all": names}}))
    return path


@pytest.fixture()
def mirror(server, release, tmp_path, monkeypatch):
    """The local server serving the tiny release; the registry pointing at it (``/drive/<name>``) and
    ``$DANNA_MODEL_URL`` at its ``/mirror`` (so a download from the mirror shows in the server's log); online."""
    server.files.clear()
    server.plans.clear()
    server.log.clear()
    server.files.update({name: (release / name).read_bytes() for name in FILES.values()})
    monkeypatch.setenv(REGISTRY_ENV, str(_registry(release, server.base, tmp_path / "registry.json")))
    monkeypatch.setenv(download.SOURCE_ENV, f"{server.base}/mirror")
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    return server


def test_first_use_downloads_imports_and_separates(mirror, tmp_path, capsys):
    ckpt, song = tmp_path / "ckpt", write_song(tmp_path / "song.wav", example_mix(SR * 3 // 2, seed=2))
    ckpt.mkdir()
    code = separate_main(["--checkpoints", str(ckpt), "-o", str(tmp_path / "out"), str(song)])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()  # (tqdm's carriage returns split lines too)
    for name in FILES.values():  # one line each: what, how big, from where, into which folder
        size = len(mirror.files[name]) / 1e6
        assert (
            f"downloading {name} ({size:.1f} MB) from 127.0.0.1 into {ckpt} "
            "(once; --no-download or DANNA_OFFLINE=1 forbids this)"
        ) in lines
    assert sorted(path for path, _, _ in mirror.log) == sorted(f"/mirror/{name}" for name in FILES.values())
    lock = read_lock(ckpt)
    assert sorted(lock) == sorted(FILES.values()) and all(r["source"].startswith(mirror.base) for r in lock.values())
    assert all((ckpt / name).is_file() for name in IMPORTED.values())
    [models] = [line for line in lines if line.startswith("models: ")]
    assert all(name in models for name in IMPORTED.values())
    stems = read_stems(tmp_path / "out" / "song")
    assert stems.shape == (4, 2, SR * 3 // 2) and (stems.abs().amax((1, 2)) > 0).all()

    requests = len(mirror.log)  # the second time: nothing to fetch, nothing said about it
    code = separate_main(["--checkpoints", str(ckpt), "-o", str(tmp_path / "again"), "-q", str(song)])
    err = capsys.readouterr().err
    assert code == 0 and len(mirror.log) == requests and "downloading" not in err and "models:" not in err
    torch.testing.assert_close(read_stems(tmp_path / "again" / "song"), stems, rtol=0, atol=0)


def test_from_pretrained_downloads_imports_and_then_finds_the_models(mirror, tmp_path, monkeypatch):
    """The Python API's first use: what ``danna-sep`` does on its first run, its notices through ``notify``;
    afterwards the folder is enough, offline too."""
    ckpt, mix = tmp_path / "ckpt", example_mix(SR, seed=4)
    lines: list[str] = []
    sep = Separator.from_pretrained(ckpt, device="cpu", quiet=True, notify=lines.append)
    assert sorted(path for path, _, _ in mirror.log) == sorted(f"/mirror/{name}" for name in FILES.values())
    assert [line.split(" (")[0] for line in lines if line.startswith("downloading")] == [
        f"downloading {name}" for name in FILES.values()
    ]
    assert sep.describe_models() == describe(IMPORTED, dict.fromkeys(FILES, "danna-sep model"))
    stems = sep.separate(mix, SR)
    assert all(stems[s].shape == (2, SR) and stems[s].abs().max() > 0 for s in SOURCES)

    requests = len(mirror.log)
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    again = Separator.from_pretrained(ckpt, device="cpu", notify=lines.append)
    assert len(mirror.log) == requests and again.describe_models() == sep.describe_models()
    torch.testing.assert_close(stacked(again.separate(mix, SR)), stacked(stems), rtol=0, atol=0)


@pytest.mark.parametrize("how", ["--no-download", "DANNA_OFFLINE=1"])
def test_without_downloads_an_empty_folder_says_what_to_fetch(mirror, tmp_path, capsys, monkeypatch, how):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    ckpt.mkdir()
    song = write_song(tmp_path / "song.wav", example_mix(SR // 2, seed=3))
    flags = [how] if how.startswith("--") else []
    if not flags:
        monkeypatch.setenv(download.OFFLINE_ENV, "1")
    code = separate_main([*flags, "--checkpoints", str(ckpt), "-o", str(out), str(song)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert all(name in err for name in FILES.values()) and str(ckpt) in err
    assert "`danna download " in err and f"--dir {ckpt}" in err
    if not flags:
        assert "DANNA_OFFLINE=1 forbids downloads" in err
    assert not mirror.log and not list(ckpt.iterdir()) and not out.exists()
    with pytest.raises(DannaError, match="danna download"):  # CheckpointError, or DownloadError offline
        Separator.from_pretrained(ckpt, download=not flags, device="cpu")
    assert not mirror.log and not list(ckpt.iterdir())


# -------------------------------------------------------------------- default mode: Demucs segments on the grid


def input_start(x: Tensor, track: Tensor) -> int:
    """Where in ``track (2, n)`` the model input ``x (2, m)`` starts (negative: zeros before the track), found by
    the value of its first non-zero sample and checked sample by sample."""
    k = int(torch.nonzero(x[0])[0])
    for position in torch.nonzero(track[0] == x[0, k]).flatten().tolist():
        start = position - k
        lo, hi = max(start, 0), min(start + x.shape[-1], track.shape[-1])
        if (
            torch.equal(x[:, lo - start : hi - start], track[:, lo:hi])
            and not x[:, : lo - start].any()
            and not x[:, hi - start :].any()
        ):
            return start
    raise AssertionError("the model input is not a piece of the track")


def chunked_demucs(model: LoadedModel, wav: Tensor, segment: float) -> tuple[Tensor, list[int]]:
    """Demucs alone through the default (segmented) stream: its stems and where each segment's input starts."""
    sep = Separator({"demucs": model}, Bag(models=["demucs"], weights=[[1.0] * 4]), segment=segment)
    with recording(model) as calls:
        out = torch.cat(list(sep.stream(TensorReader(wav))), -1)
    return out, [input_start(x, wav) for batch in calls for x in batch]


@pytest.mark.parametrize(
    "folder, name", [("release", FILES["demucs"]), ("imported", IMPORTED["demucs"])], ids=["released", "imported"]
)
def test_demucs_segments_start_on_the_original_grid(request, folder, name):
    """Several 1 s segments: each input starts at s with (s + 22050) % 2048 == 0, so every sample sits where
    1.0.2 put it on the stride grid; the stems are then close to 1.0.2's whole-track pass, and far from it when
    the segments are placed otherwise."""
    model = load_model(request.getfixturevalue(folder) / name, role="demucs", device="cpu")
    info = model.info
    assert (info.grid, info.placement) == (ORIGINAL_DEMUCS_GRID, ORIGINAL_DEMUCS_LEAD)
    wav = example_mix(4 * SR + 777, seed=5)
    n = wav.shape[-1]
    with torch.inference_mode():  # 1.0.2's placement, whole track, without its clamp (the default mode has none)
        whole = model(F.pad(wav, [ORIGINAL_DEMUCS_LEAD, WAVEFORM_MARGIN])[None])[0, ..., ORIGINAL_DEMUCS_LEAD:][..., :n]

    aligned, starts = chunked_demucs(model, wav, segment=1.0)
    assert len(starts) >= 5 and starts[0] == -(ORIGINAL_DEMUCS_LEAD % ORIGINAL_DEMUCS_GRID)
    assert all((s + ORIGINAL_DEMUCS_LEAD) % ORIGINAL_DEMUCS_GRID == 0 for s in starts), starts
    good = sdr(whole, aligned)
    report(f"Demucs ({name}) 1 s segments on the grid vs whole track", good)

    others = {}
    for label, grid, placement in (("placement 0", info.grid, 0), ("no grid", 1, 0)):
        model.info = dataclasses.replace(info, grid=grid, placement=placement)
        estimate, starts = chunked_demucs(model, wav, segment=1.0)
        assert all(s % grid == 0 for s in starts) and starts[0] == 0
        others[label] = sdr(whole, estimate)
        report(f"Demucs ({name}) 1 s segments, {label}, vs whole track", others[label])
    assert (good >= 15).all(), good
    assert all((good > values + 10).all() for values in others.values()), others


# ------------------------------------------------------------------------------------ default mode: a short track


@pytest.mark.parametrize(
    "folder, imported_files, seconds",
    [("release", False, 0.5), ("imported", True, 1.0)],
    ids=["released-0.5s", "imported-1s"],
)
def test_default_mode_pads_a_track_shorter_than_the_unet_poolings(request, folder, imported_files, seconds):
    """Under 64 frames (≈ 1.5 s) the legacy U-Net's poolings fail (as 1.0.2's did): the default mode zero-pads
    its segment to 64 frames and crops the masks, instead of failing with an internal error."""
    sep = Separator.from_checkpoints(request.getfixturevalue(folder), imported=imported_files, device="cpu")
    n = int(seconds * SR)
    frames = 1 + n // HOP_LENGTH
    assert frames < sep.models["unet"].info.frame_multiple == 64
    with recording(sep.models["unet"]) as calls:
        got = stacked(sep.separate(example_mix(n, seed=6), SR))
    [x] = calls
    assert x.shape[-1] == 64 and (x[..., frames:] == 0).all() and (x[..., :frames] != 0).any()
    assert got.shape == (4, 2, n) and torch.isfinite(got).all() and (got.abs().amax((1, 2)) > 0).all()


def test_a_missing_input_is_reported_before_any_download(tmp_path, capsys, monkeypatch):
    """Nothing to separate, nothing fetched: the input is checked before the models are looked for."""
    monkeypatch.delenv("DANNA_OFFLINE", raising=False)
    monkeypatch.setenv("DANNA_MODEL_URL", "http://127.0.0.1:9")  # the discard port: any download attempt fails
    empty = tmp_path / "models"
    code = separate_main(["--checkpoints", str(empty), "-o", str(tmp_path / "out"), str(tmp_path / "missing.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.wav: no such file or folder" in err and "Traceback" not in err
    assert "127.0.0.1" not in err and "models:" not in err
    assert not empty.exists() and not (tmp_path / "out").exists()
