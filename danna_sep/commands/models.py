"""``danna models``: what the checkpoint folder holds of the released model files, and what gets the rest.

One row per registry file: its role, name, where it comes from, its size on disk, its status (``verified``: its
hash is the one the folder's lock file recorded; ``present, unverified``; ``missing``; ``wrong hash``) and whether
its import into danna-sep's own models is there. Then which blend runs by default and the commands that fetch what
is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import defaults

HELP = "list the released model files, what the checkpoint folder holds of them, and how to get the rest"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"checkpoint folder (default: $DANNA_CHECKPOINTS, else {defaults.DEFAULT_CHECKPOINTS})",
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from ..blend import FAST_BAG, MODEL_FILES, ORIGINAL_BAG
    from ..release.download import file_states, source_of
    from ..release.registry import load_registry
    from ..separate import checkpoint_dir

    registry = load_registry()
    folder, origin = checkpoint_dir(args.dir)
    states = file_states(registry.files, folder)
    rows = [("role", "file", "from", "on disk", "status", "import")]
    for s in states:
        status = s.status + (f" ({_mb(s.partial)} downloaded, resumes)" if s.partial and s.size is None else "")
        imported = "-" if s.imported is None else f"{s.entry.imported} {'present' if s.imported else 'missing'}"
        rows.append(
            (s.entry.role, s.entry.name, source_of(s.entry), "-" if s.size is None else _mb(s.size), status, imported)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"checkpoint folder: {folder} ({'--dir' if args.dir is not None else origin})")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    def blend(models: list[str]) -> str:
        lacking = [r for r in models if not any((folder / n).is_file() for n in MODEL_FILES[r])]
        return (
            "ready"
            if not lacking
            else "needs " + ", ".join(" or ".join(MODEL_FILES[r]) or f"a {r} file" for r in lacking)
        )

    print(
        f"default blend: {' + '.join(ORIGINAL_BAG.models)} with the original weights ({blend(ORIGINAL_BAG.models)}); "
        f"--fast: {' + '.join(FAST_BAG.models)} ({blend(FAST_BAG.models)})"
    )
    where = "" if args.dir is None else f" --dir {folder}"
    missing = [s.entry.name for s in states if s.size is None]
    wrong = [s.entry.name for s in states if s.status == "wrong hash"]
    unverified = [s.entry.name for s in states if s.status == "present, unverified"]
    unimported = [s.entry.name for s in states if s.size is not None and s.imported is False]
    for what, names, flags in (
        ("missing", missing, ""),
        ("wrong hash", wrong, " --force"),
        ("to verify and record", unverified, ""),
        ("to import", unimported, ""),
    ):
        if names:
            print(f"{what}: danna download{flags}{where} {' '.join(names)}")
    return 0
