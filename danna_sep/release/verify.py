"""Is this file the released model it claims to be? Checks that need nothing but the file and its registry entry.

::

    first bytes ── an HTML page? (a web page saved instead of the model)
        │
    load by format ── torchscript: load_model · onnx: onnxruntime · asteroid: weights-only torch.load →
        │             convert_asteroid_xumx → X_UMX
    parameter count ── within ±1 % of the entry's
        │
    short signal ── spectral: magnitude (1, 2, 2049, 64) → masks (1, 4, 2, 2049, 64)
                    waveform: noise (1, 2, 44100) → stems (1, 4, 2, ≤44100), all finite

Every failure is a :class:`CheckpointError` of one line that names the file. The hash is not checked here: what
it must be comes from the folder's lock file or the registry (:mod:`danna_sep.release.download`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..inference import (
    DOMAIN_OF_ROLE,
    LoadedModel,
    ModelInfo,
    _is_torchscript_archive,
    _load_onnx,
    _quiet_jit,
    check_contract,
    example_input,
    load_model,
)
from .registry import ReleasedFile

HASH_BLOCK = 1 << 20
SPECTRAL_FRAMES = 64
WAVEFORM_SAMPLES = 44100
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<!--")
# the baseline is an X-UMX: spectral, loaded as one
_LOAD_ROLE = {"xumx-baseline": "xumx"}
_FORMAT_TITLE = {"torchscript": "TorchScript", "onnx": "ONNX", "asteroid": "Asteroid X-UMX"}


@dataclass(frozen=True)
class Verified:
    """A file that passed :func:`verify_file` (or whose hash matches the one recorded when it did)."""

    name: str
    path: Path
    sha256: str
    size: int
    params: int | None
    detail: str  # one line, e.g. "TorchScript, 15,676,652 parameters, I/O contract ok"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file, read in 1 MiB blocks (the released files reach 768 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_html(head: bytes) -> bool:
    """True for the first bytes of a web page (Drive's warning and quota pages, a login wall, an error page)."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(_HTML_STARTS)


def _numel(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors)


def _asteroid_weights(state: dict) -> int:
    """Asteroid's weights: its state_dict minus BatchNorm statistics and the STFT windows."""
    from .asteroid_xumx import _WINDOW_KEYS

    skip = ("running_mean", "running_var", "num_batches_tracked")
    return _numel(
        v for k, v in state.items() if isinstance(v, torch.Tensor) and k not in _WINDOW_KEYS and not k.endswith(skip)
    )


def count_params(path: Path, entry: ReleasedFile) -> int | None:
    """Parameters in the file as its format counts them; None for ONNX without the ``onnx`` package."""
    path = Path(path)
    if entry.format == "torchscript":
        try:
            with _quiet_jit():
                return _numel(torch.jit.load(str(path), map_location="cpu").parameters())
        except Exception as exc:  # TorchScript's loader raises many types
            raise CheckpointError(f"{path}: cannot load as TorchScript ({_first_line(exc)})") from None
    if entry.format == "onnx":
        try:
            import onnx
        except ImportError:
            return None
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception as exc:  # protobuf's decode errors
            raise CheckpointError(f"{path}: cannot read as ONNX ({_first_line(exc)})") from None
        total = 0
        for init in graph.initializer:
            size = 1
            for d in init.dims:
                size *= d
            total += size
        return total
    return _asteroid_weights(_asteroid_package(path)["state_dict"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _asteroid_package(path: Path) -> dict:
    from .asteroid_xumx import _load_failure

    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip, not a torch file
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({_load_failure(exc)})") from None
    if not isinstance(package, dict) or not isinstance(package.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not Asteroid's model serialisation (a dict with a 'state_dict')")
    return package


def _load(path: Path, entry: ReleasedFile) -> tuple[LoadedModel, int | None]:
    """The file as a model under the I/O contract, and its parameter count."""
    role = _LOAD_ROLE.get(entry.role, entry.role)
    if entry.format == "asteroid":
        from ..models.xumx import X_UMX
        from .asteroid_xumx import convert_asteroid_xumx

        package = _asteroid_package(path)
        converted = convert_asteroid_xumx(package, name=str(path))
        model = X_UMX(**converted["config"]["arch"]["args"])
        model.load_state_dict(converted["model"], strict=True)
        info = ModelInfo.from_model(model, converted["config"])
        return LoadedModel.from_module(model, info), _asteroid_weights(package["state_dict"])
    if entry.format == "onnx":
        # load_model tells ONNX by the ".onnx" suffix, which a download's ".part" file lacks
        return _load_onnx(path, role, torch.device("cpu")), count_params(path, entry)
    if not _is_torchscript_archive(path):
        raise CheckpointError(f"{path}: not a complete TorchScript archive (a truncated or damaged download?)")
    loaded = load_model(path, role=role)
    assert loaded.module is not None  # a TorchScript file loads as a module
    return loaded, _numel(loaded.module.parameters())


def verify_file(path: Path, entry: ReleasedFile) -> Verified:
    """Check that ``path`` holds ``entry``'s model: not a web page, readable, the entry's parameter count (±1 %),
    and the I/O contract with finite outputs on a short signal. Raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {entry.name} ({exc.strerror or exc})") from None
    if looks_like_html(head):
        raise CheckpointError(
            f"{path}: an HTML page was saved instead of the model {entry.name} (a download that "
            f"got a web page); delete it and run `danna download {entry.name}`"
        )
    if size == 0:
        raise CheckpointError(
            f"{path}: empty file instead of the model {entry.name}; delete it and run `danna download {entry.name}`"
        )
    loaded, params = _load(path, entry)
    if params is not None and not entry.params_ok(params):
        raise CheckpointError(
            f"{path}: {params:,} parameters, but {entry.name} has {entry.params:,} (±1 %): not the released model"
        )
    want = DOMAIN_OF_ROLE[_LOAD_ROLE.get(entry.role, entry.role)]
    if loaded.info.domain != want:
        raise CheckpointError(f"{path}: a {loaded.info.domain} model, but {entry.name} ({entry.role}) is {want}")
    length = WAVEFORM_SAMPLES if want == "waveform" else SPECTRAL_FRAMES
    x = example_input(loaded.info, length)
    try:
        y = loaded(x)
    except CheckpointError:
        raise
    except Exception as exc:  # the model's own failure on a valid input
        raise CheckpointError(f"{path}: fails on an input {tuple(x.shape)} ({_first_line(exc)})") from None
    check_contract(y, x, loaded.info, str(path))
    if not torch.isfinite(y).all():
        raise CheckpointError(f"{path}: non-finite output (NaN or inf) for a short test signal: damaged weights")
    counted = f"{params:,} parameters" if params is not None else "parameters not counted (no 'onnx' package)"
    return Verified(
        entry.name, path, sha256_of(path), size, params, f"{_FORMAT_TITLE[entry.format]}, {counted}, I/O contract ok"
    )
