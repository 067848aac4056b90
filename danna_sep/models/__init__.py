"""The one registry of models.

A config's ``"arch"`` entry is ``{"type": NAME, "args": {...}}``; :func:`build_model` turns it into an
``nn.Module``. Names are the original configs' class names plus short aliases. Modules are imported lazily,
so building one model never imports the others.

Every model maps a mixture to four sources in the order drums, bass, other, vocals:
- spectral models (``X_UMX``, ``UNetAttn``): magnitude ``(batch, channels, bins, frames)`` →
  non-negative masks ``(batch, 4, channels, bins, frames)``; attribute ``domain = "spectral"``;
- waveform models (``DemucsSplit``): waveform ``(batch, channels, samples)`` →
  stems ``(batch, 4, channels, samples)``; attribute ``domain = "waveform"``.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from torch import nn

from ..errors import ConfigError

# name → "module:Class"
REGISTRY: dict[str, str] = {
    "X_UMX": "danna_sep.models.xumx:X_UMX",
    "UNetAttn": "danna_sep.models.unet:UNetAttn",
    "DemucsSplit": "danna_sep.models.demucs:DemucsSplit",
}
ALIASES: dict[str, str] = {"xumx": "X_UMX", "unet": "UNetAttn", "demucs": "DemucsSplit"}


def canonical_name(name: str) -> str:
    """Registry name for ``name`` (accepts aliases); raises :class:`ConfigError` for unknown names."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        allowed = ", ".join(sorted(REGISTRY) + sorted(ALIASES))
        raise ConfigError(f"arch.type: unknown model {name!r}; allowed: {allowed}")
    return name


def model_class(name: str) -> type[nn.Module]:
    module_name, class_name = REGISTRY[canonical_name(name)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(arch_cfg: Mapping[str, Any]) -> nn.Module:
    """Build a model from ``{"type": NAME, "args": {...}}``."""
    if "type" not in arch_cfg:
        raise ConfigError("arch: missing required key 'type'")
    cls = model_class(arch_cfg["type"])
    args = dict(arch_cfg.get("args") or {})
    try:
        return cls(**args)
    except TypeError as exc:  # unknown or missing constructor argument
        raise ConfigError(f"arch.args for {arch_cfg['type']}: {exc}") from None
