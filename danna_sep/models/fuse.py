"""Inference-time folding of batch norms into the convolutions that feed them.

In eval mode a ``BatchNorm`` is a per-channel affine map ``a·x + b`` (``a = γ/√(var + ε)``, ``b = β − a·μ``), so
it can be merged into the linear layer before it: no separate pass over the activations. On CPU the U-Net's 76
batch norms were about 9 % of its inference time.

Folded here:
- ``nn.Sequential`` runs ``[Conv*/ConvTranspose*, BatchNorm]`` and ``[module with an `out_conv`, BatchNorm]``
  (the U-Net's attention);
- the D2 layers of :mod:`danna_sep.models.d3net`, whose batch norm acts on a *sum* of contributions from the
  layer's own convolution and every earlier layer's: each contribution's output channels are scaled by ``a`` and
  the layer's own convolution gets the shift ``b`` as its bias;
- :class:`~danna_sep.models.xumx.X_UMX`: its input normalisation and encoder batch norm into the encoder, the
  decoders' batch norms (and the output affine) into the decoders, as the model's ``*_bias`` (its folded path).

Models without batch norms (Demucs) are returned unchanged; others as a folded copy, so a model still being
trained is never modified.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .d3net import D2Block, _D2Layer
from .xumx import X_UMX

_CONV = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
Conv = nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d
Norm = nn.BatchNorm1d | nn.BatchNorm2d


def _affine(norm: Norm) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with ``norm(x) = a·x + b`` per channel (eval mode, running statistics)."""
    if norm.running_var is None or norm.running_mean is None:
        raise ValueError(f"{type(norm).__name__} without running statistics cannot be folded")
    a = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        a = a * norm.weight
    b = -a * norm.running_mean
    if norm.bias is not None:
        b = b + norm.bias
    return a, b


def _scale_outputs_(conv: Conv, scale: Tensor, start: int = 0) -> None:
    """Multiply output channels ``start … start + len(scale)`` of ``conv`` (weight and bias) by ``scale``."""
    stop = start + scale.numel()
    weight = conv.weight
    if isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d)):  # weight (in, out / groups, …)
        groups = conv.groups
        view = weight.view(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
        per_group = weight.shape[1]
        full = torch.ones(groups * per_group, dtype=weight.dtype, device=weight.device)
        full[start:stop] = scale
        shape = (groups, 1, per_group) + (1,) * (weight.dim() - 2)
        view.mul_(full.view(shape))
    else:  # weight (out, in / groups, …)
        weight[start:stop].mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
    if conv.bias is not None:
        conv.bias[start:stop].mul_(scale)


def _add_bias_(conv: Conv, shift: Tensor, start: int = 0) -> None:
    """Add ``shift`` to output channels ``start …`` of ``conv``, creating a zero bias if it has none."""
    if conv.bias is None:
        out = conv.out_channels
        conv.bias = nn.Parameter(
            torch.zeros(out, dtype=conv.weight.dtype, device=conv.weight.device), requires_grad=False
        )
    conv.bias[start : start + shift.numel()].add_(shift)


def _fold_into_(conv: Conv, norm: Norm) -> None:
    a, b = _affine(norm)
    _scale_outputs_(conv, a)
    _add_bias_(conv, b)


def _fold_d2_(block: D2Block) -> None:
    layers: list[_D2Layer] = []
    for layer in block.layers:
        assert isinstance(layer, _D2Layer)
        layers.append(layer)
    k = block.k
    for i, layer in enumerate(layers):
        if not isinstance(layer.norm, _NORM):
            raise ValueError(f"D2 layer {i}: expected a batch norm to fold, found {type(layer.norm).__name__}")
        a, b = _affine(layer.norm)
        # layer j's conv sends channels [k·(i − j), k·(i − j + 1)) to layer i
        for j in range(i + 1):
            _scale_outputs_(layers[j].conv, a, k * (i - j))
        _add_bias_(layer.conv, b, 0)
    for layer in layers:
        layer.norm = nn.Identity()
        # only a layer whose conv also feeds later layers has more channels to hold on to than its output
        layer.copy_output = layer.conv.out_channels > k


def _norm_affine(norm: nn.Module, where: str) -> tuple[Tensor, Tensor]:
    if not isinstance(norm, _NORM):
        raise ValueError(f"{where}: expected a batch norm to fold, found {type(norm).__name__}")
    a, b = _affine(norm)
    return a.double(), b.double()


def _fold_xumx_(model: X_UMX) -> None:
    """Fold X-UMX's affine steps into its three linear layers (module docstring), in float64."""
    sources, hidden, channels = model.nb_sources, model.hidden_channels, model.nb_channels
    dtype = model.encoder.weight.dtype

    def bias(value: Tensor) -> nn.Parameter:
        return nn.Parameter(value.to(dtype), requires_grad=False)

    # h = a·(W·((x + m)·s)) + b = (a·W·s)·x + (a·W·(m·s) + b), s and m per (source, bin), shared by the channels
    a, b = _norm_affine(model.encoder_bn, "X_UMX.encoder_bn")
    w = model.encoder.weight.double()  # (sources, hidden, channels·max_bins)
    scale = model.input_scale.double().repeat(1, channels)  # (sources, channels·max_bins), channel-major
    shift = (model.input_mean.double() * model.input_scale.double()).repeat(1, channels)
    a = a.view(sources, hidden)
    model.encoder.weight.copy_(a.unsqueeze(2) * w * scale.unsqueeze(1))
    model.encoder_bias = bias(a.flatten() * torch.bmm(w, shift.unsqueeze(2)).flatten() + b)

    a, b = _norm_affine(model.decoder1_bn, "X_UMX.decoder1_bn")
    weight = model.decoder1.weight  # (sources, hidden, 2·hidden)
    weight.copy_(a.view(sources, hidden, 1) * weight.double())
    model.decoder1_bias = bias(b)

    # then y·output_scale + output_mean, per (source, bin), shared by the channels
    a, b = _norm_affine(model.decoder2_bn, "X_UMX.decoder2_bn")
    out_scale = model.output_scale.double().repeat(1, channels)  # (sources, channels·bins)
    out_mean = model.output_mean.double().repeat(1, channels)
    a = a.view(sources, -1) * out_scale
    weight = model.decoder2.weight  # (sources, channels·bins, hidden)
    weight.copy_(a.unsqueeze(2) * weight.double())
    model.decoder2_bias = bias((b.view(sources, -1) * out_scale + out_mean).unsqueeze(2))

    model.encoder_bn = nn.Identity()
    model.decoder1_bn = nn.Identity()
    model.decoder2_bn = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with its batch norms folded (``model`` itself if it has none).

    Outputs equal the original's in eval mode up to float rounding (about 1e-6 relative).
    """
    if not any(isinstance(m, _NORM) for m in model.modules()):
        return model
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, D2Block):
                _fold_d2_(module)
            elif isinstance(module, X_UMX):
                _fold_xumx_(module)
            elif isinstance(module, nn.Sequential):
                children = list(module)
                for idx in range(1, len(children)):
                    norm, prev = children[idx], children[idx - 1]
                    if not isinstance(norm, _NORM) or not norm.track_running_stats:
                        continue
                    target = prev if isinstance(prev, _CONV) else getattr(prev, "out_conv", None)
                    if isinstance(target, _CONV):
                        _fold_into_(target, norm)
                        module[idx] = nn.Identity()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
