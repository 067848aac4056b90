"""Builds the original release's model files (TorchScript and ONNX) from :mod:`.models`, at full or tiny size.

``FULL`` is the release's configuration; ``TINY`` keeps its geometry (6 U-Net levels, so chunks need 64 frames;
6 Demucs levels of stride 4 on the ×2-resampled signal, so the same output lengths) with few channels, so that each
model runs a 60 s clip in a fraction of a second.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import X_UMX, DemucsSplit, UNetAttn, randomize

FULL: dict[str, dict[str, Any]] = {"xumx": {}, "unet": {}, "demucs": {}}
TINY: dict[str, dict[str, Any]] = {
    "xumx": dict(hidden_channels=16, max_bins=95, nb_layers=1),
    # 95 bins pool to 47, 23, 11, 5, 2, 1 (1487: 743 … 23) and the U-Net covers 93 of them, as 1485 of 1487
    "unet": dict(max_bins=95, k=2, d_model=8, n_heads=2, attn_channels=8),
    "demucs": dict(channels=4, lstm_layers=1),
}
SIZES = {"full": FULL, "tiny": TINY}
CLASSES = {"xumx": X_UMX, "unet": UNetAttn, "demucs": DemucsSplit}
FILES = {"xumx": "xumx_mwf.pth", "unet": "unet_attention.pth", "demucs": "demucs_4_decoders.pth"}
ONNX_FILE = "xumx.onnx"


def build_models(size: str = "tiny", seed: int = 0) -> dict[str, nn.Module]:
    """role (``xumx``, ``unet``, ``demucs``) → eager model of ``size`` (``"tiny"`` / ``"full"``), randomized with
    ``seed`` (:func:`.models.randomize`; each role gets its own stream), in eval mode."""
    config = SIZES[size]
    models = {}
    for offset, (role, cls) in enumerate(CLASSES.items()):
        torch.manual_seed(seed)  # the constructors' default init, overwritten by randomize but kept deterministic
        models[role] = randomize(cls(**config[role]), seed * len(CLASSES) + offset)
    return models


def script(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script(model)`` without TorchScript's deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(model)


def export_xumx_onnx(model: X_UMX, path: Path, frames: int = 64) -> None:
    """Export X-UMX as the release's ``xumx.onnx``: opset 11, ``input`` ``(1, 2, 2049, frames)`` → ``output``
    ``(1, 4, 2, 2049, frames)``, frames dynamic, batch fixed at 1 (TorchScript-based exporter)."""
    example = torch.rand(1, 2, 2049, frames)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=11,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {3: "frames"}, "output": {4: "frames"}},
        )


def write_release(
    folder: Path, size: str = "tiny", seed: int = 0, onnx: bool = True, models: Mapping[str, nn.Module] | None = None
) -> dict[str, Path]:
    """Write the release's files into ``folder``: ``xumx_mwf.pth``, ``unet_attention.pth``,
    ``demucs_4_decoders.pth`` (``torch.jit.save(torch.jit.script(model))``) and, with ``onnx``, ``xumx.onnx``.
    ``models`` (role → eager model) defaults to ``build_models(size, seed)``. → file name → path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = build_models(size, seed) if models is None else models
    paths = {}
    for role, name in FILES.items():
        paths[name] = folder / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(script(models[role]), str(paths[name]))
    if onnx:
        paths[ONNX_FILE] = folder / ONNX_FILE
        export_xumx_onnx(models["xumx"], paths[ONNX_FILE])
    return paths
