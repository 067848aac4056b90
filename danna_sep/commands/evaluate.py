"""``danna evaluate``: score single models, their blend and the mixture baseline on a dataset split.

Either separates every track with the models of a checkpoint folder (each model once; stems cached under
``OUTDIR/cache`` and reused by later runs and by ``danna fit-blend``) or reads finished estimates
(``--estimates DIR`` with ``DIR/<track>/<stem>.wav``). Prints museval-compatible BSSEval v4 SDR (median of frames,
median of tracks) and the MDX global SDR (mean over tracks); writes museval per-track JSON and ``summary.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_dataset_options, load_split

HELP = "evaluate models, their blend and the mixture baseline (museval v4 and global SDR)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_dataset_options(parser, "test")
    parser.add_argument(
        "--bag",
        default=None,
        help="bag file (JSON) with the models and blend weights (default: the original Danna-Sep blend)",
    )
    parser.add_argument(
        "--estimates", default=None, help="score finished estimates DIR/<track>/<stem>.wav instead of separating"
    )
    parser.add_argument("--no-museval", dest="museval", action="store_false", help="global SDR only (skip BSSEval v4)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..blend import ORIGINAL_BAG, Bag
    from ..checkpoints import load_folder_models
    from ..errors import ConfigError
    from ..evaluate import bag_systems, estimates_dir_refs, evaluate, format_table, separate_to_cache

    tracks = load_split(args, args.subset)
    outdir = Path(args.outdir)
    if args.estimates:
        if args.bag:
            raise ConfigError("--estimates scores finished stems: --bag does not apply")
        refs = {"estimates": estimates_dir_refs(args.estimates, tracks)}
        systems = {"estimates": {"estimates": np.ones(4)}}
    else:
        bag = Bag.load(args.bag) if args.bag else ORIGINAL_BAG
        models = load_folder_models(args.checkpoints, bag.models, args.device)
        refs = separate_to_cache(models, tracks, outdir / "cache", args.root, args.subset, {"niter": args.niter})
        systems = bag_systems(bag)
    summary = evaluate(tracks, refs, systems, args.subset, outdir, jobs=args.jobs, museval=args.museval)
    print(format_table(summary))
    print(f"\nwrote {outdir / 'summary.json'}")
    return 0
