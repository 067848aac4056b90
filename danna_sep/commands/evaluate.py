"""``danna evaluate``: score single models, their blend and the mixture baseline on a dataset split.

Either separates every track with the models of a checkpoint folder (each model once; stems cached under
``OUTDIR/cache`` and reused by later runs and by ``danna fit-blend``) or reads finished estimates
(``--estimates DIR`` with ``DIR/<track>/<stem>.wav``). Prints museval-compatible BSSEval v4 SDR (median of frames,
median of tracks) and the MDX global SDR (mean over tracks); writes museval per-track JSON and ``summary.json``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "evaluate models, their blend and the mixture baseline (museval v4 and global SDR)"


def add_common(parser: argparse.ArgumentParser, subset: str) -> None:
    """Options shared with ``danna fit-blend``."""
    parser.add_argument("--root", required=True, help="dataset folder (MUSDB18, MUSDB18-HQ or synthetic layout)")
    parser.add_argument("--subset", default=subset, choices=("train", "valid", "test"),
                        help=f"split to use (default {subset})")
    parser.add_argument("--checkpoints", default=None,
                        help="folder with the exported models (default $DANNA_CHECKPOINTS or ~/danna-sep-checkpoints)")
    parser.add_argument("--outdir", default="evaluation", help="results and the estimate cache (default ./evaluation)")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="processes scoring tracks in parallel (default: CPU cores)")
    parser.add_argument("--device", default="cpu", help="device for separation: cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--tracks", type=int, default=None, help="only the first N tracks of the split")
    parser.add_argument("--niter", type=int, default=1,
                        help="Wiener EM iterations for the spectral models (default 1, as the original; 0 = masks)")


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "test")
    parser.add_argument("--bag", default=None, help="bag file (JSON) with the models and blend weights "
                                                    "(default: the original Danna-Sep blend)")
    parser.add_argument("--estimates", default=None,
                        help="score finished estimates DIR/<track>/<stem>.wav instead of separating")
    parser.add_argument("--no-museval", dest="museval", action="store_false",
                        help="global SDR only (skip BSSEval v4)")


def load_tracks(args: argparse.Namespace, subset: str):
    from ..data import split_tracks

    tracks = split_tracks(args.root, subset)
    return tracks[: args.tracks] if args.tracks else tracks


def load_models(checkpoints, roles, device: str) -> dict:
    """role → LoadedModel from the checkpoint folder (CheckpointError naming missing files)."""
    from ..export import load_model
    from ..separate import find_model_files, resolve_device

    files = find_model_files(checkpoints, roles)
    dev = resolve_device(device)
    return {role: load_model(path, role=role, device=dev) for role, path in files.items()}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..blend import ORIGINAL_BAG, Bag
    from ..evaluate import bag_systems, estimates_dir_refs, evaluate, format_table, separate_to_cache
    from ..errors import ConfigError

    tracks = load_tracks(args, args.subset)
    outdir = Path(args.outdir)
    if args.estimates:
        if args.bag:
            raise ConfigError("--estimates scores finished stems: --bag does not apply")
        refs = {"estimates": estimates_dir_refs(args.estimates, tracks)}
        systems = {"estimates": {"estimates": np.ones(4)}}
    else:
        bag = Bag.load(args.bag) if args.bag else ORIGINAL_BAG
        models = load_models(args.checkpoints, bag.models, args.device)
        refs = separate_to_cache(models, tracks, outdir / "cache", args.root, args.subset, {"niter": args.niter})
        systems = bag_systems(bag)
    summary = evaluate(tracks, refs, systems, args.subset, outdir, jobs=args.jobs, museval=args.museval)
    print(format_table(summary))
    print(f"\nwrote {outdir / 'summary.json'}")
    return 0
