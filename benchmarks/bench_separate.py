"""Wall time and peak memory of separating a song on CPU: danna-sep's streaming separator against the original
approach (every model on the whole song in one pass) and against PyPI demucs's ``apply_model``.

The three full-size models (X-UMX 35.6 M, U-Net, DemucsSplit 192 M parameters) get random weights: speed and
memory do not depend on the values. Every measurement runs in its own process, so its peak RSS is its own:

- ``ours``: ``Separator`` with the original blend, defaults (512-frame spectral segments, 10 s Demucs segments,
  25 % overlap, Wiener blocks of 300 frames, 1 EM iteration), the song read from a WAV file block by block and
  the four stems streamed into float WAVs; the models one after the other, each using all threads (the
  ``danna-sep`` default);
- ``ours-parallel`` (``--variants``): the same with each model in its own thread and ``threads // 3`` (at least
  1) intra-op threads (``danna-sep --parallel``);
- ``original``: the same models and blend, every model on the whole song at once and the Wiener filter's
  covariances over the whole song (the original danna-sep's pipeline), stems kept in memory and saved at the end;
- ``demucs``: ``demucs.apply.apply_model`` (split into 10 s chunks with 25 % overlap, as our Demucs segments are;
  ``shifts=1``) with a ``demucs.demucs.Demucs(channels=48)`` (random weights) on the whole song held in memory, as
  ``demucs`` does (left to itself, demucs 4's ``apply_model`` takes the class's 40 s training segment as its chunk,
  padding a shorter song to 40 s);
- ``ours-xumx``, ``ours-unet``, ``ours-demucs`` (``--variants``): ours with one model at a time (weight 1);
- ``ours-fast`` (``--variants``): ours with the ``--fast`` blend (U-Net + Demucs, the original's weights);
- ``demucs-lstm2`` (``--variants``): ``demucs`` with ``lstm_layers=2`` (the v2 bottleneck BiLSTM, as in Demucs-48
  v2 and our Demucs).

``--option KEY=VALUE`` (repeatable; VALUE read as JSON, else as a string) goes to every ``Separator`` of our
modes as a keyword argument, so that a new separator option can be benchmarked without a new mode.

Peak RSS is the larger of the process's own ``ru_maxrss`` and psutil samples taken every 0.1 s; ``models`` is the
RSS once the models are built (before separating). The CPU is shared with other jobs, so times are noisy: repeat
and take the minimum. ``--long SECONDS`` adds a long run of ``ours`` to show that memory stays flat.

    .venv/bin/python benchmarks/bench_separate.py [--seconds 60] [--long 600] [--threads 2] [--variants]
                                                  [--skip original,demucs] [--repeat 1] [--default-malloc]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
MODES = ("ours", "original", "demucs")  # the default run
PEER_SEGMENT = 10.0  # seconds per apply_model chunk: our Demucs segment (WAVEFORM_SEGMENT_SECONDS), same overlap
VARIANTS = ("ours-parallel", "ours-fast", "ours-xumx", "ours-unet", "ours-demucs", "demucs-lstm2")  # --variants


# ------------------------------------------------------------------------------------------------------- child


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _danna_models(roles):
    import torch

    from danna_sep.export import LoadedModel
    from danna_sep.models import build_model

    configs = {"xumx": "x_umx_mwf.json", "unet": "unet_attn.json", "demucs": "demucs_split.json"}
    models = {}
    for role in roles:
        torch.manual_seed(0)
        arch = json.loads((REPO / "configs" / configs[role]).read_text())["arch"]
        module = build_model(arch).eval()
        models[role] = LoadedModel.from_module(module, config={"arch": arch})
    return models


def parse_options(pairs: Sequence[str]) -> dict:
    """``["precision=\"bf16\"", "niter=2"]`` → keyword arguments (values as JSON where they parse, else strings)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option wants KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def child(mode: str, wav_path: str, out_dir: str, options: dict | None = None) -> dict:
    import torch

    from danna_sep import SOURCES
    from danna_sep.blend import FAST_BAG, ORIGINAL_BAG, Bag

    options = options or {}
    result = {"mode": mode}
    if mode in ("demucs", "demucs-lstm2"):
        from demucs.apply import apply_model
        from demucs.demucs import Demucs

        from danna_sep.audio import load_audio, save_audio

        torch.manual_seed(0)
        model = Demucs(sources=list(SOURCES), channels=48, lstm_layers=2 if mode == "demucs-lstm2" else 0).eval()
        result["models_mb"] = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        wav, _ = load_audio(wav_path)
        with torch.inference_mode():
            # demucs's own CLI normalises the whole track, then apply_model splits it into overlapping chunks
            ref = wav.mean(0)
            mix = (wav - ref.mean()) / ref.std()
            out = apply_model(model, mix[None], shifts=1, split=True, overlap=0.25, segment=PEER_SEGMENT)[0]
            out = out * ref.std() + ref.mean()
        for i, stem in enumerate(SOURCES):
            save_audio(Path(out_dir) / f"{stem}.wav", out[i], SAMPLE_RATE, "FLOAT")
    else:
        from danna_sep.audio import load_audio, save_audio
        from danna_sep.separate import Separator

        if mode == "ours-fast":
            bag = FAST_BAG
        elif mode.startswith("ours-") and mode != "ours-parallel":
            role = mode.split("-", 1)[1]
            bag = Bag(models=[role], weights=[[1.0] * 4])
        else:
            bag = ORIGINAL_BAG
        models = _danna_models(bag.models)
        result["models_mb"] = _rss_mb()
        # wall time at which each tenth of the track was done (all models): flat means no slow-down with length
        tenths = []

        def progress(p):
            while len(tenths) < 10 and p.fraction >= (len(tenths) + 1) / 10 - 1e-9:
                tenths.append(time.perf_counter() - start)

        start, cpu = time.perf_counter(), time.process_time()
        if mode == "original":
            sep = Separator(models, bag, split=False, wiener_window=None, progress=progress, **options)
            wav, _ = load_audio(wav_path)
            stems = sep.separate(wav, SAMPLE_RATE)
            for stem, data in stems.items():
                save_audio(Path(out_dir) / f"{stem}.wav", data, SAMPLE_RATE, "FLOAT")
        else:
            sep = Separator(models, bag, parallel=mode == "ours-parallel", progress=progress, **options)
            if mode == "ours-parallel":
                torch.set_num_threads(max(1, torch.get_num_threads() // sep.stream_count()))
            sep.separate_to_files(
                wav_path, {s: Path(out_dir) / f"{s}.wav" for s in SOURCES}, subtype="FLOAT", overwrite=True
            )
        result["seconds_by_tenth"] = [round(b - a, 1) for a, b in itertools.pairwise([0.0, *tenths])]
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu  # all threads: on a busy machine steadier than wall time
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


# ------------------------------------------------------------------------------------------------------ parent


def make_song(path: Path, seconds: float, seed: int = 0) -> None:
    """A stereo 16-bit WAV: tones and noise bursts, written block by block (any length, little memory)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    freqs = 55 * 2 ** rng.uniform(0, 6, size=12)
    block = 10 * SAMPLE_RATE
    with sf.SoundFile(path, "w", SAMPLE_RATE, 2, "PCM_16") as f:
        for start in range(0, int(seconds * SAMPLE_RATE), block):
            n = min(block, int(seconds * SAMPLE_RATE) - start)
            t = (start + np.arange(n)) / SAMPLE_RATE
            x = sum(
                0.05 * np.sin(2 * np.pi * fr * t + k) * (1 + np.sin(0.3 * t * (k + 1))) for k, fr in enumerate(freqs)
            )
            noise = 0.05 * rng.standard_normal((n, 2)) * (np.sin(2 * np.pi * 2 * t) > 0.6)[:, None]
            f.write(np.stack([x, 0.8 * x + 0.1 * np.roll(x, 7)], 1) + noise)


def measure(
    mode: str,
    wav: Path,
    threads: int,
    default_malloc: bool = False,
    script: str = __file__,
    out_dir: Path | None = None,
    extra: Sequence[str] = (),
) -> dict:
    """Run ``script --child MODE WAV OUT [extra…]`` in its own process; its JSON result plus the peak RSS sampled
    here. ``out_dir``: where the child writes its stems (default: a temporary folder, removed afterwards)."""
    import psutil

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(out_dir or tmp)
        proc = subprocess.Popen(
            [sys.executable, script, "--child", mode, str(wav), out, "--threads", str(threads)]
            + (["--default-malloc"] if default_malloc else [])
            + list(extra),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ps, samples = psutil.Process(proc.pid), []
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                samples.append(ps.memory_info().rss / 2**20)
            time.sleep(0.1)
        out_text = proc.stdout.read()
        if proc.returncode != 0:
            return {"mode": mode, "error": f"exit {proc.returncode}"}
        result = json.loads(out_text.strip().splitlines()[-1])
    result["peak_mb"] = max(max(samples, default=0.0), result["maxrss_mb"])
    # the largest RSS in each tenth of the run (model loading included): flat means bounded memory
    tenth = max(len(samples) // 10, 1)
    result["rss_by_tenth_mb"] = [
        round(max(samples[i : i + tenth])) for i in range(0, tenth * 10, tenth) if samples[i : i + tenth]
    ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--long", type=float, default=0.0, help="also run `ours` on a song this long (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", action="store_true", help="add ours-serial and one model at a time")
    parser.add_argument("--skip", default="", help="comma-separated modes to leave out (original, demucs)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is in every run (default: keep_freed_memory() in all runs, "
        "the peer's too, as the danna commands do)",
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a Separator keyword for our modes"
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WAV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch

        from danna_sep.runtime import keep_freed_memory

        if not args.default_malloc:
            keep_freed_memory()
        torch.set_num_threads(args.threads)
        print(json.dumps(child(*args.child, options=parse_options(args.option))))
        return

    modes = [*MODES, *(VARIANTS if args.variants else ())]
    modes = [m for m in modes if m not in set(args.skip.split(","))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        make_song(song, args.seconds)
        for mode in modes:
            extra = [f"--option={o}" for o in args.option]
            runs = [measure(mode, song, args.threads, args.default_malloc, extra=extra) for _ in range(args.repeat)]
            ok = [r for r in runs if "error" not in r]
            best = min(ok, key=lambda r: r["seconds"]) if ok else runs[0]
            rows.append((mode, args.seconds, best))
            print(f"  {mode} ({args.seconds:g} s): {json.dumps(best)}", file=sys.stderr)
        if args.long:
            long_song = Path(tmp) / "long.wav"
            make_song(long_song, args.long, seed=1)
            rows.append(("ours", args.long, measure("ours", long_song, args.threads, args.default_malloc)))

    print(
        f"\nseparation on CPU, {args.threads} thread(s), random-weight full-size models "
        f"(min of {args.repeat}; the CPU is shared, so times are noisy); malloc: "
        f"{'glibc defaults' if args.default_malloc else 'keep_freed_memory() in every run'}"
    )
    print(f"{'mode':<14}{'audio':>8}{'wall':>10}{'× real time':>13}{'models MB':>11}{'peak RSS MB':>13}")
    for mode, seconds, r in rows:
        if "error" in r:
            print(f"{mode:<14}{seconds:>7.0f}s  {r['error']}")
            continue
        print(
            f"{mode:<14}{seconds:>7.0f}s{r['seconds']:>9.1f}s{seconds / r['seconds']:>13.2f}"
            f"{r['models_mb']:>11.0f}{r['peak_mb']:>13.0f}"
        )
    for mode, seconds, r in rows:
        if "rss_by_tenth_mb" in r and mode == "ours":
            print(f"ours {seconds:.0f} s, peak RSS per tenth of the run (MB): {r['rss_by_tenth_mb']}")
            print(f"ours {seconds:.0f} s, wall seconds per tenth of the track: {r.get('seconds_by_tenth')}")
    base = {m: r for m, s, r in rows if s == args.seconds and "error" not in r}
    if "ours" in base:
        for other in ("original", "demucs"):
            if other in base:
                print(
                    f"ours / {other}: time {base['ours']['seconds'] / base[other]['seconds']:.2f}, "
                    f"peak RSS {base['ours']['peak_mb'] / base[other]['peak_mb']:.2f}"
                )


if __name__ == "__main__":
    main()
