"""`danna-sep` as a user meets it: batches that can be run again, output names, signals, a full disk, the progress
display and the notes on what was changed. Command-line behaviour is tested through subprocesses."""

import errno
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from danna_sep import SOURCES
from danna_sep.audio import AudioInfo, AudioWriter, DiskFullError
from danna_sep.cli import separate_main
from danna_sep.errors import ConfigError
from danna_sep.separate.files import check_outputs, destinations, prepare_files
from tests.test_separate import SR, music, write, write_point_models

pytestmark = pytest.mark.usefixtures("one_thread")
STEMS = sorted(SOURCES)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three cheap TorchScript models under the released names (fast: most tests are about files, not sound)."""
    return write_point_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory):
    """The original release's architectures, tiny: slow enough on a long track to be interrupted mid-way."""
    from tests.original_release.build import write_release

    folder = tmp_path_factory.mktemp("tiny")
    write_release(folder, size="tiny", onnx=False)
    return folder


_CODE = "import sys; from danna_sep.cli import main, separate_main; sys.exit({}(sys.argv[1:]))"


def danna_sep(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CODE.format("separate_main"), *map(str, args)], **_opts(kwargs))


def _opts(kwargs):
    return {"capture_output": True, "text": True, "timeout": 300, **kwargs}


# a shell starts background jobs with SIGINT ignored, and danna-sep keeps an ignored signal ignored (as under
# nohup): the child gets SIGINT's default back, as when run from a terminal, whatever started the tests
_FOREGROUND = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _FOREGROUND + _CODE.format("separate_main"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def tree(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included, relative."""
    return sorted(p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in folder.rglob("*"))


def once(text: str, line: str) -> bool:
    return text.count(line) == 1


# ---------------------------------------------------------------------------------------------- re-running batches


def test_a_batch_runs_again_skipping_complete_stems_with_one_line_each(models, tmp_path):
    music_dir = tmp_path / "music"
    write(music_dir / "a.wav", music(0.6))
    write(music_dir / "sub" / "b.flac", music(0.6, seed=1))
    out = tmp_path / "out"
    first = danna_sep("--checkpoints", models, "-o", out, music_dir)
    assert first.returncode == 0, first.stderr
    assert "2 file(s): 2 done, 0 skipped, 0 failed" in first.stderr
    assert once(first.stderr, "done a.wav") and once(first.stderr, "done b.flac")
    assert "\r" not in first.stderr  # not a terminal: lines, no bar
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert len(stamps) == 8

    again = danna_sep("--checkpoints", models, "-o", out, music_dir)
    assert again.returncode == 0, again.stderr
    lines = again.stderr.splitlines()
    assert len(lines) == len(set(lines)), "a line printed twice"
    assert f"skipped {music_dir / 'a.wav'}: its stems exist in {out / 'a'}/ (--force redoes them)" in lines
    assert sum(line.startswith("skipped ") for line in lines) == 2
    assert "failed" not in again.stderr.replace("0 failed", "") and "models:" not in again.stderr  # nothing loaded
    assert lines[-1] == "2 file(s): 0 done, 2 skipped, 0 failed"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps

    (out / "b" / "vocals.wav").unlink()  # an incomplete earlier output fails that file, and says why
    partial = danna_sep("--checkpoints", models, "-o", out, "-q", music_dir)
    assert partial.returncode == 1
    assert "earlier stems in" in partial.stderr and "vocals.wav missing" in partial.stderr
    assert "danna-sep: 1 of 2 file(s) failed: " in partial.stderr
    assert partial.stderr.count("vocals.wav missing") == 1  # the summary names the file, not the reason again

    forced = danna_sep("--checkpoints", models, "-o", out, "--force", music_dir)
    assert forced.returncode == 0 and "2 file(s): 2 done, 0 skipped, 0 failed" in forced.stderr
    assert tree(out) == ["a/", *(f"a/{s}.wav" for s in STEMS), "b/", *(f"b/{s}.wav" for s in STEMS)]


def _stems(folder: Path, frames: int, rate: int = SR, channels: int = 2) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        sf.write(folder / f"{stem}.wav", np.zeros((frames, channels), np.float32), rate, subtype="PCM_16")
    return {stem: folder / f"{stem}.wav" for stem in STEMS}


def test_what_counts_as_complete(tmp_path):
    """Complete: every stem present, readable, at the rate, channel count and length that separation writes."""
    song = write(tmp_path / "song.wav", music(0.5, rate=48000), rate=48000)
    info = AudioInfo(48000, 2, 24000, 1)
    dests = _stems(tmp_path / "song", SR // 2)
    assert check_outputs(dests, song, info) == (4, [])
    assert check_outputs(dests, song, info, keep_rate=True)[1] == [f"{s}.wav at 44100 Hz, not 48000 Hz" for s in STEMS]
    assert check_outputs(dests, song, AudioInfo(48000, 1, 24000, 1))[1][0] == "bass.wav has 2 channel(s), not 1"
    assert (
        check_outputs(dests, song, AudioInfo(48000, 2, 30000, 1))[1][0] == "bass.wav lasts 0.500 s, the input 0.625 s"
    )
    assert check_outputs(_stems(tmp_path / "x", SR // 2 + 30), song, info)[1] == []  # within 1 ms

    data = dests["drums"].read_bytes()
    dests["drums"].write_bytes(data[: len(data) // 2])  # cut short: the header declares more than is there
    dests["other"].write_bytes(b"")
    dests["vocals"].unlink()
    present, problems = check_outputs(dests, song, info)
    assert present == 3
    assert problems[0].startswith("drums.wav truncated: the header declares 22050 frames, the file holds 110")
    assert problems[1:] == ["other.wav file is empty (0 bytes)", "vocals.wav missing"]

    batch = prepare_files([song], STEMS, tmp_path, "{track}/{stem}.{ext}", "wav")
    assert not batch.jobs and not batch.skipped
    [(path, exc)] = batch.failed
    assert path == song and "incomplete" in str(exc) and "--force" in str(exc)
    assert len(prepare_files([song], STEMS, tmp_path, "{track}/{stem}.{ext}", "wav", overwrite=True).jobs) == 1
    assert not prepare_files([song], STEMS, tmp_path / "new", "{track}/{stem}.{ext}", "wav").failed


# ---------------------------------------------------------------------------------------------------- --filename


def test_output_names_collide_before_any_work(models, tmp_path):
    a = write(tmp_path / "one" / "song.wav", music(0.3))
    b = write(tmp_path / "two" / "song.wav", music(0.3))
    c = write(tmp_path / "three" / "song.flac", music(0.3))
    out = tmp_path / "out"
    proc = danna_sep("--checkpoints", models, "-o", out, tmp_path / "one", tmp_path / "two")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"danna-sep: error: {a} and {b} would both write {out / 'song' / 'drums.wav'}" in proc.stderr
    assert "models:" not in proc.stderr and not out.exists()
    # the flat layout of danna-sep 1.0.2, and {trackext} to tell apart inputs that differ in their extension only
    with pytest.raises(ConfigError, match=r"song\.wav and .*song\.flac would both write .*song_bass\.wav: put"):
        destinations([b, c], ["bass"], out, "{track}_{stem}.{ext}", "wav")
    flat = destinations([b, c], ["bass"], out, "{track}.{trackext}_{stem}.{ext}", "flac")
    assert [d["bass"].name for d in flat] == ["song.wav_bass.flac", "song.flac_bass.flac"]
    vocals = write(tmp_path / "vocals" / "song.wav", music(0.3))  # stems by folder, written next to the input
    with pytest.raises(ConfigError, match=r"the stems of .*vocals/song\.wav would replace the input"):
        destinations([vocals], ["vocals"], tmp_path, "{stem}/{track}.{ext}", "wav")

    ok = danna_sep("--checkpoints", models, "-o", out, "--filename", "{track}_{stem}.{ext}", "-q", a)
    assert ok.returncode == 0, ok.stderr
    assert tree(out) == [f"song_{s}.wav" for s in STEMS]


def test_the_template_is_documented_and_inputs_mix_with_options(tmp_path):
    help_text = danna_sep("--help").stdout
    assert "{track}/{stem}.{ext}" in help_text and "{track}_{stem}.{ext}" in help_text
    assert "--skip-existing" in help_text and "--no-skip-existing" in help_text
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "--filename '{track}_{stem}.{ext}'" in readme
    # inputs before and after options; the missing ones named (with a close existing name), before torch loads
    (tmp_path / "song.wav").write_bytes(b"")
    code = (
        "import sys; from danna_sep.cli import separate_main\n"
        f"code = separate_main([{str(tmp_path / 'sogn.wav')!r}, '--flac', {str(tmp_path / 'x.wav')!r}])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'sogn.wav'}: no such file or folder (did you mean {tmp_path / 'song.wav'}?)" in proc.stderr
    assert f"{tmp_path / 'x.wav'}: no such file or folder" in proc.stderr


@pytest.mark.parametrize(
    "option,message",
    [
        (["--overlap", "1.5"], "--overlap must be in [0, 1), got 1.5"),
        (["--shifts", "0"], "--shifts must be >= 1"),
        (["--stems", "guitar"], "unknown source(s) ['guitar']"),
        (["--two-stems", "piano"], "unknown source 'piano'"),
        (["--filename", "{track}.{ext}"], "{stem}"),
    ],
)
def test_option_errors_come_back_before_torch_is_imported(tmp_path, option, message):
    song = write(tmp_path / "s.wav", music(0.2))
    code = (
        "import sys; from danna_sep.cli import separate_main\n"
        f"code = separate_main({[*option, str(song)]!r})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("danna-sep: error: ") and message in proc.stderr


# ----------------------------------------------------------------------------------------------------- pictures


def test_spectrograms_are_drawn_beside_the_stems_from_what_was_written(models, tmp_path):
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    from PIL import Image

    from danna_sep.plots import spectrogram_png

    write(tmp_path / "music" / "a.wav", music(0.6))
    write(tmp_path / "music" / "b.wav", music(0.6, seed=1))
    out = tmp_path / "out"
    first = danna_sep("--checkpoints", models, "-o", out, "--spectrograms", tmp_path / "music")
    assert first.returncode == 0, first.stderr
    assert "spectrograms drawn)" in first.stderr and once(first.stderr, "done a.wav")
    assert tree(out) == [
        f"{t}{x}" for t in ("a", "b") for x in ["/", *(f"/{s}.{e}" for s in STEMS for e in ("png", "wav"))]
    ]
    for stem in STEMS:
        # the page's picture of the stem as written: the same pixels as drawing the file read back whole
        audio, rate = sf.read(out / "a" / f"{stem}.wav", dtype="float32", always_2d=True)
        ref = spectrogram_png(audio.T, rate, tmp_path / "ref.png", f"{stem} · a.wav", stem=stem)
        with Image.open(out / "a" / f"{stem}.png") as got, Image.open(ref) as want:
            assert got.format == "PNG" and got.size == (900, 260)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    # a picture is not part of "complete": without it the track is still skipped, and gets only what it lacks
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    (out / "b" / "vocals.png").unlink()
    again = danna_sep("--checkpoints", models, "-o", out, tmp_path / "music")
    assert again.returncode == 0 and "0 done, 2 skipped" in again.stderr
    assert not (out / "b" / "vocals.png").exists()
    redraw = danna_sep("--checkpoints", models, "-o", out, "--spectrograms", tmp_path / "music")
    assert redraw.returncode == 0, redraw.stderr
    assert "0 done, 2 skipped, 0 failed" in redraw.stderr and "models:" not in redraw.stderr  # nothing loaded
    assert once(redraw.stderr, f"drew 1 spectrogram(s) of b.wav in {out / 'b'}/") and "of a.wav" not in redraw.stderr
    assert (out / "b" / "vocals.png").is_file()
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    del after[out / "b" / "vocals.png"], stamps[out / "b" / "vocals.png"]
    assert after == stamps  # every other file untouched

    # the flat layout, two stems, FLAC: a_vocals.png beside a_vocals.flac
    flat = danna_sep(
        "--checkpoints", models, "-o", tmp_path / "flat", "--filename", "{track}_{stem}.{ext}",
        "--two-stems", "vocals", "--spectrograms", "--flac", tmp_path / "music" / "a.wav",
    )  # fmt: skip
    assert flat.returncode == 0, flat.stderr
    assert tree(tmp_path / "flat") == [f"a_{s}.{e}" for s in ("accompaniment", "vocals") for e in ("flac", "png")]


def test_a_picture_that_fails_fails_its_track_and_leaves_no_files(models, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    import danna_sep.plots

    write(tmp_path / "a.wav", music(0.4))
    drawn = []

    def failing(audio_path, path, title, *, stem=None):
        if drawn:
            raise OSError(errno.EIO, "Input/output error")
        drawn.append(original(audio_path, path, title, stem=stem))
        return drawn[-1]

    original = danna_sep.plots.spectrogram_file
    monkeypatch.setattr(danna_sep.plots, "spectrogram_file", failing)
    out = tmp_path / "out"
    code = separate_main(["--checkpoints", str(models), "-o", str(out), "--spectrograms", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert code == 1 and f"failed {tmp_path / 'a.wav'}: " in err and "Input/output error" in err
    assert len(drawn) == 1 and not out.exists(), tree(out)  # stems and the picture drawn removed, folder too


def test_spectrograms_without_matplotlib_stop_before_torch_is_imported(tmp_path):
    song = write(tmp_path / "s.wav", music(0.2))
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if the plots extra were not installed
        "from danna_sep.cli import separate_main\n"
        f"code = separate_main(['--spectrograms', {str(song)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "danna-sep: error: --spectrograms: matplotlib is not installed; pip install 'danna-sep[plots]'\n"
    )


# ------------------------------------------------------------------------------------------------ signals, disk


def _wait_for_part_files(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.rglob(".*.part")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no .part file appeared"
        time.sleep(0.02)
    time.sleep(0.3)  # into the separation proper


@pytest.mark.parametrize(
    "sig,status,extra",
    [(signal.SIGTERM, 143, []), (signal.SIGINT, 130, ["-j", "2"]), (signal.SIGHUP, 129, ["--parallel"])],
    ids=["SIGTERM", "SIGINT-jobs", "SIGHUP-parallel"],
)
def test_signals_leave_no_part_files_and_no_empty_folders(slow_models, tmp_path, sig, status, extra):
    for name in ("a", "b"):
        write(tmp_path / "music" / f"{name}.wav", music(30.0, seed=len(name)), subtype="PCM_16")
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    target = out / "new" / "deeper"  # folders the run creates
    proc = start("--checkpoints", slow_models, "-o", target, *extra, tmp_path / "music")
    _wait_for_part_files(proc, target.parent)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert f"danna-sep: interrupted ({signal.Signals(sig).name})" in err and "Traceback" not in err
    assert tree(out) == ["keep.txt"], "a .part file or a folder the run created was left behind"


def test_a_full_disk_is_named_and_stops_the_batch(models, tmp_path, monkeypatch, capsys):
    for name in ("a", "b", "c"):
        write(tmp_path / "music" / f"{name}.wav", music(1.0))
    calls = []

    def full(self, data):
        calls.append(len(data))
        if len(calls) > 6:  # a few blocks fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, data)

    original = sf.SoundFile.write
    monkeypatch.setattr(sf.SoundFile, "write", full)
    out = tmp_path / "out"
    code = separate_main(["--checkpoints", str(models), "-o", str(out), "--segment", "0.3", str(tmp_path / "music")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"failed {tmp_path / 'music' / 'a.wav'}: no space left on device: {out / 'a'}/ (1 MB needed" in err
    assert "System error" not in err and "internal error" not in err
    assert "danna-sep: 3 of 3 file(s) failed (2 not run: the batch stopped)" in err
    assert not out.exists(), tree(out)  # no .part file, no folder left


def write_block(path: Path) -> None:
    with AudioWriter(path, SR, 2) as writer:
        writer.write(np.zeros((2, 100), np.float32))


def test_a_libsndfile_system_error_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """libsndfile reports a full disk as "System error." (its errno is lost unless cffi kept it): then the free
    space decides."""
    import shutil

    def failing(self, data):
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf.SoundFile, "write", failing)
    monkeypatch.setattr(sf._ffi, "errno", 0, raising=False)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    with pytest.raises(DiskFullError, match=r"x\.wav: no space left on device \(0 MB free\)"):
        write_block(tmp_path / "x.wav")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)  # plenty of room: some other system error
    with pytest.raises(Exception, match="cannot write") as info:
        write_block(tmp_path / "x.wav")
    assert not isinstance(info.value, DiskFullError)
    assert tree(tmp_path) == []


# --------------------------------------------------------------------------------------------- progress, notes


def _in_a_terminal(args, columns=100):
    """Run danna-sep with a pseudo-terminal as stderr; returns (status, what was written)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CODE.format("separate_main"), *map(str, args)], stderr=child, stdout=child
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=300), b"".join(chunks).decode()


