"""The original inference tool, danna-sep 1.0.2 (reference §10), as a test fixture.

Written from the reference, not from the original code; it reproduces what 1.0.2 computes, quirks included::

    wav (2, n) ─ pad 1024 at the end ─┬─ STFT ─ |X| ─ U-Net on 2584-frame chunks ─ ×|X| ─ Wiener (numpy norbert,
                                      │                                         1 iteration) ─ iSTFT ─┐
                                      ├─ [22050 zeros | y] ─ Demucs ─ read from 22050 ─ clamp ±0.99 ──┤─ Σ weights ·[:n]
                                      └─ STFT ─ |X| ─ X-UMX on the whole track ─ ×|X| ─ Wiener ─ iSTFT ┘  ─▶ (4, 2, n)

Everything runs on the CPU, in float32 except the Wiener filter (complex128). Models are files: ``.onnx`` through an
onnxruntime CPU session, anything else through ``torch.jit.load``. The U-Net's chunks are non-overlapping and a
last chunk shorter than 64 frames cannot pass its six poolings: ``short_chunk="crash"`` lets that error happen, as
1.0.2 did on the CPU; ``"pad128"`` zero-pads such a chunk to 128 frames and crops the masks back, as the
original's GPU path (``tf_sep_gpu``) did for every chunk shorter than 128 frames.

Note: ``torch.stft`` returns a transposed (non-contiguous) tensor, and the X-UMX reshapes its input with
``.view``, so a TorchScript X-UMX (``xumx_mwf.pth``) fails in :func:`tf_sep` exactly as the release's would on
this torch; 1.0.2 runs the X-UMX as ``xumx.onnx``, which onnxruntime reads whatever its strides.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import norbert
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 44100
N_FFT = 4096
HOP = 1024
UNET_CHUNK = 2584  # frames per U-Net call (about 60 s)
MIN_FRAMES = 64  # 2**6: shorter inputs fail the U-Net's six poolings
PAD_FRAMES = 128  # what the GPU path padded short chunks to
MAX_SHIFT = 22050
SHORT_CHUNK = ("crash", "pad128")

# rows: drums, bass, other, vocals; blended in this order (unet, demucs, xumx)
WEIGHTS: dict[str, Tensor] = {
    "unet": torch.tensor([0.2, 0.17, 0.5, 0.4]),
    "demucs": torch.tensor([0.6, 0.73, 0.5, 0.4]),
    "xumx": torch.tensor([0.2, 0.1, 0.0, 0.2]),
}
FAST_WEIGHTS: dict[str, Tensor] = {
    "unet": torch.tensor([0.4, 0.27, 0.5, 0.6]),
    "demucs": torch.tensor([0.6, 0.73, 0.5, 0.4]),
}

Model = Callable[[Tensor], Tensor]


def spectrogram(y: Tensor) -> tuple[Tensor, Tensor]:
    """``y (..., L)`` → ``(X, |X|)``, complex and magnitude ``(..., 2049, 1 + L // 1024)``: 4096/1024 Hann STFT,
    centred with reflection (``torch.stft`` returns it transposed in memory, and so does ``abs``)."""
    X = torch.stft(y, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), return_complex=True)
    return X, X.abs()


def load_model(path: Path) -> Model:
    """A release file as a function ``Tensor → Tensor``: ``.onnx`` through onnxruntime's CPU provider (input name
    read from the session), anything else through ``torch.jit.load``."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch ≥ 2.9 deprecates TorchScript
        return torch.jit.load(str(path))


def unet_masks(model: Model, mag: Tensor, short_chunk: str = "crash") -> Tensor:
    """U-Net masks for ``mag (2, 2049, T)`` → ``(4, 2, 2049, T)``, run on non-overlapping chunks of 2584 frames."""
    if short_chunk not in SHORT_CHUNK:
        raise ValueError(f"short_chunk must be one of {SHORT_CHUNK}, not {short_chunk!r}")
    masks = []
    for chunk in mag.split(UNET_CHUNK, dim=-1):
        frames = chunk.shape[-1]
        if short_chunk == "pad128" and frames < MIN_FRAMES:
            masks.append(model(F.pad(chunk, [0, PAD_FRAMES - frames]).unsqueeze(0)).squeeze()[..., :frames])
        else:
            masks.append(model(chunk.unsqueeze(0)).squeeze())
    return torch.cat(masks, dim=-1)


