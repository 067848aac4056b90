"""The track at the models' 44.1 kHz: readers over a tensor or a file, their shifted/padded views, resampling."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import SAMPLE_RATE, PathLike
from ..audio import SOUNDFILE_EXTENSIONS, AudioInfo, AudioWriter, audio_info, load_audio, read_frames, to_stereo
from ..errors import AudioError

_READ_BLOCK = 1 << 18  # frames per block when resampling a file to the temporary WAV


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
            out[:, lo - start : hi - start] = self.wav[:, lo:hi]
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
        x[..., -start - n : -start] = reader.read(1, n).flip(-1)
    if stop > length and length - start >= 0:  # position p ≥ length holds sample 2·(length − 1) − p
        n = min(stop - length, length - 1)
        x[..., length - start : length - start + n] = reader.read(length - 1 - n, n).flip(-1)
    return x


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
    by block into a temporary float WAV (deleted afterwards); FFmpeg formats are decoded whole. ``info``: the
    file's header if already read (:class:`~danna_sep.separate.files.FileJob`), so that it is read once.
    """

    def __init__(self, path: PathLike, info: AudioInfo | None = None):
        self.path = Path(path)
        self.info = info
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> tuple[TrackReader, int]:
        info = self.info or audio_info(self.path)
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
