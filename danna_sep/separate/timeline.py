"""Time bookkeeping of the streams: where segments start, how they cross-fade, overlap-add and the streaming iSTFT."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def _equal_length_groups(segments: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive ``segments`` in groups of up to ``size`` that have the same length (one model call each)."""
    group: list[tuple[int, int]] = []
    for a, b in segments:
        if group and (len(group) == size or b - a != group[0][1] - group[0][0]):
            yield group
            group = []
        group.append((a, b))
    if group:
        yield group


def plan_segments(total: int, segment: int, stride: int, multiple: int = 1) -> list[tuple[int, int]]:
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


class _Pieces:
    """Consecutive tensors along the last axis from absolute position ``start``, read back without joining them
    (what was added is held as it came: no copy of the whole on each addition or hand-out)."""

    def __init__(self) -> None:
        self.start = 0
        self.pieces: list[Tensor] = []

    @property
    def end(self) -> int:
        return self.start + sum(p.shape[-1] for p in self.pieces)

    def spans(self, a: int, b: int) -> Iterator[tuple[int, Tensor, int, int]]:
        """``(position, piece, lo, hi)``: the part ``piece[..., lo:hi]``, from absolute ``position``, of each piece
        inside ``[a, b)``."""
        pos = self.start
        for piece in self.pieces:
            n = piece.shape[-1]
            lo, hi = max(a, pos), min(b, pos + n)
            if lo < hi:
                yield lo, piece, lo - pos, hi - pos
            pos += n

    def drop(self, stop: int) -> None:
        """Let go of everything before ``stop`` (a piece cut there is kept as a view of its rest)."""
        while self.pieces and self.start < stop:
            piece = self.pieces[0]
            n = piece.shape[-1]
            if self.start + n > stop:
                self.pieces[0] = piece[..., stop - self.start :]
                self.start = stop
            elif len(self.pieces) > 1:
                self.pieces.pop(0)
                self.start += n
            else:  # the last piece stays, empty (and without its memory): what is held keeps its shape
                self.pieces[0] = piece[..., :0].clone()
                self.start += n
                break
        self.start = max(self.start, stop)


class _Timeline:
    """Weighted overlap-add along the last axis at absolute positions; :meth:`pop` hands out the finished prefix,
    :meth:`peek` any finished part without letting go of it."""

    def __init__(self) -> None:
        self.values, self.weights = _Pieces(), _Pieces()

    @property
    def start(self) -> int:
        return self.values.start

    def add(self, start: int, values: Tensor, weight: Tensor, owned: bool = False) -> None:
        """Add ``values · weight`` at ``start``; ``owned``: ``values`` may be overwritten (and kept)."""
        assert start >= self.start, "a segment reached back into output already handed out"
        n = values.shape[-1]
        # the part over what is held: added in place
        for (p, acc, lo, hi), (_, total, _, _) in zip(
            self.values.spans(start, start + n), self.weights.spans(start, start + n), strict=True
        ):
            i, j = p - start, p - start + hi - lo
            acc[..., lo:hi] += values[..., i:j] * weight[i:j]
            total[lo:hi] += weight[i:j]
        end = self.values.end
        if start > end:  # a gap: zeros (weight 0) until the segment
            self.values.pieces.append(values.new_zeros((*values.shape[:-1], start - end)))
            self.weights.pieces.append(weight.new_zeros(start - end))
            end = start
        k = end - start
        if k < n:
            rest, w = values[..., k:], weight[k:]
            # in place only where no two elements share memory (a model may return an expanded tensor)
            dense = all(st != 0 for st, size in zip(rest.stride(), rest.shape, strict=True) if size > 1)
            self.values.pieces.append(rest.mul_(w) if owned and dense else rest * w)
            self.weights.pieces.append(w.clone())

    def peek(self, a: int, b: int) -> Tensor:
        """The finished ``[a, b)`` (weighted sums over weights), kept."""
        assert self.values.pieces and self.start <= a <= b <= self.values.end, "peek outside what is held"
        parts = [
            acc[..., lo:hi] / total[lo:hi]
            for (_, acc, lo, hi), (_, total, _, _) in zip(
                self.values.spans(a, b), self.weights.spans(a, b), strict=True
            )
        ]
        if not parts:
            return self.values.pieces[0][..., :0].clone()
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def pop(self, stop: int) -> Tensor:
        out = self.peek(self.start, stop)
        self.values.drop(stop)
        self.weights.drop(stop)
        return out


class _FrameStore:
    """The mixture's STFT frames between the Wiener filter's position and the last segment's end."""

    def __init__(self) -> None:
        self.frames = _Pieces()

    @property
    def start(self) -> int:
        return self.frames.start

    def extend(self, start: int, frames: Tensor) -> None:
        new = frames[..., max(self.frames.end - start, 0) :]
        if new.shape[-1]:
            self.frames.pieces.append(new)

    def peek(self, a: int, b: int) -> Tensor:
        assert self.frames.pieces and self.start <= a <= b <= self.frames.end, "peek outside what is held"
        parts = [piece[..., lo:hi] for _, piece, lo, hi in self.frames.spans(a, b)]
        if not parts:
            return self.frames.pieces[0][..., :0]
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def pop(self, stop: int) -> Tensor:
        out = self.peek(self.start, stop)
        self.frames.drop(stop)
        return out


class StreamingISTFT:
    """Inverse of the centred STFT, fed frames in order, handing out samples as soon as they are final.

    Produces the same samples as ``torch.istft(..., center=True, length=length)`` on all frames at once:
    windowed inverse FFTs overlap-added and divided by the summed squared window.
    """

    def __init__(self, n_fft: int, hop_length: int, length: int, device: torch.device | str = "cpu"):
        self.n_fft, self.hop, self.length = n_fft, hop_length, length
        self.window = torch.hann_window(n_fft, device=device)
        self.pad = n_fft // 2  # padded position p is sample p − pad
        self.frames = 0  # frames received
        self.acc: Tensor | None = None  # overlap-added samples from padded position `acc_start`
        self.env: Tensor | None = None
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
        acc = ola.new_zeros(*lead, 0) if self.acc is None else self.acc
        total = env.new_zeros(0) if self.env is None else self.env
        # extend the accumulator to the new span, then add (positions before acc_start are not needed)
        end = first + ola.shape[-1]
        grow = end - (self.acc_start + acc.shape[-1])
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros(*lead, grow)], -1)
            total = torch.cat([total, total.new_zeros(grow)])
        skip = max(self.acc_start - first, 0)
        i = first + skip - self.acc_start
        acc[..., i : i + ola.shape[-1] - skip] += ola[..., skip:]
        total[i : i + ola.shape[-1] - skip] += env[skip:]
        self.acc, self.env = acc, total
        self.frames += n
        return self._emit(self.frames * self.hop)  # positions before the next frame's start are complete

    def _emit(self, final: int) -> Tensor:
        if self.acc is None or self.env is None:  # no frame yet: nothing is final
            return torch.zeros(0)
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
