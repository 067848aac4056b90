"""Training augmentations, applied to each stem on its own (reference §4).

CPU, per item (inside the dataset, driven by the item's numpy generator so they are reproducible)::

    StemAugment = RandomGain U[0.25, 1.25] → RandomSwapLR p=.5 → RandomFlipPolarity p=.5
    stems (sources, channels, samples) → same shape

Device, per batch (on the training device, after the DataLoader)::

    DeviceAugment = RandomPitchShift (integer semitones −2…+2, p=.2) → RandomSpeed (0.9/1.0/1.1, p=.2) → Σ stems
    stems (batch, sources, channels, samples) → (mixture (batch, channels, samples), stems same shape)

Each stem is selected with probability ``p`` and then gets one option drawn uniformly (0 semitones / speed 1.0
included, as in the original). The draws come from a CPU ``torch.Generator`` (``forward(stems, generator)``), so
a seeded generator reproduces a run on any device without a device sync. Lengths are preserved: longer results
are cropped, shorter ones zero-padded at the end. Every argument is a config key (``device_augment.args``);
a probability of 0 switches a step off.

Pitch shift = phase-vocoder time stretch by the pitch ratio, then band-limited resampling back to the input
length. Both halves are batched tensor ops that run on any device: the stretch uses native complex
``torch.stft``/``istft`` with identity phase locking (Laroche & Dolson 1999), the resampling is julius'
``ResampleFrac`` (exact rational ratios, kernels built once per ratio). The ratio 2^(s/12) is approximated by a
fraction with a denominator ≤ 100 (0.1 cent off for ±1, ±2 semitones), so the steps are integer semitones,
unlike the original's 0.90/0.94/1.06/1.12 (reference §12.11).

Why a phase vocoder (and not WSOLA): it batches over any number of stems with the same few tensor ops, with no
per-frame cross-correlation search, and it keeps polyphonic material (chords, pads) coherent where WSOLA's
single time-domain alignment per frame can only favour one partial. Its known weakness is phase drift between
bins; the plain algorithm (``phase_lock=False``: the recurrence of torchaudio's ``phase_vocoder``, which the
original used) even cancels most of a steady tone when it stretches longer (rate < 1, i.e. every upward shift),
because the reflect-padded first frames give each bin a different phase error that never goes away. Phase locking
ties every bin to its spectral peak and fixes that
(see tests/test_augment.py::test_phase_locking_keeps_stretched_tones_coherent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import julius
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

# ---------------------------------------------------------------------------------------------------------------
# CPU, per item


class _StemStep:
    """A per-stem CPU augmentation: draws a scale and a left/right swap per stem, then applies them.

    Every step is linear in the stem, so a chain can draw all its steps first and touch the audio once
    (:func:`apply_stem_ops`): the same result as applying the steps one after another, in one pass.
    """

    def draw(self, rng: np.random.Generator, sources: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """→ (scale (sources,) float32, swap (sources,) bool)."""
        raise NotImplementedError

    def __call__(self, stems: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """stems (sources, channels, samples) → same shape."""
        return apply_stem_ops(stems, *self.draw(rng, stems.shape[0]))


def apply_stem_ops(stems: torch.Tensor, scale: np.ndarray, swap: np.ndarray) -> torch.Tensor:
    """Swap the channels of the stems where ``swap`` (stereo only) and multiply each stem by its ``scale``.

    One multiply per (stem, channel) row, written straight to its destination row: a single pass over the audio
    (a gather followed by a multiply, or ``torch.where`` over a flipped copy, reads and writes it 2–3 times).
    """
    out = torch.empty_like(stems)
    stereo = stems.shape[1] == 2
    for s in range(stems.shape[0]):
        for c in range(stems.shape[1]):
            torch.mul(stems[s, 1 - c if stereo and swap[s] else c], float(scale[s]), out=out[s, c])
    return out


class RandomGain(_StemStep):
    """Multiply each stem by a gain drawn from U[low, high]."""

    def __init__(self, low: float = 0.25, high: float = 1.25) -> None:
        if not 0 <= low <= high:
            raise ConfigError(f"gain: need 0 <= low <= high, got [{low}, {high}]")
        self.low, self.high = low, high

    def draw(self, rng: np.random.Generator, sources: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.uniform(self.low, self.high, size=sources).astype(np.float32), np.zeros(sources, bool)


class RandomSwapLR(_StemStep):
    """Swap the left and right channel of each stem with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability(p, "swap_lr_p")

    def draw(self, rng: np.random.Generator, sources: int) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(sources, np.float32), rng.random(sources) < self.p


