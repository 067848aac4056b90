"""The allocator policy: kept freed memory, trimming above a resident-size limit, and the separator's option."""

import platform
import sys

import pytest
import torch

from danna_sep import runtime
from danna_sep.blend import Bag
from danna_sep.errors import ConfigError

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt/malloc_trim are glibc's"
)


def test_resident_bytes_follows_a_large_allocation():
    runtime.trim_above(1)  # if an earlier test kept freed memory, the new tensor must not land in resident pages
    before = runtime.resident_bytes()
    assert before > 10 * 2**20  # a Python process with torch loaded
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert runtime.resident_bytes() > before + 32 * 2**20
    del x


@glibc
def test_keep_freed_memory_then_trim_above_a_limit():
    assert runtime.keep_freed_memory() is True
    assert runtime.keep_freed_memory() is True  # idempotent
    assert runtime.trim_above(2**50) is False  # under the limit: nothing to do
    x = torch.ones(256 * 2**20 // 4)  # served from the heap now, and kept after del
    del x
    kept = runtime.resident_bytes()
    assert runtime.trim_above(1) is True
    assert runtime.resident_bytes() < kept - 128 * 2**20  # the freed block went back to the system


def test_trim_above_does_nothing_without_the_policy(monkeypatch):
    monkeypatch.setattr(runtime, "_libc", None)
    assert runtime.trim_above(1) is False


@pytest.mark.parametrize("limit", [0, -1.0])
def test_separator_rejects_a_non_positive_memory_limit(limit):
    from danna_sep.export import LoadedModel, ModelInfo
    from danna_sep.separate import Separator

    model = LoadedModel.from_module(torch.nn.Identity(), ModelInfo("waveform"))
    with pytest.raises(ConfigError, match="memory limit"):
        Separator({"demucs": model}, Bag(models=["demucs"], weights=[[1.0] * 4]), memory_limit=limit)
