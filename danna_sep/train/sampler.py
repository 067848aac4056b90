"""The training data order: :class:`ShardedBatchSampler`, a (seed, epoch)-dependent, rank-sharded, resumable one."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError
from .seeds import ORDER, mix_seed


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of a (seed, epoch)-dependent order, each global batch split across ranks; resumable.

    Global batch ``b`` holds ``order[b·B:(b+1)·B]`` and rank ``r`` gets its elements ``r, r + W, …`` (as
    DistributedSampler interleaves), so the union over ranks of one step is exactly the single-process batch.
    ``set_epoch(epoch, start)`` selects the epoch's order and skips the first ``start`` batches without touching
    the dataset. A short last batch (``drop_last=False``) is padded from the start of the order only when it has
    fewer items than ranks.
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        if batch_size % world:
            raise ConfigError(
                f"data_loader.train.batch_size: {batch_size} (the global batch) is not divisible by the "
                f"{world} processes"
            )
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch."""
        if self.drop_last:
            return self.size // self.batch_size
        return math.ceil(self.size / self.batch_size)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, ORDER))
        return torch.randperm(self.size, generator=gen).tolist()

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for b in range(self.start, self.num_batches):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            while len(batch) < self.world:
                batch += order[: self.world - len(batch)]
            yield batch[self.rank :: self.world]
