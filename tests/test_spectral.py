import numpy as np
import pytest
import torch

from danna_sep.spectral import STFT, bandwidth_to_max_bin, magnitude, num_frames


@pytest.mark.parametrize("length", [100, 1024, 44100, 44100 * 2 + 17, 4096 * 3 - 1])
def test_exact_length_round_trip(length):
    stft = STFT()
    x = torch.randn(2, 2, length)
    spec = stft(x)
    assert spec.shape == (2, 2, 2049, num_frames(length))
    assert spec.dtype == torch.complex64
    y = stft.inverse(spec, length)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-4)


def test_matches_reference_parameters():
    # the original front-end: torch.stft with periodic Hann, centre, reflect padding
    x = torch.randn(3, 50000, dtype=torch.float64)
    ref = torch.stft(
        x,
        4096,
        1024,
        4096,
        torch.hann_window(4096, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    out = STFT()(x)
    assert out.dtype == torch.complex128
    torch.testing.assert_close(out, ref)
    # 11.88 s → 512 frames (the U-Net training length), 6 s → 259 frames
    assert num_frames(523908) == 512 and num_frames(264600) == 259


def test_any_leading_dims_and_default_inverse_length():
    stft = STFT()
    x = torch.randn(2, 3, 4, 9000)
    spec = stft(x)
    assert spec.shape[:3] == (2, 3, 4)
    y = stft.inverse(spec)
    assert y.shape == (2, 3, 4, 1024 * (spec.shape[-1] - 1))


def test_magnitude_and_bandwidth():
    spec = torch.polar(torch.rand(4, 5), torch.rand(4, 5) * 6)
    torch.testing.assert_close(magnitude(spec), spec.abs())
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487


def test_scriptable():
    scripted = torch.jit.script(STFT())
    x = torch.randn(2, 20000)
    torch.testing.assert_close(scripted.inverse(scripted(x), 20000), x, atol=1e-5, rtol=1e-4)


def test_parseval_energy_of_sine():
    # a 1 kHz sine puts its energy in the bin nearest 1 kHz
    sr = 44100
    t = np.arange(sr) / sr
    x = torch.tensor(np.sin(2 * np.pi * 1000 * t), dtype=torch.float32)
    mag = STFT()(x).abs().mean(-1)
    assert abs(int(mag.argmax()) - round(1000 * 4096 / sr)) <= 1
