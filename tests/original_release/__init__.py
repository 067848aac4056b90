"""The original Danna-Sep release (its three networks, its model files and danna-sep 1.0.2's inference) rebuilt
from the reference as test fixtures, so that loading and reproducing the release can be tested without it."""

from .build import FILES, FULL, ONNX_FILE, TINY, build_models, export_xumx_onnx, script, write_release
from .models import (
    X_UMX,
    D2_block,
    D3_block,
    DemucsSplit,
    MultiHeadAttention,
    UNetAttn,
    example_mix,
    randomize,
    rescale_conv,
)
from .pipeline import (
    FAST_WEIGHTS,
    WEIGHTS,
    demucs_sep,
    load_model,
    model_estimates,
    separate_original,
    spectrogram,
    tf_sep,
    unet_masks,
)

__all__ = [
    "FAST_WEIGHTS",
    "FILES",
    "FULL",
    "ONNX_FILE",
    "TINY",
    "WEIGHTS",
    "X_UMX",
    "D2_block",
    "D3_block",
    "DemucsSplit",
    "MultiHeadAttention",
    "UNetAttn",
    "build_models",
    "demucs_sep",
    "example_mix",
    "export_xumx_onnx",
    "load_model",
    "model_estimates",
    "randomize",
    "rescale_conv",
    "script",
    "separate_original",
    "spectrogram",
    "tf_sep",
    "unet_masks",
    "write_release",
]
