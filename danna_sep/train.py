"""The config-driven trainer of all three models.

One loop for every model (reference §3, with §12's fixes):

* spectral models (``domain = "spectral"``) see ``|STFT(mix)|`` and are trained with the combination loss (MWF
  inside the loss per ``loss.args.n_iter``); waveform models (Demucs) see the mix and are trained with L1;
* the training batch gets the device augmentations every step, then mixture = Σ stems;
* mixed precision (fp16 with a gradient scaler, or bf16), gradient accumulation over ``cum_steps`` micro-batches
  counted *within* the epoch (the last group of an epoch is flushed with its true size), optional gradient-norm
  clipping, optimizer and scheduler from torch by name, ReduceLROnPlateau on the validation loss, early stopping;
* DistributedDataParallel under ``torchrun`` or with ``device_ids`` (workers spawned here): ``batch_size`` is the
  *global* batch, split across ranks, so a config trains the same model on 1 or N processes;
* validation every ``validate_every`` epochs: loss and per-source global SDR (Wiener filter per the ``MWF`` block),
  next to the "mixture as estimate" baseline;
* checkpoints ``saved/<name>_last.pt`` and the ``n_saved`` best ``saved/<name>_checkpoint_<avg SDR>.pt``, written
  atomically, holding everything needed to resume *mid-epoch* exactly;
* TensorBoard under ``runs/<name>/<timestamp>``, a tqdm bar and one summary line per epoch;
* Ctrl-C / SIGTERM save a resumable checkpoint and return.

Exact resume. Every random choice is a function of (seed, epoch, position): the data order of an epoch comes from
(seed, epoch), each item's chunk and CPU augmentation from (seed, epoch, index) (the dataset's ``set_epoch``), and
before every micro-batch the torch RNG (device augmentation, dropout) is re-seeded from (seed, epoch, batch, rank).
A resumed run therefore only needs the position (epoch, next batch) plus the model/optimizer/scheduler/scaler
state; the loader starts at the next batch without reading the consumed ones. Checkpoints still carry every RNG
state (python, numpy, torch, cuda) for code that draws from the global generators outside the step.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import SAMPLE_RATE, SOURCES, PathLike
from .checkpoints import WeightsReport, load_weights, read_state_dict, save_checkpoint  # noqa: F401 — API
from .config import (
    dataset_class,
    load_config,
    loss_class,
    optimizer_class,
    scheduler_class,
    validate_config,
)
from .errors import CheckpointError, ConfigError, DannaError, DatasetError
from .runtime import resolve_device as resolve_any_device

CHECKPOINT_VERSION = 1

__all__ = ["TrainResult", "train", "load_weights", "WeightsReport", "ShardedBatchSampler", "resolve_device"]


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class TrainResult:
    """What a training run did. ``history`` has one dict per validation (see :meth:`Trainer.validate`)."""

    name: str
    epochs_completed: int
    steps: int
    optimizer_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: Optional[float] = None
    best_checkpoint: Optional[Path] = None
    last_checkpoint: Optional[Path] = None
    log_dir: Optional[Path] = None
    stopped_early: bool = False
    interrupted: bool = False
    lr: float = float("nan")


# ---------------------------------------------------------------------------------------------------------------
# seeds, devices, RNG states


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (well mixed: nearby tuples give unrelated streams)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


# seed streams; the tag keeps them independent of each other
_ORDER, _STEP, _AUDIO, _AUGMENT = 1, 2, 3, 4


def resolve_device(device: Union[None, int, str, torch.device] = None) -> torch.device:
    """None → ``cuda:0`` if available else CPU; an int → that CUDA device; a string → as ``danna-sep --device``."""
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


def rng_states() -> dict[str, Any]:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    key, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": key, "state": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(_tupled(states["python"]))
    n = states["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


def _diff_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config dicts."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff_paths(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _tupled(x: Any) -> Any:
    return tuple(_tupled(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------------------------------------------
# data order


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of a (seed, epoch)-dependent order, each global batch split across ranks; resumable.

    Global batch ``b`` holds ``order[b·B:(b+1)·B]`` and rank ``r`` gets its elements ``r, r + W, …`` (as
    DistributedSampler interleaves), so the union over ranks of one step is exactly the single-process batch.
    ``set_epoch(epoch, start)`` selects the epoch's order and skips the first ``start`` batches without touching
    the dataset. A short last batch (``drop_last=False``) is padded from the start of the order only when it has
    fewer items than ranks.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ConfigError(
                f"data_loader.train.batch_size: {batch_size} (the global batch) is not divisible by the "
                f"{world} processes"
            )
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch."""
        if self.drop_last:
            return self.size // self.batch_size
        return math.ceil(self.size / self.batch_size)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _ORDER))
        return torch.randperm(self.size, generator=gen).tolist()

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for b in range(self.start, self.num_batches):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            while len(batch) < self.world:
                batch += order[: self.world - len(batch)]
            yield batch[self.rank::self.world]


