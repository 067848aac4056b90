"""CPU per-stem augmentations and batched device augmentations (pitch shift, speed change)."""

import math

import numpy as np
import pytest
import torch

from danna_sep.data.augment import (
    DeviceAugment,
    RandomFlipPolarity,
    RandomGain,
    RandomPitchShift,
    RandomSpeed,
    RandomSwapLR,
    StemAugment,
    phase_vocoder,
)
from danna_sep.errors import ConfigError

pytest.importorskip("julius", reason="device augmentations resample with julius")

SR = 44100


def stems_cpu(seed: int = 0, sources: int = 4, samples: int = 1000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sources, 2, samples, generator=g)


# ---------------------------------------------------------------------------------------------------------------
# CPU


def test_gain_per_stem_in_range():
    x = stems_cpu()
    y = RandomGain(0.25, 1.25)(x, np.random.default_rng(0))
    gains = (y / x).reshape(4, -1)
    assert torch.allclose(gains, gains[:, :1].expand_as(gains), atol=1e-5)  # one gain per stem
    assert gains[:, 0].min() >= 0.25 and gains[:, 0].max() <= 1.25
    assert len(set(gains[:, 0].tolist())) == 4  # drawn per stem
    many = np.concatenate(
        [RandomGain()(torch.ones(4, 1, 1), np.random.default_rng(i)).flatten().numpy() for i in range(200)]
    )
    assert abs(many.mean() - 0.75) < 0.03 and many.min() >= 0.25 and many.max() <= 1.25


def test_swap_and_flip():
    x = stems_cpu()
    rng = np.random.default_rng(0)
    torch.testing.assert_close(RandomSwapLR(1.0)(x, rng), x.flip(1))
    torch.testing.assert_close(RandomSwapLR(0.0)(x, rng), x)
    torch.testing.assert_close(RandomFlipPolarity(1.0)(x, rng), -x)
    torch.testing.assert_close(RandomFlipPolarity(0.0)(x, rng), x)
    swapped = flipped = 0
    for i in range(250):
        r = np.random.default_rng(i)
        swapped += int(sum(torch.equal(a, b) for a, b in zip(RandomSwapLR(0.5)(x, r), x.flip(1), strict=True)))
        flipped += int(sum(torch.equal(a, -b) for a, b in zip(RandomFlipPolarity(0.5)(x, r), x, strict=True)))
    assert abs(swapped / 1000 - 0.5) < 0.06 and abs(flipped / 1000 - 0.5) < 0.06  # p = .5 per stem


def test_stem_augment_chain_is_reproducible_and_switchable():
    x = stems_cpu()
    aug = StemAugment()
    a, b = aug(x, np.random.default_rng(7)), aug(x, np.random.default_rng(7))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, aug(x, np.random.default_rng(8)))
    assert a.shape == x.shape
    torch.testing.assert_close(StemAugment(gain=None, swap_lr_p=0, flip_polarity_p=0)(x, np.random.default_rng(7)), x)
    only_gain = StemAugment(gain=(2.0, 2.0), swap_lr_p=0, flip_polarity_p=0)(x, np.random.default_rng(0))
    torch.testing.assert_close(only_gain, 2 * x)


def test_cpu_config_errors():
    with pytest.raises(ConfigError):
        StemAugment(gain=(1.0,))
    with pytest.raises(ConfigError):
        StemAugment(gain=(1.5, 0.5))
    with pytest.raises(ConfigError):
        StemAugment(swap_lr_p=1.5)


# ---------------------------------------------------------------------------------------------------------------
# device


