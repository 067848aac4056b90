import norbert
import numpy as np
import pytest
import torch

import danna_sep.wiener as wiener_module
from danna_sep.wiener import wiener, wiener_windowed

F32_EPS = float(np.finfo(np.float32).eps)


def random_inputs(shape, sources, channels, bins, frames, peak=30.0, mag_channels=None, dtype=torch.float64, seed=0):
    """mag (*shape, sources, channels or mag_channels, bins, frames) ≥ 0; mix (*shape, channels, bins, frames)."""
    g = torch.Generator().manual_seed(seed)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    mix = torch.randn(*shape, channels, bins, frames, dtype=complex_dtype, generator=g) * peak / 3
    mag_shape = (*shape, sources, mag_channels or channels, bins, frames)
    mag = torch.rand(mag_shape, dtype=dtype, generator=g) * peak / 3
    return mag, mix


def norbert_reference(mag, mix, iterations, softmask, residual):
    """norbert 0.2.1 on one item, in our layout: mag (S, C, F, T), mix (C, F, T) → (S(+1), C, F, T) complex128.

    norbert's layout is (frames, bins, channels, sources). norbert.wiener has no residual option; with one, its
    own steps are composed the same way (initial estimate, residual X − Σ Y as an extra source, scaled EM).
    """
    v = mag.permute(3, 2, 1, 0).numpy().astype(np.float64)
    x = mix.permute(2, 1, 0).numpy().astype(np.complex128)  # a copy: norbert scales x in place
    if not residual:
        y = norbert.wiener(v, x, iterations, use_softmask=softmask)
    else:
        y = norbert.softmask(v, x) if softmask else v * np.exp(1j * np.angle(x[..., None]))
        y = np.concatenate([y, x[..., None] - y.sum(-1, keepdims=True)], axis=-1)
        if iterations:
            scale = max(1, np.abs(x).max() / 10.0)
            y = norbert.expectation_maximization(y / scale, x / scale, iterations)[0] * scale
    return torch.from_numpy(np.ascontiguousarray(y)).permute(3, 2, 1, 0)


def assert_relative_close(actual, expected, rtol=1e-6):
    """Element-wise relative error ≤ rtol, with an absolute floor of rtol·max|expected| for near-zero entries."""
    expected = expected.to(actual.dtype)
    atol = rtol * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("channels,bins,frames", [(2, 7, 5), (1, 5, 6), (3, 4, 3)])
@pytest.mark.parametrize("sources", [1, 2, 3, 4])
@pytest.mark.parametrize("iterations", [0, 1, 2, 3])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_matches_norbert(channels, bins, frames, sources, iterations, softmask, residual):
    # a batch of two items: one quiet (no scaling, max|X| < 10), one loud (scaled by max|X| / 10)
    mag, mix = random_inputs((2,), sources, channels, bins, frames, seed=sources * 10 + iterations)
    mix[0] /= 30.0
    mag[0] /= 30.0
    out = wiener(mag, mix, iterations, softmask=softmask, residual=residual)
    assert out.shape == (2, sources + residual, channels, bins, frames)
    assert out.dtype == torch.complex128
    for item in range(2):
        expected = norbert_reference(mag[item], mix[item], iterations, softmask, residual)
        assert_relative_close(out[item], expected)


@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("softmask", [False, True])
def test_complex64_input_matches_norbert(iterations, softmask):
    # float32 STFTs computed in float64 (the default) and returned as complex64
    mag, mix = random_inputs((), 4, 2, 9, 8, dtype=torch.float32)
    out = wiener(mag, mix, iterations, softmask=softmask)
    assert out.dtype == torch.complex64
    assert_relative_close(out, norbert_reference(mag.double(), mix.to(torch.complex128), iterations, softmask, False))


def test_zero_mix_bins_match_norbert():
    # exp(i·angle 0) = 1 in norbert: estimates keep their magnitude where the mix is exactly zero
    mag, mix = random_inputs((), 3, 2, 6, 5)
    mix[:, 2, :] = 0
    mix[0, 4, 1] = 0
    for iterations in (0, 1):
        assert_relative_close(wiener(mag, mix, iterations), norbert_reference(mag, mix, iterations, False, False))


