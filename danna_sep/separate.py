"""Separation: stream a track through the models segment by segment, blend their stems, write them as they come.

Every model (and every random shift, with ``shifts > 1``) runs as a *stream* that turns the mixture into its four
stems and yields finished pieces in time order:

* spectral models (X-UMX, U-Net), segments of frames::

      samples → STFT of the segment's frames → |X| → model → masks ─ cross-fade into a frame timeline
      final frames (no later segment touches them) → Wiener EM per block of ``wiener_window`` frames
      → streaming iSTFT → final samples

* waveform models (Demucs), segments of samples (plus a right margin, since the original Demucs returns a little
  less than it gets)::

      samples → model → stems ─ cross-fade into a sample timeline → final samples

Segments start every ``segment·(1 − overlap)`` (for the U-Net on multiples of 64 frames, its pooling grid) and are
cross-faded with a trapezoid: weight 1 inside, linear ramps over the overlap. The STFT of a segment is computed from
the samples around it, so it equals the whole track's STFT exactly; Wiener blocks lie on the track's frame grid
(as :func:`danna_sep.wiener.wiener_windowed`). Hence a model whose output depends only on nearby input gives the
whole-track result, and every buffer is bounded by the segment and window sizes: memory does not grow with the
track's length. The blender sums ``w[model, source] · stem`` over the streams and hands pieces to the writers.

The track itself is read from disk in blocks (:func:`danna_sep.audio.read_frames`); files at another sample rate are
first resampled block by block into a temporary float WAV, and FFmpeg formats (m4a/mp4/aac) are decoded whole.
"""
from __future__ import annotations

import os
import queue
import random
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import SAMPLE_RATE, SOURCES, PathLike
from .audio import (SOUNDFILE_EXTENSIONS, AudioWriter, audio_info, load_audio, read_frames, resample,
                    to_stereo)
from .blend import FAST_BAG, ORIGINAL_BAG, Bag
from .checkpoints import MODEL_FILES, checkpoint_dir, find_model_files, model_search_order  # noqa: F401 — API
from .defaults import (MEMORY_LIMIT_GIB, NITER, OVERLAP, SHIFTS, SPECTRAL_SEGMENT_FRAMES,
                       WAVEFORM_SEGMENT_SECONDS, WIENER_WINDOW)
from .errors import AudioError, CheckpointError, ConfigError
from .export import LoadedModel, check_contract, load_model
from .runtime import resolve_device, trim_above  # noqa: F401 — resolve_device: part of this module's API


WAVEFORM_MARGIN = 4096  # extra samples fed after a waveform segment (the original Demucs returns ≤ ~2k fewer)
# waveform segments per call on CPU: Demucs's BiLSTM steps cost about the same for 3 rows as for 1, and it runs its
# convolutions item by item (3 segments of 10 s: 4.7 → 3.6 s, +175 MiB; 4 rows would cost twice as much per step)
WAVEFORM_BATCH = 3
MAX_SHIFT_SECONDS = 0.5  # random shifts are drawn in [0, 0.5 s), as Demucs does
# what danna-sep 1.0.2 did (``original=True``): 1024 zeros after the track, the U-Net on non-overlapping chunks of
# 2584 frames (≈ 60 s), Demucs fed [22050 zeros | track] and clamped to ±0.99
ORIGINAL_END_PAD = 1024
ORIGINAL_UNET_CHUNK = 2584
ORIGINAL_SHORT_CHUNK = 128  # a last chunk too short for the U-Net's poolings: zero-padded to this (its GPU path)
ORIGINAL_CLAMP = 0.99
_READ_BLOCK = 1 << 18  # frames per block when resampling a file to the temporary WAV


# ------------------------------------------------------------------------------------------------------- input


class TrackReader:
    """Random access to a track at the models' rate: ``read(start, frames) -> (channels, frames)`` float32.

    Positions outside ``[0, length)`` read as zeros. ``channels`` is 2 (the stereo policy of
    :func:`danna_sep.audio.to_stereo` is applied); ``input_channels`` is the source's own count.
    """

    length: int
    channels: int = 2
    input_channels: int = 2

    def read(self, start: int, frames: int) -> Tensor:
        raise NotImplementedError


