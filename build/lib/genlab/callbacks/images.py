"""Image callbacks: every PNG a run writes is made here, never inside a model."""

from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from genlab.utils.images import model_to_unit
from genlab.utils.loggers import log_image, logger_step


def _due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    epoch = trainer.current_epoch + 1
    return epoch % every_n_epochs == 0 or epoch == trainer.max_epochs


class SampleGrid(L.Callback):
    """Every `every_n_epochs` (and at the end of training) saves `dirpath/epoch_XXX.png`, a grid of the
    model's samples from its fixed inputs (`fixed_inputs()`; the row length is the model's `grid_nrow`),
    and sends it to every logger that accepts images."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1, nrow: int = 8) -> None:
        self.dirpath, self.every_n_epochs, self.nrow = Path(dirpath), every_n_epochs, nrow
        self.saved_at_step = -1

    @rank_zero_only
    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        images = pl_module.generate(*pl_module.fixed_inputs())  # conditional models: one row per class
        nrow = getattr(pl_module, "grid_nrow", None) or self.nrow
        grid = make_grid(model_to_unit(images).cpu(), nrow=nrow, padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{epoch:03d}.png")
        log_image(trainer.loggers, "samples", grid, logger_step(trainer))
        self.saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _due(trainer, self.every_n_epochs):
            self._save(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Stopped between due epochs (max_steps, time limit): still leave a grid of the final weights.
        if trainer.global_step not in (0, self.saved_at_step):
            self._save(trainer, pl_module, max(trainer.current_epoch - 1, 0))


class Reconstructions(L.Callback):
    """For models with `reconstruct`: saves `dirpath/epoch_XXX.png`, `n` held-out originals (top row)
    above their reconstructions (bottom row). A no-op for models without an encoder."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1, n: int = 8) -> None:
        self.dirpath, self.every_n_epochs, self.n = Path(dirpath), every_n_epochs, n
        self.originals: torch.Tensor | None = None

    def _originals(self, trainer: L.Trainer) -> torch.Tensor:
        if self.originals is None:
            dm = trainer.datamodule
            loader = dm.val_dataloader() or dm.train_dataloader()
            self.originals = next(iter(loader))[0][: self.n]
        return self.originals

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "reconstruct") or not _due(trainer, self.every_n_epochs):
            return
        x = self._originals(trainer).to(pl_module.device)
        pairs = torch.cat([x, pl_module.reconstruct(x)])  # (2n, C, H, W): originals, then reconstructions
        grid = make_grid(model_to_unit(pairs).cpu(), nrow=len(x), padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:03d}.png")
        log_image(trainer.loggers, "reconstructions", grid, logger_step(trainer))
