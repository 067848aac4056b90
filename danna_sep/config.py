"""Training configs: load JSON, apply ``--set key.path=value`` overrides, validate once into a typed object.

A config has the original system's structure::

    {name, arch{type,args}, dataset{train,valid}{type,args}, optimizer{type,args}, loss{type,args},
     lr_scheduler{type,args}, data_loader{train,valid}, trainer{...}, MWF{...}, device_augment{...}}

    JSON ──read_config──▶ dict ──apply_overrides──▶ dict ──parse_config──▶ TrainConfig ──▶ train/build.py ──▶ objects
                                                            │  1. pydantic: every section, unknown keys, types
                                                            │  2. train.build.resolve: each {type, args} name
                                                            │     looked up once, args checked against the class
                                                            ▼
                                         TrainConfig.classes (kept)   TrainConfig.model_dump() = validate_config()

Everything is checked before anything starts. Every section is a pydantic model that forbids unknown keys; the
``{type, args}`` sections (:class:`TypedSpec`) have their name looked up in :mod:`danna_sep.train.build` (the model
registry, ``torch.optim``, ``torch.optim.lr_scheduler``, the losses, the datasets) and their ``args`` checked
against the signature of the class they construct, so a typo anywhere is caught with the key path and the allowed
names. All problems are reported together in one :class:`~danna_sep.errors.ConfigError`.

:func:`parse_config` returns the typed :class:`TrainConfig`, which the trainer and the builders read; the classes its
names resolved to ride along (:attr:`TrainConfig.classes`), so nothing looks a name up twice. :func:`validate_config`
and :func:`load_config` return its plain ``dict`` (``model_dump()``, defaults filled in), which is what checkpoints
store. Neither changes the config they are given.
"""

from __future__ import annotations

import collections.abc
import copy
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError

from . import SOURCES
from .errors import ConfigError

if TYPE_CHECKING:  # for readers and type checkers (`X as X`: re-exported); at run time: __getattr__ below
    from .train.build import DATASETS as DATASETS
    from .train.build import LOSSES as LOSSES
    from .train.build import Classes
    from .train.build import dataset_class as dataset_class
    from .train.build import loss_class as loss_class
    from .train.build import optimizer_class as optimizer_class
    from .train.build import optimizer_names as optimizer_names
    from .train.build import scheduler_class as scheduler_class
    from .train.build import scheduler_names as scheduler_names

