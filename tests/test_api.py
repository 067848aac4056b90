"""The Python API a new user meets first: ``Separator.separate`` on arrays and tensors (what it refuses, rates,
dtypes, devices), ``from_pretrained``, a checkpoint folder's ``bag.json``, and the README's example run as printed."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_separate import PointWave, music, write, write_point_models

from danna_sep import SOURCES
from danna_sep.audio import to_stereo
from danna_sep.blend import FAST_BAG, ORIGINAL_BAG, Bag
from danna_sep.cli import main
from danna_sep.demo import try_command
from danna_sep.errors import ConfigError, DannaError
from danna_sep.separate import BAG_FILE, Separator

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 44100
README = Path(__file__).resolve().parents[1] / "README.md"
DEMUCS_ONLY = Bag(["demucs"], [[1.0, 1.0, 1.0, 1.0]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A checkpoint folder under the released file names: two spectral models and one waveform model."""
    return write_point_models(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def sep(folder):
    """What ``danna-sep --checkpoints folder`` runs (the defaults)."""
    return Separator.from_checkpoints(folder, device="cpu")


@pytest.fixture
def bagged(folder, tmp_path):
    """A copy of ``folder`` with a ``bag.json``: Demucs alone."""
    copy = Path(shutil.copytree(folder, tmp_path / "bagged"))
    DEMUCS_ONLY.save(copy / BAG_FILE)
    return copy


def demucs_alone(mix: np.ndarray) -> np.ndarray:
    """The vocals of the Demucs stand-in alone (weight 1): a memoryless curve of the mixture."""
    return np.tanh(PointWave(seed=3).g[3].item() * mix)


def read(path: Path) -> torch.Tensor:
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy())


# ----------------------------------------------------------------------------------------- arrays and tensors


def test_an_array_gives_arrays_equal_to_the_stems_of_the_tensor(sep):
    wav = music(1.0)
    from_tensor = sep.separate(wav, SR)
    from_array = sep.separate(wav.numpy(), SR)
    assert list(from_array) == list(from_tensor) == list(SOURCES)
    for s in SOURCES:
        assert type(from_array[s]) is np.ndarray and from_array[s].dtype == np.float32
        assert type(from_tensor[s]) is torch.Tensor and from_tensor[s].dtype == torch.float32
        assert from_array[s].shape == (2, SR) and from_array[s].any()
        np.testing.assert_array_equal(from_array[s], from_tensor[s].numpy())
    # soundfile's (samples, channels) transposed: a strided view of the same track
    view = np.ascontiguousarray(wav.numpy().T).T
    np.testing.assert_array_equal(sep.separate(view, SR)["vocals"], from_array["vocals"])


def test_mono_gives_mono_stems_in_the_inputs_layout(sep):
    mono = music(1.0, channels=1)
    flat = sep.separate(mono[0], SR)  # (samples,)
    column = sep.separate(mono, SR)  # (1, samples)
    both = sep.separate(mono.expand(2, -1), SR)  # what the models get: the channel duplicated
    for s in SOURCES:
        assert flat[s].shape == (SR,) and column[s].shape == (1, SR)
        torch.testing.assert_close(flat[s], column[s][0], rtol=0, atol=0)
        torch.testing.assert_close(column[s], both[s].mean(0, keepdim=True), rtol=0, atol=0)


