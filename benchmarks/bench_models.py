"""Each model alone, the original's own model code against ours: inference and a training step, side by side.

The original's code is ``tests/original_release/models.py`` (the release's three modules, its computations and
attribute names, full sizes); ours is ``danna_sep.models`` with its defaults. Same torch, same input, same threads:

* ``inference``: masks (spectral models) or stems (Demucs) for 10 s of stereo, batch 1, ``torch.inference_mode``;
  ours as the inference path runs it (:class:`danna_sep.inference.LoadedModel`: eval, batch norms folded), the
  original as its eager module in eval mode;
* ``train step``: batch 1 × 6 s in train mode, forward, an L1 loss against a fixed random target of the output's
  shape, backward (no optimizer step: Adam costs the same for both, ±0.1 % parameters); ``--compile``: also ours
  through ``torch.compile`` (inductor), as ``trainer.compile`` runs it, its first (compiling) step not timed.

* ``quality`` (not timed): goal 5's check of the fast path. The original's modules get calibrated random weights
  (``original_release.randomize``), are imported into ours (:func:`danna_sep.release.convert.build_imported`, the
  released-weights path), and ours as the inference path runs it is compared with ours in plain fp32 eval mode on
  10 s of music-like audio (``original_release.example_mix``): SDR per source, dB, of the masked magnitudes (Demucs:
  of the stems), ``10·log10(Σ ref² / Σ (ref − fast)²)``.

Spectral models get a random magnitude ``(1, 2, 2049, frames)`` (431 frames for 10 s, 259 for 6 s), Demucs a random
waveform. The two sides alternate over ``--rounds`` rounds (original first in even rounds, ours first in odd ones),
after one warm-up call each; the best wall time and the best process CPU time of each are reported, and
``speed-up`` = original's time / ours (> 1: ours faster). Wall times on a shared machine swing by ±30 % between
unalternated runs (and more when other jobs hold the cores): compare the ratios, the CPU ones under load.

    .venv/bin/python benchmarks/bench_models.py [--models xumx,unet,demucs] [--cases infer,train,quality]
                                                [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from original_release import models as original  # noqa: E402

from danna_sep import SAMPLE_RATE  # noqa: E402
from danna_sep.inference import LoadedModel  # noqa: E402
from danna_sep.models import X_UMX, DemucsSplit, UNetAttn  # noqa: E402
from danna_sep.release.convert import build_imported  # noqa: E402
from danna_sep.spectral import STFT, num_frames  # noqa: E402

BUILDERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]] = {
    "xumx": (original.X_UMX, X_UMX),
    "unet": (original.UNetAttn, UNetAttn),
    "demucs": (original.DemucsSplit, DemucsSplit),
}


def model_input(name: str, seconds: float) -> Tensor:
    """A random input of ``seconds`` of stereo for model ``name``: magnitude or waveform, batch 1."""
    gen = torch.Generator().manual_seed(0)
    samples = round(seconds * SAMPLE_RATE)
    if name == "demucs":
        return 0.1 * torch.randn(1, 2, samples, generator=gen)
    return torch.rand(1, 2, 2049, num_frames(samples), generator=gen)


def inference(model: nn.Module, x: Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def train_step(model: nn.Module, x: Tensor) -> Callable[[], object]:
    model.train()
    with torch.no_grad():
        shape = model(x).shape
    target = torch.rand(shape, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        model.zero_grad(set_to_none=True)
        (model(x) - target).abs().mean().backward()

    return run


def quality(name: str, seconds: float) -> list[float]:
    """SDR per source (dB) of ours as the inference path runs it against ours in plain fp32 eval mode, on
    imported calibrated weights and music-like audio (module docstring)."""
    torch.manual_seed(0)
    theirs = original.randomize(BUILDERS[name][0](), seed=1)
    _, ours = build_imported(name, theirs)
    fast = LoadedModel.from_module(ours)
    wav = original.example_mix(round(seconds * SAMPLE_RATE), seed=2).unsqueeze(0)
    x = wav if name == "demucs" else STFT()(wav).abs().contiguous()
    with torch.inference_mode():
        ref, out = ours.eval()(x), fast(x)
    if name != "demucs":  # masks → masked magnitudes, the estimates the Wiener filter starts from
        ref, out = ref * x.unsqueeze(1), out * x.unsqueeze(1)
    dims = [d for d in range(ref.dim()) if d != 1]
    error = (ref - out).double().square().sum(dims)
    return (10 * torch.log10(ref.double().square().sum(dims) / error)).tolist()


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each of ``fns`` over ``rounds`` rounds, the order reversed every other round.

    CPU time is the process's, all threads: waiting for a core held by another job does not count in it."""
    names = list(fns)
    for fn in fns.values():  # warm-up: allocator, oneDNN kernels and weight formats
        fn()
    wall = dict.fromkeys(names, float("inf"))
    cpu = dict.fromkeys(names, float("inf"))
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - cpu_start)
    return {name: (wall[name], cpu[name]) for name in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="xumx,unet,demucs")
    ap.add_argument("--cases", default="infer,train,quality")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--infer-seconds", type=float, default=10.0)
    ap.add_argument("--train-seconds", type=float, default=6.0)
    ap.add_argument(
        "--compile",
        action="store_true",
        help="train case: ours through torch.compile (inductor), as trainer.compile runs it; compiling is not timed",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.cases.split(",")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1; best wall s of {args.rounds} "
        f"alternated rounds; speed-up = original / ours"
    )
    print(
        f"{'':32} {'wall: original':>14} {'ours':>7} {'speed-up':>8}   "
        f"{'CPU: original':>13} {'ours':>7} {'speed-up':>8}"
    )
    for name in args.models.split(","):
        make_original, make_ours = BUILDERS[name]
        torch.manual_seed(0)
        theirs, ours = make_original(), make_ours()
        for case in cases:
            if case == "quality":
                sdr = quality(name, args.infer_seconds)
                print(f"{name:7} {'quality: SDR dB per source':32} " + " ".join(f"{v:6.1f}" for v in sdr), flush=True)
                continue
            if case == "infer":
                x = model_input(name, args.infer_seconds)
                fns = {
                    "original": inference(theirs.eval(), x),
                    "ours": inference(LoadedModel.from_module(ours).module, x),
                }
                label = f"inference {args.infer_seconds:g} s"
            else:
                x = model_input(name, args.train_seconds)
                fns = {"original": train_step(theirs, x), "ours": train_step(ours, x)}
                if args.compile:
                    start = time.perf_counter()
                    fns["ours compiled"] = train_step(torch.compile(ours), x)
                    fns["ours compiled"]()  # the first call compiles forward and backward
                    print(f"{name:7} torch.compile: first step {time.perf_counter() - start:.0f} s", flush=True)
                label = f"train step 1 x {args.train_seconds:g} s"
            best = alternate(fns, args.rounds)
            wall_theirs, cpu_theirs = best.pop("original")
            for variant, (wall_ours, cpu_ours) in best.items():
                text = label + variant.removeprefix("ours")
                print(
                    f"{name:7} {text:24} {wall_theirs:13.3f}s {wall_ours:6.3f}s {wall_theirs / wall_ours:7.2f}x   "
                    f"{cpu_theirs:12.3f}s {cpu_ours:6.3f}s {cpu_theirs / cpu_ours:7.2f}x",
                    flush=True,
                )
            del fns
            gc.collect()
        del theirs, ours
        gc.collect()


if __name__ == "__main__":
    main()
