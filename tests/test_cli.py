import subprocess
import sys

from danna_sep import __version__
from danna_sep.cli import build_parser, main, separate_main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: danna" in out


def test_unknown_command_is_an_error():
    proc = subprocess.run([sys.executable, "-m", "danna_sep", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_danna_sep_version(capsys):
    assert separate_main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_separate_defaults_match_the_python_api():
    """`danna separate` and `Separator` share danna_sep.defaults, so a default changed in one place changes both."""
    import inspect

    from danna_sep.separate import Separator

    args = build_parser("separate").parse_args(["separate", "song.wav"])
    api = inspect.signature(Separator).parameters
    for name in ("overlap", "niter", "shifts", "wiener_window", "memory_limit"):
        assert getattr(args, name) == api[name].default, name


def test_separate_help_does_not_import_torch():
    code = ("import sys; from danna_sep.cli import main\n"
            "try: main(['separate', '--help'])\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "default 0.25" in proc.stdout and "default 300" in proc.stdout
