"""Seed-compatible training entry point: ``python train.py CONFIG [--weights W] [--checkpoint C] [-d N]
[--device_ids I J …]``, the same as ``danna train`` (see ``danna train --help`` for all options).

Also the script to give ``torchrun``: ``torchrun --nproc_per_node 4 train.py configs/unet_attn.json``.
"""

import sys

from danna_sep.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
