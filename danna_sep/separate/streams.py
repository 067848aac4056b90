"""The model streams: one model turns the track into its four stems, segment by segment, in time order."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import SAMPLE_RATE
from ..defaults import MEMORY_LIMIT_GIB, SPECTRAL_SEGMENT_FRAMES, WAVEFORM_SEGMENT_SECONDS
from ..errors import CheckpointError
from ..export import LoadedModel, check_contract
from ..models.demucs import DemucsSplit
from ..models.unet import UNetAttn
from ..models.xumx import X_UMX
from ..runtime import trim_above
from ..spectral import frame_span, num_frames, reflect_pads
from .timeline import StreamingISTFT, _equal_length_groups, _FrameStore, _Timeline, crossfade, plan_segments
from .tracks import TrackReader, _read_padded

WAVEFORM_MARGIN = 4096  # extra samples fed after a waveform segment (the original Demucs returns ≤ ~2k fewer)
# waveform segments per call on CPU: Demucs's BiLSTM steps cost about the same for 3 rows as for 1, and it runs its
# convolutions item by item (3 segments of 10 s: 4.7 → 3.6 s, +175 MiB; 4 rows would cost twice as much per step)
WAVEFORM_BATCH = 3
# what danna-sep 1.0.2 did (``original=True``; its 1024 zeros after the track: separator.ORIGINAL_END_PAD): the U-Net
# on non-overlapping chunks of 2584 frames (≈ 60 s), Demucs fed [22050 zeros | track] and clamped to ±0.99
ORIGINAL_UNET_CHUNK = 2584
ORIGINAL_XUMX_CHUNK = 512  # frames per chunk of X_UMX.forward_chunked there (its BiLSTMs see the whole song)
ORIGINAL_UNET_TILE = 256  # UNetAttn.forward_tiled's tiles (frames of each tiled level) for those chunks
ORIGINAL_SHORT_CHUNK = 128  # a last chunk too short for the U-Net's poolings: zero-padded to this (its GPU path)
ORIGINAL_CLAMP = 0.99
# --original with an eager DemucsSplit (the imported release): the whole track, computed exactly in output chunks
# of this many samples (DemucsSplit.iter_chunked: ~70 MB per second of audio at once instead of the whole song's)
ORIGINAL_DEMUCS_CHUNK = 1 << 18
# a Wiener block longer than this many frames is filtered in chunks of it (wiener_streamed: the block's statistics
# first, then the filter and the iSTFT chunk by chunk), so that no whole-track spectrogram of the estimates exists
WIENER_CHUNK = 1024


@dataclass(frozen=True)
class StreamOptions:
    """How the streams cut and filter a track: the :class:`~danna_sep.separate.Separator` arguments of these
    names (``original`` already applied to them)."""

    segment: float | None
    overlap: float
    split: bool
    niter: int
    wiener_window: int | None
    original: bool


class ModelCalls:
    """Runs the models for all streams of a separator: each model's output checked against its I/O contract on
    its first call; ``parallel``: at most ``os.cpu_count()`` calls at once (more would only hold more
    activations)."""

    def __init__(self, parallel: bool):
        self._gate = threading.BoundedSemaphore(max(1, os.cpu_count() or 1)) if parallel else None
        self._checked: set[int] = set()  # id() of the models checked

    def run(self, model: LoadedModel, x: Tensor, fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``model(x)``; or ``fn(x)``, a computation of the model's own (e.g. one piece of a chunked pass), under
        the same gate and in inference mode."""
        if fn is None:
            fn = model
        else:
            inner = fn

            def fn(x: Tensor) -> Tensor:
                with torch.inference_mode():
                    return inner(x)

        if self._gate is None:
            return fn(x)
        with self._gate:
            return fn(x)

    def check(self, model: LoadedModel, out: Tensor, inp: Tensor) -> None:
        if id(model) not in self._checked:
            check_contract(out, inp, model.info, model.name)
            self._checked.add(id(model))


