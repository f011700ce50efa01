"""Lightning plumbing shared by the models with automatic optimisation (VAE, autoencoder, VQ-VAE): one `_step`
per model serves the three splits, scalars are logged under `split/name`, and one optimiser factory."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class SplitSteps:
    """Mixin for a LightningModule with `_step(batch, split, batch_idx) -> loss`: the train/val/test steps."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    def log_split(self, split: str, values: dict[str, Tensor], batch_size: int) -> None:
        """Log `values` as `split/name`: per step and epoch in training (on the progress bar; see
        `GenerativeModule.log_train`), per epoch and synced across ranks for val and test (`log_eval`)."""
        if split == "train":
            self.log_train(values, batch_size, prog_bar=True)
            return
        self.log_eval({f"{split}/{name}": value for name, value in values.items()}, batch_size)


def optimizers(
    module: nn.Module, factory: Callable[..., Optimizer], lr: float, scheduler: Callable | None = None
) -> Optimizer | dict:
    """One optimiser over the trainable parameters (an EMA codebook is not), and an optional per-epoch scheduler."""
    optimizer = factory([p for p in module.parameters() if p.requires_grad], lr=lr)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler(optimizer), "interval": "epoch"}}


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm running statistics, no dropout) and no_grad inside; each submodule's mode restored."""
    with module.eval_mode(), torch.no_grad():
        yield