class RandomFlipPolarity(_StemStep):
    """Multiply each stem by −1 with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability(p, "flip_polarity_p")

    def draw(self, rng: np.random.Generator, sources: int) -> tuple[np.ndarray, np.ndarray]:
        return np.where(rng.random(sources) < self.p, -1.0, 1.0).astype(np.float32), np.zeros(sources, bool)


class StemAugment:
    """The CPU augmentation chain; each step is switched off by ``gain=None`` or a probability of 0.

    Args:
        gain: ``(low, high)`` of the uniform gain, or None.
        swap_lr_p: probability of a left/right swap per stem.
        flip_polarity_p: probability of a polarity flip per stem.
    """

    def __init__(
        self,
        gain: Sequence[float] | None = (0.25, 1.25),
        swap_lr_p: float = 0.5,
        flip_polarity_p: float = 0.5,
    ) -> None:
        self.steps: list[_StemStep] = []
        if gain is not None:
            if len(gain) != 2:
                raise ConfigError(f"gain: expected [low, high], got {list(gain)}")
            self.steps.append(RandomGain(*gain))
        if swap_lr_p > 0:
            self.steps.append(RandomSwapLR(swap_lr_p))
        if flip_polarity_p > 0:
            self.steps.append(RandomFlipPolarity(flip_polarity_p))

    def __call__(self, stems: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """stems (sources, channels, samples) → same shape; all randomness from ``rng``, one pass over the audio."""
        n = stems.shape[0]
        scale, swap = np.ones(n, np.float32), np.zeros(n, bool)
        for step in self.steps:
            step_scale, step_swap = step.draw(rng, n)
            scale, swap = scale * step_scale, swap ^ step_swap
        return apply_stem_ops(stems, scale, swap)


def _probability(p: float, name: str) -> float:
    if not 0 <= p <= 1:
        raise ConfigError(f"{name}: probability {p} is outside [0, 1]")
    return float(p)


# ---------------------------------------------------------------------------------------------------------------
# device, per batch


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last dimension to ``length``."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return nn.functional.pad(x, (0, length - x.shape[-1]))


def _ratio(value: float) -> Fraction:
    """A close fraction with a small denominator: julius' cost grows with the reduced numerator/denominator."""
    return Fraction(value).limit_denominator(100)


def _resamplers(ratios: Sequence[Fraction]) -> nn.ModuleDict:
    """One julius resampler per ratio (``ratio`` input samples → 1 output sample), built once: the kernels are
    the costly part, and as buffers they follow the module to its device."""
    return nn.ModuleDict({_key(r): julius.ResampleFrac(r.numerator, r.denominator) for r in set(ratios) if r != 1})


def _key(ratio: Fraction) -> str:
    return f"{ratio.numerator}_{ratio.denominator}"


def _run(resampler: nn.Module, x: torch.Tensor, length: int) -> torch.Tensor:
    """Resample (..., samples) in the kernel's dtype, then crop or zero-pad to ``length``."""
    kernel = resampler.get_buffer("kernel")
    if kernel.device != x.device:  # the module was not moved with .to(device): follow the data once
        resampler.to(x.device)
    return _fit_length(resampler(x.to(kernel.dtype)), length).to(x.dtype)


