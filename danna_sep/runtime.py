"""Where and how the work runs: the compute device, and the allocator policy for long CPU jobs."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_libc: ctypes.CDLL | None = None  # set once keep_freed_memory() took effect
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc serve large tensors from its heap and keep freed memory for reuse.

    By default glibc maps every allocation above a threshold (at most 32 MiB) with ``mmap`` and unmaps it on
    free, so every model call faults its activations in page by page again. On CPU that was a third of the
    inference time: per 512-frame U-Net segment (2 threads) 6.2 s wall of which 3.3 s system time, 4.6 s with
    this; per 10 s Demucs segment 3.8 → 2.3 s. Blocks up to ``threshold`` bytes now come from the heap and freed
    memory is kept (not trimmed below 2 GiB of free space). The price is fragmentation: the resident size creeps
    up when different models' allocations interleave, so long jobs pair this with :func:`trim_above`.
    Process-wide and idempotent; the ``danna`` commands call it, API users may.

    Returns whether the setting took (False on other C libraries, which are left alone).
    """
    global _libc
    if _libc is not None:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim  # musl and others have neither
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) and mallopt(_M_TRIM_THRESHOLD, 1 << 31):
        _libc = libc
    return _libc is not None


def resident_bytes() -> int:
    """This process's resident set size in bytes (0 where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def trim_above(limit: int) -> bool:
    """Give the heap's free pages back to the system if the resident size exceeds ``limit`` bytes.

    Only acts after :func:`keep_freed_memory`; cheap when under the limit (one read of ``/proc``). The next
    allocations fault their pages in again, so calling this every few model calls keeps most of the speed while
    bounding the resident size at about ``limit`` plus one model call's working set. Returns whether it trimmed.
    """
    if _libc is None or limit <= 0 or resident_bytes() <= limit:
        return False
    _libc.malloc_trim(0)
    return True


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``), ``mps`` or ``auto`` (CUDA, else MPS, else CPU) → a torch device."""
    import torch  # here, not at the top: the command line imports this module before parsing its arguments

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
