"""MUSDB18-HQ (wav) and MUSDB18 (.stem.mp4) datasets: layouts, splits, sampling, determinism, bad input."""

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from danna_sep import SAMPLE_RATE, SOURCES
from danna_sep.audio import load_audio
from danna_sep.data import MUSDBDataset, find_tracks, official_valid_tracks, split_tracks
from danna_sep.data.musdb import read_stem
from danna_sep.errors import ConfigError, DatasetError

SR = SAMPLE_RATE
RAMP = 1e-6  # left channel of every test stem: sample index · RAMP, so a chunk tells where it starts
VALID_A, VALID_B = "Actions - One Minute Smile", "Leaf - Summerghost"
# name → (code, seconds); the right channel of stem s of a track is (code·10 + s) / 1000
TRAIN = {"Alpha": (1, 1.0), "Beta": (2, 1.5), "Gamma": (3, 2.0), VALID_A: (4, 1.2), VALID_B: (5, 1.1)}
TEST = {"Omega": (6, 1.3)}
MIX_MARK = -0.5  # right channel of every mixture.wav: tells a mixture read from the file from Σ stems


def stem_audio(code: int, source: int, frames: int) -> np.ndarray:
    """(2, frames): ramp on the left, the track/source code on the right."""
    return np.stack([np.arange(frames) * RAMP, np.full(frames, (code * 10 + source) / 1000)]).astype(np.float32)


def decode(chunk: np.ndarray) -> tuple[int, int, int]:
    """(track code, source index, start sample) of a chunk written by stem_audio."""
    code = round(chunk[1, 0] * 1000)
    return code // 10, code % 10, round(chunk[0, 0] / RAMP)


def write_hq_track(folder: Path, code: int, seconds: float, rate: int = SR) -> None:
    folder.mkdir(parents=True)
    frames = int(seconds * SR)
    for s, name in enumerate(SOURCES):
        sf.write(folder / f"{name}.wav", stem_audio(code, s, frames).T, rate, subtype="FLOAT")
    mixture = np.stack([np.arange(frames) * RAMP, np.full(frames, MIX_MARK)]).astype(np.float32)
    sf.write(folder / "mixture.wav", mixture.T, rate, subtype="FLOAT")


@pytest.fixture(scope="module")
def hq_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hq")
    for subset, tracks in (("train", TRAIN), ("test", TEST)):
        for name, (code, seconds) in tracks.items():
            write_hq_track(root / subset / name, code, seconds)
    return root


# ---------------------------------------------------------------------------------------------------------------
# splits


def test_official_valid_list():
    names = official_valid_tracks()
    assert len(names) == 14 and len(set(names)) == 14
    assert VALID_A in names and VALID_B in names


def test_splits_exclude_valid_from_train_by_default(hq_root):
    def names(split, **kw):
        return [t.name for t in split_tracks(hq_root, split, **kw)]

    assert names("train") == ["Alpha", "Beta", "Gamma"]
    assert names("valid") == sorted([VALID_A, VALID_B])
    assert names("test") == ["Omega"]
    assert names("train", include_valid_in_train=True) == sorted(TRAIN)
    assert names("valid", valid_tracks=["Beta"]) == ["Beta"]
    assert names("train", valid_tracks=["Beta"]) == sorted(set(TRAIN) - {"Beta"})


def test_valid_folder_is_the_valid_split(tmp_path):
    write_hq_track(tmp_path / "train" / "A", 1, 0.5)
    write_hq_track(tmp_path / "valid" / "V", 2, 0.5)
    write_hq_track(tmp_path / "test" / "T", 3, 0.5)
    assert [t.name for t in split_tracks(tmp_path, "valid")] == ["V"]
    assert [t.name for t in split_tracks(tmp_path, "train")] == ["A"]
    assert [t.name for t in split_tracks(tmp_path, "train", include_valid_in_train=True)] == ["A", "V"]


def test_original_config_arguments(hq_root):
    # the original configs: subsets "train", split null → now the train split without the validation tracks
    ds = MUSDBDataset(hq_root, subsets="train", split=None, seq_duration=0.5, samples_per_track=2, random=True)
    assert [t.name for t in ds.tracks] == ["Alpha", "Beta", "Gamma"]
    ds = MUSDBDataset(hq_root, subsets=["train"], split="valid", seq_duration=0.5)
    assert len(ds.tracks) == 2 and not ds.random
    with pytest.raises(ConfigError):
        MUSDBDataset(hq_root, subsets="test", split="valid")