def test_scale_is_per_item():
    quiet_mag, quiet_mix = random_inputs((), 2, 2, 6, 5, peak=1.0, seed=1)
    loud_mag, loud_mix = random_inputs((), 2, 2, 6, 5, peak=1e4, seed=2)
    batch = wiener(torch.stack([quiet_mag, loud_mag]), torch.stack([quiet_mix, loud_mix]), 1)
    alone = wiener(quiet_mag, quiet_mix, 1)
    torch.testing.assert_close(batch[0], alone, rtol=1e-12, atol=0)
    torch.testing.assert_close(batch[1], wiener(loud_mag, loud_mix, 1), rtol=1e-12, atol=0)
    # the original scaled the whole batch by the loud item's max|X|: the quiet item's result would change
    scale = max(1.0, torch.stack([quiet_mix, loud_mix]).abs().max().item() / 10.0)
    x = quiet_mix.permute(2, 1, 0).numpy()
    y = quiet_mag.permute(3, 2, 1, 0).numpy() * np.exp(1j * np.angle(x[..., None]))
    shared = norbert.expectation_maximization(y / scale, x / scale, 1)[0] * scale
    shared = torch.from_numpy(shared).permute(3, 2, 1, 0)
    assert (shared - alone).abs().max() > 1e-3 * alone.abs().max()


@pytest.mark.parametrize(
    "channels,kwargs",
    [
        (2, dict(iterations=1)),
        (2, dict(iterations=2, softmask=True)),
        (2, dict(iterations=1, residual=True)),
        (2, dict(iterations=0)),
        (1, dict(iterations=1)),
        (3, dict(iterations=1, softmask=True, residual=True)),
    ],
)
def test_gradcheck(channels, kwargs):
    mag, mix = random_inputs((2,), 2, channels, 3, 4, peak=3.0)
    mag = (mag + 0.1).requires_grad_()
    mix = mix.requires_grad_()
    # fast mode (random projections of the Jacobian) for the bigger problems keeps this file quick
    fast = channels * (2 + kwargs.get("residual", False)) > 4
    assert torch.autograd.gradcheck(lambda m, x: wiener(m, x, **kwargs), (mag, mix), fast_mode=fast)


def test_gradcheck_scaled():
    # a loud item: scale > 1
    mag, mix = random_inputs((), 2, 2, 5, 3, peak=300.0)
    mag = (mag + 0.1).requires_grad_()
    mix = mix.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, x: wiener(m, x, 1), (mag, mix))


def test_gradients_reach_the_mask():
    _, mix = random_inputs((2,), 4, 2, 16, 10, dtype=torch.float32)
    mix[0, :, 3, :] = 0  # silent bins must not produce NaN gradients
    mask = torch.rand(2, 4, 2, 16, 10, requires_grad=True)
    target = torch.randn(2, 4, 2, 16, 10, dtype=torch.complex64)
    out = wiener(mask * mix.abs().unsqueeze(1), mix, 1)
    (out - target).abs().square().mean().backward()
    assert mask.grad is not None and torch.isfinite(mask.grad).all()
    assert (mask.grad.abs() > 0).float().mean() > 0.9


@pytest.mark.parametrize("iterations", [1, 3])
def test_float32_mode(iterations):
    mag, mix = random_inputs((2,), 4, 2, 12, 20, dtype=torch.float32, peak=300.0)
    out32 = wiener(mag, mix, iterations, dtype=torch.float32)
    assert out32.dtype == torch.complex64
    # with the same eps, single precision loses little
    out64 = wiener(mag, mix, iterations, eps=F32_EPS)
    assert (out32 - out64).abs().max() < 1e-4 * out64.abs().max()
    # float32 mode is norbert on complex64 input (its eps is then float32's too)
    v = mag[0].permute(3, 2, 1, 0).numpy()
    x = mix[0].permute(2, 1, 0).numpy().copy()
    expected = torch.from_numpy(norbert.wiener(v, x, iterations, use_softmask=False)).permute(3, 2, 1, 0)
    assert expected.dtype == torch.complex64
    assert (out32[0] - expected).abs().max() < 1e-4 * expected.abs().max()
    # and the default (larger) regulariser stays close to float64 on generic input
    default64 = wiener(mag, mix, iterations)
    assert (out32 - default64).abs().norm() < 1e-2 * default64.abs().norm()


def test_float32_mode_stays_finite_on_rank_one_covariances():
    # one frame, one active source: rank-one covariances, where float32 needs its larger regulariser
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(2, 8, 1, dtype=torch.complex64, generator=gen) * 100
    mag = torch.zeros(3, 2, 8, 1)
    mag[0] = mix.abs()
    out = wiener(mag, mix, 1, dtype=torch.float32)
    assert torch.isfinite(torch.view_as_real(out)).all()
    # the 2×2 determinant of a rank-one covariance cancels in float32 (a·d − |b|² ≈ reg·trace), so the
    # single source is recovered only to a few percent in this mode; float64 (the default) is exact
    assert (out[0] - mix).abs().norm() < 5e-2 * mix.abs().norm()
    assert (out[1:].abs().norm()) < 5e-2 * mix.abs().norm()


