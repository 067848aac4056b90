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
import difflib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from . import __version__
from .commands import (
    convert_xumx,
    download,
    evaluate,
    export,
    fit_blend,
    import_released,
    make_dataset,
    models,
    separate,
    serve,
    train,
)
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
    "serve": serve,
}


class _Parser(argparse.ArgumentParser):
    """argparse with a hint for a misspelt option: ``--flca`` → "did you mean --flac?" (difflib; Python 3.14's
    ``suggest_on_error`` only covers sub-command names and choices)."""

    def error(self, message: str) -> NoReturn:
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            options = [s for action in self._actions for s in action.option_strings]
            hints = [
                f"{arg}: did you mean {close[0]}?"
                for arg in unknown.split()
                if arg.startswith("-")
                for close in [difflib.get_close_matches(arg.split("=")[0], options, n=1)]
                if close
            ]
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``danna`` parser; ``only``: configure that subcommand's options alone (the others are listed)."""
    parser = _Parser(prog="danna", description="Music source separation toolkit (danna-sep).")
    parser.add_argument("--version", action="version", version=f"danna-sep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if only is None or name == only:
            mod.configure(p)
            p.set_defaults(_run=mod.run, _prog=f"danna {name}")
    parser.set_defaults(_commands=sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # configure only the command that runs (the others need not be)
    only = next((a for a in argv if not a.startswith("-")), None)
    if argv[:1] == ["separate"]:  # its own parser: inputs may come before and after options
        return separate_main(argv[1:], prog="danna separate")
    parser = build_parser(only if only in COMMANDS else None)
    args = _parse(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    return _run(args, f"danna {args.command}")


def separate_main(argv: Sequence[str] | None = None, prog: str = "danna-sep") -> int:
    """Entry point of ``danna-sep``: ``danna separate`` under its own name (the original tool's command).

    Inputs and options may be mixed (``danna-sep a.wav --flac b.wav``), as argparse's intermixed parsing allows.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"danna-sep {__version__}")
        return 0
    parser = _Parser(prog=prog, description=separate.DESCRIPTION if prog == "danna-sep" else separate.HELP)
    separate.configure(parser)
    parser.set_defaults(_prog=prog)
    args, extra = parser.parse_known_intermixed_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _run(args, prog, separate.run)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; unknown options are reported by the (sub)parser that knows the close matches."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = getattr(args, "_commands", None) or {}
        commands.get(getattr(args, "command", None), parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _run(args: argparse.Namespace, name: str, run: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Run the command; user errors (:class:`DannaError`) become one line prefixed with ``name``, exit status 2;
    an interrupt exits with its ``status`` if it has one (128 + the signal's number), else 130 (Ctrl-C)."""
    keep_freed_memory()  # about 1.3-1.6x faster CPU inference and training (see danna_sep.runtime)
    try:
        return int((run or args._run)(args) or 0)
    except DannaError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{name}: interrupted", file=sys.stderr)
        return int(getattr(exc, "status", 130))


if __name__ == "__main__":
    sys.exit(main())
