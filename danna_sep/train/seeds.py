"""Seed streams and global RNG states: every random choice of a run is a function of (seed, epoch, position).

The data order of an epoch comes from (seed, epoch), each item's chunk and CPU augmentation from (seed, epoch,
index) (the dataset's ``set_epoch``), and before every micro-batch the torch RNG (device augmentation, dropout) is
re-seeded from (seed, epoch, batch, rank); :func:`rng_states` covers code that draws from the global generators.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# seed streams; the tag keeps them independent of each other
ORDER, STEP, AUDIO, AUGMENT = 1, 2, 3, 4


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (well mixed: nearby tuples give unrelated streams)."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
        >> 1
    )


def rng_states() -> dict[str, Any]:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    state = np.random.get_state(legacy=True)
    if not isinstance(state, tuple):  # legacy=True gives the MT19937 tuple (numpy's stubs say it may be a dict)
        raise TypeError(f"unexpected numpy RNG state {type(state).__name__}")
    key, keys, pos, has_gauss, gauss = state
    return {
        "python": random.getstate(),
        "numpy": {
            "key": key,
            "state": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(_tupled(states["python"]))
    n = states["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


def _tupled(x: Any) -> Any:
    # random.setstate wants the tuples that the checkpoint stored as lists
    return tuple(_tupled(v) for v in x) if isinstance(x, (list, tuple)) else x