def phase_vocoder(spec: torch.Tensor, rate: float, hop_length: int, phase_lock: bool = True) -> torch.Tensor:
    """Time-stretch a complex STFT: (..., bins, frames) → (..., bins, ceil(frames / rate)); rate > 1 = faster.

    Magnitudes are interpolated between analysis frames, phases advance by each bin's instantaneous frequency.
    With ``phase_lock`` every bin keeps its analysis phase offset to the spectral peak whose region it lies in
    (identity phase locking). Without it, bins drift apart for good wherever the analysis is not a clean sinusoid
    (e.g. the reflect-padded first frames), which at rate < 1 can cancel most of a steady tone.
    """
    bins, frames = spec.shape[-2:]
    spec = spec.transpose(-1, -2)  # (..., frames, bins): the per-frame peak search runs along contiguous bins
    real_dtype = spec.real.dtype
    steps = torch.arange(0, frames, rate, device=spec.device, dtype=torch.float64)
    idx = steps.floor().long()
    alpha = (steps - idx).to(real_dtype)[:, None]
    # analysis magnitude and phase once, two zero frames past the end so that idx + 1 always exists
    mag_a = nn.functional.pad(spec.abs(), (0, 0, 0, 2))
    ang_a = nn.functional.pad(spec.angle(), (0, 0, 0, 2))
    m0, m1 = mag_a.index_select(-2, idx), mag_a.index_select(-2, idx + 1)
    ang0 = ang_a.index_select(-2, idx)
    mag = m0 + alpha * (m1 - m0)
    # expected phase advance per hop of each bin's centre frequency
    expected = torch.linspace(0, math.pi * hop_length, bins, device=spec.device, dtype=real_dtype)
    delta = ang_a.index_select(-2, idx + 1) - ang0 - expected
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi))
    advance = torch.remainder(delta + expected, 2 * math.pi)  # wrapped: keeps the float32 cumsum precise
    phase = torch.cat([ang_a[..., :1, :], advance[..., :-1, :]], dim=-2).cumsum(-2)
    if phase_lock:
        peak_of = _peak_regions(mag)
        phase = torch.gather(phase, -1, peak_of) + ang0 - torch.gather(ang0, -1, peak_of)
    return torch.polar(mag, phase).transpose(-1, -2)


def _peak_regions(mag: torch.Tensor) -> torch.Tensor:
    """Index of the nearest spectral peak of every bin: (..., frames, bins) real → same shape int64."""
    bins = mag.shape[-1]
    left = nn.functional.pad(mag[..., :-1], (1, 0), value=-1.0)
    right = nn.functional.pad(mag[..., 1:], (0, 1), value=-1.0)
    peak = (mag > left) & (mag >= right)
    pos = torch.arange(bins, device=mag.device).expand_as(mag)
    far = bins * 2
    # previous peak (running max of peak positions) and next peak (reverse running min)
    prev = torch.where(peak, pos, -far).cummax(-1).values
    nxt = torch.where(peak, pos, far).flip(-1).cummin(-1).values.flip(-1)
    nearest = torch.where((pos - prev) <= (nxt - pos), prev, nxt)
    # a frame without any peak (silence) keeps each bin's own phase
    return torch.where((nearest < 0) | (nearest >= bins), pos, nearest)


