"""Separation: stream a track through the models segment by segment, blend their stems, write them as they come.

Every model (and every random shift, with ``shifts > 1``) runs as a *stream* (:mod:`.streams`) that turns the
mixture into its four stems and yields finished pieces in time order:

* spectral models (X-UMX, U-Net), segments of frames::

      samples → STFT of the segment's frames → |X| → model → masks ─ cross-fade into a frame timeline
      final frames (no later segment touches them) → Wiener EM per block of ``wiener_window`` frames
      → streaming iSTFT → final samples

* waveform models (Demucs), segments of samples (plus a right margin, since the original Demucs returns a little
  less than it gets)::

      samples → model → stems ─ cross-fade into a sample timeline → final samples

Segments start every ``segment·(1 − overlap)`` (for the U-Net on multiples of 64 frames, its pooling grid) and are
cross-faded with a trapezoid: weight 1 inside, linear ramps over the overlap (:mod:`.timeline`). The STFT of a
segment is computed from the samples around it, so it equals the whole track's STFT exactly; Wiener blocks lie on
the track's frame grid (as :func:`danna_sep.wiener.wiener_windowed`). Hence a model whose output depends only on
nearby input gives the whole-track result, and every buffer is bounded by the segment and window sizes: memory does
not grow with the track's length. The :class:`Separator` sums ``w[model, source] · stem`` over the streams and hands
pieces to the writers, stems summed as :func:`stem_plan` says (:mod:`.stems`).

The track itself is read from disk in blocks (:mod:`.tracks`, :func:`danna_sep.audio.read_frames`); files at another
sample rate are first resampled block by block into a temporary float WAV, and FFmpeg formats (m4a/mp4/aac) are
decoded whole. :mod:`.files` checks a run's outputs and reads each input's header once, before it runs.

Tuning constants live in the module that reads them (monkeypatch them there): ``streams.ORIGINAL_UNET_CHUNK``, …
"""

from ..checkpoints import MODEL_FILES, checkpoint_dir, find_model_files, model_search_order
from ..runtime import resolve_device
from .files import FileJob, FileResult, find_inputs, prepare_file, prepare_files, track_name
from .separator import BAG_FILE, MAX_CHANNELS, MAX_SHIFT_SECONDS, NAMED_BAGS, ORIGINAL_END_PAD, Progress, Separator
from .stems import StemPlan, plan_for, stem_plan, stem_sources
from .streams import (
    ORIGINAL_CLAMP,
    ORIGINAL_SHORT_CHUNK,
    ORIGINAL_UNET_CHUNK,
    WAVEFORM_BATCH,
    WAVEFORM_MARGIN,
    ModelCalls,
    StreamOptions,
    model_stream,
)
from .timeline import StreamingISTFT, _equal_length_groups, crossfade, plan_segments  # noqa: F401 — private: tests
from .tracks import FileReader, TensorReader, TrackReader, _read_padded  # noqa: F401 — private: tests

__all__ = [
    "BAG_FILE",
    "MAX_CHANNELS",
    "MAX_SHIFT_SECONDS",
    "MODEL_FILES",
    "NAMED_BAGS",
    "ORIGINAL_CLAMP",
    "ORIGINAL_END_PAD",
    "ORIGINAL_SHORT_CHUNK",
    "ORIGINAL_UNET_CHUNK",
    "WAVEFORM_BATCH",
    "WAVEFORM_MARGIN",
    "FileJob",
    "FileReader",
    "FileResult",
    "ModelCalls",
    "Progress",
    "Separator",
    "StemPlan",
    "StreamOptions",
    "StreamingISTFT",
    "TensorReader",
    "TrackReader",
    "checkpoint_dir",
    "crossfade",
    "find_inputs",
    "find_model_files",
    "model_search_order",
    "model_stream",
    "plan_for",
    "plan_segments",
    "prepare_file",
    "prepare_files",
    "resolve_device",
    "stem_plan",
    "stem_sources",
    "track_name",
]
