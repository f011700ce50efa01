"""A shuffling sampler and DataLoader that resume exactly, mid-epoch included.

The order of epoch `e` is a permutation drawn from (seed, e) alone, never from the global RNG, and the
loader records how many batches of the current epoch it has handed out. Lightning saves that state
(`state_dict`) in the checkpoint's loop state and gives it back on resume, and the sampler then starts
the same permutation where the interrupted epoch stopped.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochShuffle(RandomSampler):
    """Random order per epoch from (seed, epoch); `set_epoch` is called by Lightning before each epoch.

    A RandomSampler, so that under DDP Lightning replaces it by its DistributedSampler (seeded per epoch too).
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(range(n))
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None  # (epoch, indices to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=generator).tolist()
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        yield from order[start:]

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved with the checkpoint (Lightning's `_Stateful`)."""

    def __iter__(self):
        self._current = super().__iter__()
        return self._current

    def state_dict(self) -> dict:
        it = getattr(self, "_current", None)
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": it._num_yielded if it is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.sampler, "resume") and self.batch_size:
            self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)
