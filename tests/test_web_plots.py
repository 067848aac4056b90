"""The pictures: spectrogram levels in dB re full scale on a log-frequency grid, PNG files, one colour per source."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plots extra is not installed: pip install 'danna-sep[plots]'")

from danna_sep import SOURCES
from danna_sep.errors import DannaError
from danna_sep.plots import COMPLEMENT_COLOUR, MIXTURE, STEM_COLOURS, _log_spectrogram, spectrogram_png, stem_colour

SR = 44100


def sine(freq, seconds=2.0, amplitude=1.0, channels=2):
    t = np.arange(int(seconds * SR)) / SR
    return np.tile(amplitude * np.sin(2 * np.pi * freq * t), (channels, 1)).astype(np.float32)


def test_a_full_scale_sine_is_0_dbfs_at_its_frequency():
    level, duration = _log_spectrogram(sine(1000).mean(0), SR)
    assert duration == 2.0
    rows = np.geomspace(30, SR / 2, level.shape[0])
    peak = level.mean(1).argmax()
    assert abs(rows[peak] - 1000) / 1000 < 0.03  # the row nearest 1 kHz (rows are 2.6 % apart)
    assert -2.0 < level[peak].mean() < 0.5  # 0 dBFS, less the Hann window's scalloping between bins
    quiet, _ = _log_spectrogram(sine(1000, amplitude=0.01).mean(0), SR)
    assert quiet[peak].mean() == pytest.approx(level[peak].mean() - 40, abs=0.1)
    silence, _ = _log_spectrogram(np.zeros(SR, np.float32), SR)
    assert silence.max() < -100


def test_long_songs_keep_a_bounded_picture_and_their_energy():
    x = np.zeros(SR * 600, np.float32)  # ten minutes: 51k STFT frames into 1600 columns
    x[SR * 300 : SR * 300 + 256] = 1.0  # one click in the middle
    level, duration = _log_spectrogram(x, SR)
    assert level.shape == (256, 1600) and duration == 600
    loud = np.flatnonzero(level.mean(0) > -100)
    assert loud.size and np.all(np.abs(loud - 800) <= 1)  # averaged into its column, not skipped


def test_spectrogram_png(tmp_path):
    from PIL import Image  # matplotlib's own dependency

    path = spectrogram_png(sine(440, 1.0), SR, tmp_path / "vocals.png", "vocals")
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (900, 260)
    # the picture is drawn in the source's colour: its most saturated pixels lie near the vocals' hue
    pixels = np.asarray(image.convert("RGB"), dtype=float).reshape(-1, 3) / 255
    saturation = pixels.max(1) - pixels.min(1)
    vivid = pixels[saturation > 0.3]
    target = np.array([int(STEM_COLOURS["vocals"][i : i + 2], 16) for i in (1, 3, 5)]) / 255
    direction = (vivid - vivid.mean(1, keepdims=True)) @ (target - target.mean())
    assert vivid.size and np.mean(direction > 0) > 0.9
    mono = spectrogram_png(sine(440, 0.01, channels=1)[0], 8000, tmp_path / "short.png", "drums", size=(4, 2), dpi=50)
    assert Image.open(mono).size == (200, 100)
    with pytest.raises(ValueError, match="samples > 0"):
        spectrogram_png(np.zeros((2, 0)), SR, tmp_path / "empty.png", "bass")


def test_one_colour_per_source_everywhere():
    assert set(STEM_COLOURS) == {*SOURCES, MIXTURE}
    assert len(set(STEM_COLOURS.values()) | {COMPLEMENT_COLOUR}) == len(STEM_COLOURS) + 1
    assert stem_colour("vocals") == STEM_COLOURS["vocals"]
    assert stem_colour("accompaniment") == stem_colour("no_drums") == COMPLEMENT_COLOUR


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(DannaError, match=r"pip install 'danna-sep\[plots\]'"):
        spectrogram_png(sine(440, 0.1), SR, tmp_path / "x.png", "bass")