class _PerStemAugment(nn.Module):
    """Selects stems with probability ``p``, draws one option per selected stem, applies ``transform`` per option
    (not ``apply``: that name is ``nn.Module.apply(fn)``, which walks the submodules)."""

    def __init__(self, options: Sequence[float], p: float, name: str) -> None:
        super().__init__()
        if len(options) == 0:
            raise ConfigError(f"{name}: give at least one option")
        self.options = [float(o) for o in options]
        self.p = _probability(p, f"{name}_p")

    def transform(self, x: torch.Tensor, option: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self, option: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, stems: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """stems (batch, sources, channels, samples) → same shape. Draws on the CPU from ``generator``."""
        if self.p == 0:
            return stems
        batch, sources, channels, samples = stems.shape
        n = batch * sources
        selected = torch.rand(n, generator=generator) < self.p
        choice = torch.randint(len(self.options), (n,), generator=generator)
        flat = stems.reshape(n, channels, samples)
        out = None
        for k, option in enumerate(self.options):
            if self.identity(option):
                continue
            rows = torch.nonzero(selected & (choice == k)).flatten()
            if rows.numel() == 0:
                continue
            rows = rows.to(stems.device)
            if out is None:
                out = flat.clone()
            x = flat.index_select(0, rows).reshape(-1, samples)
            out[rows] = self.transform(x, option).reshape(-1, channels, samples).to(out.dtype)
        return stems if out is None else out.reshape(stems.shape)


class RandomPitchShift(_PerStemAugment):
    """Shift each selected stem by a whole number of semitones, same length and tempo.

    Args:
        semitones: the options (integers).
        p: probability that a stem is shifted (then an option is drawn uniformly).
        n_fft, hop_length: phase-vocoder STFT size.
        phase_lock: identity phase locking in the phase vocoder.
    """

    window: torch.Tensor  # (n_fft,) Hann window, a buffer (follows the module to its device)

    def __init__(
        self,
        semitones: Sequence[int] = (-2, -1, 0, 1, 2),
        p: float = 0.2,
        n_fft: int = 2048,
        hop_length: int = 512,
        phase_lock: bool = True,
    ) -> None:
        if any(int(s) != s for s in semitones):
            raise ConfigError(f"pitch_semitones: {list(semitones)} must be integers")
        super().__init__(semitones, p, "pitch")
        self.n_fft, self.hop_length, self.phase_lock = n_fft, hop_length, phase_lock
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.resample = _resamplers([_ratio(2.0 ** (o / 12.0)) for o in self.options])

    def identity(self, option: float) -> bool:
        return option == 0

    def transform(self, x: torch.Tensor, option: float) -> torch.Tensor:
        """(n, samples) → (n, samples), pitch × 2^(option/12)."""
        samples = x.shape[-1]
        ratio = _ratio(2.0 ** (option / 12.0))
        # stretch to samples·ratio at the same pitch, then play it back ratio times faster
        stretched_len = math.ceil(samples * ratio)
        window = self.window.to(device=x.device, dtype=x.dtype)
        spec = torch.stft(x, self.n_fft, self.hop_length, window=window, center=True, return_complex=True)
        spec = phase_vocoder(spec, float(1 / ratio), self.hop_length, self.phase_lock)
        y = torch.istft(spec, self.n_fft, self.hop_length, window=window, center=True, length=stretched_len)
        return _run(self.resample[_key(ratio)], y, samples)


class RandomSpeed(_PerStemAugment):
    """Play each selected stem ``factor`` times faster (tempo and pitch change together), same length.

    Args:
        factors: the options; 1.1 = 10 % faster (shorter: zero tail), 0.9 = slower (cropped).
        p: probability that a stem is changed (then a factor is drawn uniformly).
    """

    def __init__(self, factors: Sequence[float] = (0.9, 1.0, 1.1), p: float = 0.2) -> None:
        if any(f <= 0 for f in factors):
            raise ConfigError(f"speed_factors: {list(factors)} must be > 0")
        super().__init__(factors, p, "speed")
        self.resample = _resamplers([_ratio(o) for o in self.options])

    def identity(self, option: float) -> bool:
        return _ratio(option) == 1

    def transform(self, x: torch.Tensor, option: float) -> torch.Tensor:
        """(n, samples) → (n, samples), ``option`` times faster."""
        return _run(self.resample[_key(_ratio(option))], x, x.shape[-1])


class DeviceAugment(nn.Module):
    """Pitch shift, then speed change, per stem; returns the re-summed mixture and the stems.

    Every argument can come from the config's ``device_augment.args``; a probability of 0 switches a step off.
    """

    def __init__(
        self,
        pitch_p: float = 0.2,
        pitch_semitones: Sequence[int] = (-2, -1, 0, 1, 2),
        pitch_n_fft: int = 2048,
        pitch_hop_length: int = 512,
        pitch_phase_lock: bool = True,
        speed_p: float = 0.2,
        speed_factors: Sequence[float] = (0.9, 1.0, 1.1),
    ) -> None:
        super().__init__()
        self.pitch = RandomPitchShift(pitch_semitones, pitch_p, pitch_n_fft, pitch_hop_length, pitch_phase_lock)
        self.speed = RandomSpeed(speed_factors, speed_p)

    def forward(
        self, stems: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """stems (batch, sources, channels, samples) → (mixture (batch, channels, samples), stems same shape)."""
        stems = self.speed(self.pitch(stems, generator), generator)
        return stems.sum(1), stems
