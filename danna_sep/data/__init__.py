"""Datasets, augmentations and the built-in synthetic multitrack dataset.

- :mod:`.musdb`: MUSDB18 / MUSDB18-HQ (and any folder in their layout): tracks, splits, :class:`MUSDBDataset`.
- :mod:`.augment`: per-stem CPU augmentations (:class:`StemAugment`) and batched device ones (:class:`DeviceAugment`).
- :mod:`.synth`: procedural songs rendered through a GM SoundFont, :func:`make_synthetic_dataset`.

Names are imported on first use, so ``danna make-dataset`` (synth only) does not load torch.
"""

from importlib import import_module

_EXPORTS = {
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
    "make_synthetic_dataset": "synth",
    "SYNTH_VERSION": "synth",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
