"""Pictures: one colour per source everywhere, the spectrogram PNG of a stem (the web page's and ``danna-sep
--spectrograms``'), and the SDR charts of an evaluation (``danna evaluate --plots``, the demo).

::

    audio (channels, samples) → mono → |STFT|² (Hann, 2048 points, hop 512), averaged into ≤ 1600 time columns
    → log-spaced frequency rows (30 Hz … Nyquist) → dB re full scale → PNG (matplotlib, Agg, no pyplot)

    evaluate.summarize's summary → per (system, source, track) SDR → box plots over tracks, grouped by source
                                                                    → bars per track, one row per source

The colours (:data:`STEM_COLOURS`, :func:`stem_colour`) are the one place a source's colour is defined: the web page
reads them from the server, and charts take them from here. They are the Okabe–Ito palette, told apart by the
colour-blind too. In the charts the colour is the source's and the system is told by its position in the group,
its hatching and (the mixture baseline) a paler fill. The colours import nothing; the pictures need matplotlib
(``pip install 'danna-sep[plots]'``, part of the ``web`` extra). Every PNG is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import SOURCES, PathLike
from .checkpoints import atomic_write
from .errors import DannaError

if TYPE_CHECKING:  # matplotlib is optional: imported where a picture is drawn
    from matplotlib.figure import Figure

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


def require_matplotlib(what: str = "pictures") -> None:
    """Raise :class:`DannaError` naming ``what`` needs it and the extra to install, unless matplotlib imports
    (commands call it before any work, so that a missing extra is not found after an hour of separation)."""
    try:
        import matplotlib.figure  # noqa: F401  (what the pictures use: matplotlib, and Pillow under it)
    except ImportError as exc:
        raise DannaError(f"{what}: matplotlib is not installed; {PLOTS_EXTRA}") from exc


def save_png(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` to the PNG ``path`` atomically (:func:`~danna_sep.checkpoints.atomic_write`: a reader never
    sees half a picture, a failure leaves the old one); returns the path."""
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    return path


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
    require_matplotlib()
    from matplotlib.colors import LinearSegmentedColormap, to_rgb
    from matplotlib.figure import Figure

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
    return save_png(fig, path)


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


def spectrogram_file(audio_path: PathLike, path: PathLike, title: str, *, stem: str | None = None) -> Path:
    """:func:`spectrogram_png` of the audio file ``audio_path`` (a written stem) at its own rate, read in blocks
    into one mono signal (float32, 4 bytes a frame: a 10-minute stem takes 106 MB, not the 212 MB of its stereo
    samples)."""
    import soundfile as sf

    require_matplotlib()
    with sf.SoundFile(str(audio_path)) as f:
        mono = np.empty(f.frames, np.float32)
        start = 0
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            mono[start : start + len(block)] = block.mean(1)
            start += len(block)
        rate = f.samplerate
    return spectrogram_png(mono[:start], rate, path, title, stem=stem)


# ------------------------------------------------------------------------------------------- evaluation charts

CHART_METRICS: dict[str, tuple[str, str, str]] = {
    "museval": (
        "museval_sdr",
        "museval SDR (BSSEval v4)",
        "a track's score: median over its 1 s frames; box line: median over tracks, the table's number",
    ),
    "global": (
        "global_sdr",
        "global SDR (MDX)",
        "a track's score: over the whole track; box line: median, ◆: mean over tracks, the table's number",
    ),
}
"""Chart name → (the per-track key of :func:`danna_sep.evaluate.summarize`'s summary, title, how to read it)."""

_HATCHES = ("", "///", "\\\\\\", "xxx", "...", "+++", "---", "ooo")
_EDGE = "#222222"
_BASELINE = "mixture"  # evaluate.MIXTURE_SYSTEM (not imported: evaluate imports the scoring code)


def chart_values(summary: Mapping[str, Any], metric: str) -> tuple[list[str], list[str], np.ndarray]:
    """The per-track SDRs of ``summary`` that the ``metric`` charts draw: ``(systems, tracks, values)``, values
    ``(systems, sources, tracks)`` in dB (NaN where a source has no score, e.g. silent in every frame). Only the
    systems that have the metric (museval's is absent after ``--no-museval``)."""
    key = CHART_METRICS[metric][0]
    tracks = list(summary["tracks"])
    systems = [n for n, s in summary["systems"].items() if all(key in s["tracks"][t] for t in tracks)]
    values = np.array(
        [[[summary["systems"][n]["tracks"][t][key][s] for t in tracks] for s in SOURCES] for n in systems],
        dtype=np.float64,
    ).reshape(len(systems), len(SOURCES), len(tracks))
    return systems, tracks, values


def _styles(systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """System → its fill's alpha and its hatching: the models and blends hatched in turn, the mixture pale."""
    out: dict[str, dict[str, Any]] = {}
    others = [n for n in systems if n != _BASELINE]
    for i, name in enumerate(others):
        out[name] = {"alpha": 0.9, "hatch": _HATCHES[i % len(_HATCHES)]}
    if _BASELINE in systems:
        out[_BASELINE] = {"alpha": 0.3, "hatch": ""}
    return out


def _legend(ax: Any, systems: Sequence[str], styles: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> None:
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=to_rgba("#9A9A9A", styles[n]["alpha"]), edgecolor=_EDGE, hatch=styles[n]["hatch"], label=n)
        for n in systems
    ]
    ax.legend(handles=handles, title="system (colour: source)", fontsize="small", **kwargs)


