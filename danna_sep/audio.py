"""Audio files in and out: decode, resample, fix the channel count, and write atomically.

Two back-ends, chosen by the file extension:

* libsndfile (``soundfile``): ``.wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff``. Supports chunked reads
  (:func:`read_frames`) without decoding the whole file.
* FFmpeg (PyAV, libraries bundled in its wheel): ``.m4a .mp4 .aac``, including the multi-stream ``.stem.mp4``
  of MUSDB18 (five AAC streams: mixture, drums, bass, other, vocals). Always decoded whole.

Waveforms are ``torch.float32`` tensors of shape ``(channels, samples)`` (or ``(streams, channels, samples)``
when every stream of a file is read), values nominally in [-1, 1].

Channel policy (``stereo=True``, the default everywhere): mono is duplicated to two channels, stereo is kept,
and more channels are downmixed by :func:`to_stereo` (rule in its docstring). ``stereo=False`` keeps the file's
channel count, e.g. so that a mono input gives mono stems.

Every problem a user can cause (missing, empty, corrupt, truncated or unsupported file, NaN/inf samples,
bad stream index, unwritable destination) raises :class:`~danna_sep.errors.AudioError` whose message starts
with the file name; errors of libsndfile and FFmpeg are wrapped, never passed through.

Limits: a truncated WAV, FLAC, MP3 (with a length header) or mp4 is detected, but Ogg files carry no total
length, so an Ogg cut at a page boundary decodes as a shorter, valid file. AAC decodes include the encoder's
end padding (up to 1024 samples) as ``ffmpeg`` does; raw ADTS ``.aac`` also keeps its start delay (the
format cannot signal it), while mp4/m4a edit lists remove it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from . import PathLike
from .errors import AudioError

SOUNDFILE_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
"""Read (and, except .wave, written) through libsndfile."""

FFMPEG_EXTENSIONS = (".m4a", ".mp4", ".aac")
"""Read through PyAV/FFmpeg (``.stem.mp4`` ends in ``.mp4``)."""

_WRITE_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
}
_LOSSY_SUBTYPE = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}  # a PCM_* request on a lossy format means "its codec"
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only subtypes that can hold |x| > 1

_WRITE_BLOCK = 1 << 16  # frames per block written: bounds the temporary copies made for clipping/transposing

_SQRT1_2 = 0.7071067811865476
# Downmix gains (left, right) per channel name (FFmpeg/WAVE names). LFE is dropped, as in ITU-R BS.775.
_DOWNMIX_GAINS = {
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FC": (_SQRT1_2, _SQRT1_2),
    "LFE": (0.0, 0.0),
    "LFE2": (0.0, 0.0),
    "BL": (_SQRT1_2, 0.0),
    "BR": (0.0, _SQRT1_2),
    "SL": (_SQRT1_2, 0.0),
    "SR": (0.0, _SQRT1_2),
    "BC": (0.5, 0.5),
    "FLC": (1.0, 0.0),
    "FRC": (0.0, 1.0),
    "WL": (1.0, 0.0),
    "WR": (0.0, 1.0),
}
# Layouts assumed for files that do not name their channels (WAV/FLAC through libsndfile). Only 5.1 and 7.1,
# where the WAVE, SMPTE and FFmpeg orders agree; other counts use the even/odd rule of `to_stereo`.
_DEFAULT_LAYOUTS = {
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}


class DiskFullError(AudioError):
    """The disk (or the user's quota) filled up while writing ``path``; ``free``: bytes left there."""

    def __init__(self, path: PathLike, free: int | None):
        self.path, self.free = Path(path), free
        left = f" ({free / 1e6:.0f} MB free)" if free is not None else ""
        super().__init__(f"{os.fspath(path)}: no space left on device{left}")


class ClippingWarning(UserWarning):
    """Samples beyond ±1 were clipped while writing an integer (or lossy) format."""


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`audio_info` knows about a file without decoding it.

    For FFmpeg formats, ``sample_rate``/``channels``/``frames`` describe the first audio stream and ``frames`` is
    the length the container declares; AAC decoding may give up to one codec frame (1024 samples) more,
    because AAC pads the last frame and the decoder returns the padding (as ``ffmpeg`` does).
    """

    sample_rate: int
    channels: int
    frames: int
    streams: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


# ----------------------------------------------------------------------------------------------- public API


def load_audio(
    path: PathLike, sample_rate: int | None = 44100, stream: int | None = 0, *, stereo: bool = True
) -> tuple[torch.Tensor, int]:
    """Decode a whole audio file.

    Args:
        path: a file with one of :data:`SOUNDFILE_EXTENSIONS` or :data:`FFMPEG_EXTENSIONS`.
        sample_rate: rate of the result; resampled with soxr (HQ) only when the file's rate differs.
            ``None`` keeps the file's rate.
        stream: index among the file's audio streams (a ``.stem.mp4`` has 5: mixture, drums, bass, other,
            vocals); ``None`` reads all of them.
        stereo: apply the channel policy of :func:`to_stereo` (mono → duplicated, >2 → downmixed);
            ``False`` keeps the file's channels.

    Returns:
        ``(wav, original_rate)``: ``wav`` float32 of shape ``(channels, samples)``, or
        ``(streams, channels, samples)`` when ``stream`` is None (shorter streams are zero-padded to the
        longest); ``original_rate`` is the file's (first stream's) sample rate.

    Raises:
        AudioError: missing/empty/corrupt/truncated/unsupported file, no audio, NaN/inf samples, bad stream.
    """
    backend = _check_readable(path)
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive or None, got {sample_rate}")
    if backend == "soundfile":
        if stream not in (0, None):
            raise _error(path, f"stream {stream} does not exist (the file has 1 audio stream: 0)")
        with _open_soundfile(path) as f:
            data = _read_soundfile(path, f)
            decoded, rates, layouts = [data], [f.samplerate], [None]
    else:
        decoded, rates, layouts = _decode_ffmpeg(path, stream)

    original = rates[0]
    target = original if sample_rate is None else sample_rate
    waves = []
    for data, rate, layout in zip(decoded, rates, layouts, strict=True):
        _check_finite(path, data)
        if stereo and data.shape[0] > 2:
            data = _downmix(data, layout)  # before resampling: fewer channels to resample
        data = _resample_np(data, rate, target)
        if stereo and data.shape[0] == 1:
            data = np.repeat(data, 2, axis=0)
        waves.append(data)

    if stream is not None:
        return torch.from_numpy(waves[0]), original
    if len({w.shape[0] for w in waves}) > 1:
        raise _error(
            path,
            "streams have different channel counts "
            f"({[w.shape[0] for w in waves]}); load them one at a time or with stereo=True",
        )
    out = np.zeros((len(waves), waves[0].shape[0], max(w.shape[1] for w in waves)), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, :, : w.shape[1]] = w
    return torch.from_numpy(out), original


def audio_info(path: PathLike) -> AudioInfo:
    """Sample rate, channel count, length and number of audio streams, from the file's header only.

    Raises:
        AudioError: as :func:`load_audio` (a file declaring no audio frames counts as zero-length audio).
    """
    if _check_readable(path) == "soundfile":
        with _open_soundfile(path) as f:
            return AudioInfo(f.samplerate, f.channels, f.frames, 1)
    with _open_ffmpeg(path) as container:
        streams = _audio_streams(path, container)
        first = streams[0]
        frames = _declared_frames(container, first)
        if frames is None:
            raise _error(path, "the container does not declare its length; use load_audio to decode it")
        if frames == 0:
            raise _error(path, "contains no audio (0 samples)")
        return AudioInfo(first.sample_rate, first.channels, frames, len(streams))


def read_frames(path: PathLike, start: int, frames: int, *, stereo: bool = True) -> torch.Tensor:
    """Read ``frames`` samples from ``start`` without decoding the rest of the file (no resampling).

    Positions outside the file (``start < 0`` or past the end) read as zeros, so fixed-size chunks can be
    cut anywhere. Only libsndfile formats (:data:`SOUNDFILE_EXTENSIONS`) can be read in chunks.

    Args:
        start: first frame (may be negative).
        frames: number of frames to return (≥ 0).
        stereo: channel policy as in :func:`load_audio`.

    Returns:
        float32 tensor ``(channels, frames)``.
    """
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    if _check_readable(path) != "soundfile":
        raise _error(
            path,
            f"chunked reads need a libsndfile format ({', '.join(SOUNDFILE_EXTENSIONS)}); use load_audio for this file",
        )
    with _open_soundfile(path) as f:
        out = np.zeros((frames, f.channels), dtype=np.float32)
        begin, end = max(start, 0), min(start + frames, f.frames)
        if end > begin:
            f.seek(begin)
            try:
                f.read(end - begin, dtype="float32", always_2d=True, out=out[begin - start : end - start])
            except sf.SoundFileError as e:
                raise _error(path, f"corrupt or truncated data (libsndfile: {_sf_message(e)})") from e
    data = np.ascontiguousarray(out.T)
    _check_finite(path, data)
    return torch.from_numpy(_to_stereo_np(data, None) if stereo else data)


def save_audio(
    path: PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str = "PCM_16",
    format: str | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write ``wav`` atomically: a temporary file in the same folder, fsynced, then renamed onto ``path``.

    A failure or interrupt (including Ctrl-C) removes the temporary file, so ``path`` either keeps its old
    content or gets the complete new one, never half a file. Missing parent folders are created.

    Args:
        wav: ``(channels, samples)`` or ``(samples,)`` (mono), float.
        subtype: ``PCM_16``, ``PCM_24``, ``FLOAT`` (wav) / ``PCM_16``, ``PCM_24`` (flac), or any libsndfile
            subtype valid for the format. For lossy formats (``.ogg``, ``.mp3``) a ``PCM_*`` subtype means the
            format's codec (Vorbis, MPEG layer III).
        format: libsndfile format name (``"WAV"``, ``"FLAC"``, ...); default from the extension.
        overwrite: ``False`` raises AudioError if ``path`` exists (checked again atomically at the rename).

    Values beyond ±1 cannot be stored by integer (or lossy) subtypes: they are clipped to ±1 and a
    :class:`ClippingWarning` says how many were. ``FLOAT`` stores them unchanged.

    Raises:
        AudioError: NaN/inf samples, bad format/subtype, destination is a folder or exists (overwrite=False),
            or the write fails (disk full, permissions).
    """
    data = _as_numpy(wav)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise ValueError(f"wav must be (channels, samples) or (samples,), got shape {tuple(data.shape)}")
    with AudioWriter(path, sample_rate, data.shape[0], subtype, format, overwrite=overwrite) as writer:
        writer.write(data)


