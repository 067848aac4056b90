"""Evaluation, blend fitting from cached estimates, and the evaluate / fit-blend commands."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import soundfile as sf

from danna_sep import SOURCES
from danna_sep.cli import main
from danna_sep.data import make_synthetic_dataset, split_tracks
from danna_sep.evaluate import EstimateRef, evaluate, fit_from_cache, format_table, save_estimate, score_tracks
from danna_sep.metrics import global_sdr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ds"), tracks={"valid": 2, "test": 2}, seconds=3, seed=1)


def noisy_estimates(track, sigmas, seed):
    """Per-model estimates truth + σ_m · white noise, independent across models: (models, sources, 2, samples)."""
    rng = np.random.default_rng(seed)
    refs = track.read(list(SOURCES))
    scale = refs.std(axis=(1, 2), keepdims=True)
    return np.stack([refs + s * scale * rng.standard_normal(refs.shape).astype(np.float32) for s in sigmas])


def cached_refs(tmp_path, tracks, sigmas, names):
    refs = {m: {} for m in names}
    for k, t in enumerate(tracks):
        est = noisy_estimates(t, sigmas, seed=k)
        for m, e in zip(names, est, strict=True):
            path = tmp_path / "cache" / m / f"{t.name}.npy"
            save_estimate(path, e)
            refs[m][t.name] = EstimateRef("npy", path)
    return refs


def test_aggregation_matches_museval(dataset, tmp_path):
    museval = pytest.importorskip("museval")
    tracks = split_tracks(dataset, "test")
    refs = cached_refs(tmp_path, tracks, [0.5], ["unet"])
    summary = evaluate(tracks, refs, {"unet": {"unet": np.ones(4)}}, "test", tmp_path / "out", log=lambda *_: None)
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path / "out" / "unet")  # reads <dir>/test/*.json: our per-track files
    agg = store.agg_frames_tracks_scores()
    per_track = store.agg_frames_scores()
    for metric in ("SDR", "ISR", "SIR", "SAR"):
        for s in SOURCES:
            assert summary["systems"]["unet"]["museval"][metric][s] == pytest.approx(agg[s][metric], abs=1e-4)
    for t in tracks:
        for s in SOURCES:
            ours = summary["systems"]["unet"]["tracks"][t.name]["museval_sdr"][s]
            assert ours == pytest.approx(per_track[t.name][s]["SDR"], abs=1e-4)
    # the mixture baseline is there and far worse than estimates with 6 dB of noise
    assert summary["systems"]["mixture"]["global_sdr"]["all"] < summary["systems"]["unet"]["global_sdr"]["all"] - 3


def test_fit_recovers_inverse_noise_weights(dataset, tmp_path):
    tracks = split_tracks(dataset, "valid")
    sigmas = np.array([1.0, 0.5, 0.25])
    names = ["xumx", "unet", "demucs"]
    refs = cached_refs(tmp_path, tracks, sigmas, names)
    bag = fit_from_cache(tracks, refs, names, log=lambda *_: None)
    # blending truth + independent noises: the error Σ w_m n_m is smallest for w ∝ 1/σ²
    expected = (1 / sigmas**2) / (1 / sigmas**2).sum()
    np.testing.assert_allclose(bag.weights, np.repeat(expected[:, None], 4, 1), atol=0.02)
    # and the fitted blend beats the best single model on a split not used for fitting
    test = split_tracks(dataset, "test")
    test_refs = cached_refs(tmp_path / "t", test, sigmas, names)
    systems = {"demucs": {"demucs": np.ones(4)}, "fitted": {m: bag.column(m) for m in names}}
    res = score_tracks(test, test_refs, systems, museval=False, log=lambda *_: None)
    for r in res:
        assert np.all(r.global_sdr["fitted"] > r.global_sdr["demucs"] + 0.3)


def test_parallel_scoring_equals_serial(dataset, tmp_path):
    tracks = split_tracks(dataset, "test")
    refs = cached_refs(tmp_path, tracks, [0.3, 0.6], ["unet", "demucs"])
    systems = {"blend": {"unet": np.full(4, 0.7), "demucs": np.full(4, 0.3)}}
    a = score_tracks(tracks, refs, systems, museval=False, jobs=1, log=lambda *_: None)
    b = score_tracks(tracks, refs, systems, museval=False, jobs=2, log=lambda *_: None)
    assert [r.name for r in b] == [t.name for t in tracks]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.global_sdr["blend"], y.global_sdr["blend"])


def test_evaluate_command_with_estimates(dataset, tmp_path, capsys):
    tracks = split_tracks(dataset, "test")
    est_dir = tmp_path / "est"
    expected = []
    for k, t in enumerate(tracks):
        (est_dir / t.name).mkdir(parents=True)
        est = noisy_estimates(t, [0.4], seed=10 + k)[0]
        for s, e in zip(SOURCES, est, strict=True):
            sf.write(est_dir / t.name / f"{s}.wav", e.T, 44100, subtype="FLOAT")
        expected.append(np.asarray(global_sdr(t.read(list(SOURCES)), est)))
    out = tmp_path / "out"
    rc = main(["evaluate", "--root", str(dataset), "--estimates", str(est_dir), "--outdir", str(out), "--jobs", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "museval SDR" in text and "global SDR" in text
    for row in ("estimates", "mixture"):
        assert any(line.startswith(row) for line in text.splitlines())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subset"] == "test" and summary["tracks"] == [t.name for t in tracks]
    assert set(summary["systems"]) == {"estimates", "mixture"}
    g = summary["systems"]["estimates"]["global_sdr"]
    np.testing.assert_allclose([g[s] for s in SOURCES], np.mean(expected, 0), atol=1e-4)
    assert g["all"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert set(summary["systems"]["estimates"]["museval"]) == {"SDR", "ISR", "SIR", "SAR"}
    per_track = json.loads((out / "estimates" / "test" / f"{tracks[0].name}.json").read_text())
    assert [t["name"] for t in per_track["targets"]] == list(SOURCES)
    frame = per_track["targets"][0]["frames"][0]
    assert frame["time"] == 0 and frame["duration"] == 1.0 and set(frame["metrics"]) == {"SDR", "SIR", "ISR", "SAR"}
    assert len(per_track["targets"][0]["frames"]) == 3  # 3 s track, 1 s frames


def test_evaluate_command_draws_the_charts(dataset, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    from PIL import Image

    tracks = split_tracks(dataset, "test")
    est_dir = tmp_path / "est"
    for k, t in enumerate(tracks):
        (est_dir / t.name).mkdir(parents=True)
        for s, e in zip(SOURCES, noisy_estimates(t, [0.4], seed=20 + k)[0], strict=True):
            sf.write(est_dir / t.name / f"{s}.wav", e.T, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    args = ["evaluate", "--root", str(dataset), "--estimates", str(est_dir), "--outdir", str(out), "--jobs", "1"]
    assert main([*args, "--plots"]) == 0  # default folder: OUTDIR/plots
    names = ["sdr-museval-boxes.png", "sdr-museval-tracks.png", "sdr-global-boxes.png", "sdr-global-tracks.png"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(names)
    assert f"charts: {', '.join(str(out / 'plots' / n) for n in names)}" in capsys.readouterr().out
    for name in names:
        with Image.open(out / "plots" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 400
    # the charts draw the summary's numbers: the museval boxes' median lines are its SDRs
    from danna_sep.plots import sdr_boxes

    summary = json.loads((out / "summary.json").read_text())
    lines = {a.get_gid(): a for a in sdr_boxes(summary).axes[0].lines if a.get_gid()}
    assert lines["median:vocals:estimates"].get_ydata()[0] == pytest.approx(
        summary["systems"]["estimates"]["museval"]["SDR"]["vocals"]
    )
    # a folder of one's own, global SDR only: the global charts alone
    assert main([*args, "--no-museval", "--plots", str(tmp_path / "charts")]) == 0
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == sorted(names[2:])


def test_charts_need_matplotlib_and_a_folder_before_any_work(dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["evaluate", "--root", str(dataset), "--estimates", str(tmp_path), "--outdir", str(out)]
    if importlib.util.find_spec("matplotlib") is not None:
        (tmp_path / "file").write_text("")
        assert main([*args, "--plots", str(tmp_path / "file")]) == 2
        assert f"--plots: {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err
        assert not out.exists()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main([*args, "--plots"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "danna evaluate: error: --plots: matplotlib is not installed; pip install 'danna-sep[plots]'"
    assert not out.exists()


def test_format_table_rows(dataset, tmp_path):
    tracks = split_tracks(dataset, "test")
    refs = cached_refs(tmp_path, tracks, [0.5], ["unet"])
    summary = evaluate(tracks, refs, {"unet": {"unet": np.ones(4)}}, "test", museval=False, log=lambda *_: None)
    table = format_table(summary)
    assert "museval" not in table
    rows = [line.split() for line in table.splitlines() if line.startswith(("unet", "mixture"))]
    assert [r[0] for r in rows] == ["unet", "mixture"] and all(len(r) == 6 for r in rows)


@pytest.mark.parametrize("case", ["no_root", "empty", "no_checkpoints", "missing_track_estimates"])
def test_user_errors(dataset, tmp_path, capsys, case):
    args = ["evaluate", "--root", str(dataset), "--outdir", str(tmp_path / "o"), "--jobs", "1"]
    if case == "no_root":
        args[2] = str(tmp_path / "nowhere")
        args += ["--estimates", str(tmp_path)]
        needle = "does not exist"
    elif case == "empty":
        (tmp_path / "empty" / "test").mkdir(parents=True)
        args[2] = str(tmp_path / "empty")
        args += ["--estimates", str(tmp_path)]
        needle = "no tracks"
    elif case == "no_checkpoints":
        args += ["--checkpoints", str(tmp_path / "ckpt")]
        needle = "xumx_mwf.pth"
    else:
        args += ["--estimates", str(tmp_path)]
        needle = "has no folder for track"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("danna evaluate: error:") and needle in err and len(err.strip().splitlines()) == 1


def test_fit_blend_needs_checkpoints(dataset, tmp_path, capsys):
    rc = main(
        [
            "fit-blend",
            "--root",
            str(dataset),
            "--checkpoints",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "bag.json"),
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bag.json").exists()


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny configs' (untrained) spectral models exported under the released names, and a bag of them."""
    import torch

    from danna_sep.blend import MODEL_FILES, Bag
    from danna_sep.config import read_config
    from danna_sep.export import ModelInfo, export_torchscript
    from danna_sep.models import build_model
    from danna_sep.train import config_path

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for role, name in (("xumx", "x_umx_mwf.json"), ("unet", "unet_attn.json")):
        cfg = read_config(config_path(f"tiny/{name}"))
        model = build_model(cfg["arch"])
        export_torchscript(model, folder / MODEL_FILES[role][0], ModelInfo.from_model(model, cfg))
    Bag(["xumx", "unet"], [[0.3, 0.6, 0.5, 0.2], [0.7, 0.4, 0.5, 0.8]]).save(folder / "bag.json")
    return folder


