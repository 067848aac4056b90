"""Where and how the work runs: the compute device, and the allocator policy for long CPU jobs."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from .errors import ConfigError

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_applied = False


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc serve large tensors from its heap and keep freed memory for reuse.

    By default glibc maps every allocation above a threshold (at most 32 MiB) with ``mmap`` and unmaps it on
    free, so every model call faults its activations in page by page again. On CPU that was a third of the
    inference time: per 512-frame U-Net segment (2 threads) 6.2 s wall of which 3.3 s system time, 4.6 s with
    this; per 10 s Demucs segment 3.8 → 2.3 s. Blocks up to ``threshold`` bytes now come from the heap and freed
    memory is kept (not trimmed below 2 GiB of free space), so the resident size stays at the run's high-water mark
    instead of breathing. Process-wide and idempotent; the ``danna`` commands call it, API users may.

    Returns whether the setting took (False on other C libraries, which are left alone).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    return _applied


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``), ``mps`` or ``auto`` (CUDA, else MPS, else CPU) → a torch device."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r}; use cpu, cuda, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available to this torch ({torch.__version__})")
    if device.type == "mps" and not has_mps:
        raise ConfigError(f"--device {name}: MPS (Apple GPU) is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device: unsupported device {name!r}; use cpu, cuda, mps or auto")
    return device
