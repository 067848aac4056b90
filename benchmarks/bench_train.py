"""Training throughput (chunks/s) of the trainer for each model's real configuration, next to the peers.

For every model, one training step at batch 1 with the config's chunk length (X-UMX 6 s, U-Net 11.88 s, Demucs
10 s), on random stems, timed after one warm-up step:

* ``trainer``: :meth:`danna_sep.train.Trainer.train_step` of the shipped full config (STFT, model, loss with the
  config's Wiener iterations, backward, optimizer step, bookkeeping), device augmentation off, fp32;
* ``trainer+aug``: the same with the config's device augmentation (pitch shift / speed change, p = 0.2 per stem);
* ``bare loop``: our model in a plain loop (forward, the config's loss, backward, Adam): the trainer's overhead
  is the difference to ``trainer``;
* ``peer``: the same plain loop with the peer model at the same size, same input, same loss: Open-Unmix × 4
  targets (``openunmix.model.OpenUnmix``, hidden 512, 3 layers, max_bin 1487) under the combination loss with one
  Wiener iteration for X-UMX, and ``demucs.demucs.Demucs(channels=48, depth=6)`` with L1 for Demucs (the U-Net
  has no packaged peer). ``ratio`` = trainer CPU time / peer CPU time (< 1: ours is faster).

Ours and the peer alternate repeat by repeat so that CPU noise from other jobs hits both; the minimum is
reported, as CPU time of the process (``time.process_time``) and as wall time. On a shared machine the CPU time
with ``--threads 1`` is the robust number (wall time and multi-threaded runs suffer from other jobs); the
throughput column is 1 / CPU time, i.e. chunks per second per core.

    .venv/bin/python benchmarks/bench_train.py [--repeat 2] [--threads 1] [--models xumx,unet,demucs]
"""

import argparse
import gc
import sys
import time
import types
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from danna_sep import SAMPLE_RATE
from danna_sep.config import configs_dir, load_config
from danna_sep.train import Trainer

CONFIGS = {"xumx": "x_umx_mwf", "unet": "unet_attn", "demucs": "demucs_split"}


class RandomStems(Dataset):
    """``items`` random stereo stems of ``samples`` samples: ``(mixture, stems)`` like the real datasets."""

    def __init__(self, items: int, samples: int):
        gen = torch.Generator().manual_seed(0)
        self.stems = 0.1 * torch.randn(items, 4, 2, samples, generator=gen)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int):
        return self.stems[i].sum(0), self.stems[i]


def trainer_for(name: str, augment: bool, batch: int = 1) -> tuple[Trainer, tuple[Tensor, Tensor]]:
    """The trainer of ``name``'s full config (fp32, no gradient accumulation) and one batch of ``batch`` random
    chunks of the config's length."""
    cfg = load_config(
        configs_dir() / f"{CONFIGS[name]}.json",
        [
            f"data_loader.train.batch_size={batch}",
            "data_loader.train.num_workers=0",
            "trainer.amp_enabled=false",
            f"device_augment.enabled={'true' if augment else 'false'}",
            "trainer.cum_steps=1",
        ],
    )
    samples = round(cfg["dataset"]["train"]["args"]["seq_duration"] * SAMPLE_RATE)
    data = RandomStems(max(2, batch), samples)
    trainer = Trainer(
        cfg,
        device=torch.device("cpu"),
        train_set=data,
        valid_set=data,
        verbose=False,
        progress=False,
        tensorboard=False,
    )
    trainer.prepare()
    stems = data.stems[:batch]
    return trainer, (stems.sum(1), stems)


def open_unmix_peer() -> nn.Module:
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # openunmix imports it, OpenUnmix does not
    from openunmix.model import OpenUnmix

    class Peer(nn.Module):
        """Open-Unmix × 4 as a mask estimator: magnitude (B, C, F, T) → masks (B, 4, C, F, T)."""

        def __init__(self):
            super().__init__()
            self.targets = nn.ModuleList(
                OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487) for _ in range(4)
            )

        def forward(self, mag: Tensor) -> Tensor:
            return torch.stack([m(mag) for m in self.targets], 1) / (mag.unsqueeze(1) + 1e-8)

    return Peer()


def peer_model(name: str) -> nn.Module | None:
    if name == "xumx":
        return open_unmix_peer()
    if name == "demucs":
        from demucs.demucs import Demucs

        return Demucs(sources=["drums", "bass", "other", "vocals"], channels=48, depth=6)
    return None  # the U-Net has no packaged peer


def plain_step(model: nn.Module, trainer: Trainer) -> Callable[[tuple[Tensor, Tensor]], None]:
    """A bare training step (forward, the config's loss, backward, Adam) for ``model`` on the trainer's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=trainer.cfg.optimizer.args["lr"])
    model.train()

    def loss_fn(mix: Tensor, stems: Tensor) -> Tensor:
        if trainer.time_domain:
            return trainer.criterion(model(mix), stems)[0]
        spec = trainer.stft(mix)
        return trainer.criterion(model(spec.abs()), spec, stems, mix)[0]  # combination loss, config's Wiener

    def step(batch: tuple[Tensor, Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(*batch).backward()
        optimizer.step()

    return step


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="timed steps per case (the minimum is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--models", default="xumx,unet,demucs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} thread(s), batch 1, fp32; best of {args.repeat} after one warm-up step")
    print("chunks/s per core (CPU s per step, wall s per step)")
    print(f"{'model':7} {'chunk':>6} {'trainer':>22} {'trainer+aug':>22} {'bare loop':>22} {'peer':>22} {'ratio':>6}")
    for name in args.models.split(","):
        trainer, batch = trainer_for(name, augment=False)
        seconds = batch[0].shape[-1] / SAMPLE_RATE
        cases = {"trainer": partial(trainer.train_step, 0, batch)}
        bare = plain_step(trainer.module, trainer)
        cases["bare"] = partial(bare, batch)
        peer = peer_model(name)
        if peer is not None:
            peer_fn = plain_step(peer, trainer)
            cases["peer"] = partial(peer_fn, batch)
        for fn in cases.values():  # warm-up
            fn()
        best = {k: (float("inf"), float("inf")) for k in cases}
        for _ in range(args.repeat):  # interleaved
            for k, fn in cases.items():
                best[k] = min(best[k], timed(fn))
        del trainer, peer, cases, bare
        gc.collect()
        aug_trainer, _ = trainer_for(name, augment=True)
        aug_trainer.train_step(0, batch)
        aug_steps = [partial(aug_trainer.train_step, b, batch) for b in range(1, args.repeat + 1)]
        best["trainer+aug"] = min(timed(step) for step in aug_steps)
        del aug_steps
        del aug_trainer
        gc.collect()

        def cell(key: str, best: dict = best) -> str:
            if key not in best:
                return f"{'—':>22}"
            cpu, wall = best[key]
            return f"{1 / cpu:6.3f}/s ({cpu:5.1f}, {wall:5.1f})"

        ratio = f"{best['trainer'][0] / best['peer'][0]:6.2f}" if "peer" in best else f"{'—':>6}"
        print(
            f"{name:7} {seconds:5.2f}s {cell('trainer')} {cell('trainer+aug')} {cell('bare')} {cell('peer')} {ratio}",
            flush=True,
        )


if __name__ == "__main__":
    main()
