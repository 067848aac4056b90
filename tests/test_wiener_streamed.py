"""wiener_streamed: the whole-track Wiener filter chunk by chunk gives wiener()'s numbers."""

import pytest
import torch
from test_wiener import random_inputs

from danna_sep.wiener import wiener, wiener_streamed


def _streamed(mag, mix, chunk, iterations, **kwargs):
    calls = []

    def read(a, b, last):
        calls.append((a, b, last))
        return mag[..., a:b], mix[..., a:b]

    pieces = list(wiener_streamed(read, mix.shape[-1], chunk, iterations, **kwargs))
    return torch.cat(pieces, -1), calls


def _sdr_db(ref, est):
    return float(10 * torch.log10(ref.abs().square().sum() / (ref - est).abs().square().sum()))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("iterations", [0, 1, 2, 3])
@pytest.mark.parametrize("softmask,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_streamed_equals_whole_track(chunk, iterations, softmask, residual):
    mag, mix = random_inputs((), 4, 2, 9, 50, seed=chunk + iterations)
    whole = wiener(mag, mix, iterations, softmask, residual)
    streamed, calls = _streamed(mag, mix, chunk, iterations, softmask=softmask, residual=residual)
    assert streamed.shape == whole.shape and streamed.dtype == whole.dtype
    torch.testing.assert_close(streamed, whole, rtol=1e-12, atol=1e-12 * whole.abs().max().item())
    spans = len(range(0, 50, chunk))
    # one reading pass per iteration, then one last (filtering) pass
    assert [c[2] for c in calls] == [False] * spans * iterations + [True] * spans


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("lead", [(), (3,)])
def test_streamed_channels_and_batches(channels, lead):
    # per-item scale: the peaks differ by item (peak 30 on item 0, below 10 on the others)
    mag, mix = random_inputs(lead, 3, channels, 5, 40, seed=channels)
    if lead:
        mix[1:] /= 10
    whole = wiener(mag, mix, 2, residual=True)
    streamed, _ = _streamed(mag, mix, 9, 2, residual=True)
    torch.testing.assert_close(streamed, whole, rtol=1e-12, atol=1e-12 * whole.abs().max().item())


def test_streamed_float32_mode_and_complex64_mix():
    # the danna-sep spectral stream's call: complex64 mix and float32 masks, float64 maths; and the float32 mode
    mag, mix = random_inputs((), 4, 2, 300, 700, dtype=torch.float32, seed=5)
    for dtype in (torch.float64, torch.float32):
        whole = wiener(mag, mix, 1, dtype=dtype)
        streamed, _ = _streamed(mag, mix, 256, 1, dtype=dtype)
        assert streamed.dtype == torch.complex64
        # float32 rounding of the output (and, in float32 mode, of the sums over frames): far above 100 dB
        assert _sdr_db(whole, streamed) > 100
        torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())


def test_streamed_mono_magnitudes_and_bad_chunk():
    mag, mix = random_inputs((), 2, 2, 4, 20, mag_channels=1, seed=9)
    streamed, _ = _streamed(mag, mix, 6, 1)
    torch.testing.assert_close(streamed, wiener(mag, mix, 1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="chunk"):
        next(wiener_streamed(lambda a, b, last: (mag, mix), 20, 0))
