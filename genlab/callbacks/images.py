"""Image callbacks: every PNG a run writes is made here, never inside a model."""

from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from genlab.callbacks.pictures import image_grid, publish_grid, write_gif


def _due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    epoch = trainer.current_epoch + 1
    return epoch % every_n_epochs == 0 or epoch == trainer.max_epochs


class SampleGrid(L.Callback):
    """Every `every_n_epochs` (and at the end of training) saves `dirpath/epoch_XXX.png`, a grid of the
    model's samples from its fixed inputs (`fixed_inputs()`; the row length is the model's `grid_nrow`),
    enlarged (nearest-neighbour) to at least `min_width` px, and sends it to every logger that accepts images.
    When training ends, `gif` writes `dirpath/progress.gif`: the grids of all epochs in the folder, in order
    (at most `gif_max_frames`, `gif_frame_ms` each)."""

    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int = 1,
        nrow: int = 8,
        min_width: int = 600,
        gif: bool = True,
        gif_frame_ms: int = 400,
        gif_max_frames: int = 100,
    ) -> None:
        self.dirpath, self.every_n_epochs, self.nrow, self.min_width = Path(dirpath), every_n_epochs, nrow, min_width
        self.gif, self.gif_frame_ms, self.gif_max_frames = gif, gif_frame_ms, gif_max_frames
        self.saved_at_step = -1

    @rank_zero_only
    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        images = pl_module.generate(*pl_module.fixed_inputs())  # conditional models: one row per class
        nrow = getattr(pl_module, "grid_nrow", None) or self.nrow
        grid = image_grid(images, nrow, self.min_width)
        publish_grid(trainer, grid, self.dirpath / f"epoch_{epoch:03d}.png", "samples")
        self.saved_at_step = trainer.global_step

    @rank_zero_only
    def _write_gif(self) -> None:
        frames = sorted(self.dirpath.glob("epoch_*.png"))  # a resumed run's earlier grids included
        write_gif(frames, self.dirpath / "progress.gif", self.gif_frame_ms, self.gif_max_frames)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _due(trainer, self.every_n_epochs):
            self._save(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Stopped between due epochs (max_steps, time limit): still leave a grid of the final weights.
        if trainer.global_step not in (0, self.saved_at_step):
            self._save(trainer, pl_module, max(trainer.current_epoch - 1, 0))
        if self.gif:
            self._write_gif()


class Reconstructions(L.Callback):
    """For models with `reconstruct`: saves `dirpath/epoch_XXX.png`, `n` held-out originals (top row)
    above their reconstructions (bottom row), enlarged to at least `min_width` px. A no-op for models without
    an encoder."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1, n: int = 8, min_width: int = 600) -> None:
        self.dirpath, self.every_n_epochs, self.n, self.min_width = Path(dirpath), every_n_epochs, n, min_width
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
        grid = image_grid(pairs, len(x), self.min_width)
        publish_grid(trainer, grid, self.dirpath / f"epoch_{trainer.current_epoch:03d}.png", "reconstructions")
