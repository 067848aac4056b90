"""What a training checkpoint holds and how a run resumes from one exactly (also mid-epoch): the run's position
and bookkeeping (:class:`Progress`), the checkpoint dict, reading and restoring it, and best-k retention.

A resumed run only needs the position (epoch, next batch) plus the model/optimizer/scheduler/scaler state, since
every random draw is a function of the position (:mod:`.seeds`); the RNG states are stored as well for code that
draws from the global generators outside the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import PathLike
from ..checkpoints import match_state_dict
from ..errors import CheckpointError
from .seeds import rng_states, set_rng_states

CHECKPOINT_VERSION = 1


@dataclass
class Progress:
    """The position of a run and what it has seen so far: the checkpoint's ``"trainer"`` entry."""

    meters: Tensor  # float64 sums of (loss, loss_f, loss_t) over the current epoch, on the device
    count: int = 0  # micro-batches in ``meters``
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch of the current epoch
    step: int = 0  # micro-batches done in total
    opt_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: list[tuple[float, str]] = field(default_factory=list)  # (avg SDR, file name), best first
    early: dict[str, Any] = field(default_factory=lambda: {"best_loss": math.inf, "bad": 0})
    baseline: dict[str, float] | None = None

    def to_dict(self, epoch_length: int) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "opt_steps": self.opt_steps,
            "epoch_length": epoch_length,
            "history": self.history,
            "best": [list(b) for b in self.best],
            "early": self.early,
            "baseline": self.baseline,
            "meters": {"sum": self.meters.cpu(), "count": self.count},
        }

    def restore(self, t: Mapping[str, Any], epoch_length: int) -> None:
        """Take over a checkpoint's ``"trainer"`` entry (``epoch_length``: this run's batches per epoch)."""
        self.epoch, self.batch, self.step, self.opt_steps = t["epoch"], t["batch"], t["step"], t["opt_steps"]
        if self.batch > epoch_length:  # the dataset shrank: the epoch is over
            self.batch = epoch_length
        self.history = list(t.get("history", []))
        self.best = [tuple(b) for b in t.get("best", [])]
        self.early = dict(t.get("early", self.early))
        self.baseline = t.get("baseline")
        meters = t.get("meters")
        if meters is not None:
            self.meters = meters["sum"].to(self.meters.device, torch.float64)
            self.count = int(meters["count"])


def rank_best(
    best: list[tuple[float, str]], score: float, fname: str, n_saved: int
) -> tuple[list[tuple[float, str]], list[str]] | None:
    """Enter checkpoint ``fname`` of ``score`` into the ``n_saved`` ``best`` (this run's files, best first): None
    when it does not make it, else (the new list, the file names that fell out, to delete)."""
    if len(best) >= n_saved and score <= best[-1][0]:
        return None
    ranked = sorted([b for b in best if b[1] != fname] + [(score, fname)], key=lambda b: -b[0])
    return ranked[:n_saved], [old for _, old in ranked[n_saved:]]


def checkpoint_dict(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    epoch_length: int,
    world: int,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything that resumes a run, plus the config that rebuilds the model. Collective under DDP (every
    rank's RNG states are gathered): every rank calls it."""
    rng = rng_states()
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rng)
        rngs = gathered
    else:
        rngs = [rng]
    return {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "trainer": progress.to_dict(epoch_length),
        "rng": rngs,
        "config": config,
    }


def read_training_checkpoint(path: PathLike) -> dict[str, Any]:
    """A checkpoint written by :func:`checkpoint_dict`; weights-only files are refused (they go to --weights)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or "model" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
    if "trainer" not in state or "optimizer" not in state:
        raise CheckpointError(f"{path}: holds weights only; pass it with --weights to start a new run from it")
    return dict(state)


def load_model_state(module: nn.Module, state: Mapping[str, Any], path: PathLike, arch_type: str) -> None:
    """The checkpoint's model weights into ``module``, which must match them exactly (same config arch)."""
    report = match_state_dict(module, state["model"])
    if not report.complete:
        bad = [m.split(": file ", 1)[0] for m in report.mismatched]  # the keys (the report adds the shapes)
        raise CheckpointError(
            f"{path}: model state does not match the config's arch ({arch_type}): "
            f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, {len(bad)} mis-shaped keys "
            f"(e.g. {(report.missing + report.unexpected + bad)[:3]})"
        )
    module.load_state_dict(state["model"])


def load_optimization_state(
    state: Mapping[str, Any],
    path: PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> None:
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this config: {exc}") from None


def restore_rng_states(rng: Any, rank: int) -> None:
    """This rank's generators from a checkpoint's ``"rng"`` entry (rank 0's when it has fewer ranks)."""
    if rng:
        set_rng_states(rng[rank] if isinstance(rng, list) and rank < len(rng) else rng[0])


def config_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config dicts."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]