@pytest.mark.parametrize("channels", [6, 8])
def test_more_channels_are_downmixed_as_the_command_line_does(sep, channels):
    wav = music(0.5, channels=channels)
    got = sep.separate(wav, SR)
    want = sep.separate(to_stereo(wav), SR)
    for s in SOURCES:
        assert got[s].shape == (2, SR // 2)
        torch.testing.assert_close(got[s], want[s], rtol=0, atol=0)


EXPECTED = "expected (channels, samples) with 1 to 8 channels, or (samples,) for mono"


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3 * SR, 2), "shape (132300, 2) looks like (samples, channels): " + EXPECTED + "; pass wav.T"),
        ((SR, 1), "shape (44100, 1) looks like (samples, channels)"),
        ((9, SR), "shape (9, 44100) has 9 channels"),
        ((2, 2), "shape (2, 2) is ambiguous (as many channels as samples)"),
        ((1, 2, SR), "got a 3-D array of shape (1, 2, 44100); " + EXPECTED + " (one track per call)"),
        ((), "got a 0-D array"),
        ((0,), "got an empty array of shape (0,)"),
        ((2, 0), "got an empty array of shape (2, 0)"),
    ],
)
def test_a_layout_that_is_not_channels_by_samples_is_refused(sep, shape, message):
    """The issue's case first: a 3 s stereo clip as (samples, channels) came back as stems of shape (2, 2)."""
    for wav in (torch.zeros(shape), np.zeros(shape, dtype=np.float32)):
        with pytest.raises(ValueError) as info:
            sep.separate(wav, SR)
        assert message in str(info.value) and EXPECTED in str(info.value)


def test_pcm_integers_are_scaled_and_floats_of_any_width_are_taken(sep):
    wav = music(0.5)
    pcm16 = torch.round(wav * 32767).to(torch.int16)
    scaled = pcm16.float() / 2**15
    expected = sep.separate(scaled, SR)["vocals"]
    pcm32 = pcm16.to(torch.int32) * 2**16  # the same values at 32 bits
    for x in (pcm16, pcm16.numpy(), pcm32, pcm32.numpy(), pcm16.numpy().astype(">i2")):
        torch.testing.assert_close(torch.as_tensor(sep.separate(x, SR)["vocals"]), expected, rtol=0, atol=0)
    for x in (scaled.double(), scaled.numpy().astype(np.float64), scaled.numpy().astype(">f4")):
        torch.testing.assert_close(torch.as_tensor(sep.separate(x, SR)["vocals"]), expected, rtol=0, atol=0)
    for x in (wav.half(), wav.bfloat16(), wav.numpy().astype(np.float16)):
        got = torch.as_tensor(sep.separate(x, SR)["vocals"])
        assert got.dtype == torch.float32
        rounded = torch.as_tensor(x).float()  # only the input's own rounding
        torch.testing.assert_close(got, sep.separate(rounded, SR)["vocals"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "wav",
    [
        torch.zeros(2, 1000, dtype=torch.int64),
        torch.zeros(2, 1000, dtype=torch.uint8),
        torch.zeros(2, 1000, dtype=torch.bool),
        torch.zeros(2, 1000, dtype=torch.complex64),
        np.zeros((2, 1000), dtype=np.int64),
        np.zeros((2, 1000), dtype=np.int8),
        np.zeros((2, 1000), dtype=np.complex128),
        np.array([["a"] * 1000] * 2),
    ],
    ids=lambda w: str(w.dtype),
)
def test_other_dtypes_are_refused(sep, wav):
    with pytest.raises(ValueError, match=r"are not accepted: give floats \(full scale ±1\) or int16/int32 PCM"):
        sep.separate(wav, SR)


def test_other_types_and_bad_rates_are_refused(sep):
    wav = music(0.3)
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor or numpy\.ndarray, got list"):
        sep.separate(wav.tolist(), SR)
    for rate in (0, -SR, 44100.5, "44100", True, None):
        with pytest.raises(ValueError, match="sample_rate must be a positive whole number of Hz"):
            sep.separate(wav, rate)
    expected = sep.separate(wav, SR)["vocals"]
    for rate in (44100.0, np.int64(SR)):
        torch.testing.assert_close(sep.separate(wav, rate)["vocals"], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="keep_rate=True or output_rate"):
        sep.separate(wav, SR, keep_rate=True, output_rate=48000)


def test_no_gradient_flows_and_stems_come_back_on_the_inputs_device(sep):
    wav = music(0.5).requires_grad_()
    stems = sep.separate(wav, SR)
    assert not stems["vocals"].requires_grad
    if torch.cuda.is_available():  # the models on the CPU, the track on the GPU: the stems go back there
        on_gpu = sep.separate(wav.detach().cuda(), SR)
        assert all(v.device.type == "cuda" for v in on_gpu.values())
        torch.testing.assert_close(on_gpu["vocals"].cpu(), stems["vocals"], rtol=0, atol=0)


# ------------------------------------------------------------------------------ the same stems as the command line


@pytest.mark.parametrize("channels, rate", [(2, 48000), (6, SR), (1, 22050)], ids=["48kHz", "6-channel", "mono-22k"])
def test_separate_gives_the_stems_of_danna_sep_on_the_same_file(sep, folder, tmp_path, channels, rate):
    """Resampling, downmix and mono handling as ``danna-sep`` (float WAVs both ways, so the numbers compare);
    ``keep_rate`` as ``--keep-rate``."""
    wav = music(1.0, channels=channels, rate=rate)
    song = write(tmp_path / "song.wav", wav, rate=rate, subtype="FLOAT")
    base = ["separate", "--checkpoints", str(folder), "-q", "--float32", str(song)]
    for flags, keep_rate, out_rate in (([], False, SR), (["--keep-rate"], True, rate)):
        out = tmp_path / f"out-{keep_rate}"
        assert main([*base, "-o", str(out), *flags]) == 0
        for array in (wav, wav.numpy()):  # a tensor and an array: the same stems
            got = sep.separate(array, rate, keep_rate=keep_rate)
            for s in SOURCES:
                cli = read(out / "song" / f"{s}.wav")
                assert sf.info(out / "song" / f"{s}.wav").samplerate == out_rate
                assert cli.shape == (1 if channels == 1 else 2, round(wav.shape[-1] * out_rate / rate))
                torch.testing.assert_close(torch.as_tensor(got[s]), cli, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------- from_pretrained


def test_from_pretrained_finds_the_models_of_the_default_folder(folder, tmp_path, monkeypatch):
    """``$DANNA_CHECKPOINTS`` (else ~/danna-sep-checkpoints) as ``danna-sep``; nothing to fetch, so nothing is
    fetched (the tests run with ``$DANNA_OFFLINE=1``; downloading: test_original_preset.py)."""
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(folder))
    pre = Separator.from_pretrained(device="cpu")
    assert pre.bag is ORIGINAL_BAG
    assert [line.split(" (")[0] for line in pre.describe_models()] == [
        "X-UMX: xumx_mwf.pth",
        "U-Net: unet_attention.pth",
        "Demucs: demucs_4_decoders.pth",
    ]
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(tmp_path / "empty"))
    with pytest.raises(DannaError, match="DANNA_OFFLINE=1 forbids downloads"):
        Separator.from_pretrained(device="cpu")
    assert not (tmp_path / "empty").exists() or not list((tmp_path / "empty").iterdir())


