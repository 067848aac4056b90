"""The registry of released model files: what exists, where to get it, what it must look like.

The data lives in ``models.json`` beside this module (a lab can point ``$DANNA_MODEL_REGISTRY`` at a file of its
own with the same layout). Each entry names one file as it is saved in a checkpoint folder::

    name      file name in the folder (the original release's names: xumx_mwf.pth, unet_attention.pth, …)
    role      which model it is: xumx, unet, demucs (blend members) or xumx-baseline (fine-tuning start)
    format    torchscript, onnx or asteroid
    size      bytes of a file built like the release (for notices; null = unknown)
    params    parameter count the file must have (±1 %)
    sha256    null where the publisher gives none: the first verified download's hash goes to the lock file
    sources   download URLs, in order of preference
    imported  file name of its import into danna-sep's own models (null: not importable)

``sets`` name groups of files: ``default`` (what the default blend runs, importable), ``original`` (the files
danna-sep 1.0.2 downloads) and ``all``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

REGISTRY_ENV = "DANNA_MODEL_REGISTRY"
ROLES = ("xumx", "unet", "demucs", "xumx-baseline")
FORMATS = ("torchscript", "onnx", "asteroid")
PARAMS_TOLERANCE = 0.01  # relative: a file must have its entry's parameter count within 1 %


@dataclass(frozen=True)
class ReleasedFile:
    """One downloadable model file (see the module docstring for the fields)."""

    name: str
    role: str
    format: str
    title: str
    size: int | None
    params: int
    sha256: str | None = None
    sources: tuple[str, ...] = ()
    imported: str | None = None

    def size_text(self, size: int | None = None) -> str:
        """``"63.1 MB"`` (decimal megabytes, as download tools show them), or ``"size unknown"``."""
        size = self.size if size is None else size
        return "size unknown" if size is None else f"{size / 1e6:.1f} MB"

    def params_ok(self, count: int) -> bool:
        return abs(count - self.params) <= PARAMS_TOLERANCE * self.params


@dataclass(frozen=True)
class Registry:
    """All :class:`ReleasedFile` entries and the named sets of them."""

    files: tuple[ReleasedFile, ...]
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    path: Path | None = None

    def get(self, name: str) -> ReleasedFile:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise ConfigError(f"unknown model file {name!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [e.name for e in self.files]

    def for_role(self, role: str) -> list[ReleasedFile]:
        """The files of ``role`` in registry order (the order of preference for downloads)."""
        return [e for e in self.files if e.role == role]

    def imported_names(self, role: str) -> list[str]:
        return [e.imported for e in self.for_role(role) if e.imported]

    def resolve(self, names: Iterable[str]) -> list[ReleasedFile]:
        """Entries for file names, roles (their ``default``-set file, else their first) or set names, in the given
        order without repeats; nothing given means the ``default`` set."""
        names = list(names) or ["default"]
        out: dict[str, ReleasedFile] = {}
        for name in names:
            if name in self.sets:
                picked = [self.get(n) for n in self.sets[name]]
            elif name in ROLES:
                picked = [self.for_role_default(name)]
            else:
                try:
                    picked = [self.get(name)]
                except ConfigError:
                    raise ConfigError(
                        f"unknown model {name!r}: give a file name ({', '.join(self.names())}), a role "
                        f"({', '.join(ROLES)}) or a set ({', '.join(self.sets)})"
                    ) from None
            for entry in picked:
                out.setdefault(entry.name, entry)
        return list(out.values())

    def for_role_default(self, role: str) -> ReleasedFile:
        """The file of ``role`` that the ``default`` set holds, else the role's first file."""
        candidates = self.for_role(role)
        if not candidates:
            raise ConfigError(f"no released file for the model {role!r} in {self.path or 'the registry'}")
        default = set(self.sets.get("default", ()))
        return next((e for e in candidates if e.name in default), candidates[0])


def _entry(raw: object, where: str) -> ReleasedFile:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object, got {type(raw).__name__}")
    allowed = set(ReleasedFile.__dataclass_fields__)
    unknown = sorted(set(raw) - allowed)
    missing = sorted({"name", "role", "format", "title", "params"} - set(raw))
    if unknown or missing:
        raise ConfigError(
            f"{where}: "
            + "; ".join(
                ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
            )
        )
    if raw["role"] not in ROLES:
        raise ConfigError(f"{where}.role: {raw['role']!r} is not one of {', '.join(ROLES)}")
    if raw["format"] not in FORMATS:
        raise ConfigError(f"{where}.format: {raw['format']!r} is not one of {', '.join(FORMATS)}")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise ConfigError(f"{where}.sha256: expected 64 hex digits or null, got {sha!r}")
    try:
        return ReleasedFile(
            name=str(raw["name"]),
            role=raw["role"],
            format=raw["format"],
            title=str(raw["title"]),
            size=None if raw.get("size") is None else int(raw["size"]),
            params=int(raw["params"]),
            sha256=sha.lower() if sha else None,
            sources=tuple(str(s) for s in raw.get("sources") or ()),
            imported=raw.get("imported") or None,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_registry(path: os.PathLike | None = None) -> Registry:
    """The registry at ``path``, else ``$DANNA_MODEL_REGISTRY``, else the package's ``models.json``."""
    path = Path(path or os.environ.get(REGISTRY_ENV) or Path(__file__).with_name("models.json")).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model registry {path} does not exist (from ${REGISTRY_ENV}?)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model registry {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ConfigError(f"model registry {path}: expected an object with a 'files' list")
    files = tuple(_entry(raw, f"{path}: files[{i}]") for i, raw in enumerate(data["files"]))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ConfigError(f"model registry {path}: file names repeat: {names}")
    sets: dict[str, tuple[str, ...]] = {}
    for key, members in (data.get("sets") or {}).items():
        unknown = [m for m in members if m not in names]
        if unknown:
            raise ConfigError(f"model registry {path}: set {key!r} names unknown file(s) {unknown}")
        sets[key] = tuple(members)
    return Registry(files, sets, path)


def released_names(role: str, registry: Registry | None = None) -> tuple[str, ...]:
    """File names of ``role``'s released files, in registry order."""
    return tuple(e.name for e in (registry or load_registry()).for_role(role))


def blend_roles() -> Sequence[str]:
    """The roles that can be members of a blend (``xumx-baseline`` is a training start, not a blend member)."""
    return ROLES[:3]
