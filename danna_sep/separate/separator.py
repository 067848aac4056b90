"""The Separator: loads the models, runs their streams (and shifts) over a track and blends their stems."""

from __future__ import annotations

import numbers
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from .. import SAMPLE_RATE, SOURCES, PathLike
from ..audio import AudioWriter, resample, to_stereo
from ..blend import FAST_BAG, ORIGINAL_BAG, Bag
from ..checkpoints import checkpoint_dir, find_model_files, model_search_order
from ..defaults import MEMORY_LIMIT_GIB, NITER, OVERLAP, SHIFTS, WIENER_WINDOW
from ..errors import CheckpointError, ConfigError
from ..export import LoadedModel, load_model
from ..inference import check_precision
from ..runtime import resolve_device, trim_above
from .files import FileJob, FileResult, prepare_file
from .stems import StemPlan, stem_plan
from .streams import ModelCalls, StreamOptions, model_stream
from .tracks import (
    TensorReader,
    TrackReader,
    _open_track,
    _output_channels,
    _PaddedReader,
    _ShiftedReader,
    _StreamResampler,
)

MAX_SHIFT_SECONDS = 0.5  # random shifts are drawn in [0, 0.5 s), as Demucs does
ORIGINAL_END_PAD = 1024  # what danna-sep 1.0.2 did (``original=True``): 1024 zeros after the track
MAX_CHANNELS = 8  # 7.1: more "channels" than that is taken for a (samples, channels) array and refused
PCM_SCALE = {torch.int16: 2.0**15, torch.int32: 2.0**31}  # integer samples → float, as soundfile reads them
BAG_FILE = "bag.json"  # a checkpoint folder's own blend (`danna fit-blend`, the demo): the default when present
NAMED_BAGS = {"original": ORIGINAL_BAG, "fast": FAST_BAG}  # `--bag NAME`, ``bag="NAME"``


