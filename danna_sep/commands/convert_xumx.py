"""``danna convert-xumx IN OUT``: the official pretrained X-UMX (Asteroid's file) → a danna-sep X-UMX checkpoint
(the conversion itself: :mod:`danna_sep.release.asteroid_xumx`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert the official pretrained X-UMX weights (Asteroid's .pth) into a danna-sep checkpoint"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="Asteroid X-UMX file, e.g. pretrained_xumx_musdb18HQ.pth")
    parser.add_argument("output", type=Path, help="danna-sep checkpoint to write (.pt)")


def run(args: argparse.Namespace) -> int:
    from ..release.asteroid_xumx import convert_file  # torch: not for --help

    checkpoint = convert_file(args.input, args.output)
    arch = checkpoint["config"]["arch"]
    n_params = sum(t.numel() for k, t in checkpoint["model"].items() if "running" not in k and "num_batches" not in k)
    print(f"wrote {args.output}: {arch['type']} {arch['args']} ({n_params:,} parameters)")
    return 0
