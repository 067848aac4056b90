"""The one registry of models.

A config's ``"arch"`` entry is ``{"type": NAME, "args": {...}}``; :func:`build_model` turns it into an
``nn.Module``. Names are the original configs' class names plus short aliases (importing all three model modules
costs ~15 ms once torch is loaded, so they are imported plainly).

Every model maps a mixture to four sources in the order drums, bass, other, vocals:
- spectral models (``X_UMX``, ``UNetAttn``): magnitude ``(batch, channels, bins, frames)`` →
  non-negative masks ``(batch, 4, channels, bins, frames)``; attribute ``domain = "spectral"``;
- waveform models (``DemucsSplit``): waveform ``(batch, channels, samples)`` →
  stems ``(batch, 4, channels, samples)``; attribute ``domain = "waveform"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError
from .demucs import DemucsSplit
from .unet import UNetAttn
from .xumx import X_UMX

REGISTRY: dict[str, type[nn.Module]] = {"X_UMX": X_UMX, "UNetAttn": UNetAttn, "DemucsSplit": DemucsSplit}
ALIASES: dict[str, str] = {"xumx": "X_UMX", "unet": "UNetAttn", "demucs": "DemucsSplit"}


def canonical_name(name: str) -> str:
    """Registry name for ``name`` (accepts aliases); raises :class:`ConfigError` for unknown names."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        allowed = ", ".join(sorted(REGISTRY) + sorted(ALIASES))
        raise ConfigError(f"arch.type: unknown model {name!r}; allowed: {allowed}")
    return name


def model_class(name: str) -> type[nn.Module]:
    """The model class registered as ``name`` (or its alias)."""
    return REGISTRY[canonical_name(name)]


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