# ---------------------------------------------------------------------------------------------------------------
# weights


# read_state_dict, load_weights and WeightsReport live in danna_sep.checkpoints (re-exported here)


# ---------------------------------------------------------------------------------------------------------------
# datasets


def dataset_root(spec_args: Mapping[str, Any], root: Optional[PathLike], where: str) -> tuple[Path, str]:
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


def build_dataset(cfg: Mapping[str, Any], split: str, root: Optional[PathLike] = None) -> Dataset:
    """Construct ``dataset.<split>`` of a validated config, with the root resolved as :func:`dataset_root`."""
    spec = cfg["dataset"][split]
    cls = dataset_class(spec["type"], f"dataset.{split}.type")
    args = dict(spec["args"])
    path, _ = dataset_root(args, root, f"dataset.{split}")
    args["root"] = str(path)
    if "seed" not in args and "seed" in inspect.signature(cls).parameters:
        args["seed"] = cfg["trainer"]["seed"]  # one seed for the whole run unless the dataset has its own
    return cls(**args)


def build_device_augment(cfg: Mapping[str, Any], device: torch.device) -> Optional[nn.Module]:
    """The per-step batched augmentations (pitch, speed) of ``device_augment``, or None when disabled."""
    spec = cfg.get("device_augment") or {}
    if not spec.get("enabled", True):
        return None
    from .data.augment import DeviceAugment

    return DeviceAugment(**spec.get("args", {})).to(device)


# ---------------------------------------------------------------------------------------------------------------
# logging helpers


