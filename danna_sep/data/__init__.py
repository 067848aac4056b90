"""Datasets, augmentations and the built-in synthetic multitrack dataset.

- :mod:`.musdb`: MUSDB18 / MUSDB18-HQ (and any folder in their layout): tracks, splits, :class:`MUSDBDataset`.
- :mod:`.augment`: per-stem CPU augmentations (:class:`StemAugment`) and batched device ones (:class:`DeviceAugment`).
- :mod:`.synth`: procedural songs rendered through a GM SoundFont, :func:`make_synthetic_dataset`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .synth import SYNTH_VERSION, make_synthetic_dataset  # torch-free: imported plainly

if TYPE_CHECKING:  # for readers and type checkers (`X as X`: re-exported); at run time: __getattr__ below
    from .augment import DeviceAugment as DeviceAugment
    from .augment import RandomFlipPolarity as RandomFlipPolarity
    from .augment import RandomGain as RandomGain
    from .augment import RandomPitchShift as RandomPitchShift
    from .augment import RandomSpeed as RandomSpeed
    from .augment import RandomSwapLR as RandomSwapLR
    from .augment import StemAugment as StemAugment
    from .musdb import MUSDBDataset as MUSDBDataset
    from .musdb import Track as Track
    from .musdb import find_tracks as find_tracks
    from .musdb import official_valid_tracks as official_valid_tracks
    from .musdb import split_tracks as split_tracks

# The torch modules are imported on first use: `danna make-dataset` imports this package for .synth alone, which
# takes 0.3 s; .musdb or .augment would add torch, 2.2 s more (`python -X importtime -c "import danna_sep.data.synth"`
# against `"import danna_sep.data.musdb"`, 2-core CPU).
_TORCH_EXPORTS = {
    "MUSDBDataset": "musdb",
    "Track": "musdb",
    "find_tracks": "musdb",
    "split_tracks": "musdb",
    "official_valid_tracks": "musdb",
    "StemAugment": "augment",
    "RandomGain": "augment",
    "RandomSwapLR": "augment",
    "RandomFlipPolarity": "augment",
    "DeviceAugment": "augment",
    "RandomPitchShift": "augment",
    "RandomSpeed": "augment",
}
__all__ = [*_TORCH_EXPORTS, "make_synthetic_dataset", "SYNTH_VERSION"]


def __getattr__(name: str) -> Any:
    if name not in _TORCH_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_TORCH_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