class AudioWriter:
    """Append ``(channels, frames)`` chunks to an audio file that appears under its name only when complete.

    Use it as a context manager: leaving the block normally commits (fsync + rename), leaving it with an
    exception (or Ctrl-C) deletes the temporary file. Made for separating long songs chunk by chunk::

        with AudioWriter("out/vocals.wav", 44100, channels=2, subtype="PCM_24") as w:
            for chunk in chunks:
                w.write(chunk)

    Arguments as :func:`save_audio`. ``frames_written`` and ``clipped`` (samples clipped so far) are public.
    A process killed outright (SIGKILL, power loss) can leave the hidden ``.<name>.<random>.part`` file behind,
    never a partial file under the final name.
    """

    def __init__(
        self,
        path: PathLike,
        sample_rate: int,
        channels: int,
        subtype: str = "PCM_16",
        format: str | None = None,
        *,
        overwrite: bool = True,
    ):
        self.path = Path(path)
        self.frames_written = 0
        self.clipped = 0
        self._overwrite = overwrite
        self._file: sf.SoundFile | None = None
        self._tmp: Path | None = None
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, got {sample_rate}, {channels}")
        fmt, self.subtype = _resolve_format(self.path, subtype, format)
        self._clip = self.subtype not in _FLOAT_SUBTYPES
        self.channels = channels
        if self.path.is_dir():
            raise _error(self.path, "is a folder, cannot write a file there")
        if not overwrite and self.path.exists():
            raise _error(self.path, "already exists (not overwriting)")
        with self._aborting():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._reserve_temp()
            self._file = sf.SoundFile(self._tmp, "w", sample_rate, channels, self.subtype, format=fmt)

    @contextlib.contextmanager
    def _aborting(self) -> Iterator[None]:
        """Any failure inside removes the temporary file; I/O failures become one AudioError naming the file."""
        try:
            yield
        except (sf.SoundFileError, OSError) as e:
            error = _write_error(self.path, e)  # errno first: the clean-up's calls would overwrite it
            self.abort()
            raise error from e
        except BaseException:
            self.abort()
            raise

    def _reserve_temp(self) -> Path:
        # O_EXCL: never reuse a name another writer holds; mode 0o666 lets the umask decide the final
        # permissions, as for any newly created file (mkstemp would force 0o600 onto the renamed file).
        while True:
            tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return tmp
            except FileExistsError:
                continue

    def write(self, chunk: torch.Tensor | np.ndarray) -> None:
        """Append ``chunk`` of shape ``(channels, frames)`` (float)."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        data = _as_numpy(chunk)
        if data.ndim != 2 or data.shape[0] != self.channels:
            raise ValueError(f"chunk must be ({self.channels}, frames), got shape {tuple(data.shape)}")
        if not np.isfinite(data).all():
            raise _error(self.path, "refusing to write NaN or infinite samples")
        try:
            for s in range(0, data.shape[1], _WRITE_BLOCK):
                block = np.ascontiguousarray(data[:, s : s + _WRITE_BLOCK].T, dtype=np.float32)
                # clip ourselves: lossy encoders (and libsndfile builds before 1.1) would not, and we count
                if self._clip:
                    over = np.abs(block) > 1.0
                    n = int(np.count_nonzero(over))
                    if n:
                        self.clipped += n
                        np.clip(block, -1.0, 1.0, out=block)
                self._file.write(block)
                self.frames_written += block.shape[0]
        except (sf.SoundFileError, OSError) as e:
            raise _write_error(self.path, e) from e

    def close(self) -> None:
        """Finish the file and move it onto its final name (no-op if already closed)."""
        if self._file is None:
            return
        assert self._tmp is not None, "an open writer has a temporary file"
        with self._aborting():
            self._file.close()
            self._file = None
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the data reaches the disk before the rename makes it visible
            finally:
                os.close(fd)
            self._commit()
        if self.clipped:
            total = self.frames_written * self.channels
            warnings.warn(
                f"{self.path}: clipped {self.clipped} of {total} samples "
                f"({100 * self.clipped / max(total, 1):.3g}%) to [-1, 1] for {self.subtype}; "
                "use subtype FLOAT or lower the level to keep them",
                ClippingWarning,
                stacklevel=3,
            )

    def _commit(self) -> None:
        tmp, self._tmp = self._tmp, None
        assert tmp is not None, "commit once, from close"
        if self._overwrite:
            os.replace(tmp, self.path)
            return
        try:
            os.link(tmp, self.path)  # atomic "create only if absent"
        except FileExistsError:
            os.unlink(tmp)
            raise _error(self.path, "already exists (not overwriting)") from None
        except OSError:  # filesystem without hard links: best effort
            if self.path.exists():
                os.unlink(tmp)
                raise _error(self.path, "already exists (not overwriting)") from None
            os.replace(tmp, self.path)
            return
        os.unlink(tmp)

    def abort(self) -> None:
        """Drop everything written; the final path is left untouched."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # never commit a file nobody closed: it might be incomplete
        if getattr(self, "_tmp", None) is not None:
            with contextlib.suppress(Exception):
                self.abort()


