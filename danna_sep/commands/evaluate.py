"""``danna evaluate``: score single models, their blend and the mixture baseline on a dataset split.

Either separates every track with the models of a checkpoint folder (each model once; stems cached under
``OUTDIR/cache`` and reused by later runs and by ``danna fit-blend``) or reads finished estimates
(``--estimates DIR`` with ``DIR/<track>/<stem>.wav``). Prints museval-compatible BSSEval v4 SDR (median of frames,
median of tracks) and the MDX global SDR (mean over tracks); writes museval per-track JSON and ``summary.json``,
and with ``--plots`` the SDR charts (:func:`danna_sep.plots.evaluation_charts`: box plots over tracks, per-track
bars).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_dataset_options, load_split

_UNDER_OUTDIR = "<OUTDIR>/plots"  # --plots without a folder

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
    parser.add_argument(
        "--plots",
        nargs="?",
        const=_UNDER_OUTDIR,
        default=None,
        metavar="DIR",
        help="also write PNG charts of the SDRs to DIR (default OUTDIR/plots): box plots over tracks per source "
        "and system, and per-track bars (needs the plots extra: pip install 'danna-sep[plots]')",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..blend import ORIGINAL_BAG, Bag
    from ..checkpoints import load_folder_models
    from ..errors import ConfigError
    from ..evaluate import bag_systems, estimates_dir_refs, evaluate, format_table, separate_to_cache

    outdir = Path(args.outdir)
    plots = None
    if args.plots is not None:  # checked before any work: not found missing after the separation
        from ..plots import require_matplotlib

        require_matplotlib("--plots")
        plots = outdir / "plots" if args.plots == _UNDER_OUTDIR else Path(args.plots)
        if plots.exists() and not plots.is_dir():
            raise ConfigError(f"--plots: {plots} is a file, not a folder")
    tracks = load_split(args, args.subset)
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
    if plots is not None:
        from ..plots import evaluation_charts

        charts = evaluation_charts(summary, plots)
        print(f"charts: {', '.join(str(c) for c in charts)}")
    return 0
