"""Speed of danna_sep.metrics.bss_sdr against museval.evaluate (BSSEval v4), same signals, same run.

4 sources × 2 channels × 10 s at 44.1 kHz by default; the estimates are the references plus noise, leakage of the
other sources and a short filter, like a real separator's output. Prints the best of ``--repeat`` timings of each,
the speed ratio and the largest absolute difference of the framewise metrics (dB). CPU time (all threads of the
process) is printed too: on a shared machine it is a steadier measure than wall-clock time.

    .venv/bin/python benchmarks/bench_metrics.py [--seconds 10] [--sources 4] [--repeat 3] [--museval-repeat 1]

bss_sdr runs on one thread by design; museval's dense solves use numpy's BLAS with its default threads.
"""

import argparse
import time

import numpy as np
import torch

from danna_sep.metrics import bss_sdr


def make_signals(n_src: int, seconds: float, rate: int = 44100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """References (sources, channels, samples) of coloured noise, estimates with leakage, noise and a short filter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    white = rng.standard_normal((n_src, 2, n))
    # AR(1) colouring of different brightness per source, applied in the frequency domain
    a = rng.uniform(0.3, 0.95, size=(n_src, 1, 1))
    refs = np.fft.irfft(np.fft.rfft(white) / (1 - a * np.exp(-2j * np.pi * np.fft.rfftfreq(n))), n)
    est = refs + 0.15 * np.roll(refs, 1, axis=0) + 0.1 * refs.std() * rng.standard_normal(refs.shape)
    h = np.r_[1.0, 0.05 * rng.standard_normal(23)]  # causal FIR: a slightly coloured estimate
    est = np.fft.irfft(np.fft.rfft(est, n + 23) * np.fft.rfft(h, n + 23), n + 23)[..., :n]
    return refs, est


def best_of(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU time (all threads of this process) over ``repeat`` runs, and the result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="timings per implementation (the minimum is reported)")
    ap.add_argument("--museval-repeat", type=int, default=1, help="museval is slow: fewer repeats by default")
    args = ap.parse_args()

    import museval

    refs, est = make_signals(args.sources, args.seconds)
    bss_sdr(refs[:, :, :44100], est[:, :, :44100])  # warm-up (first-call allocations, FFT plans)
    t_ours, c_ours, ours = best_of(lambda: bss_sdr(refs, est), args.repeat)
    t_ref, c_ref, ref = best_of(
        lambda: museval.evaluate(refs.transpose(0, 2, 1), est.transpose(0, 2, 1), win=44100, hop=44100),
        args.museval_repeat,
    )

    print(
        f"BSSEval v4, {args.sources} sources x 2 ch x {args.seconds:g} s (bss_sdr: 1 thread; museval: numpy BLAS "
        f"default threads; {torch.get_num_threads()} cores visible to torch)"
    )
    print(f"{'implementation':<22}{'wall (s)':>10}{'CPU (s)':>10}")
    print(f"{'museval.evaluate':<22}{t_ref:>10.3f}{c_ref:>10.3f}")
    print(f"{'danna_sep bss_sdr':<22}{t_ours:>10.3f}{c_ours:>10.3f}")
    print(f"speed-up: {t_ref / t_ours:.1f}x wall, {c_ref / c_ours:.1f}x CPU time")
    for name, a, b in zip(("SDR", "ISR", "SIR", "SAR"), ref, ours, strict=True):
        same_nan = bool((np.isnan(a) == np.isnan(b)).all())
        print(
            f"{name}: max |diff| = {np.nanmax(np.abs(a - b)):.2e} dB, NaN positions equal: {same_nan}, "
            f"median {np.nanmedian(b, axis=1).round(3).tolist()}"
        )


if __name__ == "__main__":
    main()