def tf_sep(model: Model, y: Tensor, batching: bool = False, short_chunk: str = "crash") -> Tensor:
    """A spectral model's estimate of ``y (2, L)`` → ``(4, 2, 1024·(L // 1024))``: masks × |X|, one Wiener EM
    iteration (numpy norbert, covariances over the whole track), iSTFT without a length. ``batching``: the
    U-Net's chunked call (:func:`unet_masks`), otherwise one call on the whole track."""
    X, mag = spectrogram(y)
    masks = unet_masks(model, mag, short_chunk) if batching else model(mag.unsqueeze(0)).squeeze()
    V = (masks * mag).permute(3, 2, 1, 0).numpy()  # (frames, bins, channels, sources)
    Y = norbert.wiener(V, X.permute(2, 1, 0).numpy().astype(np.complex128), 1, use_softmask=False)
    Y = torch.from_numpy(Y).permute(3, 2, 1, 0)  # (sources, channels, bins, frames), complex128
    sources, channels, bins, frames = Y.shape
    wav = torch.istft(Y.reshape(sources * channels, bins, frames), N_FFT, HOP, N_FFT, torch.hann_window(N_FFT))
    return wav.view(sources, channels, -1).float()


def demucs_sep(model: Model, y: Tensor) -> Tensor:
    """Demucs' estimate of ``y (2, L)`` → ``(4, 2, L)`` (shifts = 1): the model sees ``[22050 zeros | y]``, its
    output is read from sample 22050 into zeros (the samples it does not reach stay 0), then clamped to ±0.99."""
    length = y.shape[-1]
    padded = F.pad(y, [MAX_SHIFT, MAX_SHIFT])
    out = torch.zeros(4, 2, length)
    pred = model(padded[:, : length + MAX_SHIFT].unsqueeze(0)).squeeze(0)
    valid = min(length, pred.shape[-1] - MAX_SHIFT)
    out[..., :valid] = pred[..., MAX_SHIFT : MAX_SHIFT + valid]
    return out.clamp(-0.99, 0.99)


def model_estimates(
    wav: Tensor, files: Mapping[str, Path], fast: bool = False, short_chunk: str = "crash"
) -> dict[str, Tensor]:
    """Each model's own estimate of ``wav (2, n)``, before weighting: role → ``(4, 2, n)``, in the order 1.0.2
    runs them (``unet``, ``demucs``, ``xumx``; ``fast``: no ``xumx``). ``files``: role → release file."""
    n = wav.shape[1]
    y = F.pad(wav, [0, HOP])  # so that the iSTFT (no length) still covers n samples
    estimates: dict[str, Tensor] = {}
    with torch.no_grad():
        for role in FAST_WEIGHTS if fast else WEIGHTS:
            model = load_model(files[role])
            if role == "demucs":
                pred = demucs_sep(model, y)
            else:
                pred = tf_sep(model, y, batching=role == "unet", short_chunk=short_chunk)
            estimates[role] = pred[..., :n]
    return estimates


def separate_original(wav: Tensor, files: Mapping[str, Path], fast: bool = False, short_chunk: str = "crash") -> Tensor:
    """danna-sep 1.0.2 on ``wav (2, n)`` float32 at 44.1 kHz → ``(4, 2, n)`` (drums, bass, other, vocals):
    the models' estimates blended with the release's per-source weights (``fast``: U-Net and Demucs only)."""
    weights = FAST_WEIGHTS if fast else WEIGHTS
    result = None
    for role, pred in model_estimates(wav, files, fast, short_chunk).items():
        term = weights[role][:, None, None] * pred
        result = term if result is None else result + term
    return result