def tone(freq: float, seconds: float = 1.0, batch: int = 1, sources: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    x = 0.5 * torch.sin(2 * math.pi * freq * t)
    return x.expand(batch, sources, 2, -1).clone()


def peak_hz(x: torch.Tensor) -> float:
    """Frequency of the strongest component of a 1-D signal (interpolated between bins)."""
    n = x.shape[-1]
    spec = torch.fft.rfft(x * torch.hann_window(n, dtype=x.dtype)).abs()
    k = int(spec.argmax())
    a, b, c = spec[k - 1].item(), spec[k].item(), spec[k + 1].item()
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


def rms(x: torch.Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


@pytest.mark.parametrize("semitones", [-2, -1, 1, 2])
def test_pitch_shift_integer_semitones_same_length(semitones):
    x = tone(440.0)
    y = RandomPitchShift([semitones], p=1.0)(x)
    assert y.shape == x.shape
    core = y[0, 0, 0, 4096:-4096]
    target = 440.0 * 2 ** (semitones / 12)
    assert abs(peak_hz(core) - target) < 0.002 * target  # an integer number of semitones (±3.5 cents)
    assert abs(rms(core) / rms(x[0, 0, 0]) - 1) < 0.05  # loudness kept
    torch.testing.assert_close(y[0, 0, 0], y[0, 0, 1])  # both channels alike


def test_phase_locking_keeps_stretched_tones_coherent():
    # stretching longer (rate < 1) with a plain phase vocoder lets bins drift apart and cancel a steady tone
    x = tone(440.0)[0, 0, :1]
    window = torch.hann_window(2048)
    spec = torch.stft(x, 2048, 512, window=window, return_complex=True)
    for lock, expect_ok in ((True, True), (False, False)):
        y = torch.istft(phase_vocoder(spec, 0.9, 512, phase_lock=lock), 2048, 512, window=window)
        ratio = rms(y[..., 4096:-4096]) / rms(x)
        assert (abs(ratio - 1) < 0.05) == expect_ok
    stretched = phase_vocoder(spec, 0.5, 512)
    assert stretched.shape[-1] == math.ceil(spec.shape[-1] / 0.5)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_change(factor):
    x = tone(440.0)
    y = RandomSpeed([factor], p=1.0)(x)
    assert y.shape == x.shape
    played = int(SR / factor) if factor > 1 else SR
    assert abs(peak_hz(y[0, 0, 0, 2048 : played - 2048]) - 440 * factor) < 1.0
    if factor > 1:  # faster: the input ends early, the rest is zero
        assert y[..., played + 64 :].abs().max() == 0
        assert rms(y[..., 2048 : played - 2048]) > 0.3
    else:  # slower: cropped, no silence
        assert rms(y[..., -2048:]) > 0.3


def test_selection_probability_and_identity_options():
    x = tone(440.0, seconds=0.1, batch=8, sources=4)
    assert RandomPitchShift(p=0.0)(x) is x
    assert RandomSpeed([1.0], p=1.0)(x) is x
    assert RandomPitchShift([0], p=1.0)(x) is x
    # with p = .2 and two non-identity options, about 20 % of the stems change, each one as a whole
    changed = 0
    speed = RandomSpeed([0.9, 1.1], p=0.2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = speed(x, g)
        diff = (y - x).abs().amax(dim=(2, 3)) > 1e-4
        changed += int(diff.sum())
    assert abs(changed / (20 * 32) - 0.2) < 0.05


def test_per_stem_options_and_mixture():
    x = torch.stack([tone(f, seconds=0.5)[0, 0] for f in (220.0, 330.0, 440.0, 550.0)])[None].repeat(3, 1, 1, 1)
    aug = DeviceAugment(pitch_p=1.0, pitch_semitones=[-2, 2], speed_p=0.0)
    g = torch.Generator().manual_seed(1)
    mix, y = aug(x, g)
    assert y.shape == x.shape and mix.shape == (3, 2, x.shape[-1])
    torch.testing.assert_close(mix, y.sum(1))
    ratios = torch.tensor([[peak_hz(y[b, s, 0, 2048:-2048]) / peak_hz(x[b, s, 0]) for s in range(4)] for b in range(3)])
    up, down = 2 ** (2 / 12), 2 ** (-2 / 12)
    assert torch.all(((ratios - up).abs() < 0.01) | ((ratios - down).abs() < 0.01))
    assert (ratios > 1).any() and (ratios < 1).any()  # options drawn per stem


def test_device_augment_reproducible_and_switchable():
    x = torch.randn(2, 4, 2, 8192, generator=torch.Generator().manual_seed(0))
    aug = DeviceAugment(pitch_p=0.5, speed_p=0.5)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    mix, y = DeviceAugment(pitch_p=0.0, speed_p=0.0)(x)
    assert y is x
    torch.testing.assert_close(mix, x.sum(1))
    # float64 input stays float64
    assert DeviceAugment(pitch_p=1.0, speed_p=1.0)(x.double())[1].dtype == torch.float64


def test_device_config_errors():
    with pytest.raises(ConfigError, match="integers"):
        RandomPitchShift([0.5])
    with pytest.raises(ConfigError):
        RandomSpeed([0.0])
    with pytest.raises(ConfigError):
        DeviceAugment(speed_p=-0.1)
    with pytest.raises(ConfigError):
        RandomSpeed([])
