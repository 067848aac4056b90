"""``danna import-released [DIR]``: the released Danna-Sep files' weights → danna-sep checkpoints beside them.

See :mod:`danna_sep.release.convert`; ``danna download`` runs this after every download.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "import the released Danna-Sep models' weights into danna-sep's own models (checked against the originals)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", type=Path, metavar="DIR",
                        help="checkpoint folder with the released files (default: $DANNA_CHECKPOINTS, else "
                             "~/danna-sep-checkpoints)")
    parser.add_argument("files", nargs="*", metavar="FILE", help="only these released files (default: all present)")
    parser.add_argument("--force", action="store_true", help="import again even where an up-to-date import exists")


def run(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError
    from ..release.convert import import_released
    from ..separate import checkpoint_dir

    folder, _ = checkpoint_dir(args.folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder; `danna download --dir {folder}` fetches the released files")
    reports = import_released(folder, args.files or None, force=args.force)
    if not reports:
        raise CheckpointError(f"{folder}: no released Danna-Sep file to import (xumx_mwf.pth, unet_attention.pth, "
                              f"demucs_4_decoders.pth); `danna download --dir {folder}` fetches them")
    return 0
