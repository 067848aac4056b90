"""Data pipeline speed: training items per second from the MUSDB18-HQ layout, and synthetic rendering speed.

Builds a synthetic dataset (MUSDB18-HQ layout, float wav) in a temporary folder, timing the renderer (× real time,
CPU seconds of one process), then draws training items (``seq_duration`` s, cross-track remixing, CPU
augmentations) three ways, same tracks, same run:

    danna_sep        MUSDBDataset: seeded per-item draws, chunk reads through danna_sep.audio.read_frames
    original         the original FastMUSDB recipe: soundfile.read(start, frames) per stem, numpy augmentations
    musdb (peer)     open-unmix's way through the musdb package: track.chunk_start / .audio (ffmpeg via stempeg)

and finally the batched device augmentation (pitch shift + speed change, p=.2 each) on this machine's CPU.
Prints the best of ``--repeat`` timings. Numbers are noisy on a shared machine: take the best of several runs.

    .venv/bin/python benchmarks/bench_data.py [--tracks 6] [--track-seconds 20] [--seq 6] [--items 48] [--repeat 3]
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from danna_sep import SOURCES
from danna_sep.data import DeviceAugment, MUSDBDataset, make_synthetic_dataset

SR = 44100


def best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``repeat`` runs (CPU time is steadier on a shared machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def original_fastmusdb(root: Path, seq: float, items: int) -> None:
    """The original FastMUSDB random item (reference §4): a random track and offset per stem, sf.read, numpy augs."""
    folders = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    frames = [sf.info(str(f / "mixture.wav")).frames for f in folders]
    seg = int(seq * SR)
    for _ in range(items):
        stems = []
        for src in SOURCES:
            t = random.randrange(len(folders))
            start = random.randrange(frames[t] - seg + 1)
            y, _ = sf.read(str(folders[t] / f"{src}.wav"), frames=seg, start=start, fill_value=0, dtype="float32")
            stems.append(y.T)
        y = np.stack(stems)
        y = y * np.random.uniform(0.25, 1.25, (4, 1, 1)).astype(np.float32)
        swap = np.random.rand(4) < 0.5
        y[swap] = y[swap][:, ::-1]
        y = y * np.where(np.random.rand(4, 1, 1) < 0.5, -1, 1).astype(np.float32)
        torch.from_numpy(y.sum(0)), torch.from_numpy(y)


def musdb_peer(root: Path, seq: float, items: int) -> None:
    """open-unmix's MUSDBDataset sampling (random_track_mix) through the musdb package."""
    import musdb

    db = musdb.DB(root=str(root), is_wav=True, subsets="train")
    for _ in range(items):
        stems = []
        for src in SOURCES:
            track = random.choice(db.tracks)
            track.chunk_duration = seq
            track.chunk_start = random.uniform(0, track.duration - seq)
            stems.append(track.sources[src].audio.T.astype(np.float32))
        y = np.stack(stems)
        torch.from_numpy(y.sum(0)), torch.from_numpy(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=6)
    parser.add_argument("--track-seconds", type=float, default=20.0)
    parser.add_argument("--seq", type=float, default=6.0, help="training chunk, seconds")
    parser.add_argument("--items", type=int, default=48, help="items per timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-peer", action="store_true", help="skip the musdb/ffmpeg peer")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        make_synthetic_dataset(root, {"train": args.tracks}, seconds=args.track_seconds, seed=0)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        audio = args.tracks * args.track_seconds
        print(
            f"synthetic rendering: {audio:.0f} s of audio (4 stems + mixture written) in {cpu:.2f} s CPU / "
            f"{wall:.2f} s wall → {audio / cpu:.1f}× real time (CPU), {audio / wall:.1f}× (wall)"
        )

        ds = MUSDBDataset(root, "train", seq_duration=args.seq, samples_per_track=args.items, valid_tracks=[])
        rows = [("danna_sep MUSDBDataset", best_of(lambda: [ds[i] for i in range(args.items)], args.repeat))]
        rows.append(
            ("original FastMUSDB recipe", best_of(lambda: original_fastmusdb(root, args.seq, args.items), args.repeat))
        )
        if not args.skip_peer:
            try:
                rows.append(
                    ("musdb package (open-unmix)", best_of(lambda: musdb_peer(root, args.seq, args.items), args.repeat))
                )
            except Exception as exc:  # the peer needs ffmpeg binaries
                print(f"musdb peer skipped: {exc}")
        ours = rows[0][1][0]
        print(f"\ntraining items ({args.seq:g} s, 4 stems from random tracks, one process), best of {args.repeat}:")
        print(f"{'loader':30s} {'items/s':>9s} {'ms/item':>9s} {'CPU ms/item':>12s} {'speed vs danna_sep':>19s}")
        for name, (wall, cpu) in rows:
            # the musdb peer decodes in ffmpeg child processes: its CPU column misses their time
            print(
                f"{name:30s} {args.items / wall:9.1f} {1000 * wall / args.items:9.1f} "
                f"{1000 * cpu / args.items:12.1f} {ours / wall:18.2f}×"
            )

    batch = torch.randn(4, 4, 2, int(args.seq * SR), generator=torch.Generator().manual_seed(0)) * 0.1
    aug = DeviceAugment()
    gen = torch.Generator().manual_seed(0)
    aug(batch, gen)  # warm-up (kernels, allocator)
    t = best_of(lambda: [aug(batch, gen) for _ in range(5)], args.repeat)[0] / 5
    full = DeviceAugment(pitch_p=1.0, speed_p=1.0)
    t_full = best_of(lambda: full(batch, gen), args.repeat)[0]
    print(
        f"\ndevice augmentation on CPU (1 thread), batch 4 × 4 stems × {args.seq:g} s: "
        f"{1000 * t:.0f} ms/batch at p=.2 (default), {1000 * t_full:.0f} ms/batch with every stem shifted and sped"
    )


if __name__ == "__main__":
    main()
