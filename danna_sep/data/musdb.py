"""MUSDB18 / MUSDB18-HQ datasets: track discovery, splits and the original training sampler.

Two layouts are read, both with pip wheels only (soundfile for wav, PyAV for mp4)::

    wav (MUSDB18-HQ, or your own stems)       stem (MUSDB18)
    root/train/<Track>/mixture.wav            root/train/<Track>.stem.mp4
                      /drums.wav                   streams: mixture, drums, bass, other, vocals
                      /bass.wav               root/test/<Track>.stem.mp4
                      /other.wav
                      /vocals.wav
    root/test/<Track>/...
    root/valid/<Track>/...   (optional: a validation folder, e.g. the synthetic dataset's)

``mixture.wav`` is optional in the wav layout (Σ stems stands in for it). Every file must be 44.1 kHz and all
files of a track must have the same length; channels follow :func:`danna_sep.audio.to_stereo` (mono is
duplicated, more than two are downmixed). Wav files are read with :func:`danna_sep.audio.read_frames`.

Splits: ``valid`` is ``root/valid`` when that folder exists, else the tracks of ``root/train`` named in the
official MUSDB validation list (``musdb_valid.txt``, 14 tracks). ``train`` is ``root/train`` *without* the
validation tracks unless ``include_valid_in_train`` (the original system trained on them, reference §12.5).

Items are ``(mixture (channels, samples), stems (sources, channels, samples))`` float32 tensors, sources in the
order drums, bass, other, vocals. Training items (``random=True``) are random chunks with, by default, random
cross-track remixing and mixture = Σ stems; validation/test items are sequential chunks or whole tracks with the
mixture read from the file.

Reproducibility: every random choice of item ``index`` comes from a generator seeded with
``(seed, epoch, index)``, so the result does not depend on DataLoader workers, their number or their order.
Call :meth:`MUSDBDataset.set_epoch` before iterating each epoch; the epoch lives in shared memory, so it also
reaches persistent workers.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av  # 0.04 s (`python -X importtime -c "import av"`): imported plainly
import numpy as np
import torch
from torch.utils.data import Dataset

from .. import SAMPLE_RATE, SOURCES
from ..audio import audio_info, read_frames, to_stereo
from ..errors import AudioError, ConfigError, DatasetError
from .augment import StemAugment

MIXTURE = "mixture"
STEM_SUFFIX = ".stem.mp4"
STEM_STREAMS = {MIXTURE: 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
"""Stream index of each part in a MUSDB18 ``.stem.mp4`` file."""

VALID_LIST = Path(__file__).with_name("musdb_valid.txt")

LAYOUT_HELP = (
    "expected root/{train,test}/<Track>/{mixture,drums,bass,other,vocals}.wav (MUSDB18-HQ; mixture.wav optional) "
    "or root/{train,test}/<Track>.stem.mp4 (MUSDB18), optionally also root/valid/"
)


def official_valid_tracks() -> list[str]:
    """The 14 MUSDB18 validation track names (from the musdb package's ``mus.yaml``)."""
    return [line.strip() for line in VALID_LIST.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# reading


def read_wav(path: Path, start: int, frames: int) -> np.ndarray:
    """``frames`` samples from ``start``, zero-filled past the end → (2, frames) float32.

    Two channels: the project's channel policy.
    """
    try:
        return read_frames(path, start, frames).numpy()
    except AudioError as exc:
        raise DatasetError(f"track {path.parent.name!r}: {exc}") from None


def _frame_array(frame: Any, channels: int) -> np.ndarray:
    """A decoded PyAV audio frame → (channels, samples) float32."""
    arr = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: (1, samples·channels)
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    return arr.astype(np.float32, copy=False)


def read_stem(path: Path, streams: Sequence[int], start: int, frames: int | None) -> np.ndarray:
    """Decode ``frames`` samples from ``start`` of several streams of a ``.stem.mp4`` → (len(streams), 2, frames).

    Seeks instead of decoding the whole file (a 6 s chunk costs ~6 s of decoding, not a whole song), with
    2048 samples of pre-roll so that the AAC overlap-add is complete at ``start``: the result equals the same
    span of a full decode (AAC noise substitution aside, which is random by design). Zero-filled past the end.
    """
    preroll = 2048
    try:
        with av.open(str(path)) as container:
            sts = [container.streams.audio[i] for i in streams]
            rate = sts[0].rate
            length = frames
            if length is None:
                length = max(_stream_frames(st) for st in sts) - start
            out = np.zeros((len(sts), 2, max(length, 0)), dtype=np.float32)
            target = max(0, start - preroll)
            if target > 0:
                container.seek(int(target / (sts[0].time_base * rate)), stream=sts[0], backward=True)
            slot = {st.index: k for k, st in enumerate(sts)}
            done: set[int] = set()
            next_pos = [0] * len(sts)  # for frames without a timestamp: right after the previous one
            for packet in container.demux(sts):
                k = slot.get(packet.stream.index)
                if k is None or k in done:
                    continue
                for frame in packet.decode():
                    pos = next_pos[k] if frame.pts is None else round(frame.pts * frame.time_base * rate)
                    n = frame.samples
                    next_pos[k] = pos + n
                    if pos >= start + length:
                        done.add(k)
                        break
                    if pos + n <= start:
                        continue
                    names = [ch.name for ch in frame.layout.channels]
                    arr = _frame_array(frame, len(names))
                    if arr.shape[0] != 2:
                        arr = to_stereo(torch.from_numpy(arr), names).numpy()
                    s0, s1 = max(start, pos), min(start + length, pos + n)
                    out[k, :, s0 - start : s1 - start] = arr[:, s0 - pos : s1 - pos]
                if len(done) == len(sts):
                    break
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: cannot decode: {exc}") from None
    return out


def _stream_frames(stream: Any) -> int:
    """Length in samples of an audio stream from its container metadata."""
    if stream.duration is not None:
        return round(stream.duration * stream.time_base * stream.rate)
    if stream.frames:
        return int(stream.frames) * (stream.codec_context.frame_size or 1024)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# tracks


@dataclass(frozen=True)
class Track:
    """One multitrack song: a folder of wavs (``layout="wav"``) or a ``.stem.mp4`` file (``layout="stem"``)."""

    name: str
    path: Path
    frames: int
    layout: str
    has_mixture: bool = True

    def read(
        self, parts: Sequence[str], start: int = 0, frames: int | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Read ``parts`` (names from ``mixture`` + SOURCES) → (len(parts), 2, frames) float32, zero-filled past
        the end; into ``out`` when given (no extra copy)."""
        if frames is None:
            frames = max(self.frames - start, 0)
        if out is None:
            out = np.empty((len(parts), 2, frames), dtype=np.float32)
        if self.layout == "stem":
            out[:] = read_stem(self.path, [STEM_STREAMS[p] for p in parts], start, frames)
            return out
        for k, part in enumerate(parts):
            if part == MIXTURE and not self.has_mixture:
                out[k] = self.read(SOURCES, start, frames).sum(0)
            else:
                out[k] = read_wav(self.path / f"{part}.wav", start, frames)
        return out


def _check_rate(where: str, rate: int) -> None:
    if rate != SAMPLE_RATE:
        raise DatasetError(f"{where}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz (resample the dataset first)")


def _wav_track(folder: Path) -> Track:
    lengths = {}
    for part in (MIXTURE, *SOURCES):
        path = folder / f"{part}.wav"
        if not path.is_file():
            if part == MIXTURE:
                continue
            raise DatasetError(f"track {folder.name!r}: missing stem {path.name} in {folder}")
        try:
            info = audio_info(path)
        except AudioError as exc:
            raise DatasetError(f"track {folder.name!r}: cannot read {exc}") from None
        _check_rate(f"track {folder.name!r}: {path}", info.sample_rate)
        lengths[path.name] = info.frames
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n} {f}" for n, f in lengths.items())
        raise DatasetError(f"track {folder.name!r}: files have different lengths ({detail}) in {folder}")
    return Track(folder.name, folder, next(iter(lengths.values())), "wav", has_mixture="mixture.wav" in lengths)


def _stem_track(path: Path) -> Track:
    name = path.name[: -len(STEM_SUFFIX)]
    try:
        with av.open(str(path)) as container:
            streams = list(container.streams.audio)
            if len(streams) < len(STEM_STREAMS):
                raise DatasetError(
                    f"track {name!r}: {path} has {len(streams)} audio streams, expected {len(STEM_STREAMS)} "
                    f"({', '.join(STEM_STREAMS)}): missing stem"
                )
            lengths = {}
            for part, index in STEM_STREAMS.items():
                st = streams[index]
                _check_rate(f"track {name!r}: {path} stream {index} ({part})", st.rate)
                lengths[part] = _stream_frames(st)
    except av.FFmpegError as exc:
        raise DatasetError(f"track {name!r}: cannot read {path}: {exc}") from None
    # AAC pads to whole 1024-sample frames: lengths within one frame are the same length
    if max(lengths.values()) - min(lengths.values()) > 1024:
        detail = ", ".join(f"{n} {f}" for n, f in lengths.items())
        raise DatasetError(f"track {name!r}: streams have different lengths ({detail}) in {path}")
    return Track(name, path, min(lengths.values()), "stem")


def _entries(folder: Path) -> list[Path]:
    """Visible entries (hidden ones, e.g. a crashed writer's ``.tmp-*`` folder, are not tracks)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _detect_layout(folder: Path) -> str:
    has_dirs = any(p.is_dir() for p in _entries(folder))
    has_stems = any(p.name.endswith(STEM_SUFFIX) for p in _entries(folder))
    if has_dirs and has_stems:
        raise DatasetError(f"{folder}: holds both track folders and .stem.mp4 files; pass layout='wav' or 'stem'")
    if not has_dirs and not has_stems:
        raise DatasetError(f"{folder}: no tracks found; {LAYOUT_HELP}")
    return "wav" if has_dirs else "stem"


def find_tracks(root: str | os.PathLike, subset: str, layout: str = "auto", skip_invalid: bool = False) -> list[Track]:
    """All tracks of ``root/<subset>``, sorted by name, each checked (stems present, 44.1 kHz, equal lengths).

    An invalid track raises :class:`DatasetError` naming the track and the file, or with ``skip_invalid``
    is left out with a warning.
    """
    root = Path(root).expanduser()
    if layout not in ("auto", "wav", "stem"):
        raise ConfigError(f"layout: {layout!r} is not one of auto, wav, stem")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; {LAYOUT_HELP}")
    folder = root / subset
    if not folder.is_dir():
        raise DatasetError(f"{root} has no {subset}/ folder; {LAYOUT_HELP}")
    if layout == "auto":
        layout = _detect_layout(folder)
    if layout == "wav":
        candidates = [p for p in _entries(folder) if p.is_dir()]
        load: Callable[[Path], Track] = _wav_track
    else:
        candidates = [p for p in _entries(folder) if p.name.endswith(STEM_SUFFIX)]
        load = _stem_track
    tracks = []
    for path in candidates:
        try:
            tracks.append(load(path))
        except DatasetError as exc:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping invalid track: {exc}", stacklevel=2)
    return tracks


def _read_names(valid_tracks: str | os.PathLike | Iterable[str] | None) -> set[str]:
    if valid_tracks is None:
        return set(official_valid_tracks())
    if isinstance(valid_tracks, (str, os.PathLike)):
        path = Path(valid_tracks).expanduser()
        if not path.is_file():
            raise DatasetError(f"valid_tracks: list file {path} does not exist")
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    return set(valid_tracks)


def split_tracks(
    root: str | os.PathLike,
    split: str,
    include_valid_in_train: bool = False,
    valid_tracks: str | os.PathLike | Iterable[str] | None = None,
    layout: str = "auto",
    skip_invalid: bool = False,
) -> list[Track]:
    """The tracks of ``split`` (train / valid / test); see the module docstring for the rules.

    ``valid_tracks``: the validation names (a list, or a text file with one name a line) used when there is no
    ``root/valid`` folder; default the 14 official MUSDB names.
    """
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"split: {split!r} is not one of train, valid, test")
    root = Path(root).expanduser()
    if split == "test":
        tracks = find_tracks(root, "test", layout, skip_invalid)
    elif (root / "valid").is_dir():
        # a dataset with its own validation folder (e.g. the synthetic one): the folders are the split
        tracks = find_tracks(root, split, layout, skip_invalid)
        if split == "train" and include_valid_in_train:
            tracks = sorted(tracks + find_tracks(root, "valid", layout, skip_invalid), key=lambda t: t.name)
    else:
        names = _read_names(valid_tracks)
        everything = find_tracks(root, "train", layout, skip_invalid)
        if split == "valid":
            tracks = [t for t in everything if t.name in names]
        else:
            tracks = [t for t in everything if include_valid_in_train or t.name not in names]
    if not tracks:
        hint = ""
        if split == "valid":
            hint = " (no root/valid/ folder and no root/train track has a validation name)"
        elif split == "train" and not include_valid_in_train:
            hint = " (all train tracks are validation tracks; set include_valid_in_train to use them)"
        raise DatasetError(f"{root}: the {split} split is empty{hint}")
    return tracks


# ---------------------------------------------------------------------------------------------------------------
# dataset


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for every random choice of one item: a function of (seed, epoch, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class MUSDBDataset(Dataset):
    """MUSDB18(-HQ)-layout dataset with the original system's sampling (reference §4), minus its bugs.

    Args:
        root: dataset folder (see the module docstring for the layouts).
        split: ``"train"``, ``"valid"`` or ``"test"``; None = from ``subsets`` (the original configs' way:
            ``subsets="train"`` → the train split, which leaves out the validation tracks unless
            ``include_valid_in_train``).
        subsets: the original configs' folder name (``"train"``/``"test"`` or a one-element list); only read
            when ``split`` is None.
        seq_duration: item length in seconds; None or <= 0 = whole tracks (sequential mode only).
        samples_per_track: items per track per epoch in random mode.
        random: random chunks (training) instead of sequential ones; None = True for the train split.
        random_track_mix: in random mode, every stem comes from its own random track and offset.
        augment: per-stem CPU augmentations: True/False, a dict of :class:`~danna_sep.data.augment.StemAugment`
            arguments, or a callable ``f(stems, rng) -> stems``; None = on in random mode.
        seed: fixes every random choice (with the epoch and the item index).
        include_valid_in_train: put the validation tracks back into train (the original behaviour).
        valid_tracks: validation names (list or text file) when there is no ``root/valid``; default MUSDB's 14.
        layout: ``"auto"``, ``"wav"`` or ``"stem"``.
        skip_invalid: leave out invalid tracks with a warning instead of raising :class:`DatasetError`.

    Items: ``(mixture (2, samples), stems (4, 2, samples))`` float32, sources drums, bass, other, vocals.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        subsets: str | Sequence[str] | None = None,
        seq_duration: float | None = 6.0,
        samples_per_track: int = 64,
        random: bool | None = None,
        random_track_mix: bool = True,
        augment: bool | Mapping[str, Any] | Callable | None = None,
        seed: int = 0,
        include_valid_in_train: bool = False,
        valid_tracks: str | Sequence[str] | None = None,
        layout: str = "auto",
        skip_invalid: bool = False,
    ) -> None:
        self.split = _resolve_split(split, subsets)
        self.random = self.split == "train" if random is None else bool(random)
        self.segment = round(seq_duration * SAMPLE_RATE) if seq_duration and seq_duration > 0 else None
        if self.random and self.segment is None:
            raise ConfigError("seq_duration: random sampling needs a chunk length > 0")
        if samples_per_track < 1:
            raise ConfigError(f"samples_per_track: {samples_per_track} must be >= 1")
        if seed < 0:
            raise ConfigError(f"seed: {seed} must be >= 0")
        self.root = Path(root).expanduser()
        self.tracks = split_tracks(self.root, self.split, include_valid_in_train, valid_tracks, layout, skip_invalid)
        self.samples_per_track = samples_per_track
        self.random_track_mix = random_track_mix
        self.seed = seed
        self.augment = _build_augment(self.random if augment is None else augment)
        # chunk index → track: cumulative chunk counts (a track shorter than a chunk gives one zero-padded chunk)
        if self.segment is None:
            counts = [1] * len(self.tracks)
        else:
            counts = [max(1, t.frames // self.segment) for t in self.tracks]
        self._cum_chunks = np.cumsum(counts).tolist()
        # shared memory: set_epoch in the main process also reaches (persistent) DataLoader workers
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    # -- epoch -----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch``; call before creating the epoch's DataLoader iterator."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    # -- size and sampling ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.random:
            return len(self.tracks) * self.samples_per_track
        return self._cum_chunks[-1]

    def draw(self, index: int, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
        """The (track index, start sample) of each source of random item ``index`` (one per source)."""
        if rng is None:
            rng = item_rng(self.seed, self.epoch, index)
        seg = self._random_segment()

        def start_in(track: int) -> int:
            return int(rng.integers(0, max(self.tracks[track].frames - seg, 0) + 1))

        if self.random_track_mix:
            picks = [int(rng.integers(0, len(self.tracks))) for _ in SOURCES]
            return [(t, start_in(t)) for t in picks]
        track = index // self.samples_per_track
        start = start_in(track)
        return [(track, start)] * len(SOURCES)

    def _random_segment(self) -> int:
        """The chunk length in samples of random sampling (``__init__`` refuses random without one)."""
        if self.segment is None:
            raise ConfigError("seq_duration: random sampling needs a chunk length > 0")
        return self.segment

    def locate(self, index: int) -> tuple[int, int]:
        """(track index, start sample) of sequential item ``index``."""
        track = bisect.bisect_right(self._cum_chunks, index)
        chunk = index - (self._cum_chunks[track - 1] if track > 0 else 0)
        return track, chunk * (self.segment or 0)

    # -- items ------------------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = item_rng(self.seed, self.epoch, index)
        if self.random:
            segment = self._random_segment()
            picks = self.draw(index, rng)
            if len(set(picks)) == 1:  # one track, one offset: read its stems together (one open for .stem.mp4)
                track, start = picks[0]
                stems = self.tracks[track].read(SOURCES, start, segment)
            else:
                stems = np.empty((len(SOURCES), 2, segment), dtype=np.float32)
                for k, (src, (t, start)) in enumerate(zip(SOURCES, picks, strict=True)):
                    self.tracks[t].read((src,), start, segment, out=stems[k : k + 1])
            mixture = None
        else:
            track, start = self.locate(index)
            parts = self.tracks[track].read((MIXTURE, *SOURCES), start, self.segment)
            mixture, stems = parts[0], parts[1:]
        stems_t = torch.from_numpy(stems)
        if self.augment is not None:
            stems_t = self.augment(stems_t, rng)
            mixture = None  # the file's mixture no longer matches augmented stems
        mix_t = stems_t.sum(0) if mixture is None else torch.from_numpy(mixture)
        return mix_t, stems_t

    def __repr__(self) -> str:
        mode = "random" if self.random else "sequential"
        where = f"{str(self.root)!r}, split={self.split!r}"
        return f"MUSDBDataset({where}, tracks={len(self.tracks)}, items={len(self)}, {mode})"


def _resolve_split(split: str | None, subsets: str | Sequence[str] | None) -> str:
    if subsets is not None and not isinstance(subsets, str):
        subsets = list(subsets)
        if len(subsets) != 1:
            raise ConfigError(f"subsets: {subsets} must name one folder (train or test)")
        subsets = subsets[0]
    if subsets is not None and subsets not in ("train", "test"):
        raise ConfigError(f"subsets: {subsets!r} is not one of train, test")
    if split is None:
        return subsets or "train"
    if subsets is not None and (subsets == "test") != (split == "test"):
        raise ConfigError(f"split {split!r} does not come from subsets {subsets!r}")
    return split


def _build_augment(augment: bool | Mapping[str, Any] | Callable) -> Callable | None:
    if augment is True:
        return StemAugment()
    if augment is False:
        return None
    if isinstance(augment, Mapping):
        return StemAugment(**augment)
    if callable(augment):
        return augment
    raise ConfigError(f"augment: expected true/false, a dict of StemAugment arguments or a callable, got {augment!r}")
