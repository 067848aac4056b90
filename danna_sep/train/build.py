"""Config names → objects: the one place where a config's ``{type, args}`` sections and its loader settings become
the model, loss, device augmentation, optimizer, scheduler, datasets, sampler and loaders of a run.

::

    TrainConfig ──resolve (once, while parse_config checks it)──▶ Classes ──kept as cfg.classes
         │                                                                     │
         └──────────────── build_parts / build_optimization / build_dataset ◀─┘ ──▶ model, loss, optimizer, …

:func:`resolve` is both the check and the lookup: each name is looked up once, its ``args`` are checked against the
constructor it will be given to, and the classes stay with the config, so a name that validates is the class that
builds and no builder looks a name up again.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, Dataset

from .. import PathLike
from ..config import LoaderConfig, TrainConfig, check_args, parse_config
from ..data.augment import DeviceAugment
from ..data.musdb import MUSDBDataset
from ..errors import ConfigError, DatasetError
from ..losses import CombinationLoss, L1Loss
from ..models import canonical_name, model_class
from ..spectral import STFT
from .sampler import ShardedBatchSampler

# the builders take the typed config; a dict (their argument before the config was typed) is checked here once
Config = TrainConfig | Mapping[str, Any]

# ---------------------------------------------------------------------------------------------------------------
# names the {type, args} sections may use (models: danna_sep.models.REGISTRY)

LOSSES: dict[str, type[nn.Module]] = {
    # the original configs' names first
    "CLoss": CombinationLoss,
    "CombinationLoss": CombinationLoss,
    "L1Loss": L1Loss,
}
DATASETS: dict[str, type[Dataset]] = {
    "FastMUSDB": MUSDBDataset,  # the original configs' name
    "MUSDBDataset": MUSDBDataset,
}
# schedulers that take other schedulers or Python callables cannot be written in JSON
_UNSUPPORTED_SCHEDULERS = {
    "LRScheduler",
    "_LRScheduler",
    "ChainedScheduler",
    "SequentialLR",
    "LambdaLR",
    "MultiplicativeLR",
}
# constructor parameters the builders below supply themselves (not allowed in a config's args)
SUPPLIED: dict[str, set[str]] = {
    "optimizer": {"params"},
    "lr_scheduler": {"optimizer"},
    "dataset": set(),
    "arch": set(),
    "loss": set(),
}


def optimizer_names() -> list[str]:
    return sorted(
        n
        for n, c in vars(torch.optim).items()
        if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
    )


def scheduler_names() -> list[str]:
    return sorted(
        n
        for n, c in vars(lr_scheduler).items()
        if isinstance(c, type)
        and n not in _UNSUPPORTED_SCHEDULERS
        and (issubclass(c, lr_scheduler.LRScheduler) or n == "ReduceLROnPlateau")
    )


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    if name not in optimizer_names():
        raise ConfigError(f"optimizer.type: unknown optimizer {name!r}; allowed: {', '.join(optimizer_names())}")
    cls: type[torch.optim.Optimizer] = getattr(torch.optim, name)
    return cls


def scheduler_class(name: str) -> type:
    """An ``LRScheduler`` subclass or ``ReduceLROnPlateau`` (which is not one)."""
    if name not in scheduler_names():
        raise ConfigError(f"lr_scheduler.type: unknown scheduler {name!r}; allowed: {', '.join(scheduler_names())}")
    cls: type = getattr(lr_scheduler, name)
    return cls


def loss_class(name: str) -> type[nn.Module]:
    if name not in LOSSES:
        raise ConfigError(f"loss.type: unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]


def dataset_class(name: str, where: str = "dataset.train.type") -> type[Dataset]:
    if name not in DATASETS:
        raise ConfigError(f"{where}: unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def augment_class() -> type[nn.Module]:
    """The class of ``device_augment`` (one for now; the config section has no ``type``)."""
    return DeviceAugment


# ---------------------------------------------------------------------------------------------------------------
# names → classes, once


@dataclass(frozen=True)
class Classes:
    """What the names of a config resolved to (by :func:`resolve`, once); a checked config keeps them as
    ``cfg.classes``."""

    model: type[nn.Module]
    optimizer: type[torch.optim.Optimizer]
    scheduler: type | None  # an LRScheduler subclass or ReduceLROnPlateau; None: no lr_scheduler section
    loss: type[nn.Module]
    train_set: type[Dataset]
    valid_set: type[Dataset]
    augment: type[nn.Module] | None  # None: device_augment disabled

    def dataset(self, split: Literal["train", "valid"]) -> type[Dataset]:
        return self.train_set if split == "train" else self.valid_set


_T = TypeVar("_T")


def _lookup(find: Callable[[], _T], problems: list[str]) -> _T | None:
    try:
        return find()
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def resolve(cfg: TrainConfig) -> tuple[Classes | None, list[str]]:
    """Look up every name of a structurally valid ``cfg`` and check each ``args`` against the constructor it will
    be given to: (the classes, None when a name is unknown; every problem found, each with its key path).

    Also writes what the names decide into ``cfg``: ``arch.type`` becomes the registry name and ``trainer.time_domain``
    the model's domain. It is meant for the new object :func:`danna_sep.config.parse_config` just made (which calls
    it), never a config someone else holds.
    """
    problems: list[str] = []
    tr = cfg.trainer

    # model
    model_cls = None
    try:
        cfg.arch.type = canonical_name(cfg.arch.type)
        model_cls = model_class(cfg.arch.type)
    except ConfigError as exc:
        problems.append(str(exc))
    if model_cls is not None:
        problems += check_args(model_cls, cfg.arch.args, "arch.args")
        domain = getattr(model_cls, "domain", "spectral")
        time_domain = domain == "waveform"
        if tr.time_domain is not None and tr.time_domain != time_domain:
            problems.append(
                f"trainer.time_domain: {tr.time_domain} contradicts {cfg.arch.type} "
                f"(a {domain} model); remove the key or set it to {str(time_domain).lower()}"
            )
        tr.time_domain = time_domain

    # optimizer, scheduler, loss
    opt_cls = _lookup(partial(optimizer_class, cfg.optimizer.type), problems)
    if opt_cls is not None:
        problems += check_args(opt_cls, cfg.optimizer.args, "optimizer.args", SUPPLIED["optimizer"])
    sch_cls = None
    sch = cfg.lr_scheduler
    if sch is not None:
        sch_cls = _lookup(partial(scheduler_class, sch.type), problems)
        if sch_cls is not None:
            problems += check_args(sch_cls, sch.args, "lr_scheduler.args", SUPPLIED["lr_scheduler"])
    loss_cls = _lookup(partial(loss_class, cfg.loss.type), problems)
    if loss_cls is not None:
        problems += check_args(loss_cls, cfg.loss.args, "loss.args")
        if tr.time_domain is not None:
            waveform_loss = loss_cls.__name__ == "L1Loss"
            if waveform_loss != tr.time_domain:
                kind = "waveform" if tr.time_domain else "spectral"
                fit = "L1Loss" if tr.time_domain else "CLoss / CombinationLoss"
                problems.append(f"loss.type: {cfg.loss.type} does not fit a {kind} model; use {fit}")
        n_fft = cfg.loss.args.get("n_fft", tr.n_fft)
        hop = cfg.loss.args.get("hop_length", tr.hop_length)
        if (n_fft, hop) != (tr.n_fft, tr.hop_length):
            problems.append(
                f"loss.args: n_fft/hop_length {n_fft}/{hop} differ from trainer.n_fft/hop_length "
                f"{tr.n_fft}/{tr.hop_length}"
            )

    # datasets
    found: dict[str, type[Dataset] | None] = {}
    for split in ("train", "valid"):
        where = f"dataset.{split}"
        spec = cfg.dataset.split(split)
        found[split] = ds_cls = _lookup(partial(dataset_class, spec.type, f"{where}.type"), problems)
        if ds_cls is not None:
            # the root may also come from --root or $MUSDB_ROOT: null or absent is fine here
            args = {k: v for k, v in spec.args.items() if not (k == "root" and v is None)}
            problems += check_args(ds_cls, args, f"{where}.args", optional=("root",))

    augment_cls = None
    if cfg.device_augment.enabled:
        augment_cls = augment_class()
        problems += check_args(augment_cls, cfg.device_augment.args, "device_augment.args")

    train_cls, valid_cls = found["train"], found["valid"]
    if model_cls is None or opt_cls is None or loss_cls is None or train_cls is None or valid_cls is None:
        return None, problems
    if sch is not None and sch_cls is None:
        return None, problems
    return Classes(model_cls, opt_cls, sch_cls, loss_cls, train_cls, valid_cls, augment_cls), problems


# ---------------------------------------------------------------------------------------------------------------
# model side


@dataclass
class Parts:
    """What one process computes with: the model, the STFT it sees, its loss and the device augmentation."""

    model: nn.Module
    stft: STFT
    criterion: nn.Module
    augment: nn.Module | None


def build_parts(config: Config, device: torch.device) -> Parts:
    """Model, STFT, loss and device augmentation of a config, on ``device``."""
    cfg = parse_config(config)
    tr = cfg.trainer
    torch.manual_seed(tr.seed)  # identical initial weights on every rank and every run
    try:
        model = cfg.classes.model(**cfg.arch.args).to(device)
    except TypeError as exc:  # what danna_sep.models.build_model says for a bad constructor argument
        raise ConfigError(f"arch.args for {cfg.arch.type}: {exc}") from None
    stft = STFT(tr.n_fft, tr.hop_length).to(device)
    criterion = cfg.classes.loss(**cfg.loss.args).to(device)
    return Parts(model, stft, criterion, build_device_augment(cfg, device))


def build_device_augment(config: Config, device: torch.device) -> nn.Module | None:
    """The per-step batched augmentations (pitch, speed) of ``device_augment``, or None when disabled."""
    cfg = parse_config(config)
    augment = cfg.classes.augment
    if augment is None:
        return None
    return augment(**cfg.device_augment.args).to(device)


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, ReduceLROnPlateau (not an LRScheduler subclass) or None


def build_optimization(config: Config, module: nn.Module) -> Optimization:
    """``optimizer`` over ``module``'s parameters and ``lr_scheduler`` (None when the config has none)."""
    cfg = parse_config(config)
    optimizer = cfg.classes.optimizer(module.parameters(), **cfg.optimizer.args)
    sch, sch_cls = cfg.lr_scheduler, cfg.classes.scheduler
    scheduler = sch_cls(optimizer, **sch.args) if sch is not None and sch_cls is not None else None
    return Optimization(optimizer, scheduler)


