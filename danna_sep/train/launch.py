"""Where a training run starts: one process, DDP workers spawned here (``--device_ids``), or one rank of a
``torchrun`` group; :func:`train` picks one of them, builds the datasets and hands over to :class:`.Trainer`."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from .. import PathLike, errors
from ..config import TrainConfig, apply_overrides, configs_dir, parse_config, read_config
from ..errors import ConfigError, DannaError
from ..runtime import resolve_device as resolve_any_device
from .build import build_dataset, dataset_root
from .trainer import Trainer, TrainResult


def resolve_device(device: int | str | torch.device | None = None) -> torch.device:
    """``-d``/``--device`` of training, on top of :func:`danna_sep.runtime.resolve_device` (which takes names):
    None → ``cuda:0`` if available else CPU; an int → that CUDA device; a string → as ``danna-sep --device``."""
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        if not torch.cuda.is_available():
            return torch.device("cpu")  # the seed's `-d 0` default on a machine without GPU
        index = int(device)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {index}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    return resolve_any_device(str(device))


def _as_config(config: PathLike | Mapping[str, Any] | TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """The one conversion of :func:`train`'s ``config`` (a path, a dict or a typed config) into a checked one."""
    if isinstance(config, TrainConfig):
        return parse_config(apply_overrides(config.model_dump(), overrides)) if overrides else parse_config(config)
    raw = config if isinstance(config, Mapping) else read_config(config)
    return parse_config(apply_overrides(raw, overrides))


@dataclass
class _RunOptions:
    """What every process of a run needs besides the config and its device (pickled to spawned workers)."""

    root: PathLike | None
    checkpoint: PathLike | None
    weights: PathLike | None
    partial_weights: bool
    workdir: PathLike | None
    max_steps: int | None
    verbose: bool
    progress: bool
    tensorboard: bool
    train_set: Dataset | None
    valid_set: Dataset | None


def train(
    config: PathLike | Mapping[str, Any] | TrainConfig,
    *,
    root: PathLike | None = None,
    device: int | str | torch.device | None = None,
    checkpoint: PathLike | None = None,
    weights: PathLike | None = None,
    partial_weights: bool = False,
    device_ids: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    workdir: PathLike | None = None,
    max_steps: int | None = None,
    verbose: bool = True,
    progress: bool = True,
    tensorboard: bool = True,
    train_set: Dataset | None = None,
    valid_set: Dataset | None = None,
) -> TrainResult:
    """Train a model from a config (a path, a dict or a :class:`~danna_sep.config.TrainConfig`; checked here, once).

    Args:
        root: dataset folder (overrides ``$MUSDB_ROOT`` and the config's ``dataset.*.args.root``).
        device: None (first GPU, else CPU), a CUDA index, or a device string.
        checkpoint: a ``saved/*.pt`` training checkpoint to resume from (exactly, also mid-epoch).
        weights: initial model weights (strict unless ``partial_weights``).
        device_ids: several CUDA devices → one DDP process each, launched here (on a machine without CUDA,
            that many CPU processes with gloo).
        overrides: ``key.path=value`` strings applied to the config before validation.
        workdir: folder holding ``saved/`` and ``runs/`` (default: the current directory).
        max_steps: stop after this many micro-batches in total (at an optimizer step) with a resumable checkpoint.
        train_set / valid_set: datasets to use instead of building ``dataset.train`` / ``dataset.valid``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls this and joins the group.
    """
    cfg = _as_config(config, overrides)
    options = _RunOptions(
        root=root,
        checkpoint=checkpoint,
        weights=weights,
        partial_weights=partial_weights,
        workdir=workdir,
        max_steps=max_steps,
        verbose=verbose,
        progress=progress,
        tensorboard=tensorboard,
        train_set=train_set,
        valid_set=valid_set,
    )
    # a missing dataset folder fails here, before any worker starts
    if train_set is None:
        dataset_root(cfg.dataset.train.args, root, "dataset.train")
    if valid_set is None:
        dataset_root(cfg.dataset.valid.args, root, "dataset.valid")
    if device_ids is not None and len(device_ids) > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _spawn(cfg, list(device_ids), options)
    if device_ids:
        device = device_ids[0]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return _run_distributed(cfg, device, options)
    return _run(cfg, resolve_device(device), 0, 1, options)


