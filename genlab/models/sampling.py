"""Sampling a model in batches: used by the sample task and by the sample-quality metrics alike."""

from collections.abc import Iterator

import torch
from torch import Tensor


def sample_labels(model, n: int, offset: int = 0) -> Tensor | None:
    """Class-balanced labels `[n]` for conditional models (`num_classes` > 0), else None."""
    num_classes = getattr(model, "num_classes", 0) or 0
    return (torch.arange(offset, offset + n) % num_classes) if num_classes > 0 else None


@torch.no_grad()
def sample_batches(model, n: int, batch_size: int, offset: int = 0, y: Tensor | None = None) -> Iterator[Tensor]:
    """Yield `n` samples `[b, C, H, W]` in [-1, 1] from `model.sample` in batches of at most `batch_size`
    (eval mode and EMA are the model's job). Conditional models get class-balanced labels, or `y` `[n]`."""
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        labels = sample_labels(model, b, offset + start) if y is None else y[start : start + b]
        yield model.sample(b, y=None if labels is None else labels.to(model.device)).float()