# ---------------------------------------------------------------------------------------------------------------
# training items


def test_random_items_read_what_was_drawn(hq_root):
    ds = MUSDBDataset(hq_root, "train", seq_duration=0.25, samples_per_track=4, augment=False, seed=3)
    seg = int(0.25 * SR)
    assert len(ds) == 3 * 4
    codes = [TRAIN[t.name][0] for t in ds.tracks]
    for index in range(len(ds)):
        mix, stems = ds[index]
        assert mix.shape == (2, seg) and stems.shape == (4, 2, seg) and stems.dtype == torch.float32
        torch.testing.assert_close(mix, stems.sum(0))  # mixture = Σ stems, not mixture.wav
        for s, (track, start) in enumerate(ds.draw(index)):
            assert decode(stems[s].numpy()) == (codes[track], s, start)
            assert 0 <= start <= ds.tracks[track].frames - seg


def test_sampling_statistics(hq_root):
    ds = MUSDBDataset(hq_root, "train", seq_duration=0.5, samples_per_track=300, augment=False, seed=0)
    seg = int(0.5 * SR)
    draws = np.array([ds.draw(i) for i in range(len(ds))])  # (items, sources, 2)
    tracks, starts = draws[..., 0], draws[..., 1]
    n = tracks.size
    counts = np.bincount(tracks.ravel(), minlength=3)
    # each stem picks its track uniformly: counts within 4 sigma of n/3
    assert np.all(np.abs(counts - n / 3) < 4 * np.sqrt(n * (1 / 3) * (2 / 3)))
    # cross-track remixing: all four stems from one track happens with probability 3 / 3^4
    same = np.mean((tracks == tracks[:, :1]).all(1))
    assert abs(same - 1 / 27) < 0.02
    for t, track in enumerate(ds.tracks):
        s = starts[tracks == t]
        span = track.frames - seg
        assert s.min() >= 0 and s.max() <= span
        # uniform offsets: mean span/2, and both ends reached
        assert abs(s.mean() - span / 2) < 0.1 * span
        assert s.min() < 0.05 * span and s.max() > 0.95 * span
    # without remixing: one track (index // samples_per_track) and one offset for all stems
    ds = MUSDBDataset(hq_root, "train", seq_duration=0.5, samples_per_track=5, random_track_mix=False, augment=False)
    for i in range(len(ds)):
        picks = ds.draw(i)
        assert len(set(picks)) == 1 and picks[0][0] == i // 5


def test_cpu_augment_inside_dataset(hq_root):
    plain = MUSDBDataset(hq_root, "train", seq_duration=0.25, samples_per_track=2, augment=False, seed=1)
    aug = MUSDBDataset(hq_root, "train", seq_duration=0.25, samples_per_track=2, seed=1)  # default: on for train
    mix, stems = aug[0]
    _, ref = plain[0]
    torch.testing.assert_close(mix, stems.sum(0))
    assert not torch.equal(stems, ref)
    # every stem is the original times a gain in [0.25, 1.25] up to sign, possibly with L/R swapped
    for s in range(4):
        cands = [ref[s], ref[s].flip(0)]
        ratios = [(stems[s] * c).sum() / (c * c).sum() for c in cands]
        best = max(ratios, key=abs)
        assert 0.25 - 1e-4 <= abs(best) <= 1.25 + 1e-4
    off = MUSDBDataset(
        hq_root,
        "train",
        seq_duration=0.25,
        samples_per_track=2,
        seed=1,
        augment={"gain": None, "swap_lr_p": 0.0, "flip_polarity_p": 0.0},
    )
    torch.testing.assert_close(off[0][1], ref)


# ---------------------------------------------------------------------------------------------------------------
# determinism


def _batches(ds, workers: int, persistent: bool = False, epochs=(0,)):
    loader = DataLoader(ds, batch_size=3, num_workers=workers, persistent_workers=persistent)
    out = []
    for epoch in epochs:
        ds.set_epoch(epoch)
        out.append(torch.cat([stems for _, stems in loader]))
    return out


