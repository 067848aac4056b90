"""Seed-compatible entry point: ``python xumx_weights_convert.py INFILE OUTFILE``.

Converts the official pretrained X-UMX (Asteroid's ``pretrained_xumx_musdb18HQ.pth``) into a danna-sep
checkpoint; the same as ``danna convert-xumx INFILE OUTFILE``.
"""

import sys

from danna_sep.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert-xumx", *sys.argv[1:]]))
