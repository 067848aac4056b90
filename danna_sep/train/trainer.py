"""The training loop of one process (one rank of a DDP group): micro-batches with mixed precision and gradient
accumulation, the epoch end (validation, scheduler, early stopping, checkpoints, summary line) and stopping on a
signal. What it trains with comes from :mod:`.build`, what it saves from :mod:`.state`."""

from __future__ import annotations

import contextlib
import math
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .. import SOURCES, PathLike
from ..checkpoints import WeightsReport, load_weights, save_checkpoint
from ..config import LoaderConfig, TrainConfig, parse_config
from ..errors import DannaError, DatasetError
from . import tensorboard as tb
from . import validation
from .build import build_loader, build_optimization, build_parts, build_sampler
from .seeds import AUDIO, AUGMENT, STEP, mix_seed
from .state import (
    Progress,
    checkpoint_dict,
    config_changes,
    load_model_state,
    load_optimization_state,
    rank_best,
    read_training_checkpoint,
    restore_rng_states,
)


@dataclass
class TrainResult:
    """What a training run did. ``history`` has one dict per validation (see :meth:`Trainer.validate`)."""

    name: str
    epochs_completed: int
    steps: int
    optimizer_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    log_dir: Path | None = None
    stopped_early: bool = False
    interrupted: bool = False
    lr: float = float("nan")


