"""Uploads: streamed to disk under a size cap, then recognised by their content (never by the client's name).

::

    request body ─ chunks → folder/upload (stop at the cap) → sniff: libsndfile / mp4 'ftyp' / ADTS sync
                 → folder/input.<ext the decoders expect> → audio_info (the header decodes) → a job

The name the client sends is display text only; what is stored is always ``upload`` then ``input.<ext>``, inside
a folder named by a random id.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from ..audio import FFMPEG_EXTENSIONS, SOUNDFILE_EXTENSIONS, AudioInfo, audio_info
from ..errors import AudioError, DannaError

# libsndfile's format names → the extension that sends audio.py to libsndfile (which reads content, not names)
_SOUNDFILE_FORMATS = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}
SUPPORTED = "WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, M4A/MP4 (AAC, ALAC) or raw AAC"


class UploadError(DannaError):
    """An upload that cannot become a job; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def too_large(limit: int) -> str:
    return f"the file is larger than this server's limit of {limit / 2**20:.3g} MB"


async def receive(chunks: AsyncIterator[bytes], path: Path, limit: int) -> int:
    """Write ``chunks`` to ``path`` and return the byte count; :class:`UploadError` (413) as soon as it would pass
    ``limit``, (400) if it is empty. The partial file is left for the caller to remove."""
    size = 0
    with open(path, "wb") as f:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise UploadError(too_large(limit), 413)
            f.write(chunk)
    if size == 0:
        raise UploadError("the file is empty (0 bytes)", 400)
    return size


def sniff(path: Path) -> str:
    """The extension under which :mod:`danna_sep.audio` decodes ``path``, from the file's content.

    Raises:
        UploadError (415): not a format we decode.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] == b"ftyp":  # ISO base media (mp4, m4a): FFmpeg
        return ".m4a"
    import soundfile as sf

    try:
        info = sf.info(os.fspath(path))
    except Exception:  # libsndfile does not recognise it (its errors vary by version)
        info = None
    if info is not None:
        return _SOUNDFILE_FORMATS.get(info.format, ".wav")  # another libsndfile format: it reads content anyway
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # ADTS sync word, layer 0: raw AAC
        return ".aac"
    raise UploadError(f"this is not an audio file we can decode (supported: {SUPPORTED})", 415)


def recognise(upload: Path, name: str) -> tuple[Path, AudioInfo]:
    """Rename ``upload`` to ``input.<ext>`` by its content and read its header. → (the new path, its header).

    Raises:
        UploadError (415): not a decodable audio file; the message names the file as ``name`` (the client's).
    """
    ext = sniff(upload)
    assert ext in SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
    path = upload.with_name(f"input{ext}")
    upload.replace(path)
    try:
        info = audio_info(path)
    except AudioError as exc:
        raise UploadError(str(exc).replace(str(path), name), 415) from None
    if info.frames <= 0 or info.sample_rate <= 0:
        raise UploadError(f"{name}: contains no audio", 415)
    return path, info