@dataclass
class _Work:
    """Progress of one track over all its streams (each stream reports a fraction of its segments)."""

    track: str
    duration: float
    streams: int
    callback: Callable[[Progress], None] | None
    done: list[float] = field(default_factory=list)

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
            machine); pair it with :meth:`share_cores` (``torch.set_num_threads(cores // streams)``), as the
            ``danna-sep`` command does. At most ``os.cpu_count()`` model calls run at once (more would not be
            faster, only hold more activations). Progress callbacks then come from those threads.
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
        precision: what the models compute in (:data:`danna_sep.inference.PRECISIONS`): ``fp32`` (exact) or
            ``bf16`` (lossy, faster where the CPU multiplies bfloat16 natively: on CPU X-UMX and the U-Net,
            :data:`danna_sep.inference.BF16_ROLES`).
    """

    samplerate = SAMPLE_RATE
    sources = SOURCES

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        bag: Bag = ORIGINAL_BAG,
        *,
        segment: float | None = None,
        overlap: float = OVERLAP,
        split: bool = True,
        niter: int = NITER,
        wiener_window: int | None = WIENER_WINDOW,
        shifts: int = SHIFTS,
        seed: int = 0,
        parallel: bool = False,
        memory_limit: float | None = MEMORY_LIMIT_GIB,
        progress: Callable[[Progress], None] | None = None,
        original: bool = False,
        precision: str = "fp32",
    ):
        check_precision(precision)
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
        for _role, model in models.items():
            if model.info.sample_rate != SAMPLE_RATE:
                raise CheckpointError(
                    f"{model.name}: runs at {model.info.sample_rate} Hz, danna-sep at {SAMPLE_RATE} Hz"
                )
            if model.info.channels not in (1, 2):
                raise CheckpointError(f"{model.name}: takes {model.info.channels} channels; 1 or 2 are supported")
        if original:
            split, niter, wiener_window, shifts = False, 1, None, 1
        self.models = {role: model.with_precision(precision, role) for role, model in models.items()}
        self.precision = precision
        self.bag = bag
        self.original = original
        self.segment, self.overlap, self.split = segment, overlap, split
        self.niter, self.wiener_window = niter, wiener_window
        self.shifts, self.seed = shifts, seed
        self.parallel = parallel
        self.memory_limit = memory_limit
        self.progress = progress
        self._calls = ModelCalls(parallel)

    # -------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_checkpoints(
        cls,
        directory: PathLike | None = None,
        *,
        fast: bool = False,
        bag: Bag | PathLike | None = None,
        device: str = "auto",
        download: bool = False,
        source: str | None = None,
        imported: bool = True,
        notify: Callable[[str], None] = print,
        quiet: bool = False,
        **options: Any,
    ) -> Separator:
        """Load the models of the blend from a checkpoint folder.

        ``directory``: the folder holding the models (:func:`model_search_order`: the imported released weights
        ``xumx_imported.pt``, … or the released files ``xumx_mwf.pth`` / ``xumx.onnx``, ``unet_attention.pth``,
        ``demucs_4_decoders.pth``, or your own exports under those names); default ``$DANNA_CHECKPOINTS``, else
        ``~/danna-sep-checkpoints``. ``download``: fetch missing released files first (and import them into our
        models), announcing each with ``notify`` (``quiet``: without progress bars), unless ``$DANNA_OFFLINE``
        is set; ``source``: a mirror URL or folder for that (:func:`danna_sep.release.download.fetch`).
        ``imported``: False runs the released TorchScript/ONNX files themselves even where their imports exist.
        ``device``: ``cpu``, ``cuda``, ``mps`` or ``auto``. Other keyword arguments go to :class:`Separator`.

        ``bag``: a :class:`Bag`, a bag file, or ``"original"`` / ``"fast"`` (the original's weights, with or
        without X-UMX; a file of that name is given as ``./original``). Without one: the folder's own
        :data:`BAG_FILE` (``bag.json``, as ``danna fit-blend --out`` and the demo write it) when there is one,
        announced with ``notify`` unless ``quiet``; else the original blend. ``fast`` and ``original=True``
        always mean the original's weights.
        """
        chosen = _choose_bag(directory, bag, fast, bool(options.get("original")), notify, quiet)
        dev = resolve_device(device)
        try:
            files = find_model_files(directory, chosen.models, imported=imported)
        except CheckpointError:
            if not download:
                raise
            _download_missing(directory, chosen.models, source, notify, quiet)
            files = find_model_files(directory, chosen.models, imported=imported)
        models = {role: load_model(path, role=role, device=dev) for role, path in files.items()}
        return cls(models, chosen, **options)

    @classmethod
    def from_pretrained(
        cls,
        directory: PathLike | None = None,
        *,
        fast: bool = False,
        device: str = "auto",
        download: bool = True,
        **options: Any,
    ) -> Separator:
        """The released Danna-Sep models (MDX 2021), run through danna-sep's own models: what ``danna-sep``
        runs.

        Found in the checkpoint folder (``directory``, else ``$DANNA_CHECKPOINTS``, else
        ``~/danna-sep-checkpoints``), or on first use downloaded there (about 1 GB, one line each through
        ``notify``), verified and imported, as ``danna download`` does; ``download=False`` or
        ``$DANNA_OFFLINE=1`` forbid the download (a :class:`~danna_sep.errors.DannaError` then says what to
        fetch and how). The folder's ``bag.json`` is the blend when there is one (:meth:`from_checkpoints`).
        Other keyword arguments as :meth:`from_checkpoints` (``bag``, ``source``, ``notify``, ``quiet``,
        ``imported``) and :class:`Separator` (``shifts``, ``original``, …).
        """
        return cls.from_checkpoints(directory, fast=fast, device=device, download=download, **options)

    def describe_models(self) -> list[str]:
        """One line per model of the blend: its role and the file (and format) it runs from."""
        names = {"xumx": "X-UMX", "unet": "U-Net", "demucs": "Demucs"}
        lines = []
        for role in self.bag.models:
            model = self.models[role]
            where = model.path.name if model.path else model.name
            kind = {"checkpoint": "danna-sep model", "torchscript": "TorchScript", "onnx": "ONNX"}.get(
                model.kind, model.kind
            )
            lines.append(f"{names.get(role, role)}: {where} ({kind}, {model.device.type})")
        return lines

    # ------------------------------------------------------------------------------------------------ public API

    @overload
    def separate(
        self,
        wav: Tensor,
        sample_rate: int,
        *,
        keep_rate: bool = ...,
        output_rate: int | None = ...,
        stems: Sequence[str] | None = ...,
        two_stems: str | None = ...,
        progress: Callable[[Progress], None] | None = ...,
    ) -> dict[str, Tensor]: ...

    @overload
    def separate(
        self,
        wav: np.ndarray,
        sample_rate: int,
        *,
        keep_rate: bool = ...,
        output_rate: int | None = ...,
        stems: Sequence[str] | None = ...,
        two_stems: str | None = ...,
        progress: Callable[[Progress], None] | None = ...,
    ) -> dict[str, np.ndarray]: ...

    def separate(
        self,
        wav: Tensor | np.ndarray,
        sample_rate: int,
        *,
        keep_rate: bool = False,
        output_rate: int | None = None,
        stems: Sequence[str] | None = None,
        two_stems: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> dict[str, Tensor] | dict[str, np.ndarray]:
        """Separate one track held in memory, as ``danna-sep`` separates a file.

        Args:
            wav: ``(channels, samples)``, or ``(samples,)`` for mono: a :class:`torch.Tensor` or a
                :class:`numpy.ndarray`, on any device. Floats (float16, bfloat16, float32, float64) are taken as
                they are (full scale ±1), int16 and int32 as PCM (divided by 2¹⁵ or 2³¹, as soundfile reads
                them); other dtypes are refused. 1 to :data:`MAX_CHANNELS` channels: mono is duplicated for the
                models and gives mono stems; more than two are downmixed to stereo
                (:func:`danna_sep.audio.to_stereo`). Any other shape raises :class:`ValueError`: a
                ``(samples, channels)`` array (``soundfile.read``'s layout) must be transposed first, and a
                batch separated one track per call.
            sample_rate: the rate of ``wav`` in Hz; other rates than 44100 are resampled to the models' rate with
                soxr (HQ), as ``danna-sep`` resamples files.
            keep_rate: stems at ``sample_rate`` (``danna-sep --keep-rate``); default 44100 Hz
                (:attr:`samplerate`), as ``danna-sep``. ``output_rate``: another rate for the stems.
            stems, two_stems: which stems, as :func:`stem_plan` (``--stems``, ``--two-stems``).
            progress: overrides the separator's callback for this call.

        Returns:
            ``{stem: (channels, samples')}`` (``(samples',)`` for a 1-D input), float32 whatever the input's
            dtype, not clipped (a stem may exceed ±1). Of the input's type: NumPy arrays for an array, tensors on
            the input's device for a tensor (the models run on the separator's device, the ``device`` of
            :meth:`from_checkpoints`). No gradient flows back to ``wav``.
        """
        if keep_rate and output_rate is not None:
            raise ValueError("separate: give keep_rate=True or output_rate, not both")
        rate = _sample_rate(sample_rate)
        x = _waveform(wav)
        channels = x.shape[0]
        x = resample(to_stereo(x), rate, SAMPLE_RATE)  # the order of the files' path: stereo, then 44.1 kHz
        reader = TensorReader(x)
        reader.input_channels = channels
        out_rate = rate if keep_rate else output_rate
        out = self._collect(reader, "<tensor>", out_rate, stem_plan(stems, two_stems), progress)
        if wav.ndim == 1:
            out = {k: v[0] for k, v in out.items()}
        if isinstance(wav, np.ndarray):
            return {k: v.numpy() for k, v in out.items()}
        return {k: v.to(wav.device) for k, v in out.items()}

    def separate_file(
        self,
        path: PathLike,
        *,
        output_rate: int | None = None,
        keep_rate: bool = False,
        stems: Sequence[str] | None = None,
        two_stems: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> dict[str, Tensor]:
        """Separate an audio file; returns ``{stem: (channels, samples)}``, float32 tensors on the CPU (mono for a
        mono file, else stereo), as ``danna-sep`` writes them.

        ``keep_rate``: return stems at the file's sample rate instead of 44100 Hz.
        """
        with _open_track(path) as (reader, rate):
            out_rate = rate if keep_rate else output_rate
            return self._collect(reader, Path(path).name, out_rate, stem_plan(stems, two_stems), progress)

    def separate_to_files(
        self,
        path: PathLike,
        destinations: Mapping[str, PathLike],
        *,
        subtype: str = "PCM_16",
        keep_rate: bool = False,
        overwrite: bool = False,
        progress: Callable[[Progress], None] | None = None,
    ) -> FileResult:
        """Separate ``path`` and stream the stems into ``destinations`` (stem name → file), written atomically.

        Stem names are those of :func:`stem_plan` (the four sources, ``accompaniment`` / ``no_<source>``).
        ``subtype``: ``PCM_16``, ``PCM_24`` or ``FLOAT`` (wav), ``PCM_16`` / ``PCM_24`` (flac).
        Nothing is written under a destination's name unless the whole track succeeds.
        """
        return self.separate_job(
            prepare_file(path, destinations, overwrite), subtype=subtype, keep_rate=keep_rate, progress=progress
        )

    def separate_job(
        self,
        job: FileJob,
        *,
        subtype: str = "PCM_16",
        keep_rate: bool = False,
        progress: Callable[[Progress], None] | None = None,
    ) -> FileResult:
        """:meth:`separate_to_files` for a job already checked and probed (:func:`~danna_sep.separate.prepare_file`,
        :func:`~danna_sep.separate.prepare_files`)."""
        started = time.perf_counter()
        with _open_track(job.input, job.info) as (reader, rate):
            out_rate = rate if keep_rate else SAMPLE_RATE
            channels = _output_channels(reader)
            with ExitStack() as stack:
                writers = {
                    name: stack.enter_context(AudioWriter(dest, out_rate, channels, subtype, overwrite=job.overwrite))
                    for name, dest in job.outputs.items()
                }
                for piece in self._pieces(reader, job.input.name, out_rate, job.plan, progress):
                    for name, data in piece.items():
                        writers[name].write(data)
            # leaving the ExitStack committed every file (or removed all of them on an error)
            return FileResult(
                job.input,
                dict(job.outputs),
                {n: w.clipped for n, w in writers.items()},
                reader.length / SAMPLE_RATE,
                time.perf_counter() - started,
            )

    def share_cores(self, files: int = 1) -> None:
        """For CPU models: give each thread that runs models at once (every stream with ``parallel``, times
        ``files`` separated side by side) its share of torch's threads, instead of stacking OpenMP teams on the
        cores."""
        threads = (self.stream_count() if self.parallel else 1) * files
        torch.set_num_threads(max(1, torch.get_num_threads() // threads))

    # ------------------------------------------------------------------------------------------------ internals

    def _collect(
        self,
        reader: TrackReader,
        name: str,
        out_rate: int | None,
        plan: StemPlan,
        progress: Callable[[Progress], None] | None,
    ) -> dict[str, Tensor]:
        parts: dict[str, list[Tensor]] = {k: [] for k in plan}
        for piece in self._pieces(reader, name, out_rate or SAMPLE_RATE, plan, progress):
            for k, v in piece.items():
                parts[k].append(v)
        return {k: torch.cat(v, -1) for k, v in parts.items()}

    def _pieces(
        self,
        reader: TrackReader,
        name: str,
        out_rate: int,
        plan: StemPlan,
        progress: Callable[[Progress], None] | None = None,
    ) -> Iterator[dict[str, Tensor]]:
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

    def stream(
        self,
        reader: TrackReader,
        name: str = "track",
        needed: Sequence[int] = range(len(SOURCES)),
        progress: Callable[[Progress], None] | None = None,
    ) -> Iterator[Tensor]:
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
        options = self._stream_options()
        streams: list[tuple[Iterator[Tensor], Tensor]] = []
        try:
            for m, role in active:
                for offset in offsets:
                    it = self._model_stream(role, reader, offset, work, len(streams), options)
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

    def _stream_options(self) -> StreamOptions:
        return StreamOptions(self.segment, self.overlap, self.split, self.niter, self.wiener_window, self.original)

    def _model_stream(
        self, role: str, reader: TrackReader, offset: int, work: _Work, index: int, options: StreamOptions
    ) -> Iterator[Tensor]:
        source = _ShiftedReader(reader, offset) if offset else reader

        def report(fraction: float) -> None:
            work.update(index, fraction, role)

        it = model_stream(role, self.models[role], source, report, self._calls, options)
        return _skip(it, offset) if offset else it


class _Background:
    """Iterate ``it`` in a daemon thread, handing its items over through a bounded queue (``ahead`` items).

    Exceptions reach the consumer; :meth:`close` stops the thread at its next hand-over.
    """

    def __init__(self, it: Iterator[Tensor], ahead: int = 2):
        # a piece, the exception that ended the stream, or None at its end
        self._queue: queue.Queue[Tensor | BaseException | None] = queue.Queue(ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(it,), daemon=True, name="danna-sep-model")
        self._thread.start()

    def _put(self, item: Tensor | BaseException | None) -> bool:
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
                if not self._put(piece):
                    return
            self._put(None)
        except BaseException as exc:
            self._put(exc)

    def __iter__(self) -> _Background:
        return self

    def __next__(self) -> Tensor:
        item = self._queue.get()
        if isinstance(item, Tensor):
            return item
        self._stop.set()
        if item is None:
            raise StopIteration
        raise item

    def close(self) -> None:
        """Stop the thread and wait for it (its current model call at most): a daemon thread still inside torch
        when the interpreter exits (after Ctrl-C or SIGTERM) aborts the process ("terminate called …")."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _skip(it: Iterator[Tensor], n: int) -> Iterator[Tensor]:
    """Drop the first ``n`` samples of a stream of pieces."""
    for piece in it:
        if n >= piece.shape[-1]:
            n -= piece.shape[-1]
            continue
        yield piece[..., n:]
        n = 0


def _blend(streams: Sequence[tuple[Iterator[Tensor], Tensor]], length: int, channels: int) -> Iterator[Tensor]:
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


def _sample_rate(rate: object) -> int:
    """``rate`` as a positive integer number of Hz (a float of integer value is accepted, e.g. 44100.0)."""
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or int(rate) <= 0:
        raise ValueError(f"separate: sample_rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _waveform(wav: object) -> Tensor:
    """The track ``wav`` (tensor or array, ``(channels, samples)`` or ``(samples,)``) as float32 ``(channels,
    samples)`` on the CPU; refuses other types, dtypes and layouts (:meth:`Separator.separate`)."""
    if not isinstance(wav, (Tensor, np.ndarray)):
        raise TypeError(f"separate: expected a torch.Tensor or numpy.ndarray, got {type(wav).__name__}")
    shape = tuple(wav.shape)
    _check_layout(shape)
    x = _tensor(wav)
    if x.dtype in PCM_SCALE:
        x = x.to("cpu", torch.float32) / PCM_SCALE[x.dtype]
    elif x.is_floating_point():
        x = x.to("cpu", torch.float32)
    else:
        raise ValueError(f"separate: samples of dtype {wav.dtype} are not accepted: {_DTYPES}")
    return x.reshape(-1, shape[-1])


def _check_layout(shape: tuple[int, ...]) -> None:
    """Refuse what cannot be told from a ``(channels, samples)`` track: a transposed one, too many channels, as
    many channels as samples, an empty one, a batch."""
    expected = f"expected (channels, samples) with 1 to {MAX_CHANNELS} channels, or (samples,) for mono"
    if len(shape) not in (1, 2):
        raise ValueError(f"separate: got a {len(shape)}-D array of shape {shape}; {expected} (one track per call)")
    if 0 in shape:
        raise ValueError(f"separate: got an empty array of shape {shape}; {expected}")
    if len(shape) == 1:
        return
    channels, samples = shape
    if channels > samples:
        raise ValueError(f"separate: shape {shape} looks like (samples, channels): {expected}; pass wav.T")
    if channels > MAX_CHANNELS:
        raise ValueError(f"separate: shape {shape} has {channels} channels: {expected}")
    if channels == samples:
        raise ValueError(f"separate: shape {shape} is ambiguous (as many channels as samples): {expected}")


_DTYPES = "give floats (full scale ±1) or int16/int32 PCM"


def _tensor(wav: Tensor | np.ndarray) -> Tensor:
    """``wav`` as a tensor of its own dtype, detached (an array in the machine's byte order, which torch needs)."""
    if isinstance(wav, Tensor):
        return wav.detach()
    try:
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=wav.dtype.newbyteorder("=")))
    except TypeError:  # a dtype torch has no counterpart of (strings, objects, float128)
        raise ValueError(f"separate: samples of dtype {wav.dtype} are not accepted: {_DTYPES}") from None


def _choose_bag(
    directory: PathLike | None,
    bag: Bag | PathLike | None,
    fast: bool,
    original: bool,
    notify: Callable[[str], None],
    quiet: bool,
) -> Bag:
    """The blend of :meth:`Separator.from_checkpoints`: the one given (a bag, a name, a file), else the original's
    weights where asked for, else the checkpoint folder's ``bag.json`` (announced), else the original blend."""
    if isinstance(bag, Bag):
        return bag
    if isinstance(bag, str) and bag in NAMED_BAGS:
        return NAMED_BAGS[bag]
    if bag is not None:
        return Bag.load(Path(bag))
    if fast or original:
        return FAST_BAG if fast else ORIGINAL_BAG
    path = checkpoint_dir(directory)[0] / BAG_FILE
    if not path.is_file():
        return ORIGINAL_BAG
    try:
        found = Bag.load(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; fix or remove it, or pass --bag original for the original weights") from None
    if not quiet:
        notify(f"blend: {path} (the folder's {BAG_FILE}; --bag original for the original weights)")
    return found


def _download_missing(
    directory: PathLike | None,
    roles: Sequence[str],
    source: str | None,
    notify: Callable[[str], None],
    quiet: bool = False,
) -> None:
    """Fetch (and import) the released file of every role that has no model in the folder. ``quiet``: no
    progress bars and no import reports (the one-line notice of each download stays)."""
    from ..release.convert import import_released
    from ..release.download import ensure
    from ..release.registry import load_registry

    folder, _ = checkpoint_dir(directory)
    registry = load_registry()
    missing = [role for role in roles if not any((folder / n).is_file() for n in model_search_order(role))]
    entries = [registry.for_role_default(role) for role in missing]
    verified = ensure(entries, folder, allow_download=True, source=source, notify=notify, quiet=quiet)
    import_released(folder, [v.name for v in verified], notify=notify, quiet=quiet)
