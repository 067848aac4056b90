"""STFT front-end shared by the spectral models, the losses and separation.

Parameters follow the original system: n_fft 4096, hop 1024, periodic Hann window, ``center=True`` with reflect
padding, so a signal of ``L`` samples gives ``1 + L // hop`` frames of ``n_fft // 2 + 1 = 2049`` bins.
Unlike the original, the inverse takes the target length and returns exactly that many samples.
"""

import torch
from torch import Tensor, nn

from . import HOP_LENGTH, N_FFT


def num_frames(length: int, hop_length: int = HOP_LENGTH) -> int:
    """Number of STFT frames for ``length`` samples (centred STFT)."""
    return 1 + length // hop_length


def reflect_pads(length: int, n_fft: int = N_FFT) -> bool:
    """Whether the centred STFT of ``length`` samples pads by reflection: that needs more than ``n_fft // 2``
    samples; very short inputs are zero-padded instead."""
    return length > n_fft // 2


def frame_span(start: int, stop: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> tuple[int, int]:
    """The samples ``[first, last)`` that frames ``[start, stop)`` of the centred STFT cover, as positions in the
    signal (negative or past its end where the frames reach into the padding)."""
    return start * hop_length - n_fft // 2, (stop - 1) * hop_length + n_fft // 2


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of bins up to and including ``bandwidth`` Hz (1487 for 16 kHz at 44.1 kHz / 4096)."""
    import math

    return math.floor(bandwidth * n_fft / sample_rate) + 1


class STFT(nn.Module):
    """Complex STFT and its exact-length inverse, batched over any leading dimensions.

    ``forward``: waveform ``(..., samples)`` → complex spectrogram ``(..., bins, frames)``.
    ``inverse``: complex ``(..., bins, frames)`` → waveform ``(..., length)``.
    """

    window: Tensor

    def __init__(self, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        # periodic Hann, as torch.hann_window's default; a buffer so it follows .to(device)
        # float64 so that float64 transforms are exact; cast per call (4096 values, negligible)
        self.register_buffer("window", torch.hann_window(n_fft, dtype=torch.float64), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        pad_mode = "reflect" if reflect_pads(shape[-1], self.n_fft) else "constant"
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window.to(x.dtype),
            center=True,
            pad_mode=pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(shape[:-1] + spec.shape[-2:])

    @torch.jit.export
    def inverse(self, spec: Tensor, length: int | None = None) -> Tensor:
        """Inverse STFT. With ``length=None`` the output has ``hop · (frames − 1)`` samples."""
        shape = spec.shape
        spec = spec.reshape(-1, shape[-2], shape[-1])
        real_dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
        wav = torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window.to(real_dtype),
            center=True,
            normalized=False,
            onesided=True,
            length=length,
        )
        return wav.reshape(shape[:-2] + wav.shape[-1:])


def magnitude(spec: Tensor) -> Tensor:
    """Linear magnitude ``|X|`` of a complex spectrogram (what the spectral models take)."""
    return spec.abs()
