"""``danna fit-blend``: fit per-source blend weights on a split from cached per-model estimates.

Separates the split with each model alone (or reuses ``OUTDIR/cache`` from ``danna evaluate``), fits the weights on
the simplex that maximise the mean global SDR (:func:`danna_sep.blend.fit_blend`), writes a bag file that
``danna-sep --bag`` and ``danna evaluate --bag`` accept, then compares the original hand-picked weights with the
fitted ones on a split not used for fitting (``--eval-subset``, default test).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_dataset_options, load_split

HELP = "fit the blend weights on a validation split and write a bag file"


def configure(parser: argparse.ArgumentParser) -> None:
    add_dataset_options(parser, "valid")
    parser.add_argument(
        "--out", required=True, help="bag file to write (JSON); as DIR/bag.json, danna-sep --checkpoints DIR uses it"
    )
    parser.add_argument("--models", default="xumx,unet,demucs", help="models to blend (default xumx,unet,demucs)")
    parser.add_argument(
        "--eval-subset",
        default="test",
        choices=("train", "valid", "test", "none"),
        help="split on which to compare original and fitted weights (default test; none = skip)",
    )
    parser.add_argument("--step", type=float, default=0.01, help="grid step of the search before refinement")


def original_bag(models):
    from ..blend import FAST_BAG, ORIGINAL_BAG

    for bag in (ORIGINAL_BAG, FAST_BAG):
        if sorted(bag.models) == sorted(models):
            return bag
    return None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..checkpoints import load_folder_models
    from ..errors import ConfigError
    from ..evaluate import evaluate, fit_from_cache, format_table, separate_to_cache

    roles = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(roles) < 2:
        raise ConfigError(f"--models: a blend needs at least two models, got {roles}")
    if args.eval_subset == args.subset:
        raise ConfigError(f"--eval-subset {args.eval_subset}: compare on a split not used for fitting")
    tracks = load_split(args, args.subset)
    outdir = Path(args.outdir)
    models = load_folder_models(args.checkpoints, roles, args.device)
    refs = separate_to_cache(models, tracks, outdir / "cache", args.root, args.subset, {"niter": args.niter})
    bag = fit_from_cache(tracks, refs, roles, jobs=args.jobs, step=args.step)
    bag.save(args.out)
    print(
        f"fitted weights on {len(tracks)} {args.subset} track(s) (rows {', '.join(roles)}; "
        f"columns drums, bass, other, vocals):"
    )
    print(np.array2string(bag.weights, precision=3, suppress_small=True))
    print(f"wrote {args.out}")
    if args.eval_subset == "none":
        return 0
    test = load_split(args, args.eval_subset)
    test_refs = separate_to_cache(models, test, outdir / "cache", args.root, args.eval_subset, {"niter": args.niter})
    systems = {m: {m: np.ones(4)} for m in roles}
    original = original_bag(roles)
    if original is not None:
        systems["original blend"] = {m: original.column(m) for m in roles}
    systems["fitted blend"] = {m: bag.column(m) for m in roles}
    summary = evaluate(test, test_refs, systems, args.eval_subset, outdir / f"fit-{args.eval_subset}", jobs=args.jobs)
    print(format_table(summary))
    return 0