def audio_summary(tag: str, wav: Tensor, sample_rate: int = SAMPLE_RATE) -> Any:
    """A TensorBoard audio summary of a (channels, samples) waveform, stereo kept (torch's helper is mono only)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    pcm = (wav.detach().float().clamp(-1, 1).T.cpu().numpy() * 32767).astype("<i2")  # interleaved (samples, channels)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    audio = Summary.Audio(sample_rate=sample_rate, num_channels=pcm.shape[1], length_frames=pcm.shape[0],
                          encoded_audio_string=buf.getvalue(), content_type="audio/wav")
    return Summary(value=[Summary.Value(tag=tag, audio=audio)])


class _StopFlag:
    """Set by SIGINT / SIGTERM; the loop saves a resumable checkpoint at the next optimizer step and returns."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """One training run on one process (one rank of a DDP group when ``world > 1``)."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        *,
        device: torch.device,
        train_set: Dataset,
        valid_set: Dataset,
        rank: int = 0,
        world: int = 1,
        workdir: Optional[PathLike] = None,
        verbose: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.cfg = dict(cfg)
        tr = self.cfg["trainer"]
        self.tr = tr
        self.name = self.cfg["name"]
        self.device = device
        self.rank, self.world = rank, world
        self.main = rank == 0
        self.verbose = verbose and self.main
        self.progress = progress and self.main
        self.workdir = Path(workdir or ".")
        self.save_dir = self.workdir / tr["save_dir"]
        self.seed = tr["seed"]
        self.time_domain = tr["time_domain"]

        if tr["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        from .models import build_model
        from .spectral import STFT

        torch.manual_seed(self.seed)  # identical initial weights on every rank and every run
        self.module = build_model(self.cfg["arch"]).to(device)
        self.stft = STFT(tr["n_fft"], tr["hop_length"]).to(device)
        self.criterion = loss_class(self.cfg["loss"]["type"])(**self.cfg["loss"]["args"]).to(device)
        self.augment = build_device_augment(self.cfg, device)

        self.train_set, self.valid_set = train_set, valid_set
        lc = self.cfg["data_loader"]["train"]
        self.sampler = ShardedBatchSampler(len(train_set), lc["batch_size"], lc["shuffle"], lc["drop_last"],
                                           self.seed, rank, world)
        self.epoch_length = self.sampler.num_batches
        if self.epoch_length == 0:
            raise DatasetError(
                f"the train split has {len(train_set)} items, fewer than one batch of {lc['batch_size']} "
                f"(data_loader.train.batch_size, drop_last)"
            )

        amp = tr["amp_enabled"]
        self.amp_dtype = torch.bfloat16 if tr["amp_dtype"] == "bfloat16" else torch.float16
        self.amp = amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and self.amp_dtype == torch.float16)

        # position and bookkeeping (all restored by resume)
        self.epoch = 0  # current epoch (0-based)
        self.batch = 0  # next batch of the current epoch
        self.step = 0  # micro-batches done in total
        self.opt_steps = 0
        self.history: list[dict[str, Any]] = []
        self.best: list[tuple[float, str]] = []  # (avg SDR, file name), best first
        self.early = {"best_loss": math.inf, "bad": 0}
        self.baseline: Optional[dict[str, float]] = None
        self._meters_epoch = torch.zeros(3, device=device, dtype=torch.float64)
        self._meters_log = torch.zeros(3, device=device, dtype=torch.float64)
        self._count_epoch = 0
        self._count_log = 0
        self.writer = None
        self.log_dir: Optional[Path] = None
        self._tensorboard = tensorboard and self.main
        self.model: nn.Module = self.module  # DDP wrapper once `prepare` ran
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Any = None

    # -- set-up ---------------------------------------------------------------------------------------------------
    def load_weights(self, path: PathLike, partial: bool = False) -> WeightsReport:
        report = load_weights(self.module, path, partial)
        self.say(f"weights {path}: {report.describe()}")
        differences = report.arch_differences(self.cfg["arch"])
        if differences:
            self.say(f"warning: {path} was made with {', '.join(differences)}; set them with --set arch.args.NAME=VALUE "
                     f"to keep the computation the weights were trained for")
        return report

    def prepare(self, checkpoint: Optional[PathLike] = None) -> None:
        """Wrap for DDP, build optimizer and scheduler, and restore ``checkpoint`` if given."""
        state = self._read_checkpoint(checkpoint) if checkpoint else None
        if state is not None:
            self._load_model_state(state, checkpoint)
        if self.world > 1:
            bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules())
            if bn and self.device.type == "cuda":
                self.module = nn.SyncBatchNorm.convert_sync_batchnorm(self.module)
            elif bn:
                self.say("warning: batch norm statistics are per process (torch's SyncBatchNorm needs CUDA)")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        else:
            self.model = self.module
        self.optimizer = optimizer_class(self.cfg["optimizer"]["type"])(
            self.module.parameters(), **self.cfg["optimizer"]["args"])
        sch = self.cfg["lr_scheduler"]
        if sch is not None:
            self.scheduler = scheduler_class(sch["type"])(self.optimizer, **sch["args"])
        if state is not None:
            self._load_train_state(state, checkpoint)

    def _read_checkpoint(self, path: PathLike) -> dict[str, Any]:
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
        return state

    def _load_model_state(self, state: Mapping[str, Any], path: PathLike) -> None:
        own = self.module.state_dict()
        missing = [k for k in own if k not in state["model"]]
        unexpected = [k for k in state["model"] if k not in own]
        bad = [k for k, v in state["model"].items() if k in own and own[k].shape != v.shape]
        if missing or unexpected or bad:
            raise CheckpointError(
                f"{path}: model state does not match the config's arch ({self.cfg['arch']['type']}): "
                f"{len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} mis-shaped keys "
                f"(e.g. {(missing + unexpected + bad)[:3]})"
            )
        self.module.load_state_dict(state["model"])

    def _load_train_state(self, state: Mapping[str, Any], path: PathLike) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this config: {exc}") from None
        t = state["trainer"]
        self.epoch, self.batch, self.step, self.opt_steps = t["epoch"], t["batch"], t["step"], t["opt_steps"]
        if self.batch > self.epoch_length:  # the dataset shrank: the epoch is over
            self.batch = self.epoch_length
        self.history = list(t.get("history", []))
        self.best = [tuple(b) for b in t.get("best", [])]
        self.early = dict(t.get("early", self.early))
        self.baseline = t.get("baseline")
        meters = t.get("meters")
        if meters is not None:
            self._meters_epoch = meters["sum"].to(self.device, torch.float64)
            self._count_epoch = int(meters["count"])
        changed = _diff_paths(state.get("config") or {}, self.cfg)
        if changed:
            shown = ", ".join(changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
            self.say(f"note: the config differs from the checkpoint's in {shown}; continuing with the new values")
        rng = state.get("rng")
        if rng:
            set_rng_states(rng[self.rank] if isinstance(rng, list) and self.rank < len(rng) else rng[0])
        self.say(f"resumed {path}: epoch {self.epoch + 1}, batch {self.batch}/{self.epoch_length}, step {self.step}")

    # -- console and TensorBoard ------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        if self.verbose:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    def _open_writer(self) -> None:
        if not self._tensorboard or self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        stamp = datetime.now().strftime("%m%d_%H%M%S")
        self.log_dir = self.workdir / self.tr["log_dir"] / self.name / stamp
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- one micro-batch --------------------------------------------------------------------------------------------
    def forward_loss(self, model: nn.Module, mix: Tensor, stems: Tensor) -> tuple[Tensor, dict[str, Tensor], Any]:
        """Loss of a batch: mix ``(batch, channels, samples)``, stems ``(batch, 4, channels, samples)``."""
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)
        if self.time_domain:
            with autocast:
                pred = model(mix)
            loss, extras = self.criterion(pred.float(), stems)
            return loss, extras, pred.float()
        spec = self.stft(mix)  # (batch, channels, bins, frames) complex
        with autocast:
            mask = model(spec.abs())
        mask = mask.float()
        loss, extras = self.criterion(mask, spec, stems, mix)
        return loss, extras, (mask, spec)

    def _to_device(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        mix, stems = batch
        nb = self.device.type == "cuda"
        return mix.to(self.device, non_blocking=nb), stems.to(self.device, non_blocking=nb)

    def _group(self, b: int) -> tuple[int, bool]:
        """(size of the accumulation group holding batch ``b``, whether ``b`` closes it)."""
        cum = self.tr["cum_steps"]
        start = (b // cum) * cum
        size = min(cum, self.epoch_length - start)
        return size, b - start == size - 1

    def train_step(self, b: int, batch: Sequence[Tensor]) -> None:
        # every random draw of the step is a function of (seed, epoch, batch, rank): exact resume
        torch.manual_seed(mix_seed(self.seed, self.epoch, b, self.rank, _STEP))
        mix, stems = self._to_device(batch)
        if self.augment is not None:  # pitch/speed per stem, then mixture = Σ stems
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, b, self.rank, _AUGMENT))
            mix, stems = self.augment(stems, gen)
        size, closes = self._group(b)
        sync = closes or self.world == 1
        ctx = contextlib.nullcontext() if sync else self.model.no_sync()
        with ctx:
            loss, extras, _ = self.forward_loss(self.model, mix, stems)
            self.scaler.scale(loss / size).backward()
        if closes:
            if self.tr["grad_clip"] is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.tr["grad_clip"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.opt_steps += 1
        zero = loss.new_zeros(())
        values = torch.stack([loss.detach(), extras.get("loss_f", zero), extras.get("loss_t", zero)]).double()
        self._meters_epoch += values
        self._meters_log += values
        self._count_epoch += 1
        self._count_log += 1
        self.step += 1

    # -- validation -------------------------------------------------------------------------------------------------
    def estimate(self, out: Any, mix: Tensor) -> Tensor:
        """Waveform estimates ``(batch, 4, channels, samples)`` from the model output of :meth:`forward_loss`."""
        if self.time_domain:
            return out
        from .wiener import wiener

        mask, spec = out
        mwf = self.cfg["MWF"]
        mag = mask * spec.abs().unsqueeze(1)
        if mwf["softmask"] and mwf["alpha"] != 1:
            mag = mag.pow(mwf["alpha"])
        est = wiener(mag, spec, iterations=mwf["n_iter"], softmask=mwf["softmask"], residual=mwf["residual_model"])
        return self.stft.inverse(est[:, : len(SOURCES)], mix.shape[-1])

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation loss and per-source global SDR, next to the mixture-as-estimate baseline (cached)."""
        from .metrics import global_sdr

        self.module.eval()
        lc = self.cfg["data_loader"]["valid"]
        indices = list(range(len(self.valid_set)))[self.rank::self.world]
        limit = self.tr["val_epoch_length"]
        if limit is not None:
            indices = indices[: limit * lc["batch_size"]]
        loader = self._loader(self.valid_set, batch_size=lc["batch_size"], sampler=indices, lc=lc)
        sums = torch.zeros(3 + 2 * len(SOURCES) + 2, dtype=torch.float64, device=self.device)
        need_base = self.baseline is None
        for batch in loader:
            mix, stems = self._to_device(batch)
            loss, extras, out = self.forward_loss(self.module, mix, stems)
            est = self.estimate(out, mix)
            length = min(est.shape[-1], stems.shape[-1])
            sdr = global_sdr(stems[..., :length], est[..., :length].to(stems.dtype))  # (batch, 4)
            n = mix.shape[0]
            zero = loss.new_zeros(())
            sums[:3] += torch.stack([loss, extras.get("loss_f", zero), extras.get("loss_t", zero)]).double() * n
            sums[3:3 + len(SOURCES)] += sdr.sum(0)
            if need_base:
                base = global_sdr(stems, mix.unsqueeze(1).expand_as(stems))
                sums[3 + len(SOURCES):3 + 2 * len(SOURCES)] += base.sum(0)
            sums[-2] += n
            sums[-1] += 1
        if self.world > 1:
            dist.all_reduce(sums)
        self.module.train()
        values = sums.tolist()  # the one host sync of a validation
        n = max(values[-2], 1.0)
        if need_base and values[-2] > 0:
            self.baseline = {s: values[3 + len(SOURCES) + i] / n for i, s in enumerate(SOURCES)}
        result: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "items": int(values[-2]),
            "loss": values[0] / n,
            "loss_f": values[1] / n,
            "loss_t": values[2] / n,
            "sdr": {s: values[3 + i] / n for i, s in enumerate(SOURCES)},
            "baseline": dict(self.baseline or {}),
        }
        result["avg_sdr"] = sum(result["sdr"].values()) / len(SOURCES)
        result["avg_baseline"] = sum(result["baseline"].values()) / len(SOURCES) if result["baseline"] else math.nan
        return result

    @torch.no_grad()
    def log_audio(self) -> None:
        """Mixture and estimates of one validation item (a different one each epoch) to TensorBoard."""
        seconds = self.tr["audio_seconds"]
        if self.writer is None or seconds <= 0 or len(self.valid_set) == 0:
            return
        index = random.Random(mix_seed(self.seed, self.epoch, _AUDIO)).randrange(len(self.valid_set))
        mix, stems = self.valid_set[index]
        mix, stems = self._to_device((torch.as_tensor(mix)[None], torch.as_tensor(stems)[None]))
        self.module.eval()
        _, _, out = self.forward_loss(self.module, mix, stems)
        est = self.estimate(out, mix)[0]
        self.module.train()
        n = int(seconds * SAMPLE_RATE)
        step = self.epoch + 1
        self.writer.file_writer.add_summary(audio_summary("audio/mixture", mix[0, :, :n]), step)
        for i, src in enumerate(SOURCES):
            self.writer.file_writer.add_summary(audio_summary(f"audio/{src}", est[i, :, :n]), step)

    # -- checkpoints ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything that resumes this run, plus the config that rebuilds the model."""
        rng = rng_states()
        if self.world > 1:  # every rank's generators
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "trainer": {
                "epoch": self.epoch,
                "batch": self.batch,
                "step": self.step,
                "opt_steps": self.opt_steps,
                "epoch_length": self.epoch_length,
                "history": self.history,
                "best": [list(b) for b in self.best],
                "early": self.early,
                "baseline": self.baseline,
                "meters": {"sum": self._meters_epoch.cpu(), "count": self._count_epoch},
            },
            "rng": rng,
            "config": self.cfg,
        }

    def last_path(self) -> Path:
        return self.save_dir / f"{self.name}_last.pt"

    def save_last(self) -> Path:
        state = self.state()  # collective under DDP: every rank calls it
        path = self.last_path()
        if self.main:
            save_checkpoint(state, path)
        return path

    def save_best(self, score: float) -> Optional[Path]:
        """Keep the ``n_saved`` best checkpoints by validation SDR (this run's files only)."""
        # every rank keeps the same list (the score is all-reduced), so all agree on the collective in state()
        n_saved = self.tr["n_saved"]
        if len(self.best) >= n_saved and score <= self.best[-1][0]:
            return None
        state = self.state()
        fname = f"{self.name}_checkpoint_{score:.4f}.pt"
        ranked = sorted([b for b in self.best if b[1] != fname] + [(score, fname)], key=lambda b: -b[0])
        self.best = ranked[:n_saved]
        if not self.main:
            return None
        save_checkpoint(state, self.save_dir / fname)
        for _, old in ranked[n_saved:]:
            with contextlib.suppress(FileNotFoundError):
                (self.save_dir / old).unlink()
        return self.save_dir / fname

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, lc: Mapping[str, Any], **kwargs: Any) -> DataLoader:
        workers = lc["num_workers"]
        extra = {"prefetch_factor": lc["prefetch_factor"]} if workers > 0 and lc["prefetch_factor"] else {}
        return DataLoader(
            dataset,
            num_workers=workers,
            pin_memory=lc["pin_memory"] and self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # never draws from the global RNG
            **extra,
            **kwargs,
        )

    def _stop_requested(self, stop: _StopFlag, force: bool = False) -> bool:
        if self.world == 1:
            return bool(stop)
        # ranks must agree on where to stop; one tiny collective every log interval (or when forced)
        if self.opt_steps % self.tr["log_every"] and not force:
            return False
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _sync_log(self, pbar: Any) -> None:
        """The periodic host sync: progress-bar postfix and TensorBoard scalars, then reset the interval meters."""
        if self._count_log == 0:
            return
        loss, loss_f, loss_t = (self._meters_log / self._count_log).tolist()
        if not math.isfinite(loss):
            raise DannaError(
                f"training diverged: the loss is {loss} at epoch {self.epoch + 1}, step {self.step} (try a lower "
                f"optimizer.args.lr or trainer.grad_clip); the last checkpoint is {self.last_path()}"
            )
        if pbar is not None:
            pbar.set_postfix_str(f"loss {loss:.4g} lr {self.lr:.3g}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar("training/loss", loss, self.step)
            for k in self.tr["extra_monitor"]:
                self.writer.add_scalar(f"training/{k}", loss_f if k == "loss_f" else loss_t, self.step)
            self.writer.add_scalar("training/lr", self.lr, self.step)
        self._meters_log.zero_()
        self._count_log = 0

    def fit(self, max_steps: Optional[int] = None) -> TrainResult:
        """Train until ``trainer.epochs``, early stopping, a signal, or ``max_steps`` micro-batches in total
        (the last two leave a resumable ``<name>_last.pt``)."""
        from tqdm import tqdm

        self._open_writer()
        epochs = self.tr["epochs"]
        result = TrainResult(self.name, self.epoch, self.step, self.opt_steps)
        n_params = sum(p.numel() for p in self.module.parameters())
        self.say(
            f"{self.name}: {self.cfg['arch']['type']} {n_params / 1e6:.2f} M parameters on {self.device}"
            f"{f' × {self.world} processes' if self.world > 1 else ''}; {len(self.train_set)} train items "
            f"({self.epoch_length} batches/epoch), {len(self.valid_set)} validation items"
        )
        self.module.train()
        with _StopFlag() as stop, contextlib.closing(self):
            while self.epoch < epochs:
                if max_steps is not None and self.step >= max_steps:
                    result.last_checkpoint = self.save_last()
                    break
                t0 = time.perf_counter()
                if hasattr(self.train_set, "set_epoch"):
                    self.train_set.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch, self.batch)
                loader = self._loader(self.train_set, self.cfg["data_loader"]["train"], batch_sampler=self.sampler)
                pbar = tqdm(total=self.epoch_length, initial=self.batch, desc=f"epoch {self.epoch + 1}/{epochs}",
                            disable=not self.progress, leave=False, dynamic_ncols=True, file=sys.stdout)
                halt = None
                for b, batch in enumerate(loader, start=self.batch):
                    self.train_step(b, batch)
                    self.batch = b + 1
                    pbar.update(1)
                    if self.step % self.tr["log_every"] == 0:
                        self._sync_log(pbar)
                    if self._group(b)[1]:  # stop only between optimizer steps
                        if max_steps is not None and self.step >= max_steps:
                            halt = "max_steps"
                        elif self._stop_requested(stop):
                            halt = "signal"
                        if halt:
                            break
                pbar.close()
                if halt:
                    self._sync_log(None)
                    result.last_checkpoint = self.save_last()
                    result.interrupted = halt == "signal"
                    if halt == "signal":
                        self.say(f"stopped by signal {stop.signal}: resume with --checkpoint '{result.last_checkpoint}'")
                    break
                self._sync_log(None)
                stopped_early = self._end_epoch(time.perf_counter() - t0, result)
                if stopped_early:
                    result.stopped_early = True
                    break
                if self.epoch < epochs and self._stop_requested(stop, force=True):
                    # a signal during validation: <name>_last.pt was just written at the epoch boundary
                    result.interrupted = True
                    self.say(f"stopped by signal {stop.signal}: resume with --checkpoint '{result.last_checkpoint}'")
                    break
        result.epochs_completed = self.epoch
        result.steps, result.optimizer_steps = self.step, self.opt_steps
        result.history = list(self.history)
        result.log_dir = self.log_dir
        result.lr = self.lr
        if self.best:
            result.best_score = self.best[0][0]
            result.best_checkpoint = self.save_dir / self.best[0][1]
        if result.last_checkpoint is None and self.main and self.last_path().exists():
            result.last_checkpoint = self.last_path()
        return result

    def close(self) -> None:
        """Flush and close the TensorBoard writer (also when training fails)."""
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def _end_epoch(self, seconds: float, result: TrainResult) -> bool:
        """Validation, scheduler, early stopping, checkpoints and the summary line; True = stop early."""
        sums = torch.cat([self._meters_epoch, self._meters_epoch.new_tensor([self._count_epoch])])
        if self.world > 1:
            dist.all_reduce(sums)
        values = sums.tolist()
        train = {k: v / max(values[3], 1) for k, v in zip(("loss", "loss_f", "loss_t"), values[:3])}
        epoch_no = self.epoch + 1
        validate = epoch_no % self.tr["validate_every"] == 0 or epoch_no == self.tr["epochs"]
        val = self.validate() if validate else None
        if val is not None:
            val["train_loss"] = train["loss"]
            self.history.append(val)
            if self.main:
                self.log_audio()

        # scheduler: plateau on the validation loss, the others once per epoch
        if self.scheduler is not None:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if val is not None:
                    self.scheduler.step(val["loss"])
            else:
                self.scheduler.step()

        stop = False
        if val is not None and self.tr["patience"] is not None:
            if val["loss"] < self.early["best_loss"]:
                self.early = {"best_loss": val["loss"], "bad": 0}
            else:
                self.early["bad"] += 1
                stop = self.early["bad"] >= self.tr["patience"]

        if self.writer is not None:
            self.writer.add_scalar("epoch/train_loss", train["loss"], epoch_no)
            self.writer.add_scalar("epoch/lr", self.lr, epoch_no)
            if val is not None:
                for k in ("loss", *self.tr["extra_monitor"]):
                    self.writer.add_scalar(f"validation/{k}", val[k], epoch_no)
                for s in SOURCES:
                    self.writer.add_scalar(f"validation/{s}_sdr", val["sdr"][s], epoch_no)
                    self.writer.add_scalar(f"validation/{s}_sdr_mixture", val["baseline"].get(s, math.nan), epoch_no)
                self.writer.add_scalar("validation/avg_sdr", val["avg_sdr"], epoch_no)
                self.writer.add_scalar("validation/avg_sdr_mixture", val["avg_baseline"], epoch_no)
            self.writer.flush()

        # the position after this epoch, then the files
        self.epoch, self.batch = epoch_no, 0
        self._meters_epoch.zero_()
        self._count_epoch = 0
        if val is not None:
            best = self.save_best(val["avg_sdr"])
            if best is not None:
                result.best_checkpoint = best
        result.last_checkpoint = self.save_last()

        line = f"epoch {epoch_no}/{self.tr['epochs']}: train loss {train['loss']:.4f}"
        for k in self.tr["extra_monitor"]:
            line += f" {k} {train[k]:.4f}"
        if val is not None:
            line += f" | valid loss {val['loss']:.4f} SDR"
            line += "".join(f" {s} {val['sdr'][s]:.2f} ({val['baseline'].get(s, math.nan):.2f})" for s in SOURCES)
            line += f" avg {val['avg_sdr']:.2f} (mixture {val['avg_baseline']:.2f})"
        line += f" | lr {self.lr:.3g} | {seconds:.1f} s"
        if stop:
            line += f" | early stop: no better validation loss for {self.tr['patience']} validations"
        self.say(line)
        return stop


