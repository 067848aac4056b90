import subprocess
import sys

from danna_sep import __version__
from danna_sep.cli import main, separate_main


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
