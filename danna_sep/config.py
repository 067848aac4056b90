"""Training configs: load JSON, apply ``--set key.path=value`` overrides, validate.

A config has the original system's structure::

    {name, arch{type,args}, dataset{train,valid}{type,args}, optimizer{type,args}, loss{type,args},
     lr_scheduler{type,args}, data_loader{train,valid}, trainer{...}, MWF{...}}

Everything is checked before anything starts. The fixed sections (``trainer``, ``data_loader``, ``MWF``) are
pydantic models that forbid unknown keys; the ``{type, args}`` sections check the name against what exists
(the model registry, ``torch.optim``, ``torch.optim.lr_scheduler``, the losses, the datasets) and the ``args``
against the signature of the class they construct, so a typo anywhere is caught with the key path and the
allowed names. All problems are reported together in one :class:`~danna_sep.errors.ConfigError`.

:func:`load_config` returns a plain ``dict`` with the defaults filled in (``validate_config`` output), which is what
checkpoints store and what :func:`danna_sep.train.train` takes.
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
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import SOURCES
from .errors import ConfigError

# the {type, args} names (LOSSES, DATASETS, optimizer_class, …) are looked up in danna_sep.train.build, which also
# builds them: imported there when a config is checked, since it imports torch
_MOVED_TO_BUILD = {
    "LOSSES",
    "DATASETS",
    "optimizer_names",
    "scheduler_names",
    "optimizer_class",
    "scheduler_class",
    "loss_class",
    "dataset_class",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_BUILD:  # their old home: keep `from danna_sep.config import loss_class` working
        from .train import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# fixed sections


class _Section(BaseModel):
    # strict: JSON "1e-4" (a string) is a typo, not a number
    model_config = ConfigDict(extra="forbid", strict=True)


class TypedSpec(_Section):
    type: str
    args: dict[str, Any] = Field(default_factory=dict)


class LoaderConfig(_Section):
    """``torch.utils.data.DataLoader`` arguments (sampling and sharding are the trainer's job)."""

    batch_size: int = Field(1, ge=1)
    shuffle: bool = False
    drop_last: bool = False
    num_workers: int = Field(0, ge=0)
    prefetch_factor: int | None = Field(None, ge=1)
    pin_memory: bool = False


class DataLoaders(_Section):
    train: LoaderConfig
    valid: LoaderConfig = Field(default_factory=LoaderConfig)


class Datasets(_Section):
    train: TypedSpec
    valid: TypedSpec


class TrainerConfig(_Section):
    epochs: int = Field(ge=1)
    save_dir: str = "saved/"
    log_dir: str = "runs/"
    cum_steps: int = Field(1, ge=1, description="gradient accumulation: micro-batches per optimizer step")
    amp_enabled: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm; null = no clipping")
    patience: int | None = Field(None, ge=1, description="early stopping: validations without a lower val loss")
    val_epoch_length: int | None = Field(None, ge=1, description="validation batches per validation; null = all")
    validate_every: int = Field(1, ge=1, description="epochs between validations")
    targets: list[Literal["drums", "bass", "other", "vocals"]] = Field(default_factory=lambda: list(SOURCES))
    n_fft: int = Field(4096, ge=16)
    hop_length: int = Field(1024, ge=1)
    extra_monitor: list[Literal["loss_f", "loss_t"]] = Field(default_factory=list)
    time_domain: bool | None = Field(None, description="null = from the model's domain; if given it must match")
    n_saved: int = Field(2, ge=1, description="best checkpoints kept (by validation SDR)")
    seed: int = 0
    log_every: int = Field(10, ge=1, description="steps between host syncs for the progress bar and TensorBoard")
    deterministic: bool = False
    audio_seconds: float = Field(5.0, ge=0, description="length of the validation excerpt logged as audio; 0 = none")


class MWFConfig(_Section):
    residual_model: bool = False
    softmask: bool = False
    alpha: float = Field(1.0, gt=0)
    n_iter: int = Field(1, ge=0)


class AugmentConfig(_Section):
    """Per-step device augmentations (pitch shift, speed change) applied to the training batch."""

    enabled: bool = True
    args: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
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
    problems = []
    if isinstance(cls, type) and cls.__init__ in (object.__init__, _module_init()):
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
    hints = _type_hints(cls.__init__ if isinstance(cls, type) else cls)
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


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a config dict; returns a new dict with defaults filled in. Raises :class:`ConfigError`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"<config>: expected a JSON object, got {type(raw).__name__}")
    try:
        parsed = TrainConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError("invalid config: " + "; ".join(_describe(e, TrainConfig) for e in exc.errors())) from None
    cfg = parsed.model_dump()
    problems = _check_semantics(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return cfg


def _lookup(resolver: Callable[[str], Any], name: str, problems: list[str]) -> Any:
    try:
        return resolver(name)
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def _check_semantics(cfg: dict[str, Any]) -> list[str]:
    from .models import canonical_name, model_class
    from .train.build import SUPPLIED, augment_class, dataset_class, loss_class, optimizer_class, scheduler_class

    problems: list[str] = []
    tr = cfg["trainer"]

    # model
    model_cls = None
    try:
        cfg["arch"]["type"] = canonical_name(cfg["arch"]["type"])
        model_cls = model_class(cfg["arch"]["type"])
    except ConfigError as exc:
        problems.append(str(exc))
    except ImportError as exc:  # a model module that does not import is a bug, but name it
        problems.append(f"arch.type: model {cfg['arch']['type']!r} is not available ({exc})")
    if model_cls is not None:
        problems += check_args(model_cls, cfg["arch"]["args"], "arch.args")
        domain = getattr(model_cls, "domain", "spectral")
        time_domain = domain == "waveform"
        if tr["time_domain"] is not None and tr["time_domain"] != time_domain:
            problems.append(
                f"trainer.time_domain: {tr['time_domain']} contradicts {cfg['arch']['type']} "
                f"(a {domain} model); remove the key or set it to {str(time_domain).lower()}"
            )
        tr["time_domain"] = time_domain

    # optimizer, scheduler, loss
    opt_cls = _lookup(optimizer_class, cfg["optimizer"]["type"], problems)
    if opt_cls is not None:
        problems += check_args(opt_cls, cfg["optimizer"]["args"], "optimizer.args", SUPPLIED["optimizer"])
    if cfg["lr_scheduler"] is not None:
        sch_cls = _lookup(scheduler_class, cfg["lr_scheduler"]["type"], problems)
        if sch_cls is not None:
            problems += check_args(sch_cls, cfg["lr_scheduler"]["args"], "lr_scheduler.args", SUPPLIED["lr_scheduler"])
    loss_cls = _lookup(loss_class, cfg["loss"]["type"], problems)
    if loss_cls is not None:
        problems += check_args(loss_cls, cfg["loss"]["args"], "loss.args")
        if tr["time_domain"] is not None:
            waveform_loss = loss_cls.__name__ == "L1Loss"
            if waveform_loss != tr["time_domain"]:
                kind = "waveform" if tr["time_domain"] else "spectral"
                fit = "L1Loss" if tr["time_domain"] else "CLoss / CombinationLoss"
                problems.append(f"loss.type: {cfg['loss']['type']} does not fit a {kind} model; use {fit}")
        n_fft = cfg["loss"]["args"].get("n_fft", tr["n_fft"])
        hop = cfg["loss"]["args"].get("hop_length", tr["hop_length"])
        if (n_fft, hop) != (tr["n_fft"], tr["hop_length"]):
            problems.append(
                f"loss.args: n_fft/hop_length {n_fft}/{hop} differ from trainer.n_fft/hop_length "
                f"{tr['n_fft']}/{tr['hop_length']}"
            )

    # datasets
    for split in ("train", "valid"):
        where = f"dataset.{split}"
        ds_cls = _lookup(partial(dataset_class, where=f"{where}.type"), cfg["dataset"][split]["type"], problems)
        if ds_cls is not None:
            # the root may also come from --root or $MUSDB_ROOT: null or absent is fine here
            args = {k: v for k, v in cfg["dataset"][split]["args"].items() if not (k == "root" and v is None)}
            problems += check_args(ds_cls, args, f"{where}.args", optional=("root",))

    if cfg["device_augment"]["enabled"]:
        try:
            augment_cls = augment_class()
        except ImportError as exc:
            problems.append(f"device_augment: not available ({exc})")
        else:
            problems += check_args(augment_cls, cfg["device_augment"]["args"], "device_augment.args")

    # trainer cross-checks
    if sorted(tr["targets"]) != sorted(SOURCES):
        problems.append(
            f"trainer.targets: every model outputs all four sources; give each of {', '.join(SOURCES)} once "
            f"(got {tr['targets']})"
        )
    else:
        tr["targets"] = list(SOURCES)  # the model output order, whatever order the file lists them in
    return problems


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