# The {type, args} name lookups had their home here; they live in danna_sep.train.build now, which also builds
# them. Forwarded on first use instead of imported: build imports this module (its types and check_args), and
# `import danna_sep.config` stays at 0.09 s instead of 1.2 s with torch and the trainer
# (`python -X importtime -c "import danna_sep.config"` / `"import danna_sep.train"`, 2-core CPU).
_MOVED_TO_BUILD = (
    "LOSSES",
    "DATASETS",
    "optimizer_names",
    "scheduler_names",
    "optimizer_class",
    "scheduler_class",
    "loss_class",
    "dataset_class",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_BUILD:  # their old home: keep `from danna_sep.config import loss_class` working
        from .train import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# the sections

Source = Literal["drums", "bass", "other", "vocals"]  # danna_sep.SOURCES, in the model output order


class _Section(BaseModel):
    # strict: JSON "1e-4" (a string) is a typo, not a number
    model_config = ConfigDict(extra="forbid", strict=True)


class TypedSpec(_Section):
    """A ``{type, args}`` section: the name of a class (resolved by :mod:`danna_sep.train.build`) and the keyword
    arguments it is constructed with."""

    type: str
    args: dict[str, Any] = Field(default_factory=dict)


class LoaderConfig(_Section):
    """``torch.utils.data.DataLoader`` arguments (sampling and sharding are the trainer's job)."""

    batch_size: int = Field(default=1, ge=1)
    shuffle: bool = False
    drop_last: bool = False
    num_workers: int = Field(default=0, ge=0)
    prefetch_factor: int | None = Field(default=None, ge=1)
    pin_memory: bool = False


class DataLoaders(_Section):
    train: LoaderConfig
    valid: LoaderConfig = Field(default_factory=LoaderConfig)


class Datasets(_Section):
    train: TypedSpec
    valid: TypedSpec

    def split(self, name: Literal["train", "valid"]) -> TypedSpec:
        return self.train if name == "train" else self.valid


class TrainerConfig(_Section):
    epochs: int = Field(ge=1)
    save_dir: str = "saved/"
    log_dir: str = "runs/"
    cum_steps: int = Field(default=1, ge=1, description="gradient accumulation: micro-batches per optimizer step")
    amp_enabled: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    compile: bool = Field(
        default=False,
        description="torch.compile the model for the training steps (the first step compiles, minutes on a CPU; "
        "validation runs eager); falls back to eager with a warning if compiling fails",
    )
    grad_clip: float | None = Field(default=None, gt=0, description="max global gradient norm; null = no clipping")
    patience: int | None = Field(default=None, ge=1, description="early stopping: validations without a lower val loss")
    val_epoch_length: int | None = Field(
        default=None, ge=1, description="validation batches per validation; null = all"
    )
    validate_every: int = Field(default=1, ge=1, description="epochs between validations")
    targets: list[Source] = Field(default_factory=lambda: list(typing.get_args(Source)))
    n_fft: int = Field(default=4096, ge=16)
    hop_length: int = Field(default=1024, ge=1)
    extra_monitor: list[Literal["loss_f", "loss_t"]] = Field(default_factory=list)
    time_domain: bool | None = Field(default=None, description="null = from the model's domain; if given it must match")
    n_saved: int = Field(default=2, ge=1, description="best checkpoints kept (by validation SDR)")
    seed: int = 0
    log_every: int = Field(
        default=10, ge=1, description="steps between host syncs for the progress bar and TensorBoard"
    )
    deterministic: bool = False
    audio_seconds: float = Field(
        default=5.0, ge=0, description="length of the validation excerpt logged as audio; 0 = none"
    )


class MWFConfig(_Section):
    residual_model: bool = False
    softmask: bool = False
    alpha: float = Field(default=1.0, gt=0)
    n_iter: int = Field(default=1, ge=0)


class AugmentConfig(_Section):
    """Per-step device augmentations (pitch shift, speed change) applied to the training batch."""

    enabled: bool = True
    args: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    """A whole training config. Made by :func:`parse_config`, which also fills in what the names decide
    (``arch.type`` canonical, ``trainer.time_domain``, ``trainer.targets`` in the model output order) and keeps the
    classes the names resolved to (:attr:`classes`); ``model_dump()`` is the plain dict checkpoints store."""

    name: str = Field(min_length=1)
    arch: TypedSpec
    dataset: Datasets
    optimizer: TypedSpec
    loss: TypedSpec
    lr_scheduler: TypedSpec | None = None
    data_loader: DataLoaders
    trainer: TrainerConfig
    MWF: MWFConfig = Field(default_factory=MWFConfig)
    device_augment: AugmentConfig = Field(default_factory=AugmentConfig)

    # not part of the config (not dumped): the classes of its {type, args} names, set once by parse_config
    _classes: Classes | None = PrivateAttr(None)

    @property
    def classes(self) -> Classes:
        """The classes of this config's names, looked up once when it was parsed."""
        if self._classes is None:
            raise ConfigError("this config was not checked: make it with danna_sep.config.parse_config")
        return self._classes

    @property
    def time_domain(self) -> bool:
        """Whether the model maps waveforms (True) or spectrograms (False); decided by :func:`parse_config`."""
        return bool(self.trainer.time_domain)


# ---------------------------------------------------------------------------------------------------------------
# error formatting


def _path(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "<config>"


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """Field names of the pydantic section at ``loc`` (the parent of an unknown key)."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        inner = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif inner:
            model = inner[0]
        else:
            return None
    return sorted(model.model_fields)


def _describe(error: Mapping[str, Any], root_model: type[BaseModel], prefix: Sequence[Any] = ()) -> str:
    loc = (*prefix, *error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root_model, error["loc"][:-1])
        tail = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{_path(loc)}: unknown key{tail}"
    if kind == "missing":
        return f"{_path(loc)}: missing required key"
    return f"{_path(loc)}: {error['msg']} (got {error.get('input')!r})"


# ---------------------------------------------------------------------------------------------------------------
# {type, args} checks against constructor signatures


def _annotation_adapter(annotation: Any) -> TypeAdapter | None:
    # Iterable[...] validates lazily in pydantic; a list is what JSON gives anyway
    if typing.get_origin(annotation) in (collections.abc.Iterable, collections.abc.Sequence):
        annotation = list[typing.get_args(annotation) or (Any,)]  # type: ignore[misc]
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # an annotation pydantic cannot express: check the name only
        return None


def check_args(
    cls: Callable, args: Mapping[str, Any], where: str, supplied: Iterable[str] = (), optional: Iterable[str] = ()
) -> list[str]:
    """Problems with ``args`` for ``cls(...)``: unknown names, missing required ones, wrong types.

    ``supplied``: parameters the caller passes itself (not allowed in ``args``); ``optional``: required parameters
    that may be missing from ``args`` because the caller fills them in."""
    problems: list[str] = []
    init = inspect.getattr_static(cls, "__init__") if isinstance(cls, type) else None
    if init in (object.__init__, _module_init()):
        params, takes_kwargs = {}, False  # a class without its own constructor takes no arguments
    else:
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):
            return problems
        params = {n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    supplied = set(supplied)
    allowed = sorted(n for n in params if n not in supplied)
    hints = _type_hints(init if init is not None else cls)
    for key, value in args.items():
        if key not in params or key in supplied:
            if not takes_kwargs or key in supplied:
                choices = f"allowed: {', '.join(allowed)}" if allowed else "it takes no arguments"
                problems.append(f"{where}.{key}: unknown argument of {cls.__name__}; {choices}")
            continue
        adapter = _annotation_adapter(hints[key]) if key in hints else None
        if adapter is None:
            continue
        candidates = [value] + ([tuple(value)] if isinstance(value, list) else [])
        for candidate in candidates:
            try:
                adapter.validate_python(candidate, strict=True)
                break
            except ValidationError:
                continue
            except Exception:  # validator itself unusable for this annotation
                break
        else:
            problems.append(f"{where}.{key}: expected {_type_name(hints[key])}, got {value!r}")
    for name, p in params.items():
        if p.default is p.empty and name not in args and name not in supplied and name not in optional:
            problems.append(f"{where}.{name}: missing required argument of {cls.__name__}")
    return problems


def _type_hints(func: Callable) -> dict[str, Any]:
    """Resolved annotations of ``func``; one that cannot be resolved is left out instead of failing them all."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        pass
    namespace = {**vars(typing), **getattr(sys.modules.get(func.__module__), "__dict__", {})}
    hints = {}
    for name, annotation in getattr(func, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


def _module_init() -> Callable:
    from torch import nn

    return nn.Module.__init__


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else None
    text = text or str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text.replace(" | torch.Tensor", "")  # torch accepts tensors for numbers; a JSON config cannot hold one


# ---------------------------------------------------------------------------------------------------------------
# public API


def parse_config(raw: Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """Validate a config once: the typed :class:`TrainConfig`, its names resolved (:attr:`TrainConfig.classes`).

    ``raw`` is a config dict (or a :class:`TrainConfig`, which is returned as it is when it was parsed already); it
    is not changed, and the result shares no mutable part with it. Raises :class:`ConfigError` with every problem.
    """
    from .train.build import resolve  # not at the top: danna_sep.train imports this module (see _MOVED_TO_BUILD)

    if isinstance(raw, TrainConfig):
        if raw._classes is not None:
            return raw
        raw = raw.model_dump()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"<config>: expected a JSON object, got {type(raw).__name__}")
    try:
        # a deep copy: pydantic keeps the values under `args` (typed Any) as they are, lists included
        cfg = TrainConfig.model_validate(copy.deepcopy(dict(raw)))
    except ValidationError as exc:
        raise ConfigError("invalid config: " + "; ".join(_describe(e, TrainConfig) for e in exc.errors())) from None
    classes, problems = resolve(cfg)  # also sets arch.type and trainer.time_domain of this new object
    tr = cfg.trainer
    if sorted(tr.targets) != sorted(SOURCES):
        problems.append(
            f"trainer.targets: every model outputs all four sources; give each of {', '.join(SOURCES)} once "
            f"(got {tr.targets})"
        )
    else:
        tr.targets = list(typing.get_args(Source))  # the model output order, whatever order the file lists them in
    if problems or classes is None:
        raise ConfigError("invalid config: " + "; ".join(problems))
    cfg._classes = classes
    return cfg


def validate_config(raw: Mapping[str, Any] | TrainConfig) -> dict[str, Any]:
    """Validate a config; returns a new plain dict with defaults filled in (``parse_config(raw).model_dump()``).
    Raises :class:`ConfigError`."""
    return parse_config(raw).model_dump()


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"trainer.epochs=2"`` → (["trainer", "epochs"], 2). The value is JSON if it parses, else a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    key, _, text = item.partition("=")
    path = list(key.strip().split("."))
    if not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {item!r}: empty key in {key!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # bare words are strings: --set name=run1
    return path, value


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with each ``key.path=value`` set (missing dicts on the way are created)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i]) or '<config>'} is not an object")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        last = path[-1]
        if isinstance(node, list):
            node[_index(last, node, ".".join(path))] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(path[:-1])} is not an object")
    return out


def _index(part: str, node: list, where: str) -> int:
    try:
        i = int(part)
        node[i]
        return i
    except (ValueError, IndexError):
        raise ConfigError(f"--set: {where}: not an index of a list of {len(node)} items") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON config file (no validation)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read, override and validate a config file."""
    return validate_config(apply_overrides(read_config(path), overrides))


def configs_dir() -> Path:
    """Folder of the shipped configs (inside the package, so wheels carry them; ``configs/`` at the repository
    root is a link to it)."""
    return Path(__file__).resolve().parent / "configs"