# ---------------------------------------------------------------------------------------------------------------
# data side


def dataset_root(spec_args: Mapping[str, Any], root: PathLike | None, where: str) -> tuple[Path, str]:
    """The dataset folder: ``root`` (``--root``) > ``$MUSDB_ROOT`` > the config's ``args.root``."""
    if root is not None:
        value, source = root, "--root"
    elif os.environ.get("MUSDB_ROOT"):
        value, source = os.environ["MUSDB_ROOT"], "$MUSDB_ROOT"
    elif spec_args.get("root"):
        value, source = spec_args["root"], f"{where}.args.root"
    else:
        raise DatasetError(f"no dataset folder: pass --root DIR, set $MUSDB_ROOT or set {where}.args.root")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {path} (from {source}) does not exist; point --root, $MUSDB_ROOT or {where}.args.root "
            f"at a MUSDB18-HQ-layout folder (e.g. one made by `danna make-dataset`)"
        )
    return path, source


def build_dataset(config: Config, split: Literal["train", "valid"], root: PathLike | None = None) -> Dataset:
    """Construct ``dataset.<split>`` of a config, with the root resolved as :func:`dataset_root`."""
    cfg = parse_config(config)
    cls = cfg.classes.dataset(split)
    args = dict(cfg.dataset.split(split).args)
    path, _ = dataset_root(args, root, f"dataset.{split}")
    args["root"] = str(path)
    if "seed" not in args and "seed" in inspect.signature(cls).parameters:
        args["seed"] = cfg.trainer.seed  # one seed for the whole run unless the dataset has its own
    return cls(**args)


def build_sampler(config: Config, size: int, rank: int, world: int) -> ShardedBatchSampler:
    """The training order of ``data_loader.train`` over ``size`` items, this rank's share."""
    cfg = parse_config(config)
    lc = cfg.data_loader.train
    return ShardedBatchSampler(size, lc.batch_size, lc.shuffle, lc.drop_last, cfg.trainer.seed, rank, world)


def build_loader(
    dataset: Dataset, lc: LoaderConfig | Mapping[str, Any], device: torch.device, seed: int, **kwargs: Any
) -> DataLoader:
    """A DataLoader with the ``data_loader.<split>`` settings ``lc``; ``kwargs``: its sampler or batch sampler."""
    if not isinstance(lc, LoaderConfig):
        lc = LoaderConfig.model_validate(dict(lc))
    workers = lc.num_workers
    return DataLoader(
        dataset,
        num_workers=workers,
        # None is DataLoader's default (and the only value it takes without workers)
        prefetch_factor=lc.prefetch_factor if workers > 0 and lc.prefetch_factor else None,
        pin_memory=lc.pin_memory and device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # never draws from the global RNG
        **kwargs,
    )
