"""The config-driven trainer of all three models (a package; this module only gathers its public names).

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
* checkpoints ``saved/<name>_last.pt`` and the ``n_saved`` best ``saved/<name>_checkpoint_<avg SDR>.pt`` (``<name>``
  with ``_`` for spaces), written atomically, holding everything needed to resume *mid-epoch* exactly;
* TensorBoard under ``runs/<name>/<timestamp>``, a tqdm bar and one summary line per epoch;
* Ctrl-C / SIGTERM save a resumable checkpoint and return.

Exact resume. Every random choice is a function of (seed, epoch, position): the data order of an epoch comes from
(seed, epoch), each item's chunk and CPU augmentation from (seed, epoch, index) (the dataset's ``set_epoch``), and
before every micro-batch the torch RNG (device augmentation, dropout) is re-seeded from (seed, epoch, batch, rank).
A resumed run therefore only needs the position (epoch, next batch) plus the model/optimizer/scheduler/scaler
state; the loader starts at the next batch without reading the consumed ones. Checkpoints still carry every RNG
state (python, numpy, torch, cuda) for code that draws from the global generators outside the step.

Layout: :mod:`.build` turns config names into objects (:func:`.build.resolve` looks each name up once while
:func:`danna_sep.config.parse_config` checks the config, and the typed config keeps the classes), :mod:`.trainer`
is the loop, :mod:`.state` the checkpoint and resume, :mod:`.validation` the SDR arithmetic, :mod:`.tensorboard`
the logging, :mod:`.seeds` the seed streams, :mod:`.sampler` the data order and :mod:`.launch` the entry points
(one process, spawned workers, torchrun).
"""

# ruff: noqa: F401 — the names below are the API that danna_sep/train.py had (imported by users, tests and tools)
from ..checkpoints import WeightsReport, atomic_write, load_weights, read_state_dict, save_checkpoint
from .build import (
    DATASETS,
    LOSSES,
    Classes,
    Optimization,
    Parts,
    build_dataset,
    build_device_augment,
    build_loader,
    build_optimization,
    build_parts,
    build_sampler,
    dataset_class,
    dataset_root,
    loss_class,
    optimizer_class,
    resolve,
    scheduler_class,
)
from .launch import config_path, resolve_device, train
from .sampler import ShardedBatchSampler
from .seeds import mix_seed, rng_states, set_rng_states
from .state import CHECKPOINT_VERSION, Progress
from .tensorboard import audio_summary
from .trainer import Trainer, TrainResult

# as train.py had it (star imports unchanged)
__all__ = ["ShardedBatchSampler", "TrainResult", "WeightsReport", "load_weights", "resolve_device", "train"]