class _StopFlag:
    """Set by SIGINT / SIGTERM; the loop saves a resumable checkpoint at the next optimizer step and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _size(dataset: Dataset, split: str) -> int:
    """The number of items of a map-style dataset (torch's ``Dataset`` type does not promise ``__len__``)."""
    if not isinstance(dataset, Sized):
        raise DatasetError(f"the {split} dataset has no length: the trainer needs a map-style dataset (with __len__)")
    return len(dataset)


def _compile_errors() -> tuple[type[Exception], ...]:
    """What a failed ``torch.compile`` raises at its first call (imported only when an exception is raised)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError

    return TorchDynamoException, CppCompileError


def file_stem(name: str) -> str:
    """The config's ``name`` as a file-name stem: runs of anything but letters, digits, ``.``, ``+``, ``-`` become
    one ``_`` ("UNet Attention" → "UNet_Attention"), so that checkpoint paths need no quoting in a shell.

    Checkpoints of earlier versions keep their spaced names: resume takes any path, and a resumed run's best-k list
    holds the file names it wrote, so it still prunes them."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("_") or "model"


class Trainer:
    """One training run on one process (one rank of a DDP group when ``world > 1``)."""

    def __init__(
        self,
        cfg: TrainConfig | Mapping[str, Any],
        *,
        device: torch.device,
        train_set: Dataset,
        valid_set: Dataset,
        rank: int = 0,
        world: int = 1,
        workdir: PathLike | None = None,
        verbose: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.cfg = parse_config(cfg)  # a dict is checked here; a parsed config is used as it is
        tr = self.cfg.trainer
        self.tr = tr
        self.name = self.cfg.name
        self.device = device
        self.rank, self.world = rank, world
        self.main = rank == 0
        self.verbose = verbose and self.main
        self.progress = progress and self.main
        self.workdir = Path(workdir or ".")
        self.save_dir = self.workdir / tr.save_dir
        self.file_stem = file_stem(self.name)
        self.seed = tr.seed
        self.time_domain = self.cfg.time_domain

        if tr.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        parts = build_parts(self.cfg, device)
        self.module, self.stft, self.criterion, self.augment = parts.model, parts.stft, parts.criterion, parts.augment

        self.train_set, self.valid_set = train_set, valid_set
        self.train_size, self.valid_size = _size(train_set, "train"), _size(valid_set, "valid")
        self.sampler = build_sampler(self.cfg, self.train_size, rank, world)
        self.epoch_length = self.sampler.num_batches
        if self.epoch_length == 0:
            raise DatasetError(
                f"the train split has {self.train_size} items, fewer than one batch of "
                f"{self.cfg.data_loader.train.batch_size} (data_loader.train.batch_size, drop_last)"
            )

        amp = tr.amp_enabled
        self.amp_dtype = torch.bfloat16 if tr.amp_dtype == "bfloat16" else torch.float16
        self.amp = amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and self.amp_dtype == torch.float16)

        # position and bookkeeping (all restored by resume)
        self.pos = Progress(meters=torch.zeros(3, device=device, dtype=torch.float64))
        self._meters_log = torch.zeros(3, device=device, dtype=torch.float64)
        self._count_log = 0
        self.writer = None
        self.log_dir: Path | None = None
        self._tensorboard = tensorboard and self.main
        self.model: nn.Module = self.module  # DDP wrapper (compiled with trainer.compile) once `prepare` ran
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None

    # -- set-up ---------------------------------------------------------------------------------------------------
    def load_weights(self, path: PathLike, partial: bool = False) -> WeightsReport:
        report = load_weights(self.module, path, partial)
        self.say(f"weights {path}: {report.describe()}")
        differences = report.arch_differences(self.cfg.arch.model_dump())
        if differences:
            self.say(
                f"warning: {path} was made with {', '.join(differences)}; set them with --set arch.args.NAME=VALUE "
                f"to keep the computation the weights were trained for"
            )
        return report

    def prepare(self, checkpoint: PathLike | None = None) -> None:
        """Wrap for DDP, build optimizer and scheduler, and restore ``checkpoint`` if given."""
        state = None
        if checkpoint:
            state = read_training_checkpoint(checkpoint)
            load_model_state(self.module, state, checkpoint, self.cfg.arch.type)
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
        self._ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
        if self.tr.compile:
            # the DDP wrapper is compiled, not the module, so that dynamo splits the graph at DDP's buckets and
            # gradient communication still overlaps the backward pass; checkpoints keep saving the bare module
            self.model = cast(nn.Module, torch.compile(self.model))  # an OptimizedModule
        opt = build_optimization(self.cfg, self.module)
        self.optimizer, self.scheduler = opt.optimizer, opt.scheduler
        if state is not None and checkpoint:
            self._resume(state, checkpoint)

    def _resume(self, state: Mapping[str, Any], path: PathLike) -> None:
        load_optimization_state(state, path, self._prepared_optimizer, self.scheduler, self.scaler)
        self.pos.restore(state["trainer"], self.epoch_length)
        changed = config_changes(state.get("config") or {}, self.cfg.model_dump())
        if changed:
            shown = ", ".join(changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
            self.say(f"note: the config differs from the checkpoint's in {shown}; continuing with the new values")
        restore_rng_states(state.get("rng"), self.rank)
        self.say(
            f"resumed {path}: epoch {self.pos.epoch + 1}, batch {self.pos.batch}/{self.epoch_length}, "
            f"step {self.pos.step}"
        )

    # -- console --------------------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        if self.verbose:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    @property
    def lr(self) -> float:
        return float(self._prepared_optimizer.param_groups[0]["lr"])

    @property
    def _prepared_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("Trainer.prepare() builds the optimizer: call it before training")
        return self.optimizer

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

    def estimate(self, out: Any, mix: Tensor) -> Tensor:
        """Waveform estimates ``(batch, 4, channels, samples)`` from the model output of :meth:`forward_loss`."""
        return validation.estimate(out, mix, self.stft, self.cfg.MWF, self.time_domain)

    def _to_device(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        mix, stems = batch
        nb = self.device.type == "cuda"
        return mix.to(self.device, non_blocking=nb), stems.to(self.device, non_blocking=nb)

    def _group(self, b: int) -> tuple[int, bool]:
        """(size of the accumulation group holding batch ``b``, whether ``b`` closes it)."""
        cum = self.tr.cum_steps
        start = (b // cum) * cum
        size = min(cum, self.epoch_length - start)
        return size, b - start == size - 1

    def train_step(self, b: int, batch: Sequence[Tensor]) -> None:
        # every random draw of the step is a function of (seed, epoch, batch, rank): exact resume
        torch.manual_seed(mix_seed(self.seed, self.pos.epoch, b, self.rank, STEP))
        mix, stems = self._to_device(batch)
        if self.augment is not None:  # pitch/speed per stem, then mixture = Σ stems
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.pos.epoch, b, self.rank, AUGMENT))
            mix, stems = self.augment(stems, gen)
        size, closes = self._group(b)
        sync = closes or self.world == 1
        ctx = self._ddp.no_sync() if self._ddp is not None and not sync else contextlib.nullcontext()
        with ctx:
            try:
                loss, extras, _ = self.forward_loss(self.model, mix, stems)
                self.scaler.scale(loss / size).backward()
            except _compile_errors() as exc:
                if self.model is self.module or self.model is self._ddp:
                    raise
                # compilation failed (no C++ compiler, an unsupported operator): train eager, this batch again;
                # a failure raises before any gradient is accumulated, so nothing is counted twice
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.say(f"warning: torch.compile failed ({first[:200]}); training without it")
                self.model = self._ddp or self.module
                loss, extras, _ = self.forward_loss(self.model, mix, stems)
                self.scaler.scale(loss / size).backward()
        if closes:
            optimizer = self._prepared_optimizer
            if self.tr.grad_clip is not None:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.tr.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            self.pos.opt_steps += 1
        zero = loss.new_zeros(())
        values = torch.stack([loss.detach(), extras.get("loss_f", zero), extras.get("loss_t", zero)]).double()
        self.pos.meters += values
        self._meters_log += values
        self.pos.count += 1
        self._count_log += 1
        self.pos.step += 1

    # -- validation -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation loss and per-source global SDR, next to the mixture-as-estimate baseline (cached)."""
        self.module.eval()
        lc = self.cfg.data_loader.valid
        indices = validation.shard(self.valid_size, self.rank, self.world, self.tr.val_epoch_length, lc.batch_size)
        loader = self._loader(self.valid_set, lc, batch_size=lc.batch_size, sampler=indices)

        def evaluate(mix: Tensor, stems: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
            loss, extras, out = self.forward_loss(self.module, mix, stems)
            return loss, extras, self.estimate(out, mix)

        sums = validation.accumulate(
            (self._to_device(b) for b in loader), evaluate, self.pos.baseline is None, self.device
        )
        if self.world > 1:
            dist.all_reduce(sums)
        self.module.train()
        # .tolist(): the one host sync of a validation
        result, self.pos.baseline = validation.summarise(
            sums.tolist(), self.pos.baseline, self.pos.epoch + 1, self.pos.step
        )
        return result

    @torch.no_grad()
    def log_audio(self) -> None:
        """Mixture and estimates of one validation item (a different one each epoch) to TensorBoard."""
        seconds = self.tr.audio_seconds
        if self.writer is None or seconds <= 0 or self.valid_size == 0:
            return
        index = random.Random(mix_seed(self.seed, self.pos.epoch, AUDIO)).randrange(self.valid_size)
        mix, stems = self.valid_set[index]
        mix, stems = self._to_device((torch.as_tensor(mix)[None], torch.as_tensor(stems)[None]))
        self.module.eval()
        _, _, out = self.forward_loss(self.module, mix, stems)
        est = self.estimate(out, mix)[0]
        self.module.train()
        tb.log_audio(self.writer, mix[0], est, seconds, self.pos.epoch + 1)

    # -- checkpoints ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything that resumes this run, plus the config that rebuilds the model (collective under DDP)."""
        return checkpoint_dict(
            model=self.module,
            optimizer=self._prepared_optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            progress=self.pos,
            epoch_length=self.epoch_length,
            world=self.world,
            config=self.cfg.model_dump(),  # checkpoints hold the plain dict
        )

    def last_path(self) -> Path:
        return self.save_dir / f"{self.file_stem}_last.pt"

    def save_last(self) -> Path:
        state = self.state()  # collective under DDP: every rank calls it
        path = self.last_path()
        if self.main:
            save_checkpoint(state, path)
        return path

    def save_best(self, score: float) -> Path | None:
        """Keep the ``n_saved`` best checkpoints by validation SDR (this run's files only)."""
        # every rank keeps the same list (the score is all-reduced), so all agree on the collective in state()
        fname = f"{self.file_stem}_checkpoint_{score:.4f}.pt"
        ranked = rank_best(self.pos.best, score, fname, self.tr.n_saved)
        if ranked is None:
            return None
        state = self.state()  # holds the list as it was before this file entered it
        self.pos.best, dropped = ranked
        if not self.main:
            return None
        save_checkpoint(state, self.save_dir / fname)
        for old in dropped:
            with contextlib.suppress(FileNotFoundError):
                (self.save_dir / old).unlink()
        return self.save_dir / fname

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, lc: LoaderConfig, **kwargs: Any) -> DataLoader:
        return build_loader(dataset, lc, self.device, self.seed, **kwargs)

    def _stop_requested(self, stop: _StopFlag, force: bool = False) -> bool:
        if self.world == 1:
            return bool(stop)
        # ranks must agree on where to stop; one tiny collective every log interval (or when forced)
        if self.pos.opt_steps % self.tr.log_every and not force:
            return False
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _sync_log(self, pbar: Any) -> None:
        """The periodic host sync: progress-bar postfix and TensorBoard scalars, then reset the interval meters."""
        if self._count_log == 0:
            return
        losses = (self._meters_log / self._count_log).tolist()
        loss = losses[0]
        if not math.isfinite(loss):
            raise DannaError(
                f"training diverged: the loss is {loss} at epoch {self.pos.epoch + 1}, step {self.pos.step} (try a "
                f"lower optimizer.args.lr or trainer.grad_clip); the last checkpoint is {self.last_path()}"
            )
        if pbar is not None:
            pbar.set_postfix_str(f"loss {loss:.4g} lr {self.lr:.3g}", refresh=False)
        if self.writer is not None:
            tb.log_training(self.writer, self.pos.step, losses, self.lr, self.tr.extra_monitor)
        self._meters_log.zero_()
        self._count_log = 0

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train until ``trainer.epochs``, early stopping, a signal, or ``max_steps`` micro-batches in total
        (the last two leave a resumable ``<name>_last.pt``)."""
        from tqdm import tqdm

        if self._tensorboard and self.writer is None:
            self.writer, self.log_dir = tb.open_writer(self.workdir / self.tr.log_dir, self.name)
        pos = self.pos
        epochs = self.tr.epochs
        result = TrainResult(self.name, pos.epoch, pos.step, pos.opt_steps)
        n_params = sum(p.numel() for p in self.module.parameters())
        self.say(
            f"{self.name}: {self.cfg.arch.type} {n_params / 1e6:.2f} M parameters on {self.device}"
            f"{f' × {self.world} processes' if self.world > 1 else ''}; {self.train_size} train items "
            f"({self.epoch_length} batches/epoch), {self.valid_size} validation items"
        )
        self.module.train()
        with _StopFlag() as stop, contextlib.closing(self):
            while pos.epoch < epochs:
                if max_steps is not None and pos.step >= max_steps:
                    result.last_checkpoint = self.save_last()
                    break
                t0 = time.perf_counter()
                if hasattr(self.train_set, "set_epoch"):
                    self.train_set.set_epoch(pos.epoch)
                self.sampler.set_epoch(pos.epoch, pos.batch)
                loader = self._loader(self.train_set, self.cfg.data_loader.train, batch_sampler=self.sampler)
                pbar = tqdm(
                    total=self.epoch_length,
                    initial=pos.batch,
                    desc=f"epoch {pos.epoch + 1}/{epochs}",
                    disable=not self.progress,
                    leave=False,
                    dynamic_ncols=True,
                    file=sys.stdout,
                )
                halt = None
                for b, batch in enumerate(loader, start=pos.batch):
                    self.train_step(b, batch)
                    pos.batch = b + 1
                    pbar.update(1)
                    if pos.step % self.tr.log_every == 0:
                        self._sync_log(pbar)
                    if self._group(b)[1]:  # stop only between optimizer steps
                        if max_steps is not None and pos.step >= max_steps:
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
                        self.say(
                            f"stopped by signal {stop.signal}: resume with --checkpoint '{result.last_checkpoint}'"
                        )
                    break
                self._sync_log(None)
                stopped_early = self._end_epoch(time.perf_counter() - t0, result)
                if stopped_early:
                    result.stopped_early = True
                    break
                if pos.epoch < epochs and self._stop_requested(stop, force=True):
                    # a signal during validation: <name>_last.pt was just written at the epoch boundary
                    result.interrupted = True
                    self.say(f"stopped by signal {stop.signal}: resume with --checkpoint '{result.last_checkpoint}'")
                    break
        result.epochs_completed = pos.epoch
        result.steps, result.optimizer_steps = pos.step, pos.opt_steps
        result.history = list(pos.history)
        result.log_dir = self.log_dir
        result.lr = self.lr
        if pos.best:
            result.best_score = pos.best[0][0]
            result.best_checkpoint = self.save_dir / pos.best[0][1]
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
        pos = self.pos
        sums = torch.cat([pos.meters, pos.meters.new_tensor([pos.count])])
        if self.world > 1:
            dist.all_reduce(sums)
        values = sums.tolist()
        train = {k: v / max(values[3], 1) for k, v in zip(("loss", "loss_f", "loss_t"), values[:3], strict=True)}
        epoch_no = pos.epoch + 1
        validate = epoch_no % self.tr.validate_every == 0 or epoch_no == self.tr.epochs
        val = self.validate() if validate else None
        if val is not None:
            val["train_loss"] = train["loss"]
            pos.history.append(val)
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
        if val is not None and self.tr.patience is not None:
            if val["loss"] < pos.early["best_loss"]:
                pos.early = {"best_loss": val["loss"], "bad": 0}
            else:
                pos.early["bad"] += 1
                stop = pos.early["bad"] >= self.tr.patience

        if self.writer is not None:
            tb.log_epoch(self.writer, epoch_no, train["loss"], self.lr, val, self.tr.extra_monitor)

        # the position after this epoch, then the files
        pos.epoch, pos.batch = epoch_no, 0
        pos.meters.zero_()
        pos.count = 0
        if val is not None:
            best = self.save_best(val["avg_sdr"])
            if best is not None:
                result.best_checkpoint = best
        result.last_checkpoint = self.save_last()

        line = f"epoch {epoch_no}/{self.tr.epochs}: train loss {train['loss']:.4f}"
        for k in self.tr.extra_monitor:
            line += f" {k} {train[k]:.4f}"
        if val is not None:
            line += f" | valid loss {val['loss']:.4f} SDR"
            line += "".join(f" {s} {val['sdr'][s]:.2f} ({val['baseline'].get(s, math.nan):.2f})" for s in SOURCES)
            line += f" avg {val['avg_sdr']:.2f} (mixture {val['avg_baseline']:.2f})"
        line += f" | lr {self.lr:.3g} | {seconds:.1f} s"
        if stop:
            line += f" | early stop: no better validation loss for {self.tr.patience} validations"
        self.say(line)
        return stop