def _split_name(summary: Mapping[str, Any]) -> str:
    n = len(summary["tracks"])
    return f"{n} track{'s' if n != 1 else ''} of the {summary['subset']} split"


def sdr_boxes(summary: Mapping[str, Any], metric: str = "museval", dpi: int = 100) -> Figure:
    """Box plots of each track's SDR: one box per (source, system), grouped by source, as the field's papers
    draw them (boxes: quartiles; whiskers: 1.5 IQR; dots: tracks beyond; global SDR also marks the mean). The
    artists carry gids ``box:``, ``median:`` and ``mean:<source>:<system>``."""
    require_matplotlib()
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    systems, _tracks, values = chart_values(summary, metric)
    _key, title, how = CHART_METRICS[metric]
    styles = _styles(systems)
    n = len(systems)
    width = min(16.0, max(7.0, 2.5 + 0.42 * len(SOURCES) * (n + 1)))
    fig = Figure(figsize=(width, 4.8), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    for j, source in enumerate(SOURCES):
        for i, name in enumerate(systems):
            data = values[i, j][np.isfinite(values[i, j])]
            parts = ax.boxplot(
                [data],
                positions=[j * (n + 1) + i],
                widths=0.75,
                patch_artist=True,
                showmeans=metric == "global",
                meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": _EDGE, "markersize": 4},
                medianprops={"color": _EDGE, "linewidth": 1.6},
                flierprops={"marker": ".", "markersize": 4, "markerfacecolor": _EDGE, "markeredgecolor": _EDGE},
                whiskerprops={"color": _EDGE},
                capprops={"color": _EDGE},
            )
            parts["boxes"][0].set(
                facecolor=to_rgba(STEM_COLOURS[source], styles[name]["alpha"]),
                edgecolor=_EDGE,
                hatch=styles[name]["hatch"],
                gid=f"box:{source}:{name}",
            )
            for part in ("medians", "means"):
                for line in parts.get(part, []):
                    line.set_gid(f"{part[:-1]}:{source}:{name}")
    centres = [j * (n + 1) + (n - 1) / 2 for j in range(len(SOURCES))]
    ax.set_xticks(centres, list(SOURCES))
    for label, source in zip(ax.get_xticklabels(), SOURCES, strict=True):
        label.set(color=STEM_COLOURS[source], fontweight="bold")
    ax.set_xlim(-1, len(SOURCES) * (n + 1) - 1)
    ax.set_ylabel("SDR (dB)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{title} per source, {_split_name(summary)}\n{how}", loc="left", fontsize="medium")
    _legend(ax, systems, styles, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    return fig


def sdr_bars(summary: Mapping[str, Any], metric: str = "museval", dpi: int = 100) -> Figure:
    """Bars of every track's SDR: one row per source, a group of bars per track, one bar per system (a source
    without a score has no bar). Each bar carries the gid ``bar:<source>:<system>:<track>``."""
    require_matplotlib()
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    systems, tracks, values = chart_values(summary, metric)
    _key, title, _how = CHART_METRICS[metric]
    styles = _styles(systems)
    n, t = len(systems), len(tracks)
    width = min(60.0, max(8.0, 3.0 + 0.14 * t * (n + 1)))
    fig = Figure(figsize=(width, 1.8 + 2.1 * len(SOURCES)), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(SOURCES), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(t) * (n + 1)
    for j, (ax, source) in enumerate(zip(axes, SOURCES, strict=True)):
        for i, name in enumerate(systems):
            bars = ax.bar(
                x + i,
                values[i, j],
                width=0.85,
                color=to_rgba(STEM_COLOURS[source], styles[name]["alpha"]),
                edgecolor=_EDGE,
                linewidth=0.6,
                hatch=styles[name]["hatch"],
            )
            for bar, track in zip(bars, tracks, strict=True):
                bar.set_gid(f"bar:{source}:{name}:{track}")
        ax.axhline(0, color=_EDGE, linewidth=0.8)
        ax.set_ylabel("SDR (dB)")
        ax.set_title(source, loc="left", color=STEM_COLOURS[source], fontweight="bold", fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(x + (n - 1) / 2, tracks, rotation=30 if t <= 12 else 90, ha="right" if t <= 12 else "center")
    axes[-1].set_xlim(-1, t * (n + 1) - 1)
    fig.suptitle(f"{title} per track, {_split_name(summary)}", x=0.01, ha="left", fontsize="medium")
    _legend(axes[0], systems, styles, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    return fig


def evaluation_charts(summary: Mapping[str, Any], folder: PathLike) -> list[Path]:
    """Write the charts of an evaluation ``summary`` (:func:`danna_sep.evaluate.summarize`) into ``folder``:
    ``sdr-<metric>-boxes.png`` (:func:`sdr_boxes`) and ``sdr-<metric>-tracks.png`` (:func:`sdr_bars`) for museval's
    SDR (when it was computed) and the global SDR. Files of these names are replaced (atomically), as
    ``summary.json`` is; nothing else in ``folder`` is touched. Returns the paths written."""
    require_matplotlib()
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DannaError(f"charts: {folder} is a file, not a folder")
    written = []
    for metric in CHART_METRICS:
        if not chart_values(summary, metric)[0]:
            continue
        written.append(save_png(sdr_boxes(summary, metric), folder / f"sdr-{metric}-boxes.png"))
        written.append(save_png(sdr_bars(summary, metric), folder / f"sdr-{metric}-tracks.png"))
    return written
