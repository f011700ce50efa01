"""ModelCheckpoint whose monitored metric defaults to a sample-quality metric (GANs) or the model's own."""

from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from genlab.callbacks.metrics import SampleQuality
from genlab.runs import write_best_record


class Checkpoint(ModelCheckpoint):
    """The best checkpoint(s) by `monitor`. With `monitor: null` it asks a `SampleQuality` callback first (GANs:
    `val/cfid` on labelled data, `val/fid` with Inception weights), else takes the model's `monitor` and
    `monitor_mode` (e.g. `val/nelbo` for the VAE). Each time the best changes, `best.json` in `dirpath` records it:
    that record is what `ckpt=best` means to every entry point (`genlab.runs.find_checkpoint`)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.monitor is None:
            quality = [cb.monitor_for(trainer, pl_module) for cb in trainer.callbacks if isinstance(cb, SampleQuality)]
            quality = next((m for m in quality if m), None)
            if quality is not None:
                self.monitor, self.mode = quality, "min"
            elif getattr(pl_module, "monitor", None):
                self.monitor, self.mode = pl_module.monitor, pl_module.monitor_mode
            if self.monitor is not None:
                self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        super().setup(trainer, pl_module, stage)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        # A quality metric computed every k epochs is absent until its first evaluation: nothing to rank yet.
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and filepath == self.best_model_path:
            score = None if self.best_model_score is None else float(self.best_model_score)
            write_best_record(Path(filepath).parent, Path(filepath), self.monitor, score, trainer.current_epoch)
