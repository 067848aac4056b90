"""``danna train CONFIG``: train a model from a JSON config (also ``python train.py CONFIG`` at the repo root).

Examples::

    danna train configs/x_umx_mwf.json --weights xumx_weights.pth --root ~/musdb18hq
    danna train configs/unet_attn.json --device_ids 0 1 2 3
    danna train configs/tiny/demucs_split.json --root .demo/dataset --set trainer.epochs=2   # make demo's dataset
    danna train configs/demucs_split.json --checkpoint saved/DemucsSplit_last.pt
    torchrun --nproc_per_node 4 train.py configs/unet_attn.json
"""

from __future__ import annotations

import argparse
import os

HELP = "train a model from a config (checkpoints in saved/, TensorBoard logs in runs/)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples::", 1)[1]
    parser.add_argument("config", help="config file (.json), or a shipped one by name, e.g. tiny/x_umx_mwf")
    parser.add_argument(
        "--weights",
        "--init",
        metavar="W",
        help="initial model weights (a checkpoint, converted X-UMX weights or an imported released model)",
    )
    parser.add_argument(
        "--partial-weights",
        action="store_true",
        help="with --weights: load the tensors that match and report what was skipped",
    )
    parser.add_argument("--checkpoint", metavar="C", help="resume from a training checkpoint (exactly, also mid-epoch)")
    parser.add_argument(
        "-d",
        "--device",
        default=None,
        help="CUDA device number or a device name such as cpu (default: GPU 0 if present, else CPU)",
    )
    parser.add_argument(
        "--device_ids",
        "--device-ids",
        type=int,
        nargs="+",
        metavar="I",
        help="train on these GPUs with DistributedDataParallel (workers launched here)",
    )
    parser.add_argument("--root", metavar="DIR", help="dataset folder (default: $MUSDB_ROOT, else the config's root)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (JSON value), e.g. --set trainer.epochs=2; repeatable",
    )
    parser.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after N micro-batches in total, leaving a resumable checkpoint"
    )
    parser.add_argument("--workdir", metavar="DIR", help="folder for saved/ and runs/ (default: current directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (summary lines only)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")


def run(args: argparse.Namespace) -> int:
    from ..train import config_path, train

    result = train(
        config_path(args.config),
        root=args.root,
        device=args.device,
        checkpoint=args.checkpoint,
        weights=args.weights,
        partial_weights=args.partial_weights,
        device_ids=args.device_ids,
        overrides=args.overrides,
        workdir=args.workdir,
        max_steps=args.max_steps,
        progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
    )
    if result.interrupted:
        return 130
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if result.best_checkpoint is not None:
        print(f"best: {result.best_checkpoint} (avg SDR {result.best_score:.3f} dB)")
    if result.last_checkpoint is not None:
        print(f"last: {result.last_checkpoint}")
    return 0
