"""The released Danna-Sep weights on CPU: the original danna-sep 1.0.2 pipeline against ``danna-sep`` on the same
files, through the released TorchScript/ONNX files and through their imports into our models, side by side.

The files are built like the release (``tests/original_release``: the original's three modules with the
release's names and full sizes, random weights, TorchScript + X-UMX as ONNX opset 11), written once into
``.bench/released-full`` and imported there with ``danna import-released``. Every run is its own process (its
peak RSS is its own) and its time includes loading the models, as a user's command would:

- ``original``: danna-sep 1.0.2's pipeline (``tests/original_release/pipeline.py``: ``xumx.onnx``, the U-Net in
  2584-frame chunks, Demucs on ``[22050 zeros | song | 1024 zeros]``, every model on the whole song, the whole-song
  Wiener filter); a last U-Net chunk shorter than 64 frames is padded to 128 frames (its GPU path) instead of
  crashing;
- ``preset-released`` / ``preset-imported``: ``danna-sep --original`` (the same computation, streamed) through the
  released files / through the imported ``*_imported.pt`` checkpoints;
- ``default-released`` / ``default-imported``: ``danna-sep`` with its defaults (overlapping segments, Wiener on
  blocks of frames) through each.

Each run's stems are compared with the original's (SDR per stem, dB: 10 log10 |ref|² / |ref - est|²).
``--option KEY=VALUE`` (repeatable, as in ``bench_separate.py``) goes to ``Separator.from_checkpoints`` in the
``danna-sep`` modes.

    .venv/bin/python benchmarks/bench_released.py [--seconds 58] [--threads 2] [--repeat 1]
                                                  [--skip MODE,...] [--cache .bench/released-full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_separate import SAMPLE_RATE, make_song, measure, parse_options

REPO = Path(__file__).resolve().parents[1]
MODES = ("original", "preset-released", "preset-imported", "default-released", "default-imported")


def child(mode: str, wav_path: str, out_dir: str, cache: str, options: dict | None = None) -> dict:
    from danna_sep import SOURCES
    from danna_sep.audio import load_audio, save_audio

    folder = Path(cache)
    out = Path(out_dir)
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "original":
        sys.path.insert(0, str(REPO))
        from tests.original_release.pipeline import separate_original

        files = {
            "xumx": folder / "xumx.onnx",
            "unet": folder / "unet_attention.pth",
            "demucs": folder / "demucs_4_decoders.pth",
        }
        wav, _ = load_audio(wav_path)
        stems = separate_original(wav, files, short_chunk="pad128")
        for i, stem in enumerate(SOURCES):
            save_audio(out / f"{stem}.wav", stems[i], SAMPLE_RATE, "FLOAT")
        models = ["xumx.onnx", "unet_attention.pth", "demucs_4_decoders.pth"]
    else:
        from danna_sep.separate import Separator

        preset, which = mode.split("-")
        sep = Separator.from_checkpoints(
            folder, imported=which == "imported", original=preset == "preset", device="cpu", **(options or {})
        )
        sep.separate_to_files(wav_path, {s: out / f"{s}.wav" for s in SOURCES}, subtype="FLOAT", overwrite=True)
        models = sep.describe_models()
    return {
        "mode": mode,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,  # all threads: on a busy machine steadier than wall time
        "models": models,
        "maxrss_mb": _maxrss_mb(),
    }


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_release(cache: Path) -> None:
    """The full-size release-layout files and their imports in ``cache`` (kept between runs)."""
    sys.path.insert(0, str(REPO))
    from danna_sep.release.convert import import_released
    from tests.original_release.build import FILES, ONNX_FILE, write_release

    names = [*list(FILES.values()), ONNX_FILE]
    if not all((cache / n).is_file() for n in names):
        print(f"building full-size release-layout files in {cache} (once, a few minutes)", file=sys.stderr)
        write_release(cache, size="full", seed=0)
    start = time.perf_counter()
    if any(r.written for r in import_released(cache, notify=lambda line: print("  " + line, file=sys.stderr))):
        print(f"  imported in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    err = float(np.sum((ref - est) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref**2)) / err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=58.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated modes to leave out: " + ", ".join(MODES))
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "released-full")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a Separator keyword for danna-sep modes"
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WAV", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.build:
        build_release(args.cache)
        return

    if args.child:
        import torch

        from danna_sep.runtime import keep_freed_memory

        keep_freed_memory()  # as the danna commands do; the original's run gets it too
        torch.set_num_threads(args.threads)
        print(json.dumps(child(*args.child, cache=str(args.cache), options=parse_options(args.option))))
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    # in a process of its own: Linux keeps ru_maxrss across exec, so the children would inherit its peak
    subprocess.run([sys.executable, __file__, "--build", "--cache", str(args.cache)], check=True)
    modes = [m for m in MODES if m not in set(args.skip.split(","))]
    import soundfile as sf

    from danna_sep import SOURCES

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        make_song(song, args.seconds)
        outputs = {}
        for mode in modes:
            runs = []
            for _ in range(args.repeat):
                out = Path(tmp) / mode
                out.mkdir(exist_ok=True)
                runs.append(
                    measure(
                        mode,
                        song,
                        args.threads,
                        script=__file__,
                        out_dir=out,
                        extra=["--cache", str(args.cache), *(f"--option={o}" for o in args.option)],
                    )
                )
            ok = [r for r in runs if "error" not in r]
            best = min(ok, key=lambda r: r["seconds"]) if ok else runs[0]
            if ok:
                outputs[mode] = np.stack(
                    [sf.read(Path(tmp) / mode / f"{s}.wav", dtype="float32")[0].T for s in SOURCES]
                )
            rows.append((mode, best))
            print(f"  {mode}: {json.dumps(best)}", file=sys.stderr)

    print(
        f"\nreleased-layout full-size files, {args.seconds:g} s stereo, CPU, {args.threads} thread(s) "
        f"(min of {args.repeat}; models loaded inside the timing; the CPU is shared, so times are noisy)"
    )
    print(
        f"{'mode':<18}{'wall':>9}{'× real time':>13}{'peak RSS MB':>13}{'vs original':>13}"
        f"   SDR vs original per stem (dB: {', '.join(SOURCES)})"
    )
    base = dict(rows).get("original")
    for mode, r in rows:
        if "error" in r:
            print(f"{mode:<18}  {r['error']}")
            continue
        speed = f"{base['seconds'] / r['seconds']:>12.2f}×" if base and "error" not in base else f"{'-':>13}"
        if "original" in outputs and mode in outputs and mode != "original":
            n = min(outputs["original"].shape[-1], outputs[mode].shape[-1])
            sdrs = ", ".join(
                f"{sdr(outputs['original'][i, :, :n], outputs[mode][i, :, :n]):.1f}" for i in range(len(SOURCES))
            )
        else:
            sdrs = "-"
        print(
            f"{mode:<18}{r['seconds']:>8.1f}s{args.seconds / r['seconds']:>13.2f}{r['peak_mb']:>13.0f}{speed}   {sdrs}"
        )
    for mode, r in rows:
        if "models" in r:
            print(f"{mode}: {'; '.join(r['models'])}")


if __name__ == "__main__":
    main()