# ---------------------------------------------------------------------------------------- a folder's bag.json


def test_a_folders_bag_json_is_the_default_blend_and_is_announced(bagged):
    lines: list[str] = []
    sep = Separator.from_checkpoints(bagged, device="cpu", notify=lines.append)
    assert sep.bag.models == ["demucs"] and sorted(sep.models) == ["demucs"]
    assert lines == [f"blend: {bagged / 'bag.json'} (the folder's bag.json; --bag original for the original weights)"]
    wav = music(0.5)
    np.testing.assert_allclose(sep.separate(wav.numpy(), SR)["vocals"], demucs_alone(wav.numpy()), atol=1e-6)

    lines.clear()
    assert Separator.from_checkpoints(bagged, device="cpu", notify=lines.append, quiet=True).bag.models == ["demucs"]
    for options, expected in (
        ({"bag": "original"}, ORIGINAL_BAG),
        ({"bag": "fast"}, FAST_BAG),
        ({"fast": True}, FAST_BAG),
        ({"original": True}, ORIGINAL_BAG),
        ({"original": True, "fast": True}, FAST_BAG),
    ):
        assert Separator.from_checkpoints(bagged, device="cpu", notify=lines.append, **options).bag is expected
    assert lines == []
    # a file named like a bag is given as a path
    Bag(["unet"], [[1.0] * 4]).save(bagged / "original")
    assert Separator.from_checkpoints(bagged, bag=bagged / "original", device="cpu").bag.models == ["unet"]


