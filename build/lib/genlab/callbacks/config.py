"""Stores the run's resolved config inside every checkpoint, so a copied checkpoint can be evaluated and sampled."""

import lightning.pytorch as L

CONFIG_KEY = "genlab_config"


class StoreConfig(L.Callback):
    """`checkpoint["genlab_config"]`: the resolved config as plain containers (what `genlab.evaluate` rebuilds from)."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
