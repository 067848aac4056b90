"""The ``danna`` command and its ``danna-sep`` alias (= ``danna separate``).

Each subcommand lives in ``danna_sep/commands/<name>.py`` (imported here plainly: the modules import torch only
inside ``run``, so ``--help`` and option errors answer at once) and defines::

    HELP: str                                   # one line for `danna --help`
    def configure(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int     # exit status

User errors (:class:`danna_sep.errors.DannaError`) are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Optional, Sequence

from . import __version__
from .commands import (convert_xumx, download, evaluate, export, fit_blend, import_released, make_dataset, models,
                       separate, train)
from .errors import DannaError
from .runtime import keep_freed_memory

COMMANDS: dict[str, ModuleType] = {
    "separate": separate,
    "train": train,
    "export": export,
    "evaluate": evaluate,
    "fit-blend": fit_blend,
    "make-dataset": make_dataset,
    "convert-xumx": convert_xumx,
    "download": download,
    "models": models,
    "import-released": import_released,
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``danna`` parser; ``only``: configure that subcommand's options alone (the others are listed)."""
    parser = argparse.ArgumentParser(prog="danna", description="Music source separation toolkit (danna-sep).")
    parser.add_argument("--version", action="version", version=f"danna-sep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if only is None or name == only:
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the command that runs (commands pull in torch, models, ...)
    only = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only if only in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    keep_freed_memory()  # about 1.3-1.6x faster CPU inference and training (see danna_sep.runtime)
    try:
        return int(args._run(args) or 0)
    except DannaError as exc:
        print(f"danna {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"danna {args.command}: interrupted", file=sys.stderr)
        return 130


def separate_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``danna-sep``: the seed-compatible alias of ``danna separate``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        print(f"danna-sep {__version__}")
        return 0
    return main(["separate", *argv])


if __name__ == "__main__":
    sys.exit(main())
