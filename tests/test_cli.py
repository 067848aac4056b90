import subprocess
import sys
from pathlib import Path

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


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from danna_sep.cli import main, separate_main; sys.exit({}(sys.argv[2:]))"
    entry, *rest = args
    return subprocess.run(
        [sys.executable, "-c", code.format("separate_main" if entry == "danna-sep" else "main"), "-", *rest],
        capture_output=True,
        text=True,
    )


def test_danna_sep_speaks_under_its_own_name_and_suggests_close_options(tmp_path):
    proc = _cli("danna-sep", "--flca", str(tmp_path / "song.wav"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: danna-sep ")
    assert "danna-sep: error: unrecognized arguments: --flca (--flca: did you mean --flac?)" in proc.stderr
    proc = _cli("danna", "separate", "--two-stmes=vocals", "--wienr-window", "3", "x.wav")
    assert proc.returncode == 2
    assert "--two-stmes=vocals: did you mean --two-stems?" in proc.stderr
    assert "--wienr-window: did you mean --wiener-window?" in proc.stderr
    assert "usage: danna separate " in proc.stderr
    proc = _cli("danna", "train", "x.json", "--wieghts", "w.pt")
    assert proc.returncode == 2 and "did you mean --weights?" in proc.stderr
    proc = _cli("danna-sep", "--zzzzzz", "x.wav")  # nothing close: no hint
    assert proc.returncode == 2 and "did you mean" not in proc.stderr


def test_danna_sep_user_errors_carry_its_name(tmp_path):
    proc = _cli("danna-sep", "--original", "--shifts", "2", str(tmp_path / "song.wav"))
    assert proc.returncode == 2 and proc.stderr.startswith("danna-sep: error: --original")


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
    code = (
        "import sys; from danna_sep.cli import main\n"
        "try: main(['separate', '--help'])\n"
        "except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "default 0.25" in proc.stdout and "default 300" in proc.stdout


def test_the_demo_ends_with_a_command_that_separates_a_song(tmp_path):
    """The command the demo prints runs as printed on a folder of models and a fitted bag."""
    import shlex

    import soundfile as sf

    from danna_sep.blend import ORIGINAL_BAG
    from danna_sep.demo import try_command
    from tests.original_release.build import write_release
    from tests.original_release.models import example_mix

    models = tmp_path / "checkpoints"
    write_release(models, size="tiny", onnx=False)
    bag = models / "fitted_bag.json"
    ORIGINAL_BAG.save(bag)
    sf.write(tmp_path / "song.wav", example_mix(44100).T.numpy(), 44100)
    command = shlex.split(try_command(models, bag))
    assert Path(command[0]).name == "danna-sep" and command[-1] == "song.wav"
    proc = subprocess.run([*command, "-q", "--no-download"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
