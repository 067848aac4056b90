"""Importing the original release's TorchScript files into danna-sep's own models (:mod:`danna_sep.release.convert`):
the mapping at tiny and full size, the check against the archive, what is written and when, and how the imports
are used (``load_model``, our ONNX export, the separator's search order, fine-tuning, ``danna import-released``)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from original_release import FILES, ONNX_FILE, TINY, build_models, example_mix, script, spectrogram, write_release
from original_release.build import CLASSES
from torch import Tensor, nn
from torch.utils.data import Dataset

from danna_sep.cli import main
from danna_sep.config import apply_overrides, configs_dir, validate_config
from danna_sep.errors import CheckpointError
from danna_sep.export import export_onnx, export_torchscript, load_model, max_relative_error
from danna_sep.models import build_model
from danna_sep.release import convert
from danna_sep.release.convert import (
    TOLERANCE,
    ImportReport,
    build_imported,
    import_file,
    import_released,
    probe_signal,
    read_archive,
)
from danna_sep.release.registry import load_registry
from danna_sep.separate import Separator, find_model_files, model_search_order
from danna_sep.train import load_weights, train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

ROLES = ("xumx", "unet", "demucs")
IMPORTED = {"xumx": "xumx_imported.pt", "unet": "unet_imported.pt", "demucs": "demucs_imported.pt"}
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
FULL_PARAMS = {"xumx": 35_573_392, "unet": 15_676_652, "demucs": 191_928_152}


# ------------------------------------------------------------------------------------------------- helpers


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_input(role: str, length: int, seed: int = 0) -> Tensor:
    """What the released ``role`` model takes: magnitude ``(1, 2, 2049, length frames)`` for the spectral roles
    (an STFT's transposed layout, as the separator hands it), waveform ``(1, 2, length samples)`` for Demucs."""
    if role == "demucs":
        return example_mix(length, seed=seed)[None]
    return spectrogram(example_mix((length - 1) * 1024, seed=seed))[1][None]


def copy_folder(source: Path, dest: Path) -> Path:
    """``dest``: a copy of the files of ``source``, with their modification times."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        shutil.copy2(path, dest / path.name)
    return dest


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def stamp(path: Path) -> tuple[int, int, bytes]:
    """(inode, mtime_ns, bytes): an atomic rewrite changes the inode even within the clock's granularity."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


class Tampered:
    """A released archive whose state dict is ``state`` (its attributes, e.g. ``n_heads``, are the archive's)."""

    def __init__(self, archive: nn.Module, state: dict[str, Tensor]):
        self._archive, self._state = archive, state

    def state_dict(self) -> dict[str, Tensor]:
        return self._state

    def __getattr__(self, name: str) -> object:
        return getattr(self._archive, name)


class NoiseStems(Dataset):
    """Items ``(mix, stems (4, 2, samples))`` of seeded noise: enough for one training step."""

    def __init__(self, items: int, samples: int = 16384):
        self.items, self.samples = items, samples

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(index)
        stems = 0.1 * torch.randn(4, 2, self.samples, generator=g)
        return stems.sum(0), stems


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def originals() -> dict[str, nn.Module]:
    """role → the tiny eager original (the models the release files below are scripted from)."""
    return build_models("tiny", seed=0)


@pytest.fixture(scope="module")
def release(originals: dict[str, nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine tiny release (the three TorchScript files and ``xumx.onnx``); tests copy it before writing."""
    return write_release(tmp_path_factory.mktemp("release"), models=originals)[ONNX_FILE].parent


@pytest.fixture(scope="module")
def imported(release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ImportReport]]:
    """A copy of the release after ``import_released``, and its reports (read-only: copy before writing)."""
    folder = copy_folder(release, tmp_path_factory.mktemp("imported"))
    lines: list[str] = []
    reports = import_released(folder, notify=lines.append)
    assert lines == [r.describe() for r in reports]
    return folder, reports


@pytest.fixture
def workdir(imported: tuple[Path, list[ImportReport]], tmp_path: Path) -> Path:
    """A writable copy of the imported folder (imports up to date)."""
    return copy_folder(imported[0], tmp_path / "ckpt")


# ---------------------------------------------------------------------------------------- 1. import and record


def test_import_writes_one_checked_checkpoint_per_file(imported, originals, release):
    folder, reports = imported
    assert [r.role for r in reports] == list(ROLES)
    assert listing(folder) == sorted([*listing(release), *IMPORTED.values()])  # no temporary file left
    for report in reports:
        name, role = FILES[report.role], report.role
        assert report.written and report.source == folder / name and report.output == folder / IMPORTED[role]
        assert 0 <= report.error <= TOLERANCE
        assert report.params == params_of(originals[role])
        assert report.describe().startswith(f"{IMPORTED[role]}: imported from {name} ({report.arch['type']}, ")
        ckpt = torch.load(report.output, weights_only=True)
        assert set(ckpt) == {"model", "config", "imported_from"} and ckpt["config"] == {"arch": report.arch}
        compared = sorted([name, ONNX_FILE]) if role == "xumx" and HAS_ORT else [name]
        assert ckpt["imported_from"] == {
            "file": name,
            "size": report.source.stat().st_size,
            "params": report.params,
            "max_relative_error": report.error,
            "compared_with": compared,
        }
        assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
        args = report.arch["args"]
        assert args.get("legacy", False) is (role != "xumx")
        assert TINY[role].items() <= args.items()  # the hyper-parameters, read back from shapes and attributes


def test_probe_signal_is_what_the_models_take():
    for role in ROLES:
        x = probe_signal(role)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        assert x.shape == ((1, 2, 3 * 44100) if role == "demucs" else (1, 2, 2049, 128))
        assert torch.equal(x, probe_signal(role)) and not torch.equal(x, probe_signal(role, seed=1))
    assert (probe_signal("unet") >= 0).all()


def test_xumx_lstms_keep_their_sources(release):
    """The LSTMs are interchangeable in the output (X-UMX averages them), so only the names show their order."""
    state = read_archive(release / FILES["xumx"]).state_dict()
    _, ours = convert.xumx_from_release(state)
    for i, source in enumerate(("drums", "bass", "other", "vocals")):
        assert ours[f"lstms.{i}.weight_ih_l0"] is state[f"{source}_lstm.weight_ih_l0"]


def test_float32_rounding_is_judged_in_float64(release, tmp_path, monkeypatch):
    """A float32 difference above the tolerance (deep random nets amplify rounding) is checked again in float64;
    the checkpoint keeps float32 weights."""
    compare = convert.compare
    calls: list[torch.dtype] = []

    def rounding(ours: nn.Module, reference: Callable, x: Tensor) -> float:
        calls.append(x.dtype)
        return compare(ours, reference, x) + (1e-3 if x.dtype == torch.float32 else 0.0)

    monkeypatch.setattr(convert, "compare", rounding)
    report = import_file(release / FILES["demucs"], "demucs", tmp_path / IMPORTED["demucs"])
    assert calls == [torch.float32, torch.float64] and report.written and report.error <= TOLERANCE
    state = torch.load(report.output, weights_only=True)["model"]
    assert {v.dtype for v in state.values()} <= {torch.float32, torch.int64}


# ---------------------------------------------------------------------------------------- 2. when it is redone


def test_second_run_keeps_up_to_date_imports(workdir, imported):
    before = {role: stamp(workdir / name) for role, name in IMPORTED.items()}
    again = import_released(workdir, quiet=True)
    assert [not r.written for r in again] == [True] * 3
    assert [(r.params, r.error, r.arch) for r in again] == [(r.params, r.error, r.arch) for r in imported[1]]
    assert all(r.describe().split(": ")[1].startswith("up to date from") for r in again)
    assert {role: stamp(workdir / name) for role, name in IMPORTED.items()} == before


def test_force_rewrites_every_import(workdir):
    before = {name: stamp(workdir / name) for name in IMPORTED.values()}
    reports = import_released(workdir, force=True, quiet=True)
    assert all(r.written for r in reports)
    for role, name in IMPORTED.items():
        assert (workdir / name).stat().st_ino != before[name][0]  # written anew, atomically
        assert torch.load(workdir / name, weights_only=True)["imported_from"]["file"] == FILES[role]


def test_source_newer_than_its_import_is_imported_again(workdir):
    output = workdir / IMPORTED["unet"]
    earlier = (workdir / FILES["unet"]).stat().st_mtime - 10
    os.utime(output, (earlier, earlier))  # as after a new download of the source
    written = {r.role: r.written for r in import_released(workdir, quiet=True)}
    assert written == {"xumx": False, "unet": True, "demucs": False}
    assert output.stat().st_mtime >= (workdir / FILES["unet"]).stat().st_mtime
    assert not any(r.written for r in import_released(workdir, quiet=True))


@pytest.mark.parametrize("content", ["garbage", "not-an-import", "other-source-size"])
def test_unreadable_or_foreign_output_is_imported_again(workdir, content):
    """An output that cannot be an up-to-date import of the source (half-copied, not an import, made from another
    file) is redone instead of failing or being trusted."""
    output = workdir / IMPORTED["demucs"]
    if content == "garbage":
        output.write_bytes(b"\x00junk")
    elif content == "not-an-import":
        torch.save({"model": {}}, output)
    else:
        ckpt = torch.load(output, weights_only=True)
        ckpt["imported_from"]["size"] += 1
        torch.save(ckpt, output)
    later = (workdir / FILES["demucs"]).stat().st_mtime + 10
    os.utime(output, (later, later))  # newer than the source: only its content can tell
    report = import_file(workdir / FILES["demucs"], "demucs", output)
    assert report.written and report.error <= TOLERANCE
    assert torch.load(output, weights_only=True)["imported_from"]["size"] == (workdir / FILES["demucs"]).stat().st_size


# -------------------------------------------------------------------------- 3. a mismatch writes nothing, clearly


def _perturbed(converter: Callable, key: Callable[[Mapping[str, Tensor]], str]) -> Callable:
    """``converter`` whose output has the tensor ``key(state)`` scaled by 1.5 (a wrong mapping's effect)."""

    def wrong(*args, **kwargs):
        arch, state = converter(*args, **kwargs)
        state = dict(state)
        name = key(state)
        state[name] = state[name] * 1.5
        return arch, state

    return wrong


def _largest_weight(state: Mapping[str, Tensor]) -> str:
    return max((k for k in state if k.endswith("weight") and state[k].dim() > 1), key=lambda k: state[k].numel())


@pytest.mark.parametrize("role", ROLES)
def test_import_that_does_not_reproduce_the_archive_writes_nothing(release, tmp_path, monkeypatch, role):
    folder = copy_folder(release, tmp_path / "ckpt")
    before = listing(folder)
    monkeypatch.setitem(convert.CONVERTERS, role, _perturbed(convert.CONVERTERS[role], _largest_weight))
    with pytest.raises(
        CheckpointError,
        match=r"does not reproduce the released model \(relative difference "
        rf".*{FILES[role]} \d.*> 0\.0001\); nothing written",
    ) as exc:
        import_released(folder, [FILES[role]], quiet=True)
    assert str(folder / FILES[role]) in str(exc.value)
    assert listing(folder) == before  # neither the import nor a temporary file


def test_a_failed_file_does_not_stop_the_others(release, tmp_path):
    folder = copy_folder(release, tmp_path / "ckpt")
    (folder / FILES["xumx"]).write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    lines: list[str] = []
    with pytest.raises(CheckpointError, match=r"xumx_mwf.pth: not a readable TorchScript archive") as exc:
        import_released(folder, notify=lines.append)
    assert "2 other(s) imported" in str(exc.value)
    assert [line.split(":")[0] for line in lines] == [IMPORTED["unet"], IMPORTED["demucs"]]
    assert listing(folder) == sorted([*listing(release), IMPORTED["unet"], IMPORTED["demucs"]])


@pytest.mark.parametrize(
    "content",
    [b"", b"<html><body>Quota exceeded</body></html>", b"PK\x03\x04broken zip", "torch.save", "other role"],
    ids=["empty", "html", "zip", "pickle", "unet"],
)
def test_not_a_release_archive_is_a_checkpoint_error(release, tmp_path, content):
    source = tmp_path / FILES["xumx"]
    if content == "torch.save":  # a zip, but a pickle, not TorchScript
        torch.save({"model": {}}, source)
    elif content == "other role":  # a real archive, of the U-Net
        shutil.copy(release / FILES["unet"], source)
    else:
        source.write_bytes(content)
    output = tmp_path / IMPORTED["xumx"]
    expected = (
        "no 'affine1.0.weight' in the released state dict"
        if content == "other role"
        else "not a readable TorchScript archive"
    )
    with pytest.raises(CheckpointError, match=expected) as exc:
        import_file(source, "xumx", output)
    assert str(source) in str(exc.value) and "\n" not in str(exc.value)
    assert listing(tmp_path) == [source.name]


def _drop(key: str) -> Callable[[dict[str, Tensor]], None]:
    return lambda state: state.pop(key)


def _add(key: str) -> Callable[[dict[str, Tensor]], None]:
    return lambda state: state.update({key: torch.zeros(3)})


def _scale(key: str) -> Callable[[dict[str, Tensor]], None]:
    return lambda state: state.update({key: 2 * state[key]})


@pytest.mark.parametrize(
    "role, change, message",
    [
        pytest.param("xumx", _drop("input_means"), "no 'input_means' in the released state dict", id="xumx-missing"),
        pytest.param(
            "xumx",
            _add("vocals_lstm.weight_ih_l5"),
            r"do not fit X_UMX .*unexpected lstms\.3\.weight_ih_l5",
            id="xumx-extra-lstm-layer",
        ),
        pytest.param(
            "unet",
            _drop("end.3.bias"),
            r"not the original release's layout \(1 missing: end\.3\.bias\)",
            id="unet-missing",
        ),
        pytest.param(
            "unet",
            _add("extra.weight"),
            r"not the original release's layout \(1 unexpected: extra\.weight\)",
            id="unet-unexpected",
        ),
        pytest.param(
            "unet",
            _drop("attn.0.qkv_conv.weight"),
            r"not the original release's layout \(.*unexpected: attn",
            id="unet-attention",
        ),
        pytest.param(
            "demucs",
            _drop("lstm_linear.weight"),
            r"do not fit DemucsSplit .*: missing lstm\.linear\.weight",
            id="demucs-missing",
        ),
        pytest.param(
            "demucs",
            _scale("up_sample.kernel"),
            r"its up_sample\.kernel is not julius' ResampleFrac\(1, 2\)",
            id="demucs-resampling-filter",
        ),
    ],
)
def test_converters_refuse_another_layout(release, role, change, message):
    archive = read_archive(release / FILES[role])
    state = dict(archive.state_dict())
    _arch, model = build_imported(role, Tampered(archive, dict(state)), "x")  # the untouched state maps
    assert params_of(model) == sum(v.numel() for k, v in state.items() if k in dict(archive.named_parameters()))
    change(state)
    with pytest.raises(CheckpointError, match=message):
        build_imported(role, Tampered(archive, state), "x")


# ------------------------------------------------------------------------------ 4. our own exports are skipped


def test_danna_exports_under_a_released_name_are_left_alone(workdir):
    model = load_model(workdir / IMPORTED["unet"], role="unet")
    (workdir / IMPORTED["unet"]).unlink()
    export_torchscript(model.module, workdir / FILES["unet"], model.info)
    reports = import_released(workdir, quiet=True)
    assert [r.role for r in reports] == ["xumx", "demucs"]
    assert not (workdir / IMPORTED["unet"]).exists()
    assert import_released(workdir, [FILES["unet"]], quiet=True) == []


# ------------------------------------------------------- 5. the import is the archive, on other inputs than the probe


@pytest.mark.parametrize("role, lengths", [("xumx", (5, 200)), ("unet", (64, 100, 130)), ("demucs", (44_100, 50_001))])
def test_imported_checkpoint_equals_the_archive_on_other_lengths(imported, role, lengths):
    folder, _ = imported
    ours, theirs = load_model(folder / IMPORTED[role], role=role), load_model(folder / FILES[role], role=role)
    assert (ours.kind, theirs.kind) == ("checkpoint", "torchscript")
    separation = ("domain", "frame_multiple", "grid", "placement")  # the separator feeds both alike
    assert {k: getattr(ours.info, k) for k in separation} == {k: getattr(theirs.info, k) for k in separation}
    for length in lengths:
        x = model_input(role, length, seed=length)
        got, want = ours(x), theirs(x)
        assert got.shape == want.shape
        assert (got.shape[-1] == length) if role != "demucs" else (length - 1000 < got.shape[-1] <= length)
        assert max_relative_error(got, want) <= TOLERANCE, (role, length)


# --------------------------------------------------------------------------- 6. the mapping at the release's size


def _full_size_original(role: str) -> nn.Module:
    """The original ``role`` model at the release's size: default initialisation (randomising it like
    :func:`build_models` takes ~45 s), with random batch-norm statistics and affines so that a mixed-up norm shows."""
    torch.manual_seed(0)
    model = CLASSES[role]().eval()
    g = torch.Generator().manual_seed(1)
    for norm in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        n = norm.num_features
        with torch.no_grad():
            norm.weight.copy_(0.5 + torch.rand(n, generator=g))
            norm.bias.copy_(0.1 * torch.randn(n, generator=g))
            norm.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            norm.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("role, length", [("xumx", 8), ("unet", 64), ("demucs", 8192)])
def test_full_size_archives_map_onto_our_models(role, length):
    original = _full_size_original(role)
    arch, ours = build_imported(role, script(original), role)
    assert params_of(ours) == params_of(original) == FULL_PARAMS[role]
    assert load_registry().get(FILES[role]).params == FULL_PARAMS[role]
    full = {
        "xumx": {"hidden_channels": 512, "nb_layers": 3, "max_bins": 1487},
        "unet": {"k": 12, "d_model": 128, "n_heads": 8, "attn_channels": 256, "max_bins": 1487},
        "demucs": {"channels": 48, "lstm_layers": 2, "depth": 6, "stride": 4},
    }[role]
    assert full.items() <= arch["args"].items()
    x = model_input(role, length, seed=3).contiguous()
    with torch.inference_mode():
        got, want = ours(x), original(x)
    assert got.shape == want.shape and want.std() > 1e-3
    assert max_relative_error(got, want) <= TOLERANCE


# --------------------------------------------------------------------------------- 7. our ONNX export of an import


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")
@pytest.mark.parametrize("role", ["xumx", "unet", "demucs"])
def test_onnx_export_of_an_import_equals_the_checkpoint(imported, tmp_path, role):
    checkpoint = load_model(imported[0] / IMPORTED[role], role=role)
    info = export_onnx(checkpoint.module, tmp_path / f"{role}.onnx", checkpoint.info)
    exported = load_model(tmp_path / f"{role}.onnx")
    assert exported.kind == "onnx" and exported.info.arch == checkpoint.info.arch == info.arch
    for length in (info.fixed_length,) if info.fixed_length else (64, 150):
        x = model_input(role, length, seed=7)
        assert max_relative_error(exported(x), checkpoint(x)) <= TOLERANCE


# ----------------------------------------------------------------------------------- 8. which files separate picks


def test_separator_prefers_the_imports_and_can_run_the_released_files(imported):
    folder, _ = imported
    assert all(model_search_order(role)[0] == IMPORTED[role] for role in ROLES)
    assert find_model_files(folder, ROLES) == {role: folder / IMPORTED[role] for role in ROLES}
    ours = Separator.from_checkpoints(folder, device="cpu")
    assert {role: (m.kind, m.path.name) for role, m in ours.models.items()} == {
        role: ("checkpoint", IMPORTED[role]) for role in ROLES
    }
    assert ours.describe_models() == [
        f"{title}: {IMPORTED[role]} (danna-sep model, cpu)"
        for title, role in zip(("X-UMX", "U-Net", "Demucs"), ROLES, strict=True)
    ]
    theirs = Separator.from_checkpoints(folder, device="cpu", imported=False)
    xumx = (ONNX_FILE, "onnx") if HAS_ORT else (FILES["xumx"], "torchscript")
    assert {role: (m.path.name, m.kind) for role, m in theirs.models.items()} == {
        "xumx": xumx,
        "unet": (FILES["unet"], "torchscript"),
        "demucs": (FILES["demucs"], "torchscript"),
    }
    mix = example_mix(3 * 44100, seed=21)
    a, b = ours.separate(mix, 44100), theirs.separate(mix, 44100)
    assert list(a) == list(b) and all(max_relative_error(a[s], b[s]) <= 1e-3 for s in a)


# ------------------------------------------------------------------------------------------------ 9. fine-tuning


@pytest.mark.parametrize("role", ROLES)
def test_import_loads_strictly_into_a_model_built_from_its_arch(imported, role):
    path = imported[0] / IMPORTED[role]
    arch = torch.load(path, weights_only=True)["config"]["arch"]
    model = build_model(arch).eval()
    report = load_weights(model, path)
    assert report.complete and not (report.missing or report.unexpected or report.mismatched)
    x = model_input(role, 64 if role != "demucs" else 30_000, seed=2)
    with torch.inference_mode():
        assert max_relative_error(model(x), load_model(path, role=role)(x)) <= 1e-5
    other = copy.deepcopy(arch)
    other["args"]["lstm_layers" if role == "demucs" else "nb_layers" if role == "xumx" else "k"] += 1
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights(build_model(other), path)


def test_fine_tuning_starts_from_the_imported_weights(imported, tmp_path):
    """A training run whose config has the import's architecture (legacy Demucs) starts from its weights."""
    path = imported[0] / IMPORTED["demucs"]
    arch = torch.load(path, weights_only=True)["config"]["arch"]
    cfg = json.loads((configs_dir() / "tiny" / "demucs_split.json").read_text())
    cfg["arch"] = {"type": arch["type"], "args": {k: v for k, v in arch["args"].items() if k != "legacy"}}
    sets = [
        "arch.args.legacy=true",
        "data_loader.train.num_workers=0",
        "data_loader.valid.num_workers=0",
        "device_augment.enabled=false",
        "trainer.epochs=1",
        "trainer.audio_seconds=0",
        "data_loader.train.batch_size=2",
        "data_loader.valid.batch_size=1",
    ]
    cfg = validate_config(apply_overrides(cfg, sets))
    assert cfg["arch"] == arch
    result = train(
        cfg,
        weights=path,
        train_set=NoiseStems(2),
        valid_set=NoiseStems(1),
        workdir=tmp_path,
        max_steps=1,
        progress=False,
        verbose=False,
        tensorboard=False,
    )
    assert result.steps == 1
    saved = torch.load(result.last_checkpoint, weights_only=True)
    start = torch.load(path, weights_only=True)["model"]
    assert saved["config"]["arch"] == arch and saved["model"].keys() == start.keys()
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(saved["model"][k], start[k])]
    assert moved and all(max_relative_error(saved["model"][k], start[k]) < 0.5 for k in moved)  # one small step


# -------------------------------------------------------------------------------------- 10. danna import-released


def test_cli_imports_a_folder_one_line_per_file(release, tmp_path, capsys, monkeypatch):
    folder = copy_folder(release, tmp_path / "ckpt")
    assert main(["import-released", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"{IMPORTED[r]}: imported from {FILES[r]}" for r in ROLES]
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(folder))  # the default folder
    assert main(["import-released"]) == 0
    assert [line.split(":")[1].split(" from")[0] for line in capsys.readouterr().out.splitlines()] == [
        " up to date"
    ] * 3
    assert main(["import-released", str(folder), FILES["unet"], "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"{IMPORTED['unet']}: imported from {FILES['unet']} (UNetAttn, ")


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("empty", [], "no released Danna-Sep file to import (xumx_mwf.pth, unet_attention.pth, demucs_4_decoders.pth)"),
        ("missing", [], "no such folder; `danna download --dir"),
        ("empty", [FILES["unet"]], f"no {FILES['unet']}; `danna download --dir"),
        ("empty", ["bogus.pth"], "bogus.pth: not an importable released file; importable: xumx_mwf.pth,"),
        ("empty", [ONNX_FILE], f"{ONNX_FILE}: not an importable released file"),
        ("html", [], "xumx_mwf.pth: not a readable TorchScript archive"),
    ],
    ids=["empty-folder", "missing-folder", "absent-file", "unknown-file", "not-importable", "web-page"],
)
def test_cli_errors_are_one_line(tmp_path, capsys, setup, args, message):
    folder = tmp_path / "ckpt"
    if setup != "missing":
        folder.mkdir()
    if setup == "html":
        (folder / FILES["xumx"]).write_text("<html><body>Too many users have downloaded this file</body></html>")
    assert main(["import-released", str(folder), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("danna import-released: error: ") and message in captured.err
    if setup != "missing":  # nothing written
        assert listing(folder) == ([FILES["xumx"]] if setup == "html" else [])
