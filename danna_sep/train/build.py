"""Config names → objects: the one place where a config's ``{type, args}`` sections and its loader settings become
the model, loss, device augmentation, optimizer, scheduler, datasets, sampler and loaders of a run.

The name → class lookups here are also what :mod:`danna_sep.config` checks a config against, so a name that
validates is a name that builds.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import PathLike
from ..errors import ConfigError, DatasetError
from .sampler import ShardedBatchSampler

# ---------------------------------------------------------------------------------------------------------------
# names the {type, args} sections may use (models: danna_sep.models.REGISTRY)

LOSSES: dict[str, str] = {
    # the original configs' names first
    "CLoss": "danna_sep.losses:CombinationLoss",
    "CombinationLoss": "danna_sep.losses:CombinationLoss",
    "L1Loss": "danna_sep.losses:L1Loss",
}
DATASETS: dict[str, str] = {
    "FastMUSDB": "danna_sep.data.musdb:MUSDBDataset",  # the original configs' name
    "MUSDBDataset": "danna_sep.data.musdb:MUSDBDataset",
}
DEVICE_AUGMENT = "danna_sep.data.augment:DeviceAugment"
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
    import torch.optim as optim

    return sorted(
        n
        for n, c in vars(optim).items()
        if isinstance(c, type) and issubclass(c, optim.Optimizer) and c is not optim.Optimizer
    )


def scheduler_names() -> list[str]:
    from torch.optim import lr_scheduler

    return sorted(
        n
        for n, c in vars(lr_scheduler).items()
        if isinstance(c, type)
        and n not in _UNSUPPORTED_SCHEDULERS
        and (issubclass(c, lr_scheduler.LRScheduler) or n == "ReduceLROnPlateau")
    )


def _import(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def optimizer_class(name: str) -> type:
    import torch.optim as optim

    if name not in optimizer_names():
        raise ConfigError(f"optimizer.type: unknown optimizer {name!r}; allowed: {', '.join(optimizer_names())}")
    return getattr(optim, name)


def scheduler_class(name: str) -> type:
    from torch.optim import lr_scheduler

    if name not in scheduler_names():
        raise ConfigError(f"lr_scheduler.type: unknown scheduler {name!r}; allowed: {', '.join(scheduler_names())}")
    return getattr(lr_scheduler, name)


def loss_class(name: str) -> type:
    if name not in LOSSES:
        raise ConfigError(f"loss.type: unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return _import(LOSSES[name])


def dataset_class(name: str, where: str = "dataset.train.type") -> type:
    if name not in DATASETS:
        raise ConfigError(f"{where}: unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return _import(DATASETS[name])


def augment_class() -> type:
    """The class of ``device_augment`` (one for now; the config section has no ``type``)."""
    return _import(DEVICE_AUGMENT)


# ---------------------------------------------------------------------------------------------------------------
# model side


@dataclass
class Parts:
    """What one process computes with: the model, the STFT it sees, its loss and the device augmentation."""

    model: nn.Module
    stft: nn.Module
    criterion: nn.Module
    augment: nn.Module | None


def build_parts(cfg: Mapping[str, Any], device: torch.device) -> Parts:
    """Model, STFT, loss and device augmentation of a validated config, on ``device``."""
    from ..models import build_model
    from ..spectral import STFT

    tr = cfg["trainer"]
    torch.manual_seed(tr["seed"])  # identical initial weights on every rank and every run
    model = build_model(cfg["arch"]).to(device)
    stft = STFT(tr["n_fft"], tr["hop_length"]).to(device)
    criterion = loss_class(cfg["loss"]["type"])(**cfg["loss"]["args"]).to(device)
    return Parts(model, stft, criterion, build_device_augment(cfg, device))


def build_device_augment(cfg: Mapping[str, Any], device: torch.device) -> nn.Module | None:
    """The per-step batched augmentations (pitch, speed) of ``device_augment``, or None when disabled."""
    spec = cfg.get("device_augment") or {}
    if not spec.get("enabled", True):
        return None
    return augment_class()(**spec.get("args", {})).to(device)


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, ReduceLROnPlateau (not an LRScheduler subclass) or None


def build_optimization(cfg: Mapping[str, Any], module: nn.Module) -> Optimization:
    """``optimizer`` over ``module``'s parameters and ``lr_scheduler`` (None when the config has none)."""
    optimizer = optimizer_class(cfg["optimizer"]["type"])(module.parameters(), **cfg["optimizer"]["args"])
    sch = cfg["lr_scheduler"]
    scheduler = scheduler_class(sch["type"])(optimizer, **sch["args"]) if sch is not None else None
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


def build_dataset(cfg: Mapping[str, Any], split: str, root: PathLike | None = None) -> Dataset:
    """Construct ``dataset.<split>`` of a validated config, with the root resolved as :func:`dataset_root`."""
    spec = cfg["dataset"][split]
    cls = dataset_class(spec["type"], f"dataset.{split}.type")
    args = dict(spec["args"])
    path, _ = dataset_root(args, root, f"dataset.{split}")
    args["root"] = str(path)
    if "seed" not in args and "seed" in inspect.signature(cls).parameters:
        args["seed"] = cfg["trainer"]["seed"]  # one seed for the whole run unless the dataset has its own
    return cls(**args)


def build_sampler(cfg: Mapping[str, Any], size: int, rank: int, world: int) -> ShardedBatchSampler:
    """The training order of ``data_loader.train`` over ``size`` items, this rank's share."""
    lc = cfg["data_loader"]["train"]
    return ShardedBatchSampler(
        size, lc["batch_size"], lc["shuffle"], lc["drop_last"], cfg["trainer"]["seed"], rank, world
    )


def build_loader(dataset: Dataset, lc: Mapping[str, Any], device: torch.device, seed: int, **kwargs: Any) -> DataLoader:
    """A DataLoader with the ``data_loader.<split>`` settings ``lc``; ``kwargs``: its sampler or batch sampler."""
    workers = lc["num_workers"]
    extra = {"prefetch_factor": lc["prefetch_factor"]} if workers > 0 and lc["prefetch_factor"] else {}
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=lc["pin_memory"] and device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # never draws from the global RNG
        **extra,
        **kwargs,
    )