def test_reproducible_across_workers_and_epochs(hq_root):
    def make(seed=0):
        return MUSDBDataset(hq_root, "train", seq_duration=0.1, samples_per_track=2, seed=seed)

    ds = make()
    (single,) = _batches(ds, 0)
    (again,) = _batches(make(), 0)
    assert torch.equal(single, again)
    # two persistent workers see set_epoch through shared memory
    multi = _batches(make(), 2, persistent=True, epochs=(0, 1))
    assert torch.equal(multi[0], single)
    ds1 = make()
    (epoch1,) = _batches(ds1, 0, epochs=(1,))
    assert torch.equal(multi[1], epoch1)
    assert not torch.equal(epoch1, single)
    (other_seed,) = _batches(make(seed=1), 0)
    assert not torch.equal(other_seed, single)


# ---------------------------------------------------------------------------------------------------------------
# validation / test items


def test_sequential_chunks_read_the_mixture_file(hq_root):
    ds = MUSDBDataset(hq_root, "valid", seq_duration=0.5)
    seg = int(0.5 * SR)
    chunks = [max(1, t.frames // seg) for t in ds.tracks]
    assert not ds.random and len(ds) == sum(chunks)
    index = 0
    for t, track in enumerate(ds.tracks):
        for c in range(chunks[t]):
            mix, stems = ds[index]
            assert ds.locate(index) == (t, c * seg)
            assert np.allclose(mix[1].numpy(), MIX_MARK)  # from mixture.wav
            assert decode(mix.numpy())[2] == c * seg
            for s in range(4):
                assert decode(stems[s].numpy()) == (TRAIN[track.name][0], s, c * seg)
            index += 1
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_whole_tracks_and_short_tracks(hq_root):
    ds = MUSDBDataset(hq_root, "test", seq_duration=None)
    assert len(ds) == 1
    mix, stems = ds[0]
    assert stems.shape == (4, 2, int(TEST["Omega"][1] * SR)) and mix.shape == (2, stems.shape[-1])
    # a chunk longer than the track: one zero-padded item
    ds = MUSDBDataset(hq_root, "test", seq_duration=2.0)
    mix, stems = ds[0]
    frames = int(TEST["Omega"][1] * SR)
    assert stems.shape[-1] == 2 * SR
    assert stems[..., frames:].abs().max() == 0 and stems[..., :frames].abs().max() > 0


def test_mono_is_duplicated_and_mixture_optional(tmp_path):
    folder = tmp_path / "train" / "Mono"
    folder.mkdir(parents=True)
    for s, name in enumerate(SOURCES):
        sf.write(folder / f"{name}.wav", np.full(SR // 10, 0.1 * (s + 1), np.float32), SR, subtype="FLOAT")
    (track,) = find_tracks(tmp_path, "train")
    assert not track.has_mixture
    parts = track.read(("mixture", "bass"), 0, 10)
    assert parts.shape == (2, 2, 10)
    np.testing.assert_allclose(parts[0], 1.0, rtol=1e-6)  # Σ stems stands in for the missing mixture
    np.testing.assert_allclose(parts[1], 0.2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# MUSDB18 .stem.mp4


def write_stem_mp4(path: Path, streams: np.ndarray) -> None:
    """streams (5, 2, samples) float32 → an AAC .stem.mp4 with 5 streams (mixture, drums, bass, other, vocals)."""
    with av.open(str(path), "w") as container:
        outs = [container.add_stream("aac", rate=SR, layout="stereo") for _ in streams]
        for out, audio in zip(outs, streams, strict=True):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout="stereo")
            frame.rate = SR
            for packet in out.encode(frame):
                container.mux(packet)
            for packet in out.encode(None):
                container.mux(packet)


def full_decode(path: Path, stream: int) -> np.ndarray:
    """The project's whole-file decoder: the reference for chunked reads."""
    return load_audio(path, sample_rate=None, stream=stream)[0].numpy()


@pytest.fixture(scope="module")
def stem_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stems")
    t = np.arange(int(1.5 * SR)) / SR
    for subset, names in (("train", ["Alpha", "Beta"]), ("test", ["Omega"])):
        (root / subset).mkdir()
        for k, name in enumerate(names):
            # tonal content (AAC decodes it deterministically), a different frequency per stream and track
            streams = np.stack(
                [
                    np.stack([0.2 * np.sin(2 * np.pi * (220 + 110 * s + 30 * k) * t + c) for c in (0.0, 0.5)])
                    for s in range(5)
                ]
            ).astype(np.float32)
            write_stem_mp4(root / subset / f"{name}.stem.mp4", streams)
    return root


def test_stem_layout_tracks_and_chunks(stem_root):
    tracks = find_tracks(stem_root, "train")
    assert [t.name for t in tracks] == ["Alpha", "Beta"] and all(t.layout == "stem" for t in tracks)
    assert abs(tracks[0].frames - 1.5 * SR) <= 2048  # AAC pads to whole frames
    path = tracks[1].path
    for start in (0, 5000, 30000):
        chunk = read_stem(path, [0, 1, 2, 3, 4], start, 8000)
        assert chunk.shape == (5, 2, 8000)
        for stream in range(5):
            ref = full_decode(path, stream)[:, start : start + 8000]
            # a seek + 2048 samples of pre-roll decodes the same samples as a full decode
            np.testing.assert_allclose(chunk[stream], ref, atol=1e-4)


def test_stem_dataset_items(stem_root):
    ds = MUSDBDataset(stem_root, "train", seq_duration=0.2, samples_per_track=3, augment=False, valid_tracks=[])
    assert len(ds) == 6
    mix, stems = ds[4]
    assert stems.shape == (4, 2, int(0.2 * SR))
    torch.testing.assert_close(mix, stems.sum(0))
    for s, (track, start) in enumerate(ds.draw(4)):
        ref = full_decode(ds.tracks[track].path, s + 1)[:, start : start + stems.shape[-1]]
        np.testing.assert_allclose(stems[s].numpy(), ref, atol=1e-4)
    test = MUSDBDataset(stem_root, "test", seq_duration=0.5)
    mix, stems = test[1]
    ref = full_decode(test.tracks[0].path, 0)[:, int(0.5 * SR) : int(1.0 * SR)]
    np.testing.assert_allclose(mix.numpy(), ref, atol=1e-4)


def test_stem_file_with_missing_streams(tmp_path):
    (tmp_path / "train").mkdir()
    write_stem_mp4(tmp_path / "train" / "Short.stem.mp4", np.zeros((3, 2, 4096), np.float32))
    with pytest.raises(DatasetError, match=r"Short.*3 audio streams.*missing stem"):
        find_tracks(tmp_path, "train")


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_missing_root_or_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*expected root/\{train,test\}"):
        MUSDBDataset(tmp_path / "nope", "train")
    with pytest.raises(DatasetError, match=r"no train/ folder.*expected"):
        MUSDBDataset(tmp_path, "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no tracks found.*expected"):
        MUSDBDataset(tmp_path, "train")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"track 'Bad': missing stem bass\.wav"),
        ("length", r"track 'Bad': files have different lengths"),
        ("rate", r"track 'Bad': .*bass\.wav: sample rate 48000 Hz, expected 44100"),
        ("garbage", r"track 'Bad': cannot read .*bass\.wav"),
    ],
)
def test_invalid_track(tmp_path, damage, message):
    write_hq_track(tmp_path / "train" / "Good", 1, 0.3)
    bad = tmp_path / "train" / "Bad"
    write_hq_track(bad, 2, 0.3)
    if damage == "missing":
        (bad / "bass.wav").unlink()
    elif damage == "length":
        sf.write(bad / "bass.wav", np.zeros((100, 2), np.float32), SR)
    elif damage == "rate":
        sf.write(bad / "bass.wav", np.zeros((int(0.3 * SR), 2), np.float32), 48000)
    else:
        (bad / "bass.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(DatasetError, match=message):
        MUSDBDataset(tmp_path, "train", seq_duration=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = MUSDBDataset(tmp_path, "train", seq_duration=0.1, skip_invalid=True)
    assert [t.name for t in ds.tracks] == ["Good"]
    assert any("Bad" in str(w.message) for w in caught)


def test_empty_after_filtering(tmp_path):
    write_hq_track(tmp_path / "train" / VALID_A, 1, 0.3)
    with pytest.raises(DatasetError, match=r"train split is empty.*include_valid_in_train"):
        MUSDBDataset(tmp_path, "train")
    (tmp_path / "train" / VALID_A / "drums.wav").unlink()
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="valid split is empty"):
        MUSDBDataset(tmp_path, "valid", skip_invalid=True)


def test_config_errors(hq_root):
    with pytest.raises(ConfigError, match="seq_duration"):
        MUSDBDataset(hq_root, "train", seq_duration=None, random=True)
    with pytest.raises(ConfigError, match="split"):
        MUSDBDataset(hq_root, "training")
    with pytest.raises(ConfigError, match="augment"):
        MUSDBDataset(hq_root, "train", augment=3)
    with pytest.raises(ConfigError, match="layout"):
        MUSDBDataset(hq_root, "train", layout="flac")
