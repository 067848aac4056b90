"""``danna download [NAMES…]``: get the released model files into the checkpoint folder, verified.

NAMES are file names (``unet_attention.pth``), roles (``xumx``, ``unet``, ``demucs``, ``xumx-baseline``) or sets
(``default``, ``original``, ``all``); none means ``default``. Each file goes through ``<name>.part`` (an interrupted
transfer resumes), is verified (not a web page, its hash against the folder's lock file, loads, parameter count,
I/O contract) and only then takes its name; its hash is recorded in ``danna-sep.lock.json``. Files fetched by hand
are imported the same way with ``--source DIR``. Afterwards the files are imported into danna-sep's own models
(``--no-import`` skips that). See :mod:`danna_sep.release.download`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import defaults

HELP = "download the released Danna-Sep model files (Google Drive) and the X-UMX baseline (Zenodo), verified"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="file names, roles (xumx, unet, demucs, xumx-baseline) or sets (default, original, "
        "all); default: the default set (what `danna-sep` runs). `danna models` lists them",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"checkpoint folder (default: $DANNA_CHECKPOINTS, else {defaults.DEFAULT_CHECKPOINTS})",
    )
    parser.add_argument(
        "--source",
        metavar="URL|DIR",
        help="a mirror (http(s) base URL: <URL>/<name>, no fall-back) or a folder holding files "
        "fetched by hand (default: $DANNA_MODEL_URL, else each file's own URLs)",
    )
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="fetch again even if present, and accept a file whose hash differs from the lock "
        "file's record (replacing the record)",
    )
    parser.add_argument(
        "--no-import", action="store_true", help="do not import the files into danna-sep's own models afterwards"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notices, only errors")


def run(args: argparse.Namespace) -> int:
    from ..release.download import fetch
    from ..release.registry import load_registry
    from ..separate import checkpoint_dir

    entries = load_registry().resolve(args.names)
    folder, _ = checkpoint_dir(args.dir)
    notify = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    verified = fetch(entries, folder, source=args.source, force=args.force, quiet=args.quiet, notify=notify)
    if not args.no_import:
        from ..release.convert import import_released

        import_released(folder, names=[v.name for v in verified], force=args.force, quiet=args.quiet)
    if not args.quiet:
        print(f"{len(verified)} file(s) ready in {folder}: {', '.join(v.name for v in verified)}")
    return 0
