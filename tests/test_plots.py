"""The evaluation charts: the numbers drawn are the summary's, one colour per source, systems told apart, PNGs
written atomically where they were asked for, and a clear error without matplotlib."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plots extra is not installed: pip install 'danna-sep[plots]'")

from matplotlib.colors import to_rgb
from PIL import Image

from danna_sep import SOURCES
from danna_sep.errors import DannaError
from danna_sep.evaluate import TrackScores, summarize
from danna_sep.plots import STEM_COLOURS, chart_values, evaluation_charts, sdr_bars, sdr_boxes

SYSTEMS = ["xumx", "unet", "blend", "mixture"]
TRACKS = ["song a", "song b", "song c", "song d", "song e"]


def fake_summary(museval=True):
    """A summary as :func:`summarize` writes it (read back from JSON) for made-up scores: system k about k dB,
    vocals silent (all frames NaN) in the second track."""
    rng = np.random.default_rng(0)
    results = []
    for t, name in enumerate(TRACKS):
        r = TrackScores(name)
        for k, system in enumerate(SYSTEMS):
            sdr = rng.normal(k, 2.0, (len(SOURCES), 6))
            if t == 1:
                sdr[SOURCES.index("vocals")] = np.nan
            if museval:
                r.bss[system] = (sdr, sdr + 1, sdr + 2, sdr + 3)
            r.global_sdr[system] = rng.normal(k, 2.0, len(SOURCES))
        results.append(r)
    return json.loads(json.dumps(summarize(results, SYSTEMS, "test")))


def artists(fig, prefix):
    """gid (less ``prefix``) → artist, for the artists whose gid starts with ``prefix``."""
    found = {}
    for ax in fig.axes:
        for a in ax.get_children():
            gid = a.get_gid()
            if gid is not None and gid.startswith(prefix):
                found[gid[len(prefix) :]] = a
    return found


def test_chart_values_are_the_per_track_scores():
    summary = fake_summary()
    systems, tracks, values = chart_values(summary, "museval")
    assert systems == SYSTEMS and tracks == TRACKS and values.shape == (4, 4, 5)
    j = SOURCES.index("bass")
    assert values[1, j, 2] == summary["systems"]["unet"]["tracks"]["song c"]["museval_sdr"]["bass"]
    assert np.isnan(values[:, SOURCES.index("vocals"), 1]).all() and np.isfinite(np.delete(values, 1, 2)).all()
    assert chart_values(fake_summary(museval=False), "museval")[0] == []  # --no-museval: no museval charts


def test_the_box_lines_are_the_tables_numbers():
    summary = fake_summary()
    fig = sdr_boxes(summary, "museval")
    medians = artists(fig, "median:")
    assert len(medians) == 4 * 4
    for system in SYSTEMS:
        for source in SOURCES:
            line = medians[f"{source}:{system}"]
            # museval's number: median over tracks (NaN tracks left out) of each track's median over frames
            assert line.get_ydata()[0] == pytest.approx(summary["systems"][system]["museval"]["SDR"][source])
    assert not artists(fig, "mean:")  # museval's aggregate is the median: no mean marker

    fig = sdr_boxes(summary, "global")
    means = artists(fig, "mean:")
    for system in SYSTEMS:
        for source in SOURCES:
            # the MDX number: mean over tracks
            assert means[f"{source}:{system}"].get_ydata()[0] == pytest.approx(
                summary["systems"][system]["global_sdr"][source]
            )
    ax = fig.axes[0]
    assert ax.get_ylabel() == "SDR (dB)"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SOURCES)


def test_a_colour_per_source_and_a_look_per_system():
    fig = sdr_boxes(fake_summary(), "museval")
    boxes = artists(fig, "box:")
    looks = {}
    for key, box in boxes.items():
        source, system = key.split(":")
        assert box.get_facecolor()[:3] == pytest.approx(to_rgb(STEM_COLOURS[source]))
        looks.setdefault(system, set()).add((box.get_hatch(), round(box.get_facecolor()[3], 3)))
    assert all(len(v) == 1 for v in looks.values())  # a system looks the same in every source's group
    assert len({next(iter(v)) for v in looks.values()}) == len(SYSTEMS)  # and unlike the others
    assert next(iter(looks["mixture"]))[1] < next(iter(looks["xumx"]))[1]  # the baseline paler
    # grouped by source: each source's boxes side by side, in the systems' order
    centre = {k: np.mean(b.get_path().vertices[:, 0]) for k, b in boxes.items()}
    order = sorted(centre, key=centre.get)
    assert order == [f"{s}:{m}" for s in SOURCES for m in SYSTEMS]


def test_the_bars_are_every_tracks_score():
    summary = fake_summary()
    fig = sdr_bars(summary, "global")
    bars = artists(fig, "bar:")
    assert len(bars) == 4 * 4 * 5
    for system in SYSTEMS:
        for track in TRACKS:
            for source in SOURCES:
                bar = bars[f"{source}:{system}:{track}"]
                assert bar.get_height() == pytest.approx(
                    summary["systems"][system]["tracks"][track]["global_sdr"][source]
                )
                assert bar.get_facecolor()[:3] == pytest.approx(to_rgb(STEM_COLOURS[source]))
    museval = artists(sdr_bars(summary, "museval"), "bar:")
    assert np.isnan(museval["vocals:blend:song b"].get_height())  # no score, no bar
    assert all(ax.get_ylabel() == "SDR (dB)" for ax in fig.axes)
    assert [ax.get_title(loc="left") for ax in fig.axes] == list(SOURCES)


def png_size(path):
    with Image.open(path) as image:
        image.verify()  # a whole, valid PNG
    with Image.open(path) as image:
        return image.format, image.size


def test_evaluation_charts_write_pngs_of_the_figures_size(tmp_path):
    summary = fake_summary()
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "sdr-museval-boxes.png").write_bytes(b"an older chart")
    written = evaluation_charts(summary, folder)
    names = ["sdr-museval-boxes.png", "sdr-museval-tracks.png", "sdr-global-boxes.png", "sdr-global-tracks.png"]
    assert written == [folder / n for n in names]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "notes.txt"])  # no .part files left
    assert (folder / "notes.txt").read_text() == "mine"
    for path, fig in zip(written, [sdr_boxes(summary), sdr_bars(summary)], strict=False):
        w, h = fig.get_size_inches() * fig.dpi
        assert png_size(path) == ("PNG", (round(w), round(h)))
    # without museval's scores only the global charts
    only = evaluation_charts(fake_summary(museval=False), tmp_path / "new" / "dir")
    assert [p.name for p in only] == names[2:] and all(png_size(p)[0] == "PNG" for p in only)
    with pytest.raises(DannaError, match="is a file"):
        evaluation_charts(summary, folder / "notes.txt")


def test_without_matplotlib_the_charts_say_what_to_install(monkeypatch, tmp_path):
    summary = fake_summary(museval=False)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    for draw in (lambda: evaluation_charts(summary, tmp_path), lambda: sdr_boxes(summary, "global")):
        with pytest.raises(DannaError, match=r"matplotlib is not installed; pip install 'danna-sep\[plots\]'"):
            draw()
    assert not list(tmp_path.iterdir())


def test_the_demo_draws_its_evaluation_and_goes_on_without_matplotlib(tmp_path, capsys, monkeypatch):
    from danna_sep.demo import draw_charts

    summary = fake_summary(museval=False)
    charts = draw_charts(summary, tmp_path / "plots")
    assert [p.name for p in charts] == ["sdr-global-boxes.png", "sdr-global-tracks.png"]
    assert capsys.readouterr().out == f"charts: {charts[0]}, {charts[1]}\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert draw_charts(summary, tmp_path / "none") == []
    out = capsys.readouterr().out
    assert "pip install 'danna-sep[plots]'" in out and "left out" in out and not (tmp_path / "none").exists()


def test_the_readmes_pictures_are_there_and_small():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert "docs/images/demo-sdr.png" in images
    for image in images:
        path = root / image
        assert path.is_file(), f"README.md shows {image}, which is not in the repository"
        assert png_size(path)[0] == "PNG" and path.stat().st_size < 150_000