def test_cpu_blocks_match_single_pass(monkeypatch):
    # big enough for several automatic CPU blocks; compare with one whole-spectrogram pass and with norbert
    mag, mix = random_inputs((), 4, 2, 100, 300, dtype=torch.float32)
    assert wiener_module._block_bins(1, 4, 2, 100, 300, torch.device("cpu")) < 100
    blocked = wiener(mag, mix, 1)
    monkeypatch.setattr(wiener_module, "_block_bins", lambda batch, sources, channels, bins, frames, device: bins)
    torch.testing.assert_close(blocked, wiener(mag, mix, 1), rtol=1e-6, atol=1e-6)
    assert_relative_close(blocked, norbert_reference(mag, mix, 1, False, False))


@pytest.mark.parametrize("window", [1, 4, 7, 30])
def test_windowed_equals_per_block_calls(window):
    mag, mix = random_inputs((2,), 3, 2, 5, 17, seed=3)
    out = wiener_windowed(mag, mix, 2, window=window, residual=True)
    assert out.shape == (2, 4, 2, 5, 17)
    for start in range(0, 17, window):
        block = wiener(mag[..., start : start + window], mix[..., start : start + window], 2, residual=True)
        torch.testing.assert_close(out[..., start : start + window], block, rtol=0, atol=0)
    if window >= 17:
        torch.testing.assert_close(out, wiener(mag, mix, 2, residual=True), rtol=0, atol=0)


def test_windowed_is_differentiable():
    mag, mix = random_inputs((), 2, 2, 3, 5, peak=3.0, seed=4)
    mag = (mag + 0.1).requires_grad_()
    mix = mix.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, x: wiener_windowed(m, x, 1, window=2), (mag, mix), fast_mode=True)


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("residual", [False, True])
def test_shapes_and_dtypes(lead, dtype, residual):
    mag, mix = random_inputs(lead, 3, 2, 6, 4, dtype=dtype)
    for compute in (torch.float32, torch.float64):
        out = wiener(mag, mix, 1, residual=residual, dtype=compute)
        assert out.shape == (*lead, 3 + residual, 2, 6, 4)
        assert out.dtype == mix.dtype
        assert out.is_contiguous()


def test_mono_magnitudes_broadcast_over_channels():
    mag, mix = random_inputs((2,), 3, 2, 6, 5, mag_channels=1)
    expanded = mag.expand(2, 3, 2, 6, 5)
    for kwargs in (dict(), dict(softmask=True, residual=True)):
        torch.testing.assert_close(wiener(mag, mix, 1, **kwargs), wiener(expanded, mix, 1, **kwargs))
    assert_relative_close(wiener(mag, mix, 1)[1], norbert_reference(mag[1], mix[1], 1, False, False))


def test_scriptable():
    scripted = torch.jit.script(wiener)
    scripted_windowed = torch.jit.script(wiener_windowed)
    mag, mix = random_inputs((2,), 4, 2, 8, 6, dtype=torch.float32)
    for kwargs in (dict(), dict(softmask=True, residual=True), dict(iterations=0), dict(dtype=torch.float32)):
        torch.testing.assert_close(scripted(mag, mix, **kwargs), wiener(mag, mix, **kwargs))
    torch.testing.assert_close(scripted_windowed(mag, mix, 1, 4), wiener_windowed(mag, mix, 1, 4))


@pytest.mark.parametrize(
    "mag_shape,mix_shape,match",
    [
        ((4, 2, 8, 6), (2, 9, 6), "does not match"),  # bins
        ((4, 2, 8, 6), (2, 8, 5), "does not match"),  # frames
        ((4, 3, 8, 6), (2, 8, 6), "does not match"),  # channels
        ((2, 4, 2, 8, 6), (3, 2, 8, 6), "does not match"),  # leading dims
        ((2, 8, 6), (2, 8, 6), "same leading dims"),  # no source axis
        ((0, 2, 8, 6), (2, 8, 6), "does not match"),  # no sources
        ((4, 8, 6), (8, 6), "same leading dims"),  # mix without channels
    ],
)
def test_bad_shapes_raise(mag_shape, mix_shape, match):
    mag = torch.rand(mag_shape)
    mix = torch.randn(mix_shape, dtype=torch.complex64)
    with pytest.raises(ValueError, match=match):
        wiener(mag, mix)
    with pytest.raises(ValueError, match=match):
        wiener_windowed(mag, mix)


def test_bad_arguments_raise():
    mag, mix = random_inputs((), 2, 2, 4, 3)
    with pytest.raises(ValueError, match="complex"):
        wiener(mag, mix.real)
    with pytest.raises(ValueError, match="real magnitudes"):
        wiener(mix.unsqueeze(0), mix)
    with pytest.raises(ValueError, match="iterations"):
        wiener(mag, mix, -1)
    with pytest.raises(ValueError, match="dtype"):
        wiener(mag, mix, dtype=torch.float16)
    with pytest.raises(ValueError, match="window"):
        wiener_windowed(mag, mix, window=0)
