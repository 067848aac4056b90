"""The original Danna-Sep release (its three networks, its model files and danna-sep 1.0.2's inference) rebuilt
from the reference as test fixtures, so that loading and reproducing the release can be tested without it."""
from .build import FILES, FULL, ONNX_FILE, TINY, build_models, export_xumx_onnx, script, write_release
from .models import (D2_block, D3_block, DemucsSplit, MultiHeadAttention, UNetAttn, X_UMX, example_mix,
                     randomize, rescale_conv)
from .pipeline import (FAST_WEIGHTS, WEIGHTS, demucs_sep, load_model, model_estimates, separate_original,
                       spectrogram, tf_sep, unet_masks)

__all__ = [
    "FILES", "FULL", "ONNX_FILE", "TINY", "build_models", "export_xumx_onnx", "script", "write_release",
    "D2_block", "D3_block", "DemucsSplit", "MultiHeadAttention", "UNetAttn", "X_UMX", "example_mix", "randomize",
    "rescale_conv", "FAST_WEIGHTS", "WEIGHTS", "demucs_sep", "load_model", "model_estimates", "separate_original",
    "spectrogram", "tf_sep", "unet_masks",
]
