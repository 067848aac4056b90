"""The whole-song Wiener filter streamed chunk by chunk (``--original``, ``--no-split --wiener-window 0``) gives
the numbers of the all-at-once computation, and the timeline's pieces give those of one joined buffer."""

import pytest
import torch
from test_separate import BLEND, SR, music, point_models, reference, stacked

from danna_sep.separate import Separator, streams
from danna_sep.separate.timeline import _FrameStore, _Timeline, crossfade


def _sdr_db(ref, est):
    return float(10 * torch.log10(ref.square().sum() / (ref - est).square().sum().clamp_min(1e-300)))


@pytest.mark.parametrize(
    "options",
    [
        dict(split=False, wiener_window=None),
        dict(split=False, wiener_window=None, niter=2),
        dict(split=False, wiener_window=None, niter=0),
        dict(wiener_window=None),  # overlapping segments, whole-song filter
        dict(wiener_window=70, segment=0.3, overlap=0.5),  # blocks longer than a chunk
    ],
)
def test_streamed_whole_song_filter_equals_all_at_once(monkeypatch, options):
    models, wav = point_models(), music(2.0)
    monkeypatch.setattr(streams, "WIENER_CHUNK", 10**9)  # every block in one call: the computation before
    whole = stacked(Separator(models, BLEND, **options).separate(wav, SR))
    monkeypatch.setattr(streams, "WIENER_CHUNK", 16)  # 87 frames: 6 chunks, the last one short
    streamed = stacked(Separator(models, BLEND, **options).separate(wav, SR))
    assert streamed.shape == whole.shape == (4, 2, wav.shape[-1])
    assert _sdr_db(whole, streamed) > 100
    assert ((streamed - whole).abs().max() / whole.abs().max()).item() < 1e-5
    if options.get("split", True) is False:
        want = reference(models, BLEND, wav, niter=options.get("niter", 1), window=None)
        assert ((streamed - want).abs().max() / want.abs().max()).item() < 1e-5


def test_original_preset_streams_its_filter(monkeypatch):
    # original=True: one block of the whole song, filtered by wiener_streamed in chunks of WIENER_CHUNK frames
    models, wav = point_models(), music(2.0)
    calls = []
    inner = streams.StreamingISTFT.push
    monkeypatch.setattr(
        streams.StreamingISTFT, "push", lambda self, spec: calls.append(spec.shape[-1]) or inner(self, spec)
    )
    monkeypatch.setattr(streams, "WIENER_CHUNK", 32)
    streamed = stacked(Separator(models, BLEND, original=True).separate(wav, SR))
    assert max(calls) == 32 and len(calls) > 4
    monkeypatch.setattr(streams, "WIENER_CHUNK", 10**9)
    whole = stacked(Separator(models, BLEND, original=True).separate(wav, SR))
    assert _sdr_db(whole, streamed) > 100


class JoinedTimeline:
    """The timeline as it was: one buffer, extended by concatenation (the specification of _Timeline)."""

    def __init__(self):
        self.start, self.values, self.weight = 0, None, None

    def add(self, start, values, weight):
        acc = values.new_zeros((*values.shape[:-1], 0)) if self.values is None else self.values
        total = weight.new_zeros(0) if self.weight is None else self.weight
        n = values.shape[-1]
        grow = start + n - (self.start + acc.shape[-1])
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros((*acc.shape[:-1], grow))], -1)
            total = torch.cat([total, total.new_zeros(grow)])
        i = start - self.start
        acc[..., i : i + n] += values * weight
        total[i : i + n] += weight
        self.values, self.weight = acc, total

    def pop(self, stop):
        k = stop - self.start
        out = self.values[..., :k] / self.weight[:k]
        self.values, self.weight = self.values[..., k:].clone(), self.weight[k:].clone()
        self.start = stop
        return out


@pytest.mark.parametrize("owned", [False, True])
def test_timeline_pieces_equal_one_joined_buffer(owned):
    g = torch.Generator().manual_seed(0)
    ours, spec = _Timeline(), JoinedTimeline()
    start, popped = 0, 0
    for k in range(12):
        n = int(torch.randint(5, 40, (), generator=g))
        values = torch.randn(3, n, generator=g)
        fade = crossfade(n, int(torch.randint(0, n // 2, (), generator=g)))
        spec.add(start, values.clone(), fade)
        ours.add(start, values.clone(), fade, owned=owned)
        end = start + n
        if k % 3 == 2 and ours.start < end:  # peek, then pop part of what is finished
            a = int(torch.randint(ours.start, end, (), generator=g))
            torch.testing.assert_close(ours.peek(a, end), spec.values[..., a - spec.start : end - spec.start]
                                       / spec.weight[a - spec.start : end - spec.start], rtol=0, atol=0)  # fmt: skip
            popped = int(torch.randint(ours.start, start + 1, (), generator=g))
            torch.testing.assert_close(ours.pop(popped), spec.pop(popped), rtol=0, atol=0)
        start = max(popped, start + int(torch.randint(0, n, (), generator=g)))
    torch.testing.assert_close(ours.pop(end), spec.pop(end), rtol=0, atol=0)
    assert ours.values.pieces == [] or ours.values.end == end


def test_frame_store_peeks_and_pops_across_pieces():
    X = torch.randn(2, 5, 100, dtype=torch.complex64)
    store = _FrameStore()
    for a, b in [(0, 30), (20, 60), (50, 100)]:
        store.extend(a, X[..., a:b])
    torch.testing.assert_close(store.peek(10, 70), X[..., 10:70], rtol=0, atol=0)
    torch.testing.assert_close(store.pop(25), X[..., :25], rtol=0, atol=0)
    torch.testing.assert_close(store.pop(100), X[..., 25:], rtol=0, atol=0)
    assert store.start == 100 and store.pop(100).shape == (2, 5, 0)
