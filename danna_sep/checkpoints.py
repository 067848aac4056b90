"""Everything that touches model files on disk: writing them atomically, reading checkpoints and state dicts,
matching a state dict to a model (one report, one error text), the released file names and finding the models
of a checkpoint folder.

Nothing here builds or runs a model for inference (:mod:`danna_sep.inference`) or exports one
(:mod:`danna_sep.export`).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import PathLike
from .defaults import DEFAULT_CHECKPOINTS
from .errors import CheckpointError
from .release.registry import blend_roles, released_names

if TYPE_CHECKING:  # torch is imported where it is used: the command line reads file names without it
    from torch import Tensor, nn

# role → the released Danna-Sep file names of that model (from the registry, danna_sep/release/models.json)
MODEL_FILES: dict[str, tuple[str, ...]] = {role: released_names(role) for role in blend_roles()}


# ----------------------------------------------------------------------------------------------------- writing


def atomic_write(path: PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes into the open file) to ``path`` atomically: a temporary
    file in the same folder, fsynced, renamed onto ``path``, then the folder fsynced so that the rename itself
    survives a power cut. A crash or an exception leaves ``path`` as it was and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            # mode 0o666: the umask decides, as for any new file (mkstemp would leave it readable by us only)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh))


# ----------------------------------------------------------------------------------------------------- reading


def load_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of ``path`` on the CPU without running pickled code; a missing or unreadable file raises
    :class:`CheckpointError` naming ``what`` it should have been."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: cannot read as a torch {what} ({type(exc).__name__}: {detail})") from None


def read_checkpoint(path: PathLike) -> dict:
    """A training checkpoint ``{"model": state_dict, "config": {...}, ...}`` (read without running pickled code)."""
    path = Path(path).expanduser()
    obj = load_torch_file(path, "checkpoint")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{path}: not a training checkpoint (expected a dict with a 'model' state_dict)")
    return dict(obj)


@dataclass
class WeightsReport:
    """How a weights file matched a model."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "key: file (shape) vs model (shape)"
    arch: dict | None = None  # the architecture the file says it holds (our checkpoints and imports carry one)

    def arch_differences(self, arch: Mapping[str, Any]) -> list[str]:
        """The architecture arguments whose value in ``arch`` differs from the file's own (shapes may still match:
        e.g. ``legacy``, which the imported released weights need to compute what they were trained for)."""
        from .models import canonical_name, model_class

        if not self.arch or canonical_name(self.arch.get("type", "")) != canonical_name(arch.get("type", "")):
            return []
        defaults = {
            name: p.default
            for name, p in inspect.signature(model_class(arch["type"])).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        theirs = {**defaults, **(self.arch.get("args") or {})}
        ours = {**defaults, **(arch.get("args") or {})}
        return [
            f"{k}={theirs[k]!r} (this config: {ours[k]!r})"
            for k in sorted(theirs)
            if k in ours and ours[k] != theirs[k] and not isinstance(theirs[k], (dict, list))
        ]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        for label, keys in (
            ("missing in the file", self.missing),
            ("not in the model", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        return "; ".join(parts)


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """The model state_dict in a weights file: this project's checkpoints, the converted X-UMX weights
    (``{"model": state_dict, "config": …}``) or a bare state_dict. No pickled code is run."""
    return read_weights(path)[0]


def read_weights(path: PathLike) -> tuple[dict[str, Tensor], dict | None]:
    """:func:`read_state_dict` and the ``config["arch"]`` the file carries (None where it has none)."""
    path = Path(path).expanduser()
    obj = load_torch_file(path, "weights file")
    arch = None
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        arch = obj["config"].get("arch") if isinstance(obj["config"].get("arch"), Mapping) else None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    import torch

    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict nor a checkpoint with a 'model' entry")
    return strip_wrapper_prefixes(obj), arch


def strip_wrapper_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without the key prefixes that DataParallel / DDP (``module.``) and torch.compile (``_orig_mod.``)
    add."""
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}


def match_state_dict(model: nn.Module, state: Mapping[str, Tensor], arch: dict | None = None) -> WeightsReport:
    """How ``state`` matches ``model``'s own state dict: the keys that load, and those missing, unexpected or of
    another shape (nothing is loaded)."""
    own = model.state_dict()
    return WeightsReport(
        loaded=[k for k, v in state.items() if k in own and own[k].shape == v.shape],
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        mismatched=[
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and own[k].shape != v.shape
        ],
        arch=arch,
    )


def load_weights(model: nn.Module, path: PathLike, partial: bool = False) -> WeightsReport:
    """Load weights into ``model``; strict unless ``partial``.

    Strict: any missing, unexpected or mis-shaped key raises :class:`CheckpointError` listing them and nothing
    is loaded. Partial: the matching tensors are loaded and the report says what was skipped.
    """
    state, arch = read_weights(path)
    report = match_state_dict(model, state, arch)
    if not report.complete and not partial:
        raise CheckpointError(
            f"{path} does not match {type(model).__name__}: {report.describe()} "
            f"(use partial loading to load the matching tensors only)"
        )
    import torch

    own = model.state_dict()
    with torch.no_grad():
        for k in report.loaded:
            own[k].copy_(state[k])
    return report


# ------------------------------------------------------------------------------------------- checkpoint folders


def checkpoint_dir(directory: PathLike | None = None) -> tuple[Path, str]:
    """The checkpoint folder and where it came from: ``directory``, else ``$DANNA_CHECKPOINTS``, else
    ``~/danna-sep-checkpoints``."""
    if directory is not None:
        return Path(directory).expanduser(), "--checkpoints"
    env = os.environ.get("DANNA_CHECKPOINTS")
    if env:
        return Path(env).expanduser(), "$DANNA_CHECKPOINTS"
    return Path(DEFAULT_CHECKPOINTS).expanduser(), "the default folder"


def model_search_order(role: str, *, imported: bool = True) -> tuple[str, ...]:
    """File names looked for in a checkpoint folder for ``role``, the first present wins.

    First the imports of the released weights into our own models (``imported``; ``danna import-released``),
    then the released files themselves: for X-UMX ``xumx.onnx`` before ``xumx_mwf.pth`` where onnxruntime is
    installed, as danna-sep 1.0.2 ran it.
    """
    import importlib.util

    from .release.registry import load_registry

    registry = load_registry()
    released = list(MODEL_FILES[role])
    if importlib.util.find_spec("onnxruntime") is not None:
        released.sort(key=lambda name: not name.endswith(".onnx"))  # stable: otherwise registry order
    return tuple((registry.imported_names(role) if imported else []) + released)


def find_model_files(directory: PathLike | None, roles: Sequence[str], *, imported: bool = True) -> dict[str, Path]:
    """role → model file in the checkpoint folder (:func:`checkpoint_dir`), the first of
    :func:`model_search_order` present.

    Raises :class:`CheckpointError` naming every missing file, the folder searched and how to get the files.
    """
    folder, origin = checkpoint_dir(directory)
    found, missing = {}, []
    for role in roles:
        path = next((folder / n for n in model_search_order(role, imported=imported) if (folder / n).is_file()), None)
        if path is None:
            missing.append(role)
        else:
            found[role] = path
    if missing:
        names = "; ".join(f"{r}: {' or '.join(MODEL_FILES[r])}" for r in missing)
        where = {
            "--checkpoints": "given by --checkpoints",
            "$DANNA_CHECKPOINTS": "from $DANNA_CHECKPOINTS",
            "the default folder": "the default; set $DANNA_CHECKPOINTS or pass --checkpoints DIR for another",
        }[origin]
        state = "" if folder.is_dir() else ", which does not exist"
        first = MODEL_FILES[missing[0]][0]
        get = " ".join(dict.fromkeys(missing))
        raise CheckpointError(
            f"missing model file(s) in {folder} ({where}{state}): {names}. Get the released Danna-Sep models with "
            f"`danna download {get} --dir {folder}` (`danna models` lists them), or export your own from training "
            f"checkpoints with `danna export CHECKPOINT {folder / first}`; --fast or --bag FILE leave models out"
        )
    return found


def load_folder_models(
    directory: PathLike | None, roles: Sequence[str], device: Any = "cpu", *, imported: bool = True
) -> dict[str, Any]:
    """role → :class:`~danna_sep.inference.LoadedModel` for the models of a checkpoint folder
    (:func:`find_model_files`; raises :class:`CheckpointError` naming what is missing). ``device``: a name
    (``cpu``, ``cuda``, ``mps``, ``auto``) or a ``torch.device``."""
    from .inference import load_model
    from .runtime import resolve_device

    files = find_model_files(directory, roles, imported=imported)
    dev = resolve_device(device)
    return {role: load_model(path, role=role, device=dev) for role, path in files.items()}
