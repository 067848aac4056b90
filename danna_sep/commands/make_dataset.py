"""``danna make-dataset OUT --tracks N --seconds S --seed K``: write the built-in synthetic multitrack dataset.

The result has the MUSDB18-HQ layout (``OUT/{train,valid,test}/<track>/{mixture,drums,bass,other,vocals}.wav``,
mixture = Σ stems exactly), so every command that reads MUSDB18-HQ reads it. See :mod:`danna_sep.data.synth`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "write a synthetic multitrack dataset (procedural songs through a GM SoundFont) in the MUSDB18-HQ layout"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="dataset folder to create")
    parser.add_argument("--tracks", type=int, default=8, help="train tracks (default 8)")
    parser.add_argument(
        "--valid",
        type=int,
        default=None,
        help="validation tracks, written to OUT/valid (default: a tenth of --tracks, at least 1 "
        "from 2 tracks on, so that `danna train` can validate)",
    )
    parser.add_argument("--test", type=int, default=None, help="test tracks (default max(1, tracks // 4))")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each track (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same dataset")
    parser.add_argument(
        "--subtype",
        choices=("FLOAT", "PCM_16"),
        default="FLOAT",
        help="wav sample format (default FLOAT); mixture = Σ stems exactly either way",
    )
    parser.add_argument("--soundfont", type=Path, default=None, help="GM .sf2 (default TimGM6mb from pretty_midi)")
    parser.add_argument("--force", action="store_true", help="replace what OUT holds")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-track progress")


def default_valid_tracks(train: int) -> int:
    """Validation tracks when ``--valid`` is not given: a tenth of the training tracks, at least one from two on."""
    return max(1, round(train / 10)) if train >= 2 else 0


def run(args: argparse.Namespace) -> int:
    from ..data.synth import make_synthetic_dataset
    from ..errors import DatasetError

    if args.tracks < 0 or any(n is not None and n < 0 for n in (args.valid, args.test)):
        raise DatasetError("--tracks, --valid and --test must be >= 0")
    test = max(1, args.tracks // 4) if args.test is None else args.test
    valid = default_valid_tracks(args.tracks) if args.valid is None else args.valid
    counts = {"train": args.tracks, "valid": valid, "test": test}

    def progress(name: str, done: int, total: int) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {name}", file=sys.stderr, flush=True)

    start, cpu = time.perf_counter(), time.process_time()
    make_synthetic_dataset(
        args.out, counts, args.seconds, args.seed, args.soundfont, args.subtype, args.force, progress
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    audio = sum(counts.values()) * args.seconds
    speed = f", {audio / cpu:.0f}x real time (CPU)" if cpu > 0.5 else " (already there)"
    print(
        f"wrote {args.out}: {counts['train']} train, {counts['valid']} valid, {counts['test']} test tracks "
        f"of {args.seconds:g} s in {wall:.1f} s{speed}"
    )
    return 0