class TensorReader(TrackReader):
    """A track already in memory: ``wav`` (channels, samples)."""

    def __init__(self, wav: Tensor):
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise ValueError(f"expected a waveform (channels, samples) with samples > 0, got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise AudioError("input contains NaN or infinite samples")
        self.input_channels = wav.shape[0]
        self.wav = to_stereo(wav.detach().to("cpu", torch.float32))
        self.length = self.wav.shape[-1]

    def read(self, start: int, frames: int) -> Tensor:
        out = torch.zeros(self.channels, frames)
        lo, hi = max(start, 0), min(start + frames, self.length)
        if hi > lo:
            out[:, lo - start: hi - start] = self.wav[:, lo:hi]
        return out


class FileReader(TrackReader):
    """A libsndfile file at the models' rate, read block by block (never decoded whole)."""

    def __init__(self, path: PathLike, length: int, input_channels: int):
        self.path = Path(path)
        self.length = length
        self.input_channels = input_channels

    def read(self, start: int, frames: int) -> Tensor:
        return read_frames(self.path, start, frames, stereo=True)


class _ShiftedReader(TrackReader):
    """``reader`` delayed by ``offset`` samples (zeros first): the random-shift trick."""

    def __init__(self, reader: TrackReader, offset: int):
        self.reader, self.offset = reader, offset
        self.length = reader.length + offset
        self.channels, self.input_channels = reader.channels, reader.input_channels

    def read(self, start: int, frames: int) -> Tensor:
        return self.reader.read(start - self.offset, frames)


def _download_missing(directory: Optional[PathLike], roles: Sequence[str], source: Optional[str],
                      notify: Callable[[str], None], quiet: bool = False) -> None:
    """Fetch (and import) the released file of every role that has no model in the folder. ``quiet``: no
    progress bars and no import reports (the one-line notice of each download stays)."""
    from .release.convert import import_released
    from .release.download import ensure
    from .release.registry import load_registry

    folder, _ = checkpoint_dir(directory)
    registry = load_registry()
    missing = [role for role in roles
               if not any((folder / n).is_file() for n in model_search_order(role))]
    entries = [registry.for_role_default(role) for role in missing]
    verified = ensure(entries, folder, allow_download=True, source=source, notify=notify, quiet=quiet)
    import_released(folder, [v.name for v in verified], notify=notify, quiet=quiet)


class _PaddedReader(TrackReader):
    """``reader`` followed by ``pad`` zeros (the original's 1024-sample end pad)."""

    def __init__(self, reader: TrackReader, pad: int):
        self.reader = reader
        self.length = reader.length + pad
        self.channels, self.input_channels = reader.channels, reader.input_channels

    def read(self, start: int, frames: int) -> Tensor:
        return self.reader.read(start, frames)  # every reader reads zeros past the track's end


def _resample_to_file(path: Path, rate: int, frames: int, dest: Path) -> int:
    """Resample ``path`` (libsndfile format, ``rate`` Hz) to a float WAV at the models' rate, block by block.

    Returns the number of frames written.
    """
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 2, dtype="float32", quality="HQ")
    with AudioWriter(dest, SAMPLE_RATE, 2, "FLOAT") as writer:
        for start in range(0, frames, _READ_BLOCK):
            block = read_frames(path, start, min(_READ_BLOCK, frames - start), stereo=True)
            last = start + _READ_BLOCK >= frames
            out = stream.resample_chunk(np.ascontiguousarray(block.numpy().T), last=last)
            if out.shape[0]:
                writer.write(out.T)
        return writer.frames_written


def _read_padded(reader: TrackReader, start: int, stop: int, reflect: bool) -> Tensor:
    """Samples ``[start, stop)`` of the track, reflect-padded at its ends as ``torch.stft(center=True)`` pads
    (``reflect=False``: zeros, the STFT's rule for very short inputs)."""
    x = reader.read(start, stop - start)
    if not reflect:
        return x
    length = reader.length
    if start < 0:  # position p < 0 holds sample −p
        n = min(-start, length - 1)
        x[..., -start - n: -start] = reader.read(1, n).flip(-1)
    if stop > length and length - start >= 0:  # position p ≥ length holds sample 2·(length − 1) − p
        n = min(stop - length, length - 1)
        x[..., length - start: length - start + n] = reader.read(length - 1 - n, n).flip(-1)
    return x


# --------------------------------------------------------------------------------------------- segments, OLA


def _equal_length_groups(segments: List[Tuple[int, int]], size: int) -> Iterator[List[Tuple[int, int]]]:
    """Consecutive ``segments`` in groups of up to ``size`` that have the same length (one model call each)."""
    group: List[Tuple[int, int]] = []
    for a, b in segments:
        if group and (len(group) == size or b - a != group[0][1] - group[0][0]):
            yield group
            group = []
        group.append((a, b))
    if group:
        yield group


def plan_segments(total: int, segment: int, stride: int, multiple: int = 1) -> List[Tuple[int, int]]:
    """``(start, stop)`` of overlapping segments covering ``[0, total)``.

    Segments start every ``stride`` (a multiple of ``multiple``); the last one starts on the last multiple of
    ``multiple`` at or before ``total − segment`` and runs to ``total`` (so it is never shorter than ``segment``,
    and at most ``multiple − 1`` longer).
    """
    if segment >= total:
        return [(0, total)]
    starts = list(range(0, total - segment, stride))
    last = (total - segment) // multiple * multiple
    if starts[-1] == last:
        starts.pop()
    starts.append(last)
    return [(a, a + segment if i + 1 < len(starts) else total) for i, a in enumerate(starts)]


def crossfade(length: int, ramp: int) -> Tensor:
    """Trapezoid weights ``(length,)``: linear ramps of ``ramp`` samples/frames at both ends, 1 in between."""
    i = torch.arange(length, dtype=torch.float32)
    if ramp <= 0:
        return torch.ones(length)
    return torch.minimum(torch.minimum((i + 1) / (ramp + 1), (length - i) / (ramp + 1)), torch.ones(()))


class _Timeline:
    """Weighted overlap-add along the last axis at absolute positions; :meth:`pop` hands out the finished prefix."""

    def __init__(self) -> None:
        self.start = 0
        self.values: Optional[Tensor] = None
        self.weight: Optional[Tensor] = None

    def add(self, start: int, values: Tensor, weight: Tensor) -> None:
        if self.values is None:
            self.values = values.new_zeros(values.shape[:-1] + (0,))
            self.weight = weight.new_zeros(0)
        n = values.shape[-1]
        grow = start + n - (self.start + self.values.shape[-1])
        if grow > 0:
            self.values = torch.cat([self.values, self.values.new_zeros(self.values.shape[:-1] + (grow,))], -1)
            self.weight = torch.cat([self.weight, self.weight.new_zeros(grow)])
        i = start - self.start
        assert i >= 0, "a segment reached back into output already handed out"
        self.values[..., i: i + n] += values * weight
        self.weight[i: i + n] += weight

    def pop(self, stop: int) -> Tensor:
        k = stop - self.start
        out = self.values[..., :k] / self.weight[:k]
        self.values, self.weight = self.values[..., k:].clone(), self.weight[k:].clone()
        self.start = stop
        return out


