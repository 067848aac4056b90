"""Peak memory of ``danna-sep --original`` (whole-song Wiener filter) against the defaults and the original 1.0.2
pipeline, on the full-size release-layout files, with the resident size of each phase of the run.

The files are :mod:`bench_released`'s (``.bench/released-full``: full-size modules with random weights, built and
imported once; memory and speed do not depend on the values). Every run is its own process (its peak RSS is its
own ``ru_maxrss``), with ``keep_freed_memory()`` as the ``danna`` commands have it, and its time includes loading
the models:

- ``preset``: ``danna-sep --original`` through the imported checkpoints (``Separator(original=True)``): the
  original's whole-song X-UMX, 2584-frame U-Net chunks and whole-song Demucs, each computed exactly in pieces by
  our eager models (``X_UMX.forward_chunked``, ``UNetAttn.forward_tiled``, ``DemucsSplit.iter_chunked``), so that
  what grows with the song is the whole-song Wiener filter's masks and spectrogram and the stems;
  ``preset-released`` runs the released files whole, as the original did;
- ``default``: ``danna-sep`` with its defaults through the same checkpoints;
- ``original``: danna-sep 1.0.2's pipeline (``tests/original_release/pipeline.py``) on the release files;
- ``preset:ROLE``, ``default:ROLE`` (``xumx``, ``unet``, ``demucs``): that model alone, weight 1;
  ``preset-released``, ``default-released`` (``:ROLE``): through the released TorchScript/ONNX files.

Inside ``preset`` and ``default`` runs a thread samples the resident size every 10 ms and charges it to the phase
running then (each model's forward passes, the Wiener filter, the iSTFT, the rest): the table gives each phase's
largest resident size and its time. A run whose resident size passes ``--kill-gb`` is stopped (so that a
too-large run does not starve a shared machine) and reported as such.

    .venv/bin/python benchmarks/bench_memory.py [--seconds 58] [--long 600] [--modes preset,default,original]
                                                [--long-modes preset] [--threads 2] [--kill-gb 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_released import REPO
from bench_separate import make_song

MODES = ("preset", "default", "original")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class PhaseSampler:
    """The resident size sampled every ``interval`` s in a thread, charged to the phase set last."""

    def __init__(self, interval: float = 0.01):
        self.phase = "load"
        self.peak: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            rss, now, phase = self.rss_mb(), time.perf_counter(), self.phase
            self.peak[phase] = max(self.peak.get(phase, 0.0), rss)
            self.seconds[phase] = self.seconds.get(phase, 0.0) + now - last
            last = now
            time.sleep(self._interval)

    @contextlib.contextmanager
    def during(self, phase: str):
        outer, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = outer

    def __enter__(self) -> PhaseSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _instrument(sampler: PhaseSampler, roles: dict[int, str]) -> None:
    """Charge each model call, Wiener filter and iSTFT push to a phase named after the model that ran last.

    Runs against whatever ``danna_sep`` is imported (``PYTHONPATH`` may point at another checkout to compare)."""
    import danna_sep.wiener as wiener_module
    from danna_sep.separate import streams, timeline

    current = {"role": "?"}

    def wrap(owner, name, label):
        inner = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if label == "model":
                current["role"] = roles.get(id(args[1]), "?")
            with sampler.during(f"{current['role']} {label}"):
                return inner(*args, **kwargs)

        setattr(owner, name, wrapped)

    wrap(streams.ModelCalls, "run", "model")
    wrap(wiener_module, "wiener", "wiener")
    if hasattr(wiener_module, "_stream_bins"):  # the chunked whole-song filter (wiener_streamed)
        wrap(wiener_module, "_stream_bins", "wiener")
    wrap(timeline.StreamingISTFT, "push", "istft")


def child(mode: str, wav_path: str, out_dir: str, cache: str) -> dict:
    from danna_sep import SOURCES

    out = Path(out_dir)
    start = time.perf_counter()
    with PhaseSampler() as sampler:
        if mode == "original":
            sys.path.insert(0, str(REPO))
            from danna_sep.audio import load_audio
            from tests.original_release.pipeline import separate_original

            folder = Path(cache)
            files = {
                "xumx": folder / "xumx.onnx",
                "unet": folder / "unet_attention.pth",
                "demucs": folder / "demucs_4_decoders.pth",
            }
            wav, _ = load_audio(wav_path)
            with sampler.during("all"):
                separate_original(wav, files, short_chunk="pad128")
        else:
            from danna_sep.blend import ORIGINAL_BAG, Bag
            from danna_sep.separate import Separator

            kind, _, role = mode.partition(":")  # preset:unet = that model alone (weight 1)
            preset, _, files = kind.partition("-")  # preset-released: the released files themselves
            bag = Bag(models=[role], weights=[[1.0] * 4]) if role else ORIGINAL_BAG
            sep = Separator.from_checkpoints(
                cache, bag=bag, imported=files != "released", original=preset == "preset", device="cpu"
            )
            _instrument(sampler, {id(m): role for role, m in sep.models.items()})
            with sampler.during("other"):
                sep.separate_to_files(wav_path, {s: out / f"{s}.wav" for s in SOURCES}, subtype="FLOAT", overwrite=True)
    phases = {p: [round(sampler.peak[p]), round(sampler.seconds.get(p, 0.0), 1)] for p in sampler.peak}
    return {
        "mode": mode,
        "seconds": time.perf_counter() - start,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "phases": phases,
    }


def measure(mode: str, wav: Path, args: argparse.Namespace) -> dict:
    """``--child MODE WAV OUT`` in its own process; stopped if its resident size passes ``--kill-gb``."""
    import psutil

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", mode, str(wav), tmp, "--threads", str(args.threads)]
        cmd += ["--cache", str(args.cache)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        ps, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, ps.memory_info().rss / 2**30)
            if peak > args.kill_gb:
                proc.kill()
                proc.wait()
                return {"mode": mode, "error": f"stopped at {peak:.1f} GB (--kill-gb {args.kill_gb:g})"}
            time.sleep(0.05)
        text = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0:
            return {"mode": mode, "error": f"exit {proc.returncode}"}
        return json.loads(text.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=58.0)
    parser.add_argument("--long", type=float, default=0.0, help="also run --long-modes on a song this long (s)")
    parser.add_argument("--modes", default="preset,default,original", help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--long-modes", default="preset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kill-gb", type=float, default=10.0, help="stop a run whose resident size passes this")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "released-full")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WAV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch

        from danna_sep.runtime import keep_freed_memory

        keep_freed_memory()
        torch.set_num_threads(args.threads)
        print(json.dumps(child(*args.child, cache=str(args.cache))))
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    # in a process of its own: Linux keeps ru_maxrss across exec, so the children would inherit its peak
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_released.py"), "--build", "--cache",
                    str(args.cache)], check=True)  # fmt: skip
    runs = [(m, args.seconds) for m in args.modes.split(",") if m]
    if args.long:
        runs += [(m, args.long) for m in args.long_modes.split(",") if m]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        songs: dict[float, Path] = {}
        for mode, seconds in runs:
            if seconds not in songs:
                songs[seconds] = Path(tmp) / f"song-{seconds:g}.wav"
                make_song(songs[seconds], seconds)
            result = measure(mode, songs[seconds], args)
            rows.append((mode, seconds, result))
            print(f"  {mode} ({seconds:g} s): {json.dumps(result)}", file=sys.stderr)

    print(
        f"\nreleased-layout full-size files (imported for preset/default), CPU, {args.threads} thread(s), "
        "models loaded inside the timing; the CPU is shared, so times are noisy"
    )
    print(f"{'mode':<10}{'audio':>8}{'wall':>9}{'× real time':>13}{'peak RSS GB':>13}")
    for mode, seconds, r in rows:
        if "error" in r:
            print(f"{mode:<10}{seconds:>7.0f}s  {r['error']}")
            continue
        print(f"{mode:<10}{seconds:>7.0f}s{r['seconds']:>8.1f}s{seconds / r['seconds']:>13.2f}"
              f"{r['maxrss_mb'] / 1024:>13.2f}")  # fmt: skip
    for mode, seconds, r in rows:
        if "phases" in r and mode != "original":
            cells = ", ".join(f"{p} {mb / 1024:.2f} GB / {s:.0f} s" for p, (mb, s) in r["phases"].items())
            print(f"{mode} {seconds:.0f} s, largest RSS and time per phase: {cells}")


if __name__ == "__main__":
    main()
