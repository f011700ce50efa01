"""ModelCheckpoint whose monitored metric defaults to the one the model declares."""

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """The best checkpoint(s) by `monitor`; `monitor: null` takes the model's `monitor` and `monitor_mode`
    (e.g. `val/nelbo` for the VAE, `val/jsd` for the GAN)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.monitor is None and getattr(pl_module, "monitor", None):
            self.monitor, self.mode = pl_module.monitor, pl_module.monitor_mode
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        super().setup(trainer, pl_module, stage)