def model_stream(
    role: str,
    model: LoadedModel,
    reader: TrackReader,
    report: Callable[[float], None],
    calls: ModelCalls,
    options: StreamOptions,
) -> Iterator[Tensor]:
    """The stems ``(sources, channels, n)`` of ``model`` (playing ``role``) for ``reader``, piece by piece in time
    order; ``report`` gets the fraction of its segments done."""
    if model.info.domain == "spectral":
        return _spectral_stream(model, reader, report, calls, options, role)
    if options.original:
        return _original_waveform_stream(model, reader, report, calls)
    return _waveform_stream(model, reader, report, calls, options)


def _model_input(x: Tensor, channels: int) -> Tensor:
    # models are stereo by contract; a mono model (tiny configs) gets the mid channel
    return x.mean(0, keepdim=True) if channels == 1 else x


def _segment_frames(model: LoadedModel, total: int, options: StreamOptions) -> tuple[int, int]:
    multiple = model.info.frame_multiple
    if not options.split:
        return total, total
    frames = (
        SPECTRAL_SEGMENT_FRAMES
        if options.segment is None
        else round(options.segment * SAMPLE_RATE / model.info.hop_length)
    )
    frames = max(multiple, frames // multiple * multiple)
    stride = max(multiple, int(frames * (1 - options.overlap)) // multiple * multiple)
    return frames, stride


def _spectral_stream(
    model: LoadedModel,
    reader: TrackReader,
    report: Callable[[float], None],
    calls: ModelCalls,
    options: StreamOptions,
    role: str = "",
) -> Iterator[Tensor]:
    from ..wiener import wiener, wiener_streamed

    info, dev = model.info, model.device
    n_fft, hop = info.n_fft, info.hop_length
    total = num_frames(reader.length, hop)
    tiled: Callable[[Tensor], Tensor] | None = None
    if options.original and role == "unet":  # the original's chunks, side by side
        segments = [(a, min(a + ORIGINAL_UNET_CHUNK, total)) for a in range(0, total, ORIGINAL_UNET_CHUNK)]
        ramp = 0
        # our eager U-Net: each chunk's masks with its high-resolution stages in tiles (UNetAttn.forward_tiled,
        # the same masks); a TorchScript/ONNX file (the release itself) runs each chunk at once, as the original
        # did (~10 GB for a full chunk of the released U-Net)
        if isinstance(model.module, UNetAttn):
            tiled = _in_pieces(model.module.forward_tiled, ORIGINAL_UNET_TILE, dev)
    else:
        seg, stride = _segment_frames(model, total, options)
        segments = plan_segments(total, seg, stride, info.frame_multiple)
        ramp = max(seg - stride, 0)
        # the original's whole-song X-UMX call, through our eager X-UMX: its per-frame layers chunk by chunk (the
        # same masks; a whole-song forward holds ~3 times the masks' size, ~5 GB for 10 minutes)
        if options.original and isinstance(model.module, X_UMX):
            tiled = _in_pieces(model.module.forward_chunked, ORIGINAL_XUMX_CHUNK, dev)

    window = torch.hann_window(n_fft, device=dev)
    reflect = reflect_pads(reader.length, n_fft)
    wdtype = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
    block = total if options.wiener_window is None else options.wiener_window
    masks, mix = _Timeline(), _FrameStore()
    istft = StreamingISTFT(n_fft, hop, reader.length, dev)

    # Each step is a function so that its temporaries (spectrogram, masks, filtered frames: about 100 MB per
    # segment) are freed on return instead of living in this generator while the other models run.
    def analyse(a: int, b: int) -> None:
        x = _read_padded(reader, *frame_span(a, b, n_fft, hop), reflect)
        x = _model_input(x, info.channels).to(dev)
        spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)  # (C, bins, b − a)
        mag = spec.abs()[None]
        # fewer frames than the model's poolings need (a legacy U-Net fails on them; only a track that short, or
        # the original's last chunk, gets one): zero-padded, the original to 128 frames as its GPU path did
        # (its CPU path crashed there)
        pad = max(ORIGINAL_SHORT_CHUNK, info.frame_multiple) if options.original else info.frame_multiple
        short = b - a < info.frame_multiple
        out = calls.run(model, F.pad(mag, [0, pad - (b - a)]) if short else mag, tiled)
        out = out[..., : b - a]
        calls.check(model, out, mag)
        with torch.inference_mode():  # the model's output is an inference tensor: weighted in place, kept
            masks.add(a, out[0].float(), crossfade(b - a, ramp).to(dev), owned=True)
        mix.extend(a, spec)

    def synthesise(start: int, stop: int) -> Tensor:
        if stop - start <= WIENER_CHUNK:
            m, X = masks.pop(stop), mix.pop(stop)
            with torch.inference_mode():  # no autograd: lets the filter take its cache-blocked path
                Y = m * X if options.niter == 0 else wiener(m * X.abs(), X, options.niter, dtype=wdtype)
            return istft.push(Y).cpu()

        # a long block (the whole song, as the original): the same filter, chunk by chunk
        def read(a: int, b: int, last: bool) -> tuple[Tensor, Tensor]:
            if last:  # the filtering pass: those frames are let go of
                m, X = masks.pop(start + b), mix.pop(start + b)
            else:
                m, X = masks.peek(start + a, start + b), mix.peek(start + a, start + b)
            return (m, X) if options.niter == 0 else (m * X.abs(), X)

        pieces = []
        with torch.inference_mode():
            if options.niter == 0:
                for a in range(0, stop - start, WIENER_CHUNK):
                    m, X = read(a, min(a + WIENER_CHUNK, stop - start), True)
                    pieces.append(istft.push(m * X).cpu())
            else:
                for Y in wiener_streamed(read, stop - start, WIENER_CHUNK, options.niter, dtype=wdtype):
                    pieces.append(istft.push(Y).cpu())
        # one piece per block, as the short blocks: the samples (8 per frame) are held instead of the masks
        return torch.cat(pieces, -1)

    filtered = 0  # frames already through the Wiener filter
    for k, (a, b) in enumerate(segments):
        analyse(a, b)
        final = segments[k + 1][0] if k + 1 < len(segments) else total
        while filtered < final and (final - filtered >= block or final == total):
            stop = min(filtered + block, final)
            yield synthesise(filtered, stop)
            filtered = stop
        report((k + 1) / len(segments))
    yield istft.finish().cpu()


def _in_pieces(
    pass_in_pieces: Callable[[Tensor, int], Tensor], size: int, device: torch.device
) -> Callable[[Tensor], Tensor]:
    """A model call made through the module's own exact pass in pieces of ``size`` frames (``forward_tiled``,
    ``forward_chunked``), the freed memory given back after it."""

    def run(x: Tensor) -> Tensor:
        out = pass_in_pieces(x.to(device, torch.float32).contiguous(), size)
        _give_back_freed_memory()
        return out

    return run


def _give_back_freed_memory() -> None:
    """After a large model call of ``--original``: the heap's freed pages back to the system (above
    MEMORY_LIMIT_GIB; see runtime.trim_above). Its whole-song stores (masks, spectrogram, stems) grow between
    the calls' GBs of activations, and the kept free memory fragments around them (benchmarks/bench_memory.py,
    150 s on the released models: peak 5.53 GB without, 5.04 GB with)."""
    trim_above(int(MEMORY_LIMIT_GIB * 2**30))


def _original_waveform_stream(
    model: LoadedModel, reader: TrackReader, report: Callable[[float], None], calls: ModelCalls
) -> Iterator[Tensor]:
    """danna-sep 1.0.2's Demucs pass: the whole track after 22050 zeros, read back from there, clamped.

    Yields ``(sources, channels, length)``; samples past what the model returns stay zero, as in the original.
    """
    from ..export import ORIGINAL_DEMUCS_LEAD as lead

    if isinstance(model.module, DemucsSplit):
        yield from _original_chunked_demucs(model, model.module, reader, report, calls)
        return

    # a TorchScript or ONNX file (the release itself) runs as the original ran it, on the whole track at once,
    # with the original's memory (~70 MB per second of audio): only our eager module can be cut exactly
    def analyse() -> Tensor:  # a function, as in _spectral_stream: temporaries die
        x = _model_input(reader.read(-lead, reader.length + lead), model.info.channels)[None]
        out = calls.run(model, x)
        calls.check(model, out, x)
        y = out.new_zeros(out.shape[1], out.shape[2], reader.length)
        k = max(min(reader.length, out.shape[-1] - lead), 0)
        y[..., :k] = out[0, ..., lead : lead + k]
        return y.clamp(-ORIGINAL_CLAMP, ORIGINAL_CLAMP).float().cpu()

    y = analyse()
    report(1.0)
    yield y


def _original_chunked_demucs(
    model: LoadedModel,
    module: DemucsSplit,
    reader: TrackReader,
    report: Callable[[float], None],
    calls: ModelCalls,
) -> Iterator[Tensor]:
    """:func:`_original_waveform_stream` through :meth:`DemucsSplit.iter_chunked`: the same samples (to float
    rounding), as pieces ``(sources, channels, n)`` in time order."""
    from ..export import ORIGINAL_DEMUCS_LEAD as lead

    x = _model_input(reader.read(-lead, reader.length + lead), model.info.channels)[None]
    x = x.to(model.device, torch.float32).contiguous()
    total = reader.length
    pieces = module.iter_chunked(x, ORIGINAL_DEMUCS_CHUNK)
    first, done = 0, 0  # the model output's sample at the start of the piece, the track's samples yielded
    while True:
        out = calls.run(model, x, lambda _: next(pieces, torch.empty(0)))  # each piece under the calls' gate
        if out.dim() == 1:
            break
        calls.check(model, out, x)
        # output sample i is track sample i − lead; past what the model returns, the stems stay zero
        a, b = max(first, lead + done), min(first + out.shape[-1], lead + total)
        if a < b:
            yield out[0, ..., a - first : b - first].clamp(-ORIGINAL_CLAMP, ORIGINAL_CLAMP).float().cpu()
            done = b - lead
            report(done / total)
        first += out.shape[-1]
    if done < total:
        yield torch.zeros(module.sources, module.audio_channels, total - done)
    report(1.0)


def _waveform_stream(
    model: LoadedModel, reader: TrackReader, report: Callable[[float], None], calls: ModelCalls, options: StreamOptions
) -> Iterator[Tensor]:
    info, length = model.info, reader.length
    # every segment's input starts on a sample ≡ −placement (mod grid), up to grid − 1 samples before the segment
    grid, placement = info.grid, info.placement
    if info.fixed_length is not None:  # e.g. an ONNX Demucs: every call gets exactly this many samples
        seg = info.fixed_length - WAVEFORM_MARGIN - (grid - 1)
        if seg < 1:
            raise CheckpointError(
                f"{model.name}: its fixed input length {info.fixed_length} leaves no room "
                f"for the {WAVEFORM_MARGIN}-sample margin and its {grid}-sample grid"
            )
        stride = max(1, int(seg * (1 - options.overlap)))
    elif options.split:
        seg = round((WAVEFORM_SEGMENT_SECONDS if options.segment is None else options.segment) * SAMPLE_RATE)
        stride = max(1, int(seg * (1 - options.overlap)))
    else:
        seg = stride = length
    segments = plan_segments(length, seg, stride)
    ramp = max(seg - stride, 0)
    timeline = _Timeline()
    # other models (an ONNX graph, the original release) would run the whole batch at once, with the whole
    # batch's activations; on GPUs batching is unmeasured
    per_call = WAVEFORM_BATCH if info.itemwise_batches and model.device.type == "cpu" else 1

    def analyse(group: list[tuple[int, int]]) -> None:  # a function, as in _spectral_stream: temporaries die
        size = group[0][1] - group[0][0]  # every segment of a group has this length
        n = info.fixed_length or size + WAVEFORM_MARGIN + grid - 1
        leads = [(a + placement) % grid for a, _ in group]
        x = torch.stack(
            [_model_input(reader.read(a - lead, n), info.channels) for (a, _), lead in zip(group, leads, strict=True)]
        )
        out = calls.run(model, x)
        calls.check(model, out, x)
        if out.shape[-1] < max(leads) + size:
            raise CheckpointError(
                f"{model.name}: returns {out.shape[-1]} samples for {n}, fewer than the "
                f"{max(leads) + size} needed (more than {WAVEFORM_MARGIN} samples short)"
            )
        fade = crossfade(size, ramp)
        for j, ((a, _), lead) in enumerate(zip(group, leads, strict=True)):
            timeline.add(a, out[j, ..., lead : lead + size].float().cpu(), fade)

    done = 0
    for group in _equal_length_groups(segments, per_call):
        analyse(group)
        done += len(group)
        report(done / len(segments))
        yield timeline.pop(segments[done][0] if done < len(segments) else length)