def test_a_broken_bag_json_says_how_to_get_past_it(bagged):
    (bagged / BAG_FILE).write_text('{"models": ["demucs"]}')
    with pytest.raises(ConfigError) as info:
        Separator.from_checkpoints(bagged, device="cpu")
    message = str(info.value)
    assert str(bagged / BAG_FILE) in message and "missing required key 'weights'" in message
    assert "fix or remove it, or pass --bag original" in message
    assert Separator.from_checkpoints(bagged, bag="original", device="cpu").bag is ORIGINAL_BAG


def test_danna_sep_uses_the_folders_bag_json_until_told_otherwise(bagged, folder, tmp_path, capsys):
    mix = music(1.0)
    song = write(tmp_path / "s.wav", mix, subtype="FLOAT")
    base = ["separate", "--checkpoints", str(bagged), "--float32", str(song)]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    blend = [line for line in capsys.readouterr().err.splitlines() if line.startswith("blend: ")]
    assert blend == [f"blend: {bagged / BAG_FILE} (the folder's bag.json; --bag original for the original weights)"]
    np.testing.assert_allclose(read(tmp_path / "a" / "s" / "vocals.wav").numpy(), demucs_alone(mix.numpy()), atol=1e-6)

    assert main([*base, "-o", str(tmp_path / "b"), "-q"]) == 0
    assert "blend:" not in capsys.readouterr().err
    # --bag original: the original weights, as from a folder without bag.json
    original = Separator.from_checkpoints(folder, device="cpu").separate(mix, SR)
    for flags in (["--bag", "original"], ["--bag", "original", "--original"], ["--original"]):
        out = tmp_path / "-".join(flags)
        assert main([*base, "-o", str(out), *flags]) == 0, capsys.readouterr().err
        assert "blend:" not in capsys.readouterr().err
        if "--original" not in flags:
            torch.testing.assert_close(read(out / "s" / "vocals.wav"), original["vocals"], rtol=0, atol=1e-6)


def test_the_demos_command_picks_up_its_bag_by_itself(bagged, tmp_path):
    """The demo writes its fitted blend as the folder's bag.json, so the command it prints needs no --bag."""
    command = try_command(bagged, bagged / BAG_FILE)
    assert "--bag" not in command and command.endswith(f"--checkpoints {bagged} song.wav")
    assert try_command(bagged, tmp_path / "other.json").endswith(f"--bag {tmp_path / 'other.json'} song.wav")
    mix = music(0.5)
    write(tmp_path / "song.wav", mix, subtype="FLOAT")
    proc = subprocess.run([*command.split(), "--float32"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"blend: {bagged / BAG_FILE}" in proc.stderr
    np.testing.assert_allclose(read(tmp_path / "song" / "vocals.wav").numpy(), demucs_alone(mix.numpy()), atol=1e-6)


# ------------------------------------------------------------------------------------------ the README's example


def readme_example() -> str:
    """The fenced Python block of the README's "Python API" section."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_readme_example_runs_as_printed(folder, tmp_path, monkeypatch):
    """Load a song (48 kHz here), separate it, save the stems: with the test models as the default folder."""
    monkeypatch.setenv("DANNA_CHECKPOINTS", str(folder))
    monkeypatch.chdir(tmp_path)
    wav = music(1.0, rate=48000)
    write(tmp_path / "song.wav", wav, rate=48000, subtype="PCM_24")
    exec(compile(readme_example(), "README.md", "exec"), {})
    expected = Separator.from_checkpoints(folder, device="cpu").separate_file(tmp_path / "song.wav")
    for s in SOURCES:
        info = sf.info(tmp_path / f"{s}.wav")
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, SR)
        torch.testing.assert_close(read(tmp_path / f"{s}.wav"), expected[s], rtol=0, atol=1e-4)  # 16-bit files
