"""The built-in synthetic multitrack dataset: composition, rendering, the written dataset and the CLI."""

import json
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("tinysoundfont", reason="the synthetic dataset renders with tinysoundfont")
pytest.importorskip("pretty_midi", reason="the GM SoundFont ships in the pretty_midi wheel")

from danna_sep import SAMPLE_RATE, SOURCES
from danna_sep.cli import main
from danna_sep.data import MUSDBDataset
from danna_sep.data.synth import (
    DRUM_KITS,
    VOICE_PROGRAMS,
    WIND_PROGRAMS,
    compose,
    make_synthetic_dataset,
    synthesize_track,
)
from danna_sep.errors import DatasetError


def read_track(folder):
    parts = {p: sf.read(folder / f"{p}.wav", dtype="float32", always_2d=True) for p in ("mixture", *SOURCES)}
    assert all(rate == SAMPLE_RATE for _, rate in parts.values())
    mixture = parts["mixture"][0].T
    stems = np.stack([parts[s][0].T for s in SOURCES])
    return mixture, stems


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    start = time.process_time()
    make_synthetic_dataset(root, {"train": 3, "valid": 1, "test": 1}, seconds=4.0, seed=0)
    return root, time.process_time() - start


def test_layout_and_exact_mixture(dataset):
    root, _ = dataset
    assert sorted(p.name for p in root.iterdir()) == ["synth.json", "test", "train", "valid"]
    assert [p.name for p in sorted((root / "train").iterdir())] == ["train_000", "train_001", "train_002"]
    for folder in (root / "train").iterdir():
        mixture, stems = read_track(folder)
        assert stems.shape == (4, 2, 4 * SAMPLE_RATE)
        np.testing.assert_array_equal(mixture, stems.sum(0, dtype=np.float32))  # exactly Σ stems
        assert np.abs(mixture).max() <= 0.98 + 1e-6  # no clipping
        level = 10 * np.log10((stems.astype(np.float64) ** 2).mean(axis=(1, 2)))
        assert np.all(level > -32) and np.all(level < -14), level  # every stem sounds, at a realistic level
        assert any(np.abs(s[0] - s[1]).max() > 1e-3 for s in stems)  # stereo, not dual mono
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["config"]["seed"] == 0 and len(manifest["tracks"]["train"]) == 3


def test_dataset_reads_the_synthetic_layout(dataset):
    root, _ = dataset
    train = MUSDBDataset(root, "train", seq_duration=1.0, samples_per_track=2)
    assert [t.name for t in train.tracks] == ["train_000", "train_001", "train_002"]
    valid = MUSDBDataset(root, "valid", seq_duration=1.0)
    assert [t.name for t in valid.tracks] == ["valid_000"] and len(valid) == 4
    mix, stems = valid[0]
    np.testing.assert_allclose(mix.numpy(), stems.sum(0).numpy(), atol=1e-6)


def test_fast_enough(dataset):
    _, cpu = dataset
    assert cpu < 4.0 * 5 / 3  # 5 tracks × 4 s: at least 3× real time even on a loaded CI core (≥ 10× unloaded)


def test_deterministic_by_seed_and_split_independent():
    _, a = synthesize_track("train", 1, 2.0, seed=5)
    _, b = synthesize_track("train", 1, 2.0, seed=5)
    np.testing.assert_array_equal(a, b)
    _, c = synthesize_track("train", 1, 2.0, seed=6)
    _, d = synthesize_track("test", 1, 2.0, seed=5)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_cache_and_overwrite(tmp_path, dataset):
    root, _ = dataset
    stamp = (root / "train" / "train_000" / "mixture.wav").stat().st_mtime_ns
    make_synthetic_dataset(root, {"train": 3, "valid": 1, "test": 1}, seconds=4.0, seed=0)  # same: cached
    assert (root / "train" / "train_000" / "mixture.wav").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="different synthetic dataset"):
        make_synthetic_dataset(root, {"train": 1}, seconds=4.0, seed=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        make_synthetic_dataset(tmp_path / "other", 1, seconds=0.5)
    with pytest.raises(DatasetError, match="tracks"):
        make_synthetic_dataset(tmp_path / "new", {"training": 1}, seconds=0.5)
    with pytest.raises(DatasetError, match="SoundFont"):
        make_synthetic_dataset(tmp_path / "new", 1, seconds=0.5, soundfont=tmp_path / "missing.sf2")


def test_pcm16_mixture_is_exact(tmp_path):
    make_synthetic_dataset(tmp_path / "pcm", {"train": 1}, seconds=1.0, seed=2, subtype="PCM_16")
    folder = tmp_path / "pcm" / "train" / "train_000"
    assert sf.info(str(folder / "mixture.wav")).subtype == "PCM_16"
    mixture, stems = read_track(folder)
    np.testing.assert_array_equal(mixture, stems.sum(0, dtype=np.float32))


def test_composition_roles_and_silent_stretches():
    gaps = 0
    for seed in range(12):
        song = compose(np.random.default_rng(seed), 40.0)
        assert all(sum(len(p.notes) for p in song.stems[s]) > 0 for s in SOURCES), seed
        (kit,) = song.stems["drums"]
        assert kit.drum and kit.program in DRUM_KITS
        assert all(p.program in VOICE_PROGRAMS + WIND_PROGRAMS for p in song.stems["vocals"])
        assert not any(p.drum for s in ("bass", "other", "vocals") for p in song.stems[s])
        assert all(28 <= n.pitch <= 50 for n in song.stems["bass"][0].notes)
        bar = 60.0 / song.tempo * 4
        for s in ("drums", "bass", "vocals"):
            onsets = np.sort([n.time for p in song.stems[s] for n in p.notes] + [0.0, 40.0])
            gaps += int(np.diff(onsets).max() > 3.5 * bar)  # a stem resting for most of a section
    assert gaps >= 10
    short = compose(np.random.default_rng(0), 2.0)  # a short excerpt: every stem plays
    assert all(sum(len(p.notes) for p in short.stems[s]) > 0 for s in SOURCES)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(["make-dataset", str(out), "--tracks", "1", "--test", "1", "--seconds", "0.5", "--seed", "3", "-q"]) == 0
    )
    assert "1 train, 0 valid, 1 test" in capsys.readouterr().out
    assert (out / "test" / "test_000" / "vocals.wav").is_file()
    assert main(["make-dataset", str(out), "--tracks", "2", "--seconds", "0.5", "-q"]) == 2
    assert "different synthetic dataset" in capsys.readouterr().err
    assert main(["make-dataset", str(out), "--tracks", "2", "--seconds", "0.5", "-q", "--force"]) == 0
    assert (out / "train" / "train_001").is_dir()
    # a validation split by default, so that the documented make-dataset → train works
    assert "2 train, 1 valid, 1 test" in capsys.readouterr().out and (out / "valid" / "valid_000").is_dir()


def test_default_validation_split():
    from danna_sep.commands.make_dataset import default_valid_tracks

    assert [default_valid_tracks(n) for n in (0, 1, 2, 8, 20, 35)] == [0, 0, 1, 1, 2, 4]