# ---------------------------------------------------------------------------------------------------------------
# entry points


def _as_config(config: Union[PathLike, Mapping[str, Any]], overrides: Sequence[str]) -> dict[str, Any]:
    if isinstance(config, Mapping):
        from .config import apply_overrides

        return validate_config(apply_overrides(config, overrides))
    return load_config(config, overrides)


def train(
    config: Union[PathLike, Mapping[str, Any]],
    *,
    root: Optional[PathLike] = None,
    device: Union[None, int, str, torch.device] = None,
    checkpoint: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    partial_weights: bool = False,
    device_ids: Optional[Sequence[int]] = None,
    overrides: Sequence[str] = (),
    workdir: Optional[PathLike] = None,
    max_steps: Optional[int] = None,
    verbose: bool = True,
    progress: bool = True,
    tensorboard: bool = True,
    train_set: Optional[Dataset] = None,
    valid_set: Optional[Dataset] = None,
) -> TrainResult:
    """Train a model from a config (a path or a dict; validated here).

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
    kwargs = dict(root=root, checkpoint=checkpoint, weights=weights, partial_weights=partial_weights,
                  workdir=workdir, max_steps=max_steps, verbose=verbose, progress=progress,
                  tensorboard=tensorboard, train_set=train_set, valid_set=valid_set)
    for split, given in (("train", train_set), ("valid", valid_set)):
        if given is None:  # fail here, before any worker starts
            dataset_root(cfg["dataset"][split]["args"], root, f"dataset.{split}")
    if device_ids is not None and len(device_ids) > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _spawn(cfg, list(device_ids), kwargs)
    if device_ids:
        device = device_ids[0]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return _run_distributed(cfg, device, kwargs)
    return _run(cfg, resolve_device(device), 0, 1, **kwargs)


def _run(cfg: Mapping[str, Any], device: torch.device, rank: int, world: int, *, root: Optional[PathLike],
         checkpoint: Optional[PathLike], weights: Optional[PathLike], partial_weights: bool,
         workdir: Optional[PathLike], max_steps: Optional[int], verbose: bool, progress: bool, tensorboard: bool,
         train_set: Optional[Dataset], valid_set: Optional[Dataset]) -> TrainResult:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    train_set = train_set if train_set is not None else build_dataset(cfg, "train", root)
    valid_set = valid_set if valid_set is not None else build_dataset(cfg, "valid", root)
    trainer = Trainer(cfg, device=device, train_set=train_set, valid_set=valid_set, rank=rank, world=world,
                      workdir=workdir, verbose=verbose, progress=progress, tensorboard=tensorboard)
    if weights is not None:
        trainer.load_weights(weights, partial_weights)
    trainer.prepare(checkpoint)
    return trainer.fit(max_steps)


def _run_distributed(cfg: Mapping[str, Any], device: Any, kwargs: dict[str, Any]) -> TrainResult:
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
        return _run(cfg, dev, rank, world, **kwargs)
    finally:
        if initialised_here:
            dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_worker(rank: int, world: int, port: int, device_ids: list[int], cfg: Mapping[str, Any],
                  kwargs: dict[str, Any], result_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = device_ids[rank] if torch.cuda.is_available() else None
    try:
        result = _run_distributed(cfg, device, kwargs)
    except DannaError as exc:  # a user error: the parent re-raises it as such (not as a worker traceback)
        torch.save({"error": type(exc).__name__, "message": str(exc)}, f"{result_path}.{rank}.error")
        raise
    if rank == 0:
        torch.save(result.__dict__, result_path)


def _spawn(cfg: Mapping[str, Any], device_ids: list[int], kwargs: dict[str, Any]) -> TrainResult:
    """``--device_ids I J …``: one DDP worker per device on this machine, launched with torch.multiprocessing."""
    import torch.multiprocessing as mp

    if torch.cuda.is_available():
        bad = [i for i in device_ids if i >= torch.cuda.device_count()]
        if bad:
            raise ConfigError(f"--device_ids {bad}: only {torch.cuda.device_count()} CUDA device(s)")
    world = len(device_ids)
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.pt")
        # Ctrl-C reaches the workers too (same process group); they save and exit, the parent waits for them
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else None
        try:
            ctx = mp.spawn(_spawn_worker, args=(world, _free_port(), device_ids, cfg, kwargs, result_path),
                           nprocs=world, join=False)
            forward = lambda signum, frame: [os.kill(p.pid, signum) for p in ctx.processes if p.is_alive()]  # noqa: E731
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
    from . import errors

    for rank in range(world):
        path = f"{result_path}.{rank}.error"
        if os.path.exists(path):
            info = torch.load(path, weights_only=True)
            cls = getattr(errors, info["error"], DannaError)
            raise cls(info["message"]) from None


def config_path(name: str) -> Path:
    """A shipped config by short name (``"x_umx_mwf"``, ``"tiny/demucs_split"``) or a path as given."""
    from .config import configs_dir

    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return path
    shipped = configs_dir() / (name if name.endswith(".json") else f"{name}.json")
    return shipped if shipped.exists() else path
