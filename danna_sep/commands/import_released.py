"""``danna import-released [DIR]``: the released Danna-Sep files' weights → danna-sep checkpoints beside them.

See :mod:`danna_sep.release.convert`; ``danna download`` runs this after every download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "import the released Danna-Sep models' weights into danna-sep's own models (checked against the originals)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="checkpoint folder with the released files (default: $DANNA_CHECKPOINTS, else ~/danna-sep-checkpoints)",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="only these released files (default: all present)")
    parser.add_argument("--force", action="store_true", help="import again even where an up-to-date import exists")


def run(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError
    from ..release.convert import import_released
    from ..separate import checkpoint_dir

    folder, _ = checkpoint_dir(args.folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder; `danna download --dir {folder}` fetches the released files")
    if args.files:
        _check_names(folder, args.files)
    reports = import_released(folder, args.files or None, force=args.force)
    if not reports and args.files:
        raise CheckpointError(
            f"{folder}: {', '.join(args.files)}: danna-sep exports (they carry its metadata), "
            "not released files; nothing to import"
        )
    if not reports:
        raise CheckpointError(
            f"{folder}: no released Danna-Sep file to import (xumx_mwf.pth, unet_attention.pth, "
            f"demucs_4_decoders.pth); `danna download --dir {folder}` fetches them"
        )
    return 0


def _check_names(folder: Path, names: list) -> None:
    """Each of ``names`` must be an importable released file present in ``folder``."""
    from ..errors import CheckpointError, ConfigError
    from ..release.registry import load_registry

    registry = load_registry()
    importable = [e.name for e in registry.files if e.imported]
    unknown = [n for n in names if n not in importable]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not an importable released file; importable: {', '.join(importable)}")
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        raise CheckpointError(
            f"{folder}: no {', '.join(absent)}; `danna download --dir {folder} {' '.join(absent)}` fetches it"
        )