class _FrameStore:
    """The mixture's STFT frames between the Wiener filter's position and the last segment's end."""

    def __init__(self) -> None:
        self.start = 0
        self.frames: Optional[Tensor] = None

    def extend(self, start: int, frames: Tensor) -> None:
        end = self.start + (0 if self.frames is None else self.frames.shape[-1])
        new = frames[..., max(end - start, 0):]
        self.frames = new if self.frames is None else torch.cat([self.frames, new], -1)

    def pop(self, stop: int) -> Tensor:
        k = stop - self.start
        out, self.frames = self.frames[..., :k], self.frames[..., k:]
        self.start = stop
        return out


class StreamingISTFT:
    """Inverse of the centred STFT, fed frames in order, handing out samples as soon as they are final.

    Produces the same samples as ``torch.istft(..., center=True, length=length)`` on all frames at once:
    windowed inverse FFTs overlap-added and divided by the summed squared window.
    """

    def __init__(self, n_fft: int, hop_length: int, length: int, device: torch.device = torch.device("cpu")):
        self.n_fft, self.hop, self.length = n_fft, hop_length, length
        self.window = torch.hann_window(n_fft, device=device)
        self.pad = n_fft // 2  # padded position p is sample p − pad
        self.frames = 0  # frames received
        self.acc: Optional[Tensor] = None  # overlap-added samples from padded position `acc_start`
        self.env: Optional[Tensor] = None
        self.acc_start = self.pad
        self.emitted = 0  # samples handed out

    def _fold(self, cols: Tensor, frames: int) -> Tensor:
        span = (frames - 1) * self.hop + self.n_fft
        out = F.fold(cols, (1, span), (1, self.n_fft), stride=(1, self.hop))
        return out.reshape(cols.shape[0], span)

    def push(self, spec: Tensor) -> Tensor:
        """``spec`` complex ``(..., bins, n)`` (the next ``n`` frames) → the samples now final ``(..., k)``."""
        lead, n = spec.shape[:-2], spec.shape[-1]
        cols = torch.fft.irfft(spec, n=self.n_fft, dim=-2) * self.window[:, None]  # (..., n_fft, n)
        ola = self._fold(cols.reshape(-1, self.n_fft, n), n).reshape(*lead, -1)
        env = self._fold((self.window.square()[:, None].expand(self.n_fft, n))[None], n)[0]
        first = self.frames * self.hop  # padded position of ola[..., 0]
        if self.acc is None:
            self.acc = ola.new_zeros(*lead, 0)
            self.env = env.new_zeros(0)
        # extend the accumulator to the new span, then add (positions before acc_start are not needed)
        end = first + ola.shape[-1]
        grow = end - (self.acc_start + self.acc.shape[-1])
        if grow > 0:
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*lead, grow)], -1)
            self.env = torch.cat([self.env, self.env.new_zeros(grow)])
        skip = max(self.acc_start - first, 0)
        i = first + skip - self.acc_start
        self.acc[..., i: i + ola.shape[-1] - skip] += ola[..., skip:]
        self.env[i: i + ola.shape[-1] - skip] += env[skip:]
        self.frames += n
        return self._emit(self.frames * self.hop)  # positions before the next frame's start are complete

    def _emit(self, final: int) -> Tensor:
        stop = min(final, self.length + self.pad)
        k = min(max(stop - self.acc_start, 0), self.acc.shape[-1])
        out = self.acc[..., :k] / self.env[:k]
        self.acc, self.env = self.acc[..., k:], self.env[k:]
        self.acc_start += k
        self.emitted += k
        return out

    def finish(self) -> Tensor:
        """The remaining samples up to ``length`` (zeros past the last frame, as ``torch.istft``)."""
        out = self._emit(self.length + self.pad)
        missing = self.length - self.emitted
        if missing > 0:
            out = torch.cat([out, out.new_zeros(*out.shape[:-1], missing)], -1)
            self.emitted = self.length
        return out


# ------------------------------------------------------------------------------------------------ the streams


@dataclass
class _Work:
    """Progress of one track over all its streams (each stream reports a fraction of its segments)."""

    track: str
    duration: float
    streams: int
    callback: Optional[Callable[["Progress"], None]]
    done: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.done = [0.0] * self.streams

    def update(self, stream: int, fraction: float, model: str) -> None:
        self.done[stream] = fraction
        if self.callback is not None:
            self.callback(Progress(self.track, sum(self.done) / max(self.streams, 1), self.duration, model))


@dataclass(frozen=True)
class Progress:
    """What a progress callback gets: ``fraction`` of the track done (all models), its ``duration`` in seconds,
    and the ``model`` (role) that just finished a segment."""

    track: str
    fraction: float
    duration: float
    model: str


def _model_input(x: Tensor, channels: int) -> Tensor:
    # models are stereo by contract; a mono model (tiny configs) gets the mid channel
    return x.mean(0, keepdim=True) if channels == 1 else x


