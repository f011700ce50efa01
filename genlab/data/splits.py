"""How a training file is divided into the images a model trains on and the validation images (index tensors)."""

import torch
from torch import Tensor


def seeded_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split range(n) into (kept, held_out) index tensors; both sorted, held_out is `fraction` of n."""
    n_held = int(round(n * fraction))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_held:].sort().values, perm[:n_held].sort().values


def subset_split(n: int, subset: int, fraction: float, seed: int) -> tuple[Tensor, Tensor, int]:
    """(train, held_out, short) indices of range(n) for a model trained on the first `subset` images.

    held_out is `round(n * fraction)` images drawn (seed) from the rest, range(subset, n), and train is
    range(subset). When the rest is shorter than that, all of it is held out and the `short` missing images
    come out of range(subset) (drawn as `seeded_split` draws them, so subset=n splits exactly as no subset).
    """
    n_held, rest = int(round(n * fraction)), n - subset
    generator = torch.Generator().manual_seed(seed)
    if rest >= n_held:
        return torch.arange(subset), subset + torch.randperm(rest, generator=generator)[:n_held].sort().values, 0
    short = n_held - rest
    taken = torch.randperm(subset, generator=generator)[:short]
    keep = torch.ones(subset, dtype=torch.bool)
    keep[taken] = False
    return torch.arange(subset)[keep], torch.cat([taken.sort().values, torch.arange(subset, n)]), short
