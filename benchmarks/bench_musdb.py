"""Chunk reads from MUSDB18 ``.stem.mp4`` files: danna_sep's reader against the ``musdb`` package, same files, same run.

Writes ``--tracks`` AAC ``.stem.mp4`` tracks of ``--track-seconds`` (5 streams: mixture, drums, bass, other,
vocals, as MUSDB18 has) with PyAV, then reads ``--items`` chunks of ``--seq`` seconds of the 4 sources at random
offsets, three ways:

    danna_sep          Track.read: PyAV (FFmpeg libraries in the wheel), one seek, the 4 streams in one demux pass
    musdb .sources     open-unmix's way: track.chunk_start / chunk_duration, track.sources[s].audio (an ffmpeg
                       process per source, through stempeg)
    musdb .stems       track.stems (one ffmpeg process for all 5 streams)

and reports the best of ``--repeat`` timings, then the largest difference of each reader's chunks from the same
span of a whole-file decode. musdb decodes to 16-bit integers (±1.5e-5 of rounding) and ffmpeg decodes from the
start, so its chunks match otherwise; danna_sep seeks (2048 samples of pre-roll): ~1e-5 on tonal signals, more where
the encoder used AAC's perceptual noise substitution (random noise by design, redrawn after a seek), as the broadband
noise of these test tracks makes it do.
The musdb package (and stempeg) need the ffmpeg and ffprobe binaries; danna_sep needs pip wheels only.

    .venv/bin/python benchmarks/bench_musdb.py [--tracks 3] [--track-seconds 30] [--seq 6] [--items 12] [--repeat 3]
"""

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_data import best_of  # a sibling script: benchmarks/ is this script's own folder on sys.path

from danna_sep import SOURCES
from danna_sep.data.musdb import STEM_STREAMS, find_tracks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_data_musdb import write_stem_mp4

SR = 44100


def make_tracks(root: Path, tracks: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    t = np.arange(int(seconds * SR)) / SR
    for k in range(tracks):
        tones = [0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(60, 2000, len(SOURCES))]
        stems = np.stack([np.stack([s, 0.8 * s]) for s in tones]).astype(np.float32)
        stems += 0.01 * rng.standard_normal(stems.shape).astype(np.float32)
        write_stem_mp4(root / "train" / f"Track {k}.stem.mp4", np.concatenate([stems.sum(0, keepdims=True), stems]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=3)
    parser.add_argument("--track-seconds", type=float, default=30.0)
    parser.add_argument("--seq", type=float, default=6.0, help="chunk, seconds")
    parser.add_argument("--items", type=int, default=12, help="chunks per timing")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import musdb

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tracks(root, args.tracks, args.track_seconds)
        ours = find_tracks(root, "train", layout="stem")
        db = musdb.DB(root=str(root), subsets="train")
        theirs = {t.name: t for t in db.tracks}
        seg = int(args.seq * SR)
        rng = random.Random(0)
        # offsets on the 1/44100 s grid, so both readers are asked for the same samples
        chunks = [(rng.randrange(len(ours)), rng.randrange(ours[0].frames - seg - SR)) for _ in range(args.items)]
        parts = list(SOURCES)

        def danna() -> list[np.ndarray]:
            return [ours[i].read(parts, start, seg) for i, start in chunks]

        def musdb_sources(all_streams: bool = False) -> list[np.ndarray]:
            out = []
            for i, start in chunks:
                track = theirs[ours[i].name]
                track.chunk_start, track.chunk_duration = start / SR, args.seq
                if all_streams:
                    y = track.stems[[STEM_STREAMS[p] for p in parts]]
                else:
                    y = np.stack([track.sources[p].audio for p in parts])
                out.append(y.transpose(0, 2, 1).astype(np.float32))
            return out

        rows = {}
        timers = {
            "danna_sep Track.read": danna,
            "musdb .sources[s].audio": musdb_sources,
            "musdb .stems": lambda: musdb_sources(True),
        }
        for _ in range(args.repeat):  # alternate: CPU noise hits all three
            for name, fn in timers.items():
                wall, cpu = best_of(fn, 1)
                old = rows.get(name, (float("inf"), float("inf")))
                rows[name] = (min(old[0], wall), min(old[1], cpu))
        # both against the same span of a whole-file decode (danna_sep's equals ffmpeg's to ~1e-7)
        full = [t.read(parts) for t in ours]
        spans = [full[i][..., start : start + seg] for i, start in chunks]
        diffs = {
            name: max(
                float(np.abs(x[..., : y.shape[-1]] - y[..., : x.shape[-1]]).max())
                for x, y in zip(got, spans, strict=True)
            )
            for name, got in (("danna_sep", danna()), ("musdb", musdb_sources(True)))
        }

    print(
        f"{args.items} chunks of {args.seq:g} s × 4 sources from {args.tracks} .stem.mp4 tracks, best of {args.repeat}"
    )
    print(f"{'reader':26s} {'ms/chunk':>9s} {'CPU ms/chunk':>13s} {'time / danna_sep':>17s}")
    base = rows["danna_sep Track.read"][0]
    for name, (wall, cpu) in rows.items():
        print(f"{name:26s} {1e3 * wall / args.items:9.1f} {1e3 * cpu / args.items:13.1f} {wall / base:16.1f}×")
    print(
        "max |chunk − same span of a whole-file decode| (full scale 1): "
        + ", ".join(f"{name} {value:.1e}" for name, value in diffs.items())
    )


if __name__ == "__main__":
    main()
