"""Combination loss (complex MSE + weighted SDR over the 14 source combinations, optional Wiener filter) and L1."""

import itertools
import math

import pytest
import torch

from danna_sep.losses import CombinationLoss, L1Loss, combination_matrix
from danna_sep.models.xumx import X_UMX
from danna_sep.spectral import STFT
from danna_sep.wiener import wiener

N_FFT, HOP = 512, 128  # small STFT: same code paths, fast tests


def _batch(batch=2, length=4000, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    gains = torch.tensor([1.0, 0.5, 0.3, 0.8], dtype=dtype)[:, None, None]
    stems = torch.randn(batch, 4, 2, length, generator=g, dtype=dtype) * gains
    mix = stems.sum(1)
    mix_stft = STFT(N_FFT, HOP)(mix)
    mask = torch.rand((batch, 4, *mix_stft.shape[1:]), generator=g, dtype=dtype)
    return mask, mix_stft, stems, mix


def _reference(est_stft, stems, mix, stft):
    """The loss written out per combination with plain loops, straight from the definition."""
    target_stft, est = stft(stems), stft.inverse(est_stft, stems.shape[-1])
    losses_f, wsdr = [], []
    for size in (1, 2, 3):
        for combo in itertools.combinations(range(4), size):
            c = list(combo)
            diff = est_stft[:, c].sum(1) - target_stft[:, c].sum(1)
            losses_f.append((diff.real**2 + diff.imag**2).mean())
            s, s_hat = stems[:, c].sum(1).double(), est[:, c].sum(1).double()  # (batch, channels, samples)
            n, n_hat = mix.double() - s, mix.double() - s_hat
            for b in range(s.shape[0]):
                for ch in range(s.shape[1]):
                    alpha = s[b, ch].dot(s[b, ch]) / (s[b, ch].dot(s[b, ch]) + n[b, ch].dot(n[b, ch]) + 1e-10)
                    cos_s = s[b, ch].dot(s_hat[b, ch]) / (s[b, ch].norm() * s_hat[b, ch].norm() + 1e-10)
                    cos_n = n[b, ch].dot(n_hat[b, ch]) / (n[b, ch].norm() * n_hat[b, ch].norm() + 1e-10)
                    wsdr.append(-alpha * cos_s - (1 - alpha) * cos_n)
    assert len(losses_f) == 14
    return torch.stack(losses_f).mean(), 1 + torch.stack(wsdr).mean()


def test_combination_matrix_has_the_14_subsets():
    m = combination_matrix()
    assert m.shape == (14, 4)
    assert sorted(m.sum(1).tolist()) == [1] * 4 + [2] * 6 + [3] * 4
    assert len({tuple(r) for r in m.tolist()}) == 14 and set(m.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("n_iter", [None, 1])
def test_matches_direct_per_combination_computation(n_iter):
    mask, mix_stft, stems, mix = _batch()
    crit = CombinationLoss(mcoeff=10.0, n_fft=N_FFT, hop_length=HOP, n_iter=n_iter)
    loss, extras = crit(mask, mix_stft, stems, mix)
    est_stft = wiener(mask * mix_stft.abs().unsqueeze(1), mix_stft, n_iter) if n_iter else mask * mix_stft.unsqueeze(1)
    ref_f, ref_t = _reference(est_stft, stems, mix, STFT(N_FFT, HOP))
    torch.testing.assert_close(extras["loss_f"], ref_f, rtol=1e-4, atol=0)
    torch.testing.assert_close(extras["loss_t"].double(), ref_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_f + 10 * ref_t.float(), rtol=1e-4, atol=0)
    # logging extras: 0-dim, detached tensors (no .item(), no device sync)
    assert all(v.dim() == 0 and not v.requires_grad for v in extras.values())


def test_perfect_estimate_with_plain_masks_is_exactly_zero():
    # stems that are power-of-two fractions of the mix: the STFT commutes exactly with those scalings, so
    # mask·X reproduces every stem spectrum bit for bit
    _, _, stems, mix = _batch(length=6000)
    frac = torch.tensor([0.5, 0.25, 0.125, 0.125])
    stems = frac[None, :, None, None] * mix.unsqueeze(1)
    mix_stft = STFT(N_FFT, HOP)(mix)
    mask = frac[None, :, None, None, None].expand((mix.shape[0], 4, *mix_stft.shape[1:]))
    loss, extras = CombinationLoss(n_fft=N_FFT, hop_length=HOP, n_iter=0)(mask, mix_stft, stems, mix)
    assert extras["loss_f"] == 0
    # iSTFT(STFT(x)) equals x only to float rounding, so the cosines are 1 − O(1e-12)
    assert 0 <= extras["loss_t"] < 1e-6
    assert loss < 1e-5


def test_perfect_estimate_through_the_wiener_filter():
    # With n_iter = 1 the masks pass through EM, which is exact when every time-frequency bin belongs to one
    # source: then v_j R_j Cxx⁻¹ is the identity (up to the sqrt(eps) regulariser) on source j's bins and 0
    # elsewhere. Faded sinusoids at well separated frequencies make the sources disjoint to ~1e-6.
    length = 8192
    t = torch.arange(length) / 44100
    fade = torch.hann_window(length, periodic=False)
    stems = (
        torch.stack(
            [
                torch.stack([a * torch.sin(2 * math.pi * f * t + k), b * torch.sin(2 * math.pi * f * t + k + 0.5)])
                for k, (f, a, b) in enumerate([(1000, 1.0, 0.3), (4000, 0.5, 0.9), (9000, 0.8, 0.8), (15000, 0.2, 1.0)])
            ]
        )[None]
        * fade
    )
    mix = stems.sum(1)
    stft = STFT(N_FFT, HOP)
    mix_stft, stem_stft = stft(mix), stft(stems)
    ideal = stem_stft.abs() / (mix_stft.abs().unsqueeze(1) + 1e-12)
    _loss, extras = CombinationLoss(n_fft=N_FFT, hop_length=HOP, n_iter=1)(ideal, mix_stft, stems, mix)
    energy = stem_stft.abs().square().mean()
    assert extras["loss_f"] < 1e-6 * energy
    assert 0 <= extras["loss_t"] < 1e-6
    # and a wrong mask is far from zero on both terms
    _, bad = CombinationLoss(n_fft=N_FFT, hop_length=HOP, n_iter=1)(ideal.roll(1, dims=1), mix_stft, stems, mix)
    assert bad["loss_f"] > 0.1 * energy and bad["loss_t"] > 0.5


def test_time_term_range():
    mask, mix_stft, stems, mix = _batch(seed=3)
    crit = CombinationLoss(n_fft=N_FFT, hop_length=HOP)
    for m in (mask, mask * 0.01, mask * 100):
        _, extras = crit(m, mix_stft, stems, mix)
        assert 0 <= extras["loss_t"] <= 2
    # anti-phase estimates: every target cosine is −1, far above the random-mask value
    anti = crit.time_term(-stems, stems, mix)
    assert 1.0 < anti <= 2.0
    assert crit.time_term(stems, stems, mix) < 1e-9


def test_gradients_reach_the_model_through_the_wiener_filter():
    torch.manual_seed(0)
    model = X_UMX(n_fft=N_FFT, hidden_channels=16, max_bins=100, nb_layers=2).train()
    _, mix_stft, stems, mix = _batch(length=3000)
    crit = CombinationLoss(n_fft=N_FFT, hop_length=HOP, n_iter=1)
    loss, _ = crit(model(mix_stft.abs()), mix_stft, stems, mix)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_gradient_through_wiener_matches_finite_differences():
    # float64 end to end (STFT, Wiener, both terms), tiny STFT so the numerical Jacobian is cheap
    mask, _, stems, mix = _batch(batch=1, length=40, dtype=torch.float64)
    stft = STFT(16, 4)
    mix_stft = stft(mix)
    mask = torch.rand((1, 4, *mix_stft.shape[1:]), dtype=torch.float64, requires_grad=True)
    crit = CombinationLoss(mcoeff=10.0, n_fft=16, hop_length=4, n_iter=1)
    assert torch.autograd.gradcheck(lambda m: crit(m, mix_stft, stems, mix)[0], (mask,), fast_mode=True)


def test_silent_source_and_zero_mask_give_finite_gradients():
    mask, mix_stft, stems, mix = _batch(seed=5)
    stems[:, 3] = 0  # no vocals in this chunk
    mix = stems.sum(1)
    mix_stft = STFT(N_FFT, HOP)(mix)
    mask = mask.clone()
    mask[:, 3] = 0  # and a model that predicts none
    mask.requires_grad_(True)
    for n_iter in (0, 1):
        loss, extras = CombinationLoss(n_fft=N_FFT, hop_length=HOP, n_iter=n_iter)(mask, mix_stft, stems, mix)
        (grad,) = torch.autograd.grad(loss, mask)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert 0 <= extras["loss_t"] <= 2


def test_shape_mismatch_is_rejected():
    mask, mix_stft, stems, mix = _batch()
    crit = CombinationLoss(n_fft=N_FFT, hop_length=HOP)
    with pytest.raises(ValueError, match="mask"):
        crit(mask[:, :3], mix_stft, stems, mix)
    with pytest.raises(ValueError, match="stems"):
        crit(mask, mix_stft, stems[:, :, :1], mix)
    with pytest.raises(ValueError, match="n_iter"):
        CombinationLoss(n_iter=-1)


def test_l1_loss_crops_to_the_common_length():
    pred = torch.randn(2, 4, 2, 100)
    stems = torch.randn(2, 4, 2, 90)
    loss, extras = L1Loss()(pred, stems)
    assert extras == {}
    torch.testing.assert_close(loss, (pred[..., :90] - stems).abs().mean())
    with pytest.raises(ValueError):
        L1Loss()(pred[:, :3], stems)
