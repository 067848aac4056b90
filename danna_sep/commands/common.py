"""Options and arguments shared by the dataset commands (``danna evaluate``, ``danna fit-blend``)."""

from __future__ import annotations

import argparse
import os


def add_dataset_options(parser: argparse.ArgumentParser, subset: str) -> None:
    """The dataset, checkpoint, output and device options of ``danna evaluate`` and ``danna fit-blend``."""
    parser.add_argument("--root", required=True, help="dataset folder (MUSDB18, MUSDB18-HQ or synthetic layout)")
    parser.add_argument(
        "--subset", default=subset, choices=("train", "valid", "test"), help=f"split to use (default {subset})"
    )
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="folder with the exported models (default $DANNA_CHECKPOINTS or ~/danna-sep-checkpoints)",
    )
    parser.add_argument("--outdir", default="evaluation", help="results and the estimate cache (default ./evaluation)")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=os.cpu_count() or 1,
        help="processes scoring tracks in parallel (default: CPU cores)",
    )
    parser.add_argument("--device", default="cpu", help="device for separation: cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--tracks", type=int, default=None, help="only the first N tracks of the split")
    parser.add_argument(
        "--niter",
        type=int,
        default=1,
        help="Wiener EM iterations for the spectral models (default 1, as the original; 0 = masks)",
    )


def load_split(args: argparse.Namespace, subset: str) -> list:
    """The tracks of ``subset`` under ``args.root`` (the first ``args.tracks`` of them, if given)."""
    from ..data import split_tracks

    tracks = split_tracks(args.root, subset)
    return tracks[: args.tracks] if args.tracks else tracks