def test_evaluate_and_fit_blend_with_tiny_models(dataset, tiny_checkpoints, tmp_path, capsys):
    from danna_sep.blend import Bag

    out = tmp_path / "out"
    bag = Bag.load(tiny_checkpoints / "bag.json")
    common = [
        "--root",
        str(dataset),
        "--checkpoints",
        str(tiny_checkpoints),
        "--outdir",
        str(out),
        "--jobs",
        "1",
        "--niter",
        "0",
        "--tracks",
        "1",
    ]  # plain masks: the Wiener EM is the slow part and not what is tested here
    plots = [] if importlib.util.find_spec("matplotlib") is None else ["--plots", str(tmp_path / "plots")]
    assert main(["evaluate", *common, "--bag", str(tiny_checkpoints / "bag.json"), "--no-museval", *plots]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["systems"]) == ["xumx", "unet", "blend", "mixture"]
    if plots:  # the models, the blend and the baseline, drawn
        assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
            "sdr-global-boxes.png",
            "sdr-global-tracks.png",
        ]
    caches = sorted(p.name.split("-")[0] for p in (out / "cache").iterdir())
    assert caches == ["unet", "xumx"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.npy")}
    assert len(stamps) == 2 * 1  # two models, one track
    # blend = Σ w · cached model stems: check its global SDR from the cache by hand
    track = split_tracks(dataset, "test")[0]
    refs = track.read(list(SOURCES))
    est = sum(
        bag.column(m)[:, None, None] * np.load(next((out / "cache").glob(f"{m}-*")) / f"{track.name}.npy")
        for m in bag.models
    )
    np.testing.assert_allclose(
        [summary["systems"]["blend"]["tracks"][track.name]["global_sdr"][s] for s in SOURCES],
        global_sdr(refs, est),
        atol=1e-3,
    )
    capsys.readouterr()
    bag_path = tmp_path / "fitted.json"
    assert main(["fit-blend", *common, "--models", "xumx,unet", "--out", str(bag_path), "--step", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "fitted blend" in text and "original blend" not in text  # no hand-picked weights for this pair
    fitted = Bag.load(bag_path)
    assert fitted.models == ["xumx", "unet"]
    np.testing.assert_allclose(fitted.weights.sum(0), 1, atol=1e-6)
    # the test split's estimates were reused, not separated again
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_original_weights_for_comparison():
    from danna_sep.blend import FAST_BAG, ORIGINAL_BAG
    from danna_sep.commands.fit_blend import original_bag

    assert original_bag(["demucs", "unet", "xumx"]) is ORIGINAL_BAG
    assert original_bag(["unet", "demucs"]) is FAST_BAG
    assert original_bag(["xumx", "unet"]) is None