class Separator:
    """Separates music into drums, bass, other and vocals by blending several models.

    Args:
        models: role (``xumx``, ``unet``, ``demucs``) → :class:`~danna_sep.export.LoadedModel`.
        bag: the models × sources blend weights; every model of the bag must be in ``models``.
        segment: seconds per segment for every model; None = per model: 512 frames (≈ 11.9 s) for spectral
            models, 10 s for waveform models.
        overlap: fraction of a segment shared with the next one (cross-faded), in [0, 1).
        split: False runs each model on the whole track in one pass (the original system: memory grows with
            the track's length).
        niter: Wiener EM iterations for the spectral models (0 = plain masks).
        wiener_window: frames per independent Wiener block; None = the whole track (the original).
        shifts: average over this many random shifts of the input (in [0, 0.5 s)); 1 = no shift.
        seed: seeds the shifts, so results are reproducible.
        parallel: run each model (and shift) in its own thread, the blend taking their pieces as they come.
            On a CPU this uses the cores without OpenMP's barriers between them (far more robust on a busy
            machine); pair it with ``torch.set_num_threads(cores // streams)``, as the ``danna-sep`` command
            does. At most ``os.cpu_count()`` model calls run at once (more would not be faster, only hold
            more activations). Progress callbacks then come from those threads.
        memory_limit: GiB of resident memory above which the freed heap memory kept by
            :func:`danna_sep.runtime.keep_freed_memory` is given back to the system after a blended piece, so that
            the speed of reusing memory does not cost unbounded fragmentation on long songs (None: never; no
            effect unless ``keep_freed_memory`` was called, as the ``danna`` commands do).
        progress: called with a :class:`Progress` after every segment of every model.
        original: compute what danna-sep 1.0.2 computed (with the released models, its stems to within float
            rounding): every model on the whole track (the U-Net on non-overlapping 2584-frame chunks), one
            Wiener iteration over the whole song, no shifts, 1024 zeros after the track, Demucs fed
            ``[22050 zeros | track]`` and clamped to ±0.99. Overrides ``split``, ``niter``, ``wiener_window`` and
            ``shifts``. Memory grows with the track's length, as it did in the original.
    """

    samplerate = SAMPLE_RATE
    sources = SOURCES

    def __init__(self, models: Mapping[str, LoadedModel], bag: Bag = ORIGINAL_BAG, *, segment: Optional[float] = None,
                 overlap: float = OVERLAP, split: bool = True, niter: int = NITER,
                 wiener_window: Optional[int] = WIENER_WINDOW, shifts: int = SHIFTS, seed: int = 0,
                 parallel: bool = False, memory_limit: Optional[float] = MEMORY_LIMIT_GIB,
                 progress: Optional[Callable[[Progress], None]] = None, original: bool = False):
        missing = [m for m in bag.models if m not in models]
        if missing:
            raise ConfigError(f"the blend uses {missing} but no such model was given (have {sorted(models)})")
        if segment is not None and not segment > 0:
            raise ConfigError(f"segment must be > 0 seconds, got {segment}")
        if not 0 <= overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
        if niter < 0:
            raise ConfigError(f"niter must be >= 0, got {niter}")
        if wiener_window is not None and wiener_window < 1:
            raise ConfigError(f"wiener window must be >= 1 frame (or None for the whole track), got {wiener_window}")
        if shifts < 1:
            raise ConfigError(f"shifts must be >= 1, got {shifts}")
        if memory_limit is not None and not memory_limit > 0:
            raise ConfigError(f"memory limit must be > 0 GiB (or None), got {memory_limit}")
        for role, model in models.items():
            if model.info.sample_rate != SAMPLE_RATE:
                raise CheckpointError(f"{model.name}: runs at {model.info.sample_rate} Hz, danna-sep at {SAMPLE_RATE} Hz")
            if model.info.channels not in (1, 2):
                raise CheckpointError(f"{model.name}: takes {model.info.channels} channels; 1 or 2 are supported")
        if original:
            split, niter, wiener_window, shifts = False, 1, None, 1
        self.models = dict(models)
        self.bag = bag
        self.original = original
        self.segment, self.overlap, self.split = segment, overlap, split
        self.niter, self.wiener_window = niter, wiener_window
        self.shifts, self.seed = shifts, seed
        self.parallel = parallel
        self.memory_limit = memory_limit
        self.progress = progress
        self._gate = threading.BoundedSemaphore(max(1, os.cpu_count() or 1)) if parallel else None
        self._checked: set = set()

    # -------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_checkpoints(cls, directory: Optional[PathLike] = None, *, fast: bool = False,
                         bag: Union[Bag, PathLike, None] = None, device: str = "auto", download: bool = False,
                         source: Optional[str] = None, imported: bool = True,
                         notify: Callable[[str], None] = print, quiet: bool = False, **options) -> "Separator":
        """Load the models of ``bag`` (default: the original blend, or the fast one) from a checkpoint folder.

        ``directory``: the folder holding the models (:func:`model_search_order`: the imported released weights
        ``xumx_imported.pt``, … or the released files ``xumx_mwf.pth`` / ``xumx.onnx``, ``unet_attention.pth``,
        ``demucs_4_decoders.pth``, or your own exports under those names); default ``$DANNA_CHECKPOINTS``, else
        ``~/danna-sep-checkpoints``. ``download``: fetch missing released files first (and import them into our
        models), announcing each with ``notify`` (``quiet``: without progress bars), unless ``$DANNA_OFFLINE``
        is set; ``source``: a mirror URL or folder for that (:func:`danna_sep.release.download.fetch`). ``imported``: False runs the released
        TorchScript/ONNX files themselves even where their imports exist. ``device``: ``cpu``, ``cuda``, ``mps``
        or ``auto``. Other keyword arguments go to :class:`Separator`.
        """
        if bag is None:
            bag = FAST_BAG if fast else ORIGINAL_BAG
        elif not isinstance(bag, Bag):
            bag = Bag.load(bag)
        dev = resolve_device(device)
        try:
            files = find_model_files(directory, bag.models, imported=imported)
        except CheckpointError:
            if not download:
                raise
            _download_missing(directory, bag.models, source, notify, quiet)
            files = find_model_files(directory, bag.models, imported=imported)
        models = {role: load_model(path, role=role, device=dev) for role, path in files.items()}
        return cls(models, bag, **options)

    @classmethod
    def from_pretrained(cls, directory: Optional[PathLike] = None, *, fast: bool = False, device: str = "auto",
                        download: bool = True, **options) -> "Separator":
        """The released Danna-Sep models (MDX 2021), downloaded into the checkpoint folder on first use (about
        1 GB; ``download=False`` or ``$DANNA_OFFLINE=1`` forbid it) and run through danna-sep's own models.
        Same arguments as :meth:`from_checkpoints`."""
        return cls.from_checkpoints(directory, fast=fast, device=device, download=download, **options)

    def describe_models(self) -> List[str]:
        """One line per model of the blend: its role and the file (and format) it runs from."""
        names = {"xumx": "X-UMX", "unet": "U-Net", "demucs": "Demucs"}
        lines = []
        for role in self.bag.models:
            model = self.models[role]
            where = model.path.name if model.path else model.name
            kind = {"checkpoint": "danna-sep model", "torchscript": "TorchScript", "onnx": "ONNX"}.get(model.kind,
                                                                                                     model.kind)
            lines.append(f"{names.get(role, role)}: {where} ({kind}, {model.device.type})")
        return lines

    # ------------------------------------------------------------------------------------------------ public API

    def separate(self, wav: Tensor, sample_rate: int, *, output_rate: Optional[int] = None,
                 stems: Optional[Sequence[str]] = None, two_stems: Optional[str] = None,
                 progress: Optional[Callable[[Progress], None]] = None) -> Dict[str, Tensor]:
        """Separate an in-memory waveform ``(channels, samples)`` (or ``(samples,)``) at ``sample_rate``.

        Returns ``{stem: (channels, samples')}`` at ``output_rate`` (default 44100 Hz), float32 on the CPU; a mono
        input gives mono stems. ``stems`` / ``two_stems`` as :func:`stem_plan`; ``progress`` overrides the
        separator's callback for this call.
        """
        if wav.dim() == 1:
            wav = wav[None]
        wav = resample(wav.detach().to("cpu", torch.float32), sample_rate, SAMPLE_RATE)
        reader = TensorReader(wav)
        return self._collect(reader, "<tensor>", output_rate, stem_plan(stems, two_stems), progress)

    def separate_file(self, path: PathLike, *, output_rate: Optional[int] = None, keep_rate: bool = False,
                      stems: Optional[Sequence[str]] = None, two_stems: Optional[str] = None,
                      progress: Optional[Callable[[Progress], None]] = None) -> Dict[str, Tensor]:
        """Separate an audio file; returns ``{stem: (channels, samples)}`` as :meth:`separate`.

        ``keep_rate``: return stems at the file's sample rate instead of 44100 Hz.
        """
        with _open_track(path) as (reader, rate):
            out_rate = rate if keep_rate else output_rate
            return self._collect(reader, Path(path).name, out_rate, stem_plan(stems, two_stems), progress)

    def separate_to_files(self, path: PathLike, destinations: Mapping[str, PathLike], *, subtype: str = "PCM_16",
                          keep_rate: bool = False, overwrite: bool = False,
                          progress: Optional[Callable[[Progress], None]] = None) -> "FileResult":
        """Separate ``path`` and stream the stems into ``destinations`` (stem name → file), written atomically.

        Stem names are those of :func:`stem_plan` (the four sources, ``accompaniment`` / ``no_<source>``).
        ``subtype``: ``PCM_16``, ``PCM_24`` or ``FLOAT`` (wav), ``PCM_16`` / ``PCM_24`` (flac).
        Nothing is written under a destination's name unless the whole track succeeds.
        """
        plan = _plan_for(destinations)
        started = time.perf_counter()
        if not overwrite:
            for dest in destinations.values():
                if Path(dest).exists():
                    raise AudioError(f"{dest}: already exists (use --force to overwrite)")
        with _open_track(path) as (reader, rate):
            out_rate = rate if keep_rate else SAMPLE_RATE
            channels = _output_channels(reader)
            with ExitStack() as stack:
                writers = {name: stack.enter_context(AudioWriter(dest, out_rate, channels, subtype, overwrite=overwrite))
                           for name, dest in destinations.items()}
                for piece in self._pieces(reader, Path(path).name, out_rate, plan, progress):
                    for name, data in piece.items():
                        writers[name].write(data)
            # leaving the ExitStack committed every file (or removed all of them on an error)
            return FileResult(Path(path), {n: Path(d) for n, d in destinations.items()},
                              {n: w.clipped for n, w in writers.items()}, reader.length / SAMPLE_RATE,
                              time.perf_counter() - started)

    # ------------------------------------------------------------------------------------------------ internals

    def _collect(self, reader: TrackReader, name: str, out_rate: Optional[int], plan: Dict[str, Tuple[int, ...]],
                 progress: Optional[Callable[[Progress], None]]) -> Dict[str, Tensor]:
        parts: Dict[str, List[Tensor]] = {k: [] for k in plan}
        for piece in self._pieces(reader, name, out_rate or SAMPLE_RATE, plan, progress):
            for k, v in piece.items():
                parts[k].append(v)
        return {k: torch.cat(v, -1) for k, v in parts.items()}

    def _pieces(self, reader: TrackReader, name: str, out_rate: int, plan: Dict[str, Tuple[int, ...]],
                progress: Optional[Callable[[Progress], None]] = None) -> Iterator[Dict[str, Tensor]]:
        """Blended stems of ``reader`` as consecutive pieces ``{stem: (channels, n)}`` at ``out_rate``."""
        mono = _output_channels(reader) == 1
        needed = sorted({i for idx in plan.values() for i in idx})
        resampler = _StreamResampler(SAMPLE_RATE, out_rate, len(SOURCES) * (1 if mono else 2))
        for block in self.stream(reader, name, needed, progress):
            if mono:
                block = block.mean(1, keepdim=True)
            block = resampler(block)
            yield {k: block[list(idx)].sum(0) for k, idx in plan.items()}
        tail = resampler.flush(len(SOURCES), 1 if mono else 2)
        if tail.shape[-1]:
            yield {k: tail[list(idx)].sum(0) for k, idx in plan.items()}

    def stream(self, reader: TrackReader, name: str = "track", needed: Sequence[int] = range(len(SOURCES)),
               progress: Optional[Callable[[Progress], None]] = None) -> Iterator[Tensor]:
        """The blended sources ``(4, 2, n)`` of ``reader`` at 44.1 kHz, piece by piece in time order (all four
        sources; models whose weights are zero for every source in ``needed`` are skipped)."""
        progress = progress or self.progress
        weights = torch.as_tensor(self.bag.weights, dtype=torch.float32)  # (models, sources)
        rng = random.Random(self.seed)
        max_shift = int(MAX_SHIFT_SECONDS * SAMPLE_RATE)
        offsets = [0] if self.shifts == 1 else [rng.randrange(max_shift) for _ in range(self.shifts)]
        active = [(m, role) for m, role in enumerate(self.bag.models) if weights[m, list(needed)].abs().sum() > 0]
        work = _Work(name, reader.length / SAMPLE_RATE, len(active) * len(offsets), progress)
        if progress is not None:
            progress(Progress(name, 0.0, work.duration, ""))
        length = reader.length
        if self.original:
            reader = _PaddedReader(reader, ORIGINAL_END_PAD)
        streams = []
        try:
            for m, role in active:
                for offset in offsets:
                    it = self._model_stream(role, reader, offset, work, len(streams))
                    streams.append((_Background(it) if self.parallel else it, weights[m] / len(offsets)))
            limit = 0 if self.memory_limit is None else int(self.memory_limit * 2**30)
            for piece in _blend(streams, length, reader.channels):
                yield piece
                trim_above(limit)
        finally:
            for it, _ in streams:
                if isinstance(it, _Background):
                    it.close()

    def stream_count(self) -> int:
        """Model streams per track (models with a non-zero weight × shifts): the parallelism of ``parallel``."""
        return int((abs(self.bag.weights).sum(1) > 0).sum()) * self.shifts

    def _model_stream(self, role: str, reader: TrackReader, offset: int, work: _Work, index: int) -> Iterator[Tensor]:
        model = self.models[role]
        source = _ShiftedReader(reader, offset) if offset else reader
        report = lambda fraction: work.update(index, fraction, role)  # noqa: E731
        if model.info.domain == "spectral":
            it = self._spectral_stream(model, source, report, role)
        elif self.original:
            it = self._original_waveform_stream(model, source, report)
        else:
            it = self._waveform_stream(model, source, report)
        return _skip(it, offset) if offset else it

    def _segment_frames(self, model: LoadedModel, total: int) -> Tuple[int, int]:
        multiple = model.info.frame_multiple
        if not self.split:
            return total, total
        frames = SPECTRAL_SEGMENT_FRAMES if self.segment is None else \
            round(self.segment * SAMPLE_RATE / model.info.hop_length)
        frames = max(multiple, frames // multiple * multiple)
        stride = max(multiple, int(frames * (1 - self.overlap)) // multiple * multiple)
        return frames, stride

    def _run(self, model: LoadedModel, x: Tensor) -> Tensor:
        if self._gate is None:
            return model(x)
        with self._gate:
            return model(x)

    def _check(self, model: LoadedModel, out: Tensor, inp: Tensor) -> None:
        if id(model) not in self._checked:
            check_contract(out, inp, model.info, model.name)
            self._checked.add(id(model))

    def _spectral_stream(self, model: LoadedModel, reader: TrackReader, report: Callable[[float], None],
                         role: str = "") -> Iterator[Tensor]:
        from .wiener import wiener

        info, dev = model.info, model.device
        n_fft, hop = info.n_fft, info.hop_length
        total = 1 + reader.length // hop
        if self.original and role == "unet":  # the original's chunks, side by side
            segments = [(a, min(a + ORIGINAL_UNET_CHUNK, total)) for a in range(0, total, ORIGINAL_UNET_CHUNK)]
            ramp = 0
        else:
            seg, stride = self._segment_frames(model, total)
            segments = plan_segments(total, seg, stride, info.frame_multiple)
            ramp = max(seg - stride, 0)
        window = torch.hann_window(n_fft, device=dev)
        reflect = reader.length > n_fft // 2  # the STFT's rule (spectral.STFT): zeros for very short inputs
        wdtype = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
        block = total if self.wiener_window is None else self.wiener_window
        masks, mix = _Timeline(), _FrameStore()
        istft = StreamingISTFT(n_fft, hop, reader.length, dev)

        # Each step is a function so that its temporaries (spectrogram, masks, filtered frames: about 100 MB per
        # segment) are freed on return instead of living in this generator while the other models run.
        def analyse(a: int, b: int) -> None:
            x = _read_padded(reader, a * hop - n_fft // 2, (b - 1) * hop + n_fft // 2, reflect)
            x = _model_input(x, info.channels).to(dev)
            spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)  # (C, bins, b − a)
            mag = spec.abs()[None]
            # fewer frames than the model's poolings need (a legacy U-Net fails on them; only a track that short, or
            # the original's last chunk, gets one): zero-padded, the original to 128 frames as its GPU path did
            # (its CPU path crashed there)
            pad = max(ORIGINAL_SHORT_CHUNK, info.frame_multiple) if self.original else info.frame_multiple
            short = b - a < info.frame_multiple
            out = self._run(model, F.pad(mag, [0, pad - (b - a)]) if short else mag)
            out = out[..., : b - a]
            self._check(model, out, mag)
            masks.add(a, out[0].float(), crossfade(b - a, ramp).to(dev))
            mix.extend(a, spec)

        def synthesise(stop: int) -> Tensor:
            m, X = masks.pop(stop), mix.pop(stop)
            with torch.inference_mode():  # no autograd: lets the filter take its cache-blocked path
                Y = m * X if self.niter == 0 else wiener(m * X.abs(), X, self.niter, dtype=wdtype)
            return istft.push(Y).cpu()

        filtered = 0  # frames already through the Wiener filter
        for k, (a, b) in enumerate(segments):
            analyse(a, b)
            final = segments[k + 1][0] if k + 1 < len(segments) else total
            while filtered < final and (final - filtered >= block or final == total):
                stop = min(filtered + block, final)
                yield synthesise(stop)
                filtered = stop
            report((k + 1) / len(segments))
        yield istft.finish().cpu()

    def _original_waveform_stream(self, model: LoadedModel, reader: TrackReader,
                                  report: Callable[[float], None]) -> Iterator[Tensor]:
        """danna-sep 1.0.2's Demucs pass: the whole track after 22050 zeros, read back from there, clamped.

        Yields ``(sources, channels, length)``; samples past what the model returns stay zero, as in the original.
        """
        from .export import ORIGINAL_DEMUCS_LEAD as lead

        def analyse() -> Tensor:  # a function, as in _spectral_stream: temporaries die
            x = _model_input(reader.read(-lead, reader.length + lead), model.info.channels)[None]
            out = self._run(model, x)
            self._check(model, out, x)
            y = out.new_zeros(out.shape[1], out.shape[2], reader.length)
            k = max(min(reader.length, out.shape[-1] - lead), 0)
            y[..., :k] = out[0, ..., lead: lead + k]
            return y.clamp(-ORIGINAL_CLAMP, ORIGINAL_CLAMP).float().cpu()

        y = analyse()
        report(1.0)
        yield y

    def _waveform_stream(self, model: LoadedModel, reader: TrackReader,
                         report: Callable[[float], None]) -> Iterator[Tensor]:
        info, length = model.info, reader.length
        # every segment's input starts on a sample ≡ −placement (mod grid), up to grid − 1 samples before the segment
        grid, placement = info.grid, info.placement
        if info.fixed_length is not None:  # e.g. an ONNX Demucs: every call gets exactly this many samples
            seg = info.fixed_length - WAVEFORM_MARGIN - (grid - 1)
            if seg < 1:
                raise CheckpointError(f"{model.name}: its fixed input length {info.fixed_length} leaves no room "
                                      f"for the {WAVEFORM_MARGIN}-sample margin and its {grid}-sample grid")
            stride = max(1, int(seg * (1 - self.overlap)))
        elif self.split:
            seg = round((WAVEFORM_SEGMENT_SECONDS if self.segment is None else self.segment) * SAMPLE_RATE)
            stride = max(1, int(seg * (1 - self.overlap)))
        else:
            seg = stride = length
        segments = plan_segments(length, seg, stride)
        ramp = max(seg - stride, 0)
        timeline = _Timeline()
        # other models (an ONNX graph, the original release) would run the whole batch at once, with the whole
        # batch's activations; on GPUs batching is unmeasured
        per_call = WAVEFORM_BATCH if info.itemwise_batches and model.device.type == "cpu" else 1

        def analyse(group: List[Tuple[int, int]]) -> None:  # a function, as in _spectral_stream: temporaries die
            size = group[0][1] - group[0][0]  # every segment of a group has this length
            n = info.fixed_length or size + WAVEFORM_MARGIN + grid - 1
            leads = [(a + placement) % grid for a, _ in group]
            x = torch.stack([_model_input(reader.read(a - lead, n), info.channels) for (a, _), lead in zip(group, leads)])
            out = self._run(model, x)
            self._check(model, out, x)
            if out.shape[-1] < max(leads) + size:
                raise CheckpointError(f"{model.name}: returns {out.shape[-1]} samples for {n}, fewer than the "
                                      f"{max(leads) + size} needed (more than {WAVEFORM_MARGIN} samples short)")
            fade = crossfade(size, ramp)
            for j, ((a, _), lead) in enumerate(zip(group, leads)):
                timeline.add(a, out[j, ..., lead: lead + size].float().cpu(), fade)

        done = 0
        for group in _equal_length_groups(segments, per_call):
            analyse(group)
            done += len(group)
            report(done / len(segments))
            yield timeline.pop(segments[done][0] if done < len(segments) else length)


class _Background:
    """Iterate ``it`` in a daemon thread, handing its items over through a bounded queue (``ahead`` items).

    Exceptions reach the consumer; :meth:`close` stops the thread at its next hand-over.
    """

    def __init__(self, it: Iterator[Tensor], ahead: int = 2):
        self._queue: "queue.Queue[Tuple[str, object]]" = queue.Queue(ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(it,), daemon=True, name="danna-sep-model")
        self._thread.start()

    def _put(self, item: Tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[Tensor]) -> None:
        try:
            for piece in it:
                if not self._put(("piece", piece)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 — handed to the consumer, raised there
            self._put(("error", exc))

    def __iter__(self) -> "_Background":
        return self

    def __next__(self) -> Tensor:
        kind, value = self._queue.get()
        if kind == "piece":
            return value  # type: ignore[return-value]
        self._stop.set()
        if kind == "end":
            raise StopIteration
        raise value  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()


def _skip(it: Iterator[Tensor], n: int) -> Iterator[Tensor]:
    """Drop the first ``n`` samples of a stream of pieces."""
    for piece in it:
        if n >= piece.shape[-1]:
            n -= piece.shape[-1]
            continue
        yield piece[..., n:]
        n = 0


def _blend(streams: Sequence[Tuple[Iterator[Tensor], Tensor]], length: int, channels: int) -> Iterator[Tensor]:
    """Σ_streams weight[source] · stream, as pieces ``(sources, channels, n)``; pulls each stream only when its
    buffered piece is used up, so at most one piece per stream is held."""
    pending = [torch.zeros(len(SOURCES), channels, 0) for _ in streams]
    done = 0
    while done < length:
        for i, (it, _) in enumerate(streams):
            while pending[i].shape[-1] == 0:
                pending[i] = next(it)
        n = min(min(p.shape[-1] for p in pending), length - done)
        out = torch.zeros(len(SOURCES), channels, n)
        for i, (_, w) in enumerate(streams):
            out += w[:, None, None] * pending[i][..., :n]
            pending[i] = pending[i][..., n:]
        done += n
        yield out


class _StreamResampler:
    """soxr's streaming resampler over ``(sources, channels, n)`` pieces (a pass-through at equal rates)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int):
        self.active = in_rate != out_rate
        if self.active:
            import soxr

            self.stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")

    def __call__(self, block: Tensor) -> Tensor:
        if not self.active:
            return block
        flat = block.reshape(-1, block.shape[-1]).numpy().T
        out = self.stream.resample_chunk(np.ascontiguousarray(flat))
        return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*block.shape[:-1], -1)

    def flush(self, sources: int, channels: int) -> Tensor:
        if not self.active:
            return torch.zeros(sources, channels, 0)
        out = self.stream.resample_chunk(np.zeros((0, sources * channels), dtype=np.float32), last=True)
        return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(sources, channels, -1)


def _output_channels(reader: TrackReader) -> int:
    """Stems follow the input: mono in, mono out; everything else is stereo (more channels are downmixed)."""
    return 1 if reader.input_channels == 1 else 2


class _open_track:
    """Context manager: a :class:`TrackReader` at 44.1 kHz for ``path`` and the file's sample rate.

    libsndfile formats at 44.1 kHz are read block by block in place; at other rates they are first resampled block
    by block into a temporary float WAV (deleted afterwards); FFmpeg formats are decoded whole.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> Tuple[TrackReader, int]:
        info = audio_info(self.path)
        if self.path.suffix.lower() not in SOUNDFILE_EXTENSIONS:
            wav, rate = load_audio(self.path, SAMPLE_RATE)
            reader = TensorReader(wav)
            reader.input_channels = info.channels
            return reader, rate
        if info.sample_rate == SAMPLE_RATE:
            return FileReader(self.path, info.frames, info.channels), info.sample_rate
        self._tmp = tempfile.TemporaryDirectory(prefix="danna-sep-")
        dest = Path(self._tmp.name) / "input-44100.wav"
        frames = _resample_to_file(self.path, info.sample_rate, info.frames, dest)
        return FileReader(dest, frames, info.channels), info.sample_rate

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


# ------------------------------------------------------------------------------------------------- stems, files


def stem_plan(stems: Optional[Sequence[str]] = None, two_stems: Optional[str] = None) -> Dict[str, Tuple[int, ...]]:
    """Output stems → the sources summed into each.

    Default: the four sources. ``stems``: a subset of them. ``two_stems="vocals"``: ``vocals`` and
    ``accompaniment`` (the sum of the other three); for another source ``s``: ``s`` and ``no_s``.
    """
    if stems is not None and two_stems is not None:
        raise ConfigError("choose either --stems or --two-stems, not both")
    if two_stems is not None:
        if two_stems not in SOURCES:
            raise ConfigError(f"--two-stems: unknown source {two_stems!r}; choose one of {', '.join(SOURCES)}")
        j = SOURCES.index(two_stems)
        rest = "accompaniment" if two_stems == "vocals" else f"no_{two_stems}"
        return {two_stems: (j,), rest: tuple(i for i in range(len(SOURCES)) if i != j)}
    if stems is None:
        return {s: (i,) for i, s in enumerate(SOURCES)}
    unknown = [s for s in stems if s not in SOURCES]
    if unknown or not stems:
        raise ConfigError(f"--stems: unknown source(s) {unknown}; choose among {', '.join(SOURCES)}")
    return {s: (SOURCES.index(s),) for s in SOURCES if s in stems}


def _plan_for(destinations: Mapping[str, PathLike]) -> Dict[str, Tuple[int, ...]]:
    plan: Dict[str, Tuple[int, ...]] = {}
    for name in destinations:
        if name in SOURCES:
            plan[name] = (SOURCES.index(name),)
        elif name == "accompaniment":
            plan[name] = tuple(i for i, s in enumerate(SOURCES) if s != "vocals")
        elif name.startswith("no_") and name[3:] in SOURCES:
            plan[name] = tuple(i for i, s in enumerate(SOURCES) if s != name[3:])
        else:
            raise ConfigError(f"unknown stem {name!r}")
    return plan


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Separator.separate_to_files` did: the files written, samples clipped per stem (integer
    formats), the track's duration and the wall time, both in seconds."""

    input: Path
    outputs: Dict[str, Path]
    clipped: Dict[str, int]
    duration: float
    seconds: float
