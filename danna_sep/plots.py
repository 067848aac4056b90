"""Pictures of stems: one colour per source everywhere, and the spectrogram PNG that the web page shows.

::

    audio (channels, samples) → mono → |STFT|² (Hann, 2048 points, hop 512), averaged into ≤ 1600 time columns
    → log-spaced frequency rows (30 Hz … Nyquist) → dB re full scale → PNG (matplotlib, Agg, no pyplot)

The colours (:data:`STEM_COLOURS`, :func:`stem_colour`) are the one place a source's colour is defined: the web page
reads them from the server, and charts take them from here. They are the Okabe–Ito palette, told apart by the
colour-blind too. The colours import nothing; :func:`spectrogram_png` needs matplotlib (``pip install
'danna-sep[plots]'``, part of the ``web`` extra).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import PathLike
from .errors import DannaError

MIXTURE = "mixture"
"""The name the pictures and the web page give the input song."""

STEM_COLOURS: dict[str, str] = {
    "drums": "#E69F00",  # orange
    "bass": "#0072B2",  # blue
    "other": "#009E73",  # bluish green
    "vocals": "#CC79A7",  # reddish purple
    MIXTURE: "#8C8C8C",  # grey
}
"""Source (and mixture) → colour, ``#RRGGBB``."""

COMPLEMENT_COLOUR = "#56B4E9"
"""Sky blue: a sum of sources (``accompaniment``, ``no_<source>``)."""

PLOTS_EXTRA = "pip install 'danna-sep[plots]'"

_N_FFT = 2048
_HOP = 512
_MAX_COLUMNS = 1600  # time columns of a picture (about two per pixel at the default size)
_ROWS = 256  # log-spaced frequency rows
_F_MIN = 30.0
_RANGE_DB = 90.0  # the colour scale spans this many dB below the picture's loudest cell
_BLOCK = 512  # STFT frames computed at once: bounds memory on long songs


def stem_colour(name: str) -> str:
    """The colour of stem ``name``: its source's, the mixture's, or :data:`COMPLEMENT_COLOUR` for any sum of
    sources (``accompaniment``, ``no_drums``, …)."""
    return STEM_COLOURS.get(name, COMPLEMENT_COLOUR)


def spectrogram_png(
    audio: np.ndarray,
    sample_rate: int,
    path: PathLike,
    title: str,
    *,
    stem: str | None = None,
    size: tuple[float, float] = (9.0, 2.6),
    dpi: int = 100,
) -> Path:
    """Write the spectrogram of ``audio`` to the PNG ``path`` and return the path.

    Args:
        audio: ``(channels, samples)`` or ``(samples,)``, float, nominally in [-1, 1] (a CPU tensor also works);
            channels are averaged.
        sample_rate: in Hz.
        title: shown above the picture.
        stem: picks the colour map (:func:`stem_colour`, black → colour → light); default: the title's.
        size: inches; ``dpi``: pixels per inch.

    The axes are time (s) and frequency (Hz, logarithmic), the colour bar the level in dB relative to a full-scale
    sine. Silence is drawn as the bottom of the scale.
    """
    try:
        from matplotlib.colors import LinearSegmentedColormap, to_rgb
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DannaError(f"pictures need matplotlib: {PLOTS_EXTRA}") from exc

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected audio (channels, samples) with samples > 0, got shape {np.shape(audio)}")
    level, duration = _log_spectrogram(x, sample_rate)

    colour = np.array(to_rgb(stem_colour(stem or title)))
    cmap = LinearSegmentedColormap.from_list(
        f"danna-{stem or title}", [(0.04, 0.04, 0.06), tuple(colour), tuple(colour + 0.75 * (1 - colour))]
    )
    top = float(level.max())
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    nyquist = sample_rate / 2
    image = ax.imshow(
        level,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=top - _RANGE_DB,
        vmax=top,
        extent=(0.0, duration, math.log10(_F_MIN), math.log10(nyquist)),
        interpolation="nearest",
    )
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if _F_MIN <= f <= nyquist]
    ax.set_yticks([math.log10(f) for f in ticks], [f"{f // 1000}k" if f >= 1000 else str(f) for f in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, loc="left", color=stem_colour(stem or title), fontweight="bold")
    fig.colorbar(image, ax=ax, pad=0.01).set_label("level (dBFS)")
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _log_spectrogram(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """dB levels ``(rows, columns)`` on the log-frequency grid of :func:`spectrogram_png`, and the duration in s.

    Power is averaged over the STFT frames of each column (so a long song keeps its transients' energy), then
    interpolated linearly onto the log-spaced rows."""
    duration = x.size / sample_rate
    n = max(x.size, _N_FFT)
    x = np.pad(x, (0, n - x.size))
    frames = 1 + (n - _N_FFT) // _HOP
    columns = min(_MAX_COLUMNS, frames)
    column_of = np.arange(frames) * columns // frames  # non-decreasing: column of each frame
    window = np.hanning(_N_FFT).astype(np.float32)
    power = np.zeros((columns, _N_FFT // 2 + 1))
    view = np.lib.stride_tricks.sliding_window_view(x, _N_FFT)[::_HOP]
    for start in range(0, frames, _BLOCK):
        stop = min(start + _BLOCK, frames)
        spec = np.abs(np.fft.rfft(view[start:stop] * window, axis=1)) ** 2
        cols = column_of[start:stop]
        firsts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        power[cols[firsts]] += np.add.reduceat(spec, firsts, axis=0)
    power /= np.bincount(column_of, minlength=columns)[:, None]
    power /= (window.sum() / 2) ** 2  # a full-scale sine peaks at 0 dB

    bins = np.fft.rfftfreq(_N_FFT, 1 / sample_rate)
    rows = np.geomspace(_F_MIN, sample_rate / 2, _ROWS)
    # linear interpolation between neighbouring bins, as a (rows, bins) matrix
    upper = np.clip(np.searchsorted(bins, rows), 1, bins.size - 1)
    frac = (rows - bins[upper - 1]) / (bins[upper] - bins[upper - 1])
    weights = np.zeros((_ROWS, bins.size))
    weights[np.arange(_ROWS), upper - 1] = 1 - frac
    weights[np.arange(_ROWS), upper] += frac
    level = 10 * np.log10(weights @ power.T + 1e-12)
    return level, duration
