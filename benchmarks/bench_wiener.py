"""Benchmark: danna_sep.wiener vs norbert.wiener (numpy), one thread each, same run.

4 sources × 2 channels × 2049 bins × 300 frames, 1 EM iteration (the setting used for training and separation).
Runs alternate between the implementations; the table gives the best of ``--repeats`` runs, as wall-clock and as
process CPU time (the latter is less disturbed by other processes on a shared machine).

    .venv/bin/python benchmarks/bench_wiener.py [--repeats 7] [--frames 300] [--iterations 1]
"""

import os

# one thread for numpy's BLAS as well as for torch; must be set before numpy is imported
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import time
import warnings

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # norbert imports scipy.ndimage.filters
    import norbert

from danna_sep.wiener import wiener


def timed(fn) -> tuple:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)

    sources, channels, bins, frames = 4, 2, 2049, args.frames
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(channels, bins, frames, dtype=torch.complex64, generator=g) * 5
    mag = torch.rand(sources, channels, bins, frames, generator=g) * mix.abs()  # float32, as from a model
    mix128, mag64 = mix.to(torch.complex128), mag.double()
    # norbert's layout (frames, bins, channels, sources), complex128 as norbert recommends
    v = np.ascontiguousarray(mag64.permute(3, 2, 1, 0).numpy())
    x = np.ascontiguousarray(mix128.permute(2, 1, 0).numpy())

    it = args.iterations
    cases = {
        "norbert.wiener (complex128)": lambda: norbert.wiener(v, x.copy(), it, use_softmask=False),
        "ours float64, complex64 in/out": lambda: wiener(mag, mix, it),
        "ours float64, complex128 in/out": lambda: wiener(mag64, mix128, it),
        "ours float32 mode, complex64": lambda: wiener(mag, mix, it, dtype=torch.float32),
    }
    # the copy norbert needs (it scales x in place) is not part of its time
    copy_wall = min(timed(lambda: x.copy())[0] for _ in range(3))
    best = {name: [float("inf"), float("inf")] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            wall, cpu = timed(fn)
            if name.startswith("norbert"):
                wall, cpu = wall - copy_wall, cpu - copy_wall
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]

    # same numbers (norbert is the reference)
    ref = torch.from_numpy(norbert.wiener(v, x.copy(), it, use_softmask=False)).permute(3, 2, 1, 0)
    err = ((wiener(mag64, mix128, it) - ref).abs().max() / ref.abs().max()).item()

    print(
        f"{sources} sources × {channels} ch × {bins} bins × {frames} frames, {it} iteration(s), 1 thread, "
        f"best of {args.repeats}"
    )
    ref_wall, ref_cpu = best["norbert.wiener (complex128)"]
    print(f"{'':34s} {'wall ms':>9s} {'cpu ms':>9s} {'speed-up (wall / cpu)':>22s}")
    for name, (wall, cpu) in best.items():
        print(f"{name:34s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {ref_wall / wall:10.2f}× / {ref_cpu / cpu:5.2f}×")
    print(f"max |ours − norbert| / max |norbert| (complex128): {err:.1e}")


if __name__ == "__main__":
    main()
