"""DemucsSplit's ×2 / ÷2 resampler (``BlockResample``) against julius' ``ResampleFrac`` (same filter), same run.

Shapes of the reference DemucsSplit on a ``--seconds`` segment at 44.1 kHz (default 10 s, the training and
separation length): ``up ×2`` resamples the standardised mixture ``(batch, 2, L)``, ``down ÷2`` the decoder output
``(batch, 4·2, 2L)``. Cases: ``inference`` (``torch.inference_mode``) at batch 1, and ``fwd+bwd`` (forward and the
input gradient, as in training) at batch 3, the training batch of ``configs/demucs_split.json``.

The implementations alternate repeat by repeat; the table gives the best of ``--repeat`` runs, the ratio
``julius / ours`` (> 1: ours is faster) and the largest absolute difference of the outputs (and of the input
gradients) relative to the largest julius output.

    .venv/bin/python benchmarks/bench_resample.py [--repeat 3] [--seconds 10] [--threads N]
"""

import argparse
import time

import julius
import torch

from danna_sep.models.demucs import BlockResample

SAMPLE_RATE = 44100


def timed(module: torch.nn.Module, x: torch.Tensor, train: bool) -> tuple[float, torch.Tensor, torch.Tensor | None]:
    """Seconds of one forward (``train``: and backward of the output's sum), the output and the input gradient."""
    if not train:
        with torch.inference_mode():
            start = time.perf_counter()
            y = module(x)
            return time.perf_counter() - start, y, None
    x = x.detach().requires_grad_(True)
    start = time.perf_counter()
    y = module(x)
    y.backward(torch.ones_like(y))
    return time.perf_counter() - start, y.detach(), x.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    length = int(args.seconds * SAMPLE_RATE)
    gen = torch.Generator().manual_seed(0)
    pairs = {
        "up ×2": ((1, 2), lambda batch: torch.randn(batch, 2, length, generator=gen)),
        "down ÷2": ((2, 1), lambda batch: torch.randn(batch, 8, 2 * length, generator=gen)),
    }
    print(f"{args.seconds:g} s segments, CPU {torch.get_num_threads()} threads, best of {args.repeat} alternating runs")
    print(f"{'case':<30}{'ours ms':>9}{'julius ms':>11}{'julius / ours':>15}{'max rel diff':>14}")
    for label, ((old, new), make) in pairs.items():
        impls = {"ours": BlockResample(old, new), "julius": julius.ResampleFrac(old, new)}
        for case, batch, train in (("inference", 1, False), ("fwd+bwd", 3, True)):
            x = make(batch)
            best = dict.fromkeys(impls, float("inf"))
            outs: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
            for round_ in range(args.repeat + 1):  # round 0 warms up
                for name, module in impls.items():
                    elapsed, y, grad = timed(module, x, train)
                    outs[name] = (y, grad)
                    if round_ > 0:
                        best[name] = min(best[name], elapsed)
            (y_ours, g_ours), (y_ref, g_ref) = outs["ours"], outs["julius"]
            if y_ours.shape != y_ref.shape:
                raise SystemExit(f"{label}: output shapes differ: {list(y_ours.shape)} vs {list(y_ref.shape)}")
            err = ((y_ours - y_ref).abs().max() / y_ref.abs().max()).item()
            if g_ours is not None and g_ref is not None:
                err = max(err, ((g_ours - g_ref).abs().max() / g_ref.abs().max()).item())
            name = f"{label} {case} {batch}×{x.shape[1]}×{x.shape[2]}"
            ours, ref = best["ours"], best["julius"]
            print(f"{name:<30}{ours * 1e3:>9.0f}{ref * 1e3:>11.0f}{ref / ours:>14.2f}×{err:>14.1e}")


if __name__ == "__main__":
    main()
