"""Forward time and peak memory of the full-size UNetAttn on CPU.

Cases: an 11.88-s training chunk (512 frames) and a 60-s excerpt (2585 frames, padded to 2624 inside the model).
There is no peer implementation to run side by side, so the reference is real time: ``x real time`` is forward
seconds / audio seconds (below 1 is faster than real time).

Each case runs in its own process so that the peak resident set size (``ru_maxrss``) belongs to that case alone;
``forward peak`` is that peak minus the RSS after building the model and making the input. ``CPU s`` is the
process CPU time of a forward (all threads), which moves less than wall time when other jobs share the CPU.

    .venv/bin/python benchmarks/bench_unet.py [--repeat 3] [--frames 512 2585] [--threads N]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

HOP, SAMPLE_RATE = 1024, 44100


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(frames: int, repeat: int, threads: int) -> dict:
    import torch

    from danna_sep.models.unet import UNetAttn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNetAttn().eval()
    x = torch.rand(1, 2, 2049, frames)
    base = rss_mib()
    times, cpu_times = [], []
    with torch.inference_mode():
        for _ in range(repeat):
            start, cpu_start = time.perf_counter(), time.process_time()
            masks = model(x)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            del masks
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "frames": frames,
        "padded": -(-frames // model.multiple) * model.multiple,
        "audio_s": (frames - 1) * HOP / SAMPLE_RATE,
        "times": times,
        "cpu_times": cpu_times,
        "base_mib": base,
        "peak_mib": peak,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[512, 2585])
    parser.add_argument("--repeat", type=int, default=3, help="forward passes per case (min and median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(child(args.child, args.repeat, args.threads)))
        return

    rows = []
    for frames in args.frames:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(frames),
            "--repeat",
            str(args.repeat),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))

    print(f"UNetAttn, {rows[0]['params']:,} parameters, CPU, {rows[0]['threads']} threads, batch 1, inference mode")
    header = (
        f"{'frames':>6} {'padded':>6} {'audio s':>7} {'min s':>7} {'median s':>8} {'x real time':>11} {'CPU s':>6} "
        f"{'peak RSS MiB':>12} {'forward peak MiB':>16}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        best, median = min(r["times"]), statistics.median(r["times"])
        print(
            f"{r['frames']:>6} {r['padded']:>6} {r['audio_s']:>7.2f} {best:>7.2f} {median:>8.2f} "
            f"{best / r['audio_s']:>11.3f} {min(r['cpu_times']):>6.1f} {r['peak_mib']:>12.0f} "
            f"{r['peak_mib'] - r['base_mib']:>16.0f}"
        )
    print("wall times are noisy when other jobs share the CPU (the min is the least disturbed run);")
    print("CPU s = process CPU time of the fastest forward, summed over threads, less sensitive to other jobs")


if __name__ == "__main__":
    main()