def _screen(text: str) -> list[str]:
    """What stays on a terminal: per line, the text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]


def test_progress_on_a_terminal_is_one_bar_that_the_summary_replaces(models, tmp_path):
    write(tmp_path / "a.wav", music(2.0))
    write(tmp_path / "b.wav", music(1.0, seed=1))
    status, text = _in_a_terminal(
        ["--checkpoints", models, "-o", tmp_path / "out", "--segment", "0.2", tmp_path / "a.wav", tmp_path / "b.wav"]
    )
    assert status == 0, text
    assert "[1/2] a.wav" in text and "[2/2] b.wav" in text and "%|" in text  # the bar, with the current file
    screen = [line for line in _screen(text) if line]
    assert not any("%|" in line for line in screen), screen  # the bar is gone at the end: no second 100 %
    assert screen[0].startswith("models: ")
    assert screen[1].startswith("done a.wav → ") and screen[2].startswith("done b.wav → ")
    assert screen[3].startswith("2 file(s): 2 done, 0 skipped, 0 failed; 0:03 of audio in ")
    assert "× real time), peak memory " in screen[3] and screen[3].endswith(" MB")
    assert len(screen) == 4

    status, text = _in_a_terminal(["--checkpoints", models, "-o", tmp_path / "out2", "-q", tmp_path / "a.wav"])
    assert status == 0 and text == ""


def test_notes_say_what_was_changed_once_per_file(models, tmp_path):
    surround = write(tmp_path / "six.wav", music(0.5, channels=6, rate=48000), rate=48000)
    proc = danna_sep("--checkpoints", models, "-o", tmp_path / "out", surround)
    assert proc.returncode == 0, proc.stderr
    assert once(proc.stderr, "six.wav: 6 channels downmixed to stereo\n")
    assert once(
        proc.stderr,
        "six.wav: 48000 Hz resampled to 44100 Hz for the models; stems at 44100 Hz (--keep-rate: at 48000 Hz)\n",
    )
    assert "clipped" not in proc.stderr
    proc = danna_sep("--checkpoints", models, "-o", tmp_path / "kept", "--keep-rate", "-q", surround)
    assert proc.returncode == 0 and proc.stderr == ""  # -q: no notes
    assert sf.info(tmp_path / "kept" / "six" / "bass.wav").samplerate == 48000
    proc = danna_sep("--checkpoints", models, "-o", tmp_path / "kept2", "--keep-rate", surround)
    assert once(
        proc.stderr,
        "six.wav: 48000 Hz resampled to 44100 Hz for the models, stems resampled back to 48000 Hz (--keep-rate)\n",
    )

    loud = tmp_path / "loud.json"  # Demucs's stand-in alone at three times its level: its stems clip
    loud.write_text(json.dumps({"models": ["demucs"], "weights": [[3, 3, 3, 3]], "normalized": False}))
    song = write(tmp_path / "song.wav", music(0.5) * 4)
    proc = danna_sep("--checkpoints", models, "--bag", loud, "-o", tmp_path / "o", "-q", song)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.splitlines()  # still said under -q: samples were lost
    assert line.startswith("song.wav: clipped ") and line.endswith(" to ±1 (PCM_16; --float32 keeps them)")
    assert f" samples in {SOURCES[0]}" in line
    proc = danna_sep("--checkpoints", models, "--bag", loud, "-o", tmp_path / "f", "-q", "--float32", song)
    assert proc.returncode == 0 and proc.stderr == ""
    assert np.abs(sf.read(tmp_path / "f" / "song" / "vocals.wav")[0]).max() > 1


def test_failures_are_summed_up_under_the_programs_own_name(models, tmp_path):
    write(tmp_path / "m" / "good.wav", music(0.3))
    (tmp_path / "m" / "bad.wav").write_bytes(b"RIFF not really a wav file")
    for entry, prog in ((("danna-sep",), "danna-sep"), (("danna", "separate"), "danna separate")):
        code = _CODE.format("separate_main" if entry == ("danna-sep",) else "main")
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                *entry[1:],
                "--checkpoints",
                str(models),
                "-o",
                str(tmp_path / prog),
                "-q",
                str(tmp_path / "m"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert proc.stderr.count("bad.wav: cannot decode") == 1
        assert proc.stderr.splitlines()[-1] == f"{prog}: 1 of 2 file(s) failed: {tmp_path / 'm' / 'bad.wav'}"
