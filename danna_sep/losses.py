"""Training losses: the combination loss of the spectral models and the L1 loss of Demucs.

Both take the model output and the batch and return ``(loss, extras)``; ``extras`` holds detached 0-dim tensors
for logging (no ``.item()``, so a step never waits for the device).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import SOURCES
from .spectral import STFT
from .wiener import wiener

_SDR_EPS = 1e-10


def combination_matrix(sources: int = len(SOURCES)) -> Tensor:
    """0/1 matrix ``(combinations, sources)``: row ``k`` selects the ``k``-th 1-, 2-, …, (sources−1)-source subset.

    For 4 sources: 14 rows (4 singles, 6 pairs, 4 triples); the full mix is left out, as in X-UMX.
    """
    subsets = [c for size in range(1, sources) for c in itertools.combinations(range(sources), size)]
    matrix = torch.zeros(len(subsets), sources)
    for row, subset in enumerate(subsets):
        matrix[row, list(subset)] = 1.0
    return matrix


class CombinationLoss(nn.Module):
    """X-UMX's combinational multi-domain loss on complex spectra, as Danna-Sep trains its spectral models.

    For every 1-, 2- and 3-source combination ``c`` (14 for 4 sources), with ``Ŷ`` the estimated complex spectra
    (multichannel Wiener filter with ``n_iter`` EM steps, or plain masking ``mask·X`` for ``n_iter`` None/0)::

        loss_f = mean_c mean_{b,ch,f,t} |Σ_{j∈c} Ŷ_j − Σ_{j∈c} Y_j|²
        loss_t = 1 + mean_{c,b,ch} wSDR(Σ_{j∈c} ŷ_j, Σ_{j∈c} y_j, mix)      ∈ [0, 2], 0 for a perfect estimate
        loss   = loss_f + mcoeff · loss_t

    ``ŷ = iSTFT(Ŷ)`` and wSDR is the weighted SDR loss of Choi et al. with target ``s``, estimate ``ŝ``, noise
    ``n = mix − s`` and estimated noise ``n̂ = mix − ŝ``, each (item, channel) a separate signal::

        α = ‖s‖² / (‖s‖² + ‖n‖²);   wSDR = −α·cos(s, ŝ) − (1 − α)·cos(n, n̂)

    ``forward(mask, mix_stft, stems, mix)``: mask ``(batch, sources, channels, bins, frames)`` ≥ 0, mix_stft complex
    ``(batch, channels, bins, frames)``, stems ``(batch, sources, channels, samples)``, mix ``(batch, channels,
    samples)`` → ``(loss, {"loss_f", "loss_t"})``.
    """

    # buffers (registered in __init__), declared for type checkers
    combos: Tensor  # (combinations, sources) 0/1
    signal_coeffs: Tensor  # (4, combinations, 2·sources + 1) float64: s, ŝ, n, n̂ from (stems, estimates, mix)

    def __init__(self, mcoeff: float = 10.0, n_fft: int = 4096, hop_length: int = 1024, n_iter: int | None = None):
        super().__init__()
        if n_iter is not None and n_iter < 0:
            raise ValueError(f"n_iter must be None or >= 0, got {n_iter}")
        self.mcoeff = mcoeff
        self.n_iter = n_iter or 0
        self.stft = STFT(n_fft, hop_length)
        sources = len(SOURCES)
        combos = combination_matrix(sources)
        self.register_buffer("combos", combos, persistent=False)
        # Each combination's target s, estimate ŝ, noise mix − s and estimated noise mix − ŝ is a fixed linear
        # combination of the 2·sources + 1 signals [stems, estimates, mix]: one coefficient row per combination.
        zeros, ones = torch.zeros_like(combos), torch.ones(len(combos), 1)
        coeffs = torch.stack(
            [
                torch.cat([combos, zeros, 0 * ones], 1),  # s
                torch.cat([zeros, combos, 0 * ones], 1),  # ŝ
                torch.cat([-combos, zeros, ones], 1),  # n = mix − s
                torch.cat([zeros, -combos, ones], 1),  # n̂ = mix − ŝ
            ]
        )
        self.register_buffer("signal_coeffs", coeffs.double(), persistent=False)

    def estimate(self, mask: Tensor, mix_stft: Tensor) -> Tensor:
        """Complex source estimates ``(batch, sources, channels, bins, frames)`` from the masks."""
        if self.n_iter == 0:
            return mask * mix_stft.unsqueeze(1)
        return wiener(mask * mix_stft.abs().unsqueeze(1), mix_stft, self.n_iter)

    def forward(self, mask: Tensor, mix_stft: Tensor, stems: Tensor, mix: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if mask.dim() != 5 or mask.shape[1] != len(SOURCES) or mask.shape[:1] + mask.shape[2:] != mix_stft.shape:
            raise ValueError(f"mask {list(mask.shape)} does not match mix_stft {list(mix_stft.shape)}")
        if stems.shape[:3] != mask.shape[:3] or mix.shape != stems.shape[:1] + stems.shape[2:]:
            raise ValueError(f"stems {list(stems.shape)} / mix {list(mix.shape)} do not match mask {list(mask.shape)}")
        # masks from an autocast (half-precision) forward: complex half is not supported, so compute in fp32/fp64
        mask = mask.to(torch.float64 if mix_stft.dtype == torch.complex128 else torch.float32)
        est_stft = self.estimate(mask, mix_stft)
        loss_f = self.frequency_term(est_stft, self.stft(stems))
        est = self.stft.inverse(est_stft, stems.shape[-1])
        loss_t = self.time_term(est, stems, mix).to(loss_f.dtype)
        loss = loss_f + self.mcoeff * loss_t
        return loss, {"loss_f": loss_f.detach(), "loss_t": loss_t.detach()}

    def frequency_term(self, est_stft: Tensor, target_stft: Tensor) -> Tensor:
        """Complex MSE averaged over the combinations; both ``(batch, sources, channels, bins, frames)``."""
        sources = est_stft.shape[1]
        # Σ_c |Σ_{j∈c} e_j|² = Σ_{j,k} (MᵀM)_jk Re⟨e_j, e_k⟩: a sources × sources Gram matrix of the errors
        # replaces the (batch, 14, channels, bins, frames) tensor of combination sums.
        err = torch.view_as_real(est_stft - target_stft).transpose(0, 1).reshape(sources, -1)
        gram = err @ err.T
        per_combo = torch.einsum("kj,jl,kl->k", self.combos.to(gram.dtype), gram, self.combos.to(gram.dtype))
        return per_combo.mean() / (est_stft.numel() // sources)

    def time_term(self, est: Tensor, stems: Tensor, mix: Tensor) -> Tensor:
        """``1 + mean wSDR`` over combinations, items and channels (float64); waveforms ``(batch, sources,
        channels, samples)`` and mix ``(batch, channels, samples)``."""
        # Inner products of the 2·sources + 1 signals per (item, channel), accumulated in float64: the noise
        # energies below are differences of these (‖mix − s‖² = ‖mix‖² − 2⟨mix, s⟩ + ‖s‖²) and would cancel in
        # single precision when a combination covers nearly the whole mix.
        signals = torch.cat([stems.transpose(1, 2), est.transpose(1, 2), mix.unsqueeze(2)], 2)  # (B, C, 2S+1, L)
        signals = signals.double()
        gram = signals @ signals.transpose(-1, -2)  # (B, C, 2S+1, 2S+1)
        target, estimate, noise, est_noise = self.signal_coeffs

        def inner(u: Tensor, v: Tensor) -> Tensor:  # ⟨Σ_i u_ki z_i, Σ_j v_kj z_j⟩ → (combinations, B, C)
            return torch.einsum("ki,bcij,kj->kbc", u, gram, v)

        def cosine(u: Tensor, v: Tensor) -> Tensor:
            uv = inner(u, v)
            norms = F.relu(inner(u, u)).sqrt() * F.relu(inner(v, v)).sqrt()
            return uv / (norms + _SDR_EPS)

        s_energy = F.relu(inner(target, target))
        n_energy = F.relu(inner(noise, noise))
        alpha = s_energy / (s_energy + n_energy + _SDR_EPS)
        wsdr = -alpha * cosine(target, estimate) - (1 - alpha) * cosine(noise, est_noise)
        return 1 + wsdr.mean()


class L1Loss(nn.Module):
    """Mean absolute error between predicted and true stems ``(batch, sources, channels, samples)``.

    Both are cropped to the shorter length. ``forward(pred, stems)`` → ``(loss, {})``.
    """

    def forward(self, pred: Tensor, stems: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if pred.shape[:-1] != stems.shape[:-1]:
            raise ValueError(f"pred {list(pred.shape)} and stems {list(stems.shape)} differ before the time axis")
        length = min(pred.shape[-1], stems.shape[-1])
        return F.l1_loss(pred[..., :length], stems[..., :length]), {}
