"""Seed-compatible entry point: ``python jit_convert.py CONFIG CHECKPOINT OUT.pth``.

Builds the model from CONFIG's ``arch``, loads CHECKPOINT's weights strictly and writes the TorchScript file that
danna-sep loads (with its metadata); the same as ``danna export CONFIG CHECKPOINT OUT.pth``.
"""

import sys

from danna_sep.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