def to_stereo(wav: torch.Tensor, layout: Sequence[str] | None = None) -> torch.Tensor:
    """Apply the channel policy: ``(channels, samples)`` → ``(2, samples)`` (same device and dtype).

    * 1 channel: duplicated. 2 channels: unchanged.
    * Named layouts (FFmpeg channel names, e.g. from an m4a; or by count for unnamed files: 6 channels =
      5.1 ``FL FR FC LFE BL BR``, 8 channels = 7.1 ``FL FR FC LFE BL BR SL SR``): the ITU-R BS.775 downmix
      ``L = FL + 0.707·FC + 0.707·(BL|SL)``, ``R = FR + 0.707·FC + 0.707·(BR|SR)``, LFE dropped; then both
      rows are divided by the larger row sum of gains (when above 1), like FFmpeg's default rematrixing,
      so the downmix never exceeds the input's peak. For 5.1: ``L = (FL + 0.707 FC + 0.707 BL) / 2.414``.
    * Other counts, or names outside that table: ``L`` = mean of channels 0, 2, 4, …,
      ``R`` = mean of channels 1, 3, 5, …
    """
    if wav.shape[0] == 1:
        return wav.expand(2, *wav.shape[1:]).clone()
    if wav.shape[0] == 2:
        return wav
    matrix = torch.from_numpy(_downmix_matrix(wav.shape[0], layout)).to(wav.device, wav.dtype)
    return torch.einsum("oc,c...->o...", matrix, wav)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``(..., samples)`` with soxr (HQ); returns ``wav`` itself when the rates match.

    Runs on the CPU through numpy (not differentiable); the result is float32 on ``wav``'s device.
    """
    if orig_rate == new_rate:
        return wav
    flat = wav.detach().cpu().to(torch.float32).reshape(-1, wav.shape[-1]).numpy()
    out = _resample_np(flat, orig_rate, new_rate)
    return torch.from_numpy(out).reshape(*wav.shape[:-1], out.shape[-1]).to(wav.device)


# ----------------------------------------------------------------------------------------------- internals


def _error(path: PathLike, cause: str) -> AudioError:
    return AudioError(f"{os.fspath(path)}: {cause}")


def _check_readable(path: PathLike) -> str:
    """Validate ``path`` before any decoder sees it; return the back-end ("soundfile" or "ffmpeg")."""
    p = Path(path)
    if p.is_dir():
        raise _error(path, "is a folder, not an audio file")
    if not p.exists():
        raise _error(path, "file not found")
    suffix = p.suffix.lower()
    if suffix in SOUNDFILE_EXTENSIONS:
        backend = "soundfile"
    elif suffix in FFMPEG_EXTENSIONS:
        backend = "ffmpeg"
    else:
        raise _error(
            path,
            f"unsupported file type '{suffix or p.name}' (supported: "
            f"{', '.join(SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS)})",
        )
    try:
        size = p.stat().st_size
    except OSError as e:
        raise _error(path, f"cannot read: {e.strerror}") from e
    if size == 0:
        raise _error(path, "file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise _error(path, "cannot read: permission denied")
    return backend


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_SF_ERR_SYSTEM = 2  # libsndfile's "System error.": the OS refused, and errno says why


def _os_errno(e: BaseException) -> int | None:
    """The OS error behind ``e``: an OSError's own, or for libsndfile's "System error." the errno its C call
    left (cffi keeps it per thread; libsndfile's message drops it)."""
    if isinstance(e, OSError):
        return e.errno
    if getattr(e, "code", None) == _SF_ERR_SYSTEM:
        ffi = getattr(sf, "_ffi", None)
        return getattr(ffi, "errno", None) or None
    return None


def _write_error(path: Path, e: BaseException) -> AudioError:
    """A failed write as one error naming the file: :class:`DiskFullError` for a full disk or quota (errno
    ENOSPC/EDQUOT, or a system error with under 1 MB left), else the OS's or libsndfile's reason."""
    code = _os_errno(e)
    free = _free_bytes(path.parent)
    if code in _DISK_FULL or (code is None and free is not None and free < 1_000_000):
        return DiskFullError(path, free)
    return _error(path, f"cannot write: {os.strerror(code) if code else _sf_message(e)}")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _sf_message(e: BaseException) -> str:
    # LibsndfileError carries libsndfile's own text; its str() repeats the path we already print
    return getattr(e, "error_string", None) or getattr(e, "strerror", None) or str(e)


# libsndfile logs "data : <declared> (should be <present>)" when a WAV's data chunk is cut short
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _open_soundfile(path: PathLike) -> sf.SoundFile:
    try:
        f = sf.SoundFile(path)
    except sf.SoundFileError as e:
        raise _error(
            path,
            f"cannot decode, corrupt or not a {Path(path).suffix.lstrip('.').upper()} file "
            f"(libsndfile: {_sf_message(e)})",
        ) from e
    try:
        if f.frames == 0:
            raise _error(path, "contains no audio (0 samples)")
        short = _WAV_SHORT_DATA.search(f.extra_info) if f.format in ("WAV", "WAVEX") else None
        # sizes near 2**32 are placeholders left by writers that cannot seek (ffmpeg/sox to a pipe)
        if short and int(short.group(2)) < int(short.group(1)) < 0x7FFF0000:
            declared = int(short.group(1)) // (f.channels * max(_bytes_per_sample(f.subtype), 1))
            raise _error(path, f"truncated: the header declares {declared} frames, the file holds {f.frames}")
    except BaseException:
        f.close()
        raise
    return f


def _bytes_per_sample(subtype: str) -> int:
    return {
        "PCM_U8": 1,
        "PCM_S8": 1,
        "PCM_16": 2,
        "PCM_24": 3,
        "PCM_32": 4,
        "FLOAT": 4,
        "DOUBLE": 8,
        "ULAW": 1,
        "ALAW": 1,
    }.get(subtype, 0)


def _read_soundfile(path: PathLike, f: sf.SoundFile) -> np.ndarray:
    """Decode ``f`` whole → float32 ``(channels, samples)``; a short read means truncated data."""
    declared = f.frames
    try:
        data = f.read(dtype="float32", always_2d=True)
    except sf.SoundFileError as e:
        raise _error(path, f"corrupt or truncated data (libsndfile: {_sf_message(e)})") from e
    # lossy headers (mp3 without a Xing tag) only estimate the length: allow a small shortfall there
    slack = 0 if f.format in ("WAV", "WAVEX", "FLAC", "AIFF", "RF64", "W64") else int(0.02 * declared) + 2304
    if data.shape[0] == 0:
        raise _error(path, "contains no audio (0 samples)")
    if data.shape[0] + slack < declared:
        raise _error(path, f"truncated: the header declares {declared} frames, only {data.shape[0]} decode")
    return np.ascontiguousarray(data.T)


def _open_ffmpeg(path: PathLike):
    import av  # imported on demand: most runs only touch wav/flac

    try:
        return av.open(os.fspath(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise _error(path, f"cannot decode, corrupt, truncated or not a media file (FFmpeg: {_av_message(e)})") from e


def _av_message(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


def _audio_streams(path: PathLike, container) -> list:
    streams = list(container.streams.audio)
    if not streams:
        raise _error(path, "has no audio stream")
    return streams


def _declared_frames(container, stream) -> int | None:
    if stream.duration is not None and stream.time_base:
        return round(stream.duration * stream.time_base * stream.sample_rate)
    if container.duration:
        return round(container.duration * stream.sample_rate / 1_000_000)  # AV_TIME_BASE is µs
    return None


def _decode_ffmpeg(path: PathLike, stream: int | None):
    """Decode one or all audio streams in one pass over the file.

    Returns ``(data, rates, layouts)``: per stream a float32 ``(channels, samples)`` array, its sample rate
    and its channel names.
    """
    import av

    with _open_ffmpeg(path) as container:
        streams = _audio_streams(path, container)
        if stream is not None:
            if not 0 <= stream < len(streams):
                raise _error(
                    path,
                    f"stream {stream} does not exist (the file has {len(streams)} audio "
                    f"stream{'s' if len(streams) > 1 else ''}: 0..{len(streams) - 1})",
                )
            streams = [streams[stream]]
        # decode to planar float32 whatever the codec's native sample format
        resamplers = {s.index: av.AudioResampler(format="fltp") for s in streams}
        chunks: dict[int, list[np.ndarray]] = {s.index: [] for s in streams}
        rates: dict[int, int] = {}
        layouts: dict[int, tuple[str, ...]] = {}
        try:
            for packet in container.demux(streams):
                idx = packet.stream.index
                for frame in packet.decode():
                    for out in resamplers[idx].resample(frame):
                        chunks[idx].append(out.to_ndarray())
                        rates.setdefault(idx, out.sample_rate)
                        layouts.setdefault(idx, tuple(ch.name for ch in out.layout.channels))
            for idx, res in resamplers.items():
                for out in res.resample(None):
                    chunks[idx].append(out.to_ndarray())
        except av.FFmpegError as e:
            raise _error(path, f"corrupt or truncated data (FFmpeg: {_av_message(e)})") from e
        data = []
        for s in streams:
            if not chunks[s.index]:
                raise _error(path, "contains no audio (0 samples)")
            x = np.concatenate(chunks[s.index], axis=1)
            declared = _declared_frames(container, s) if "mp4" in container.format.name else None
            # mp4 durations are exact up to the movie timescale's rounding; a big shortfall is a cut file
            if declared and x.shape[1] < 0.99 * declared - 2048:
                raise _error(path, f"truncated: the container declares {declared} frames, only {x.shape[1]} decode")
            data.append(np.ascontiguousarray(x, dtype=np.float32))
        return data, [rates[s.index] for s in streams], [layouts[s.index] for s in streams]


def _check_finite(path: PathLike, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        raise _error(path, "contains NaN or infinite samples")


def _downmix(data: np.ndarray, layout: Sequence[str] | None) -> np.ndarray:
    """float32 ``(channels > 2, samples)`` → ``(2, samples)``; rule in :func:`to_stereo`."""
    return _downmix_matrix(data.shape[0], layout).astype(np.float32) @ data


def _downmix_matrix(channels: int, layout: Sequence[str] | None) -> np.ndarray:
    """Gains ``(2, channels)`` of the downmix described in :func:`to_stereo`."""
    names = tuple(layout) if layout is not None and len(layout) == channels else _DEFAULT_LAYOUTS.get(channels)
    if names is not None and all(n in _DOWNMIX_GAINS for n in names):
        matrix = np.array([_DOWNMIX_GAINS[n] for n in names], dtype=np.float64).T  # (2, channels)
        matrix /= max(1.0, matrix.sum(axis=1).max())
    else:
        matrix = np.zeros((2, channels))
        matrix[0, 0::2] = 1.0 / len(range(0, channels, 2))
        matrix[1, 1::2] = 1.0 / len(range(1, channels, 2))
    return matrix


def _to_stereo_np(data: np.ndarray, layout: Sequence[str] | None) -> np.ndarray:
    if data.shape[0] == 1:
        return np.repeat(data, 2, axis=0)
    if data.shape[0] == 2:
        return data
    return _downmix(data, layout)


def _resample_np(data: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """float32 ``(channels, samples)`` at ``orig_rate`` → ``new_rate`` (soxr HQ)."""
    if orig_rate == new_rate:
        return data
    # soxr wants (frames, channels)
    out = soxr.resample(data.T, orig_rate, new_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _as_numpy(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu()
        if wav.dtype not in (torch.float32, torch.float64):
            wav = wav.to(torch.float32)
        return wav.numpy()
    return np.asarray(wav)


def _resolve_format(path: Path, subtype: str, format: str | None) -> tuple[str, str]:
    if format is None:
        format = _WRITE_FORMATS.get(path.suffix.lower())
        if format is None:
            raise _error(
                path,
                f"cannot tell the format from '{path.suffix or path.name}' (use one of "
                f"{', '.join(_WRITE_FORMATS)} or pass format=)",
            )
    format, subtype = format.upper(), subtype.upper()
    if format == "OGG" and path.suffix.lower() == ".opus" and subtype.startswith("PCM"):
        subtype = "OPUS"
    elif format in _LOSSY_SUBTYPE and subtype.startswith("PCM"):
        subtype = _LOSSY_SUBTYPE[format]
    if format not in sf.available_formats():
        raise _error(path, f"unknown format {format!r}")
    if not sf.check_format(format, subtype):
        raise _error(
            path, f"subtype {subtype} is not valid for {format} (valid: {', '.join(sf.available_subtypes(format))})"
        )
    return format, subtype