def _run(cfg: TrainConfig, device: torch.device, rank: int, world: int, options: _RunOptions) -> TrainResult:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    o = options
    train_set = o.train_set if o.train_set is not None else build_dataset(cfg, "train", o.root)
    valid_set = o.valid_set if o.valid_set is not None else build_dataset(cfg, "valid", o.root)
    trainer = Trainer(
        cfg,
        device=device,
        train_set=train_set,
        valid_set=valid_set,
        rank=rank,
        world=world,
        workdir=o.workdir,
        verbose=o.verbose,
        progress=o.progress,
        tensorboard=o.tensorboard,
    )
    if o.weights is not None:
        trainer.load_weights(o.weights, o.partial_weights)
    trainer.prepare(o.checkpoint)
    return trainer.fit(o.max_steps)


def _run_distributed(cfg: TrainConfig, device: Any, options: _RunOptions) -> TrainResult:
    """One rank under torchrun (or spawned by :func:`_spawn`): join the group, train, leave."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if torch.cuda.is_available():
        dev = resolve_device(device if device is not None else local)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    initialised_here = not dist.is_initialized()
    if initialised_here:
        dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        return _run(cfg, dev, rank, world, options)
    finally:
        if initialised_here:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_worker(
    rank: int,
    world: int,
    port: int,
    device_ids: list[int],
    cfg: TrainConfig,
    options: _RunOptions,
    result_path: str,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = device_ids[rank] if torch.cuda.is_available() else None
    try:
        result = _run_distributed(cfg, device, options)
    except DannaError as exc:  # a user error: the parent re-raises it as such (not as a worker traceback)
        torch.save({"error": type(exc).__name__, "message": str(exc)}, f"{result_path}.{rank}.error")
        raise
    if rank == 0:
        torch.save(result.__dict__, result_path)


def _spawn(cfg: TrainConfig, device_ids: list[int], options: _RunOptions) -> TrainResult:
    """``--device_ids I J …``: one DDP worker per device on this machine, launched with torch.multiprocessing."""
    if torch.cuda.is_available():
        bad = [i for i in device_ids if i >= torch.cuda.device_count()]
        if bad:
            raise ConfigError(f"--device_ids {bad}: only {torch.cuda.device_count()} CUDA device(s)")
    world = len(device_ids)
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.pt")
        # Ctrl-C reaches the workers too (same process group); they save and exit, the parent waits for them
        previous = (
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if threading.current_thread() is threading.main_thread()
            else None
        )
        try:
            ctx = mp.spawn(
                _spawn_worker,
                args=(world, _free_port(), device_ids, cfg, options, result_path),
                nprocs=world,
                join=False,
            )

            def forward(signum, frame):
                return [os.kill(p.pid, signum) for p in ctx.processes if p.is_alive()]

            prev_term = signal.signal(signal.SIGTERM, forward) if previous is not None else None
            try:
                while not ctx.join():
                    pass
            except mp.ProcessRaisedException:
                _raise_worker_error(result_path, world)
                raise
            finally:
                if prev_term is not None:
                    signal.signal(signal.SIGTERM, prev_term)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        data = torch.load(result_path, weights_only=False)
    return TrainResult(**data)


def _raise_worker_error(result_path: str, world: int) -> None:
    for rank in range(world):
        path = f"{result_path}.{rank}.error"
        if os.path.exists(path):
            info = torch.load(path, weights_only=True)
            cls = getattr(errors, info["error"], DannaError)
            raise cls(info["message"]) from None


def config_path(name: str) -> Path:
    """A shipped config by short name (``"x_umx_mwf"``, ``"tiny/demucs_split"``) or a path as given."""
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return path
    shipped = configs_dir() / (name if name.endswith(".json") else f"{name}.json")
    return shipped if shipped.exists() else path
