"""ModelCheckpoint whose monitored metric defaults to a sample-quality metric (GANs) or the model's own."""

import logging
import math
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from genlab.callbacks.metrics import SampleQuality, last_epoch_of_fit
from genlab.runs import write_best_record

log = logging.getLogger(__name__)


class Checkpoint(ModelCheckpoint):
    """The best checkpoint(s) by `monitor`. With `monitor: null` it asks a `SampleQuality` callback first (GANs:
    `val/cfid` on labelled data, `val/fid` with Inception weights), else takes the model's `monitor` and
    `monitor_mode` (e.g. `val/nelbo` for the VAE).

    What it chose is recorded in its state (`best_model_path`) and, each time the best changes, in `best.json` in
    `dirpath`, with the validation metrics of its epoch: that record is what `ckpt=best` means to every entry
    point (`genlab.runs.find_checkpoint`) and what a sweep's `optimized_metric` reads (`genlab.utils.sweeps`). Nothing
    is recorded when the monitored metric was never logged (no validation images, or no evaluation ran), and then
    `best` falls back to `last.ckpt`, as one log line says.
    """

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
        self._said_fallback = False
        no_val = getattr(trainer.datamodule, "data_val", True) is None
        if stage == "fit" and self.monitor is not None and no_val and trainer.is_global_zero:
            self._said_fallback = True
            log.info(
                "data.val_fraction=0: no validation images, so no %s (no val/* metrics, sample quality included) "
                "to choose the best checkpoint by: `best` falls back to last.ckpt",
                self.monitor,
            )

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        # A quality metric computed every k epochs is absent until its first evaluation: nothing to rank yet.
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and filepath == self.best_model_path:
            score = None if self.best_model_score is None else float(self.best_model_score)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            metrics = {k: v if math.isfinite(v) else None for k, v in sorted(metrics.items())}
            epoch = trainer.current_epoch
            write_best_record(Path(filepath).parent, Path(filepath), self.monitor, score, epoch, metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.monitor is not None and not self.best_model_path and not self._said_fallback and trainer.is_global_zero:
            log.info(
                "no %s was logged during training (no evaluation ran): `best` falls back to last.ckpt", self.monitor
            )


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`, the state a run resumes from: written at an epoch end when `min_interval_s` seconds have
    passed since the last write or, before the first, since training started; always at the end of the fit
    (before the test evaluation), and on SIGTERM/SIGINT (`genlab.callbacks.Interruption`). Writing it after
    every epoch cost 12% of the demo's wall time (250 epochs of 11 batches); docs/benchmarks.md. A run killed
    outright (SIGKILL, out of memory) loses at most `min_interval_s` of training. `min_interval_s: 0`: every
    epoch (`every_n_epochs`)."""

    def __init__(self, *args, min_interval_s: float = 60.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not min_interval_s >= 0:
            from genlab.errors import ConfigError

            raise ConfigError(f"callbacks.last_checkpoint.min_interval_s={min_interval_s} is invalid; expected >= 0")
        self.min_interval_s = min_interval_s
        self._saved_at = -math.inf  # set when training starts: the cadence counts from there

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = time.monotonic()

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        due = time.monotonic() - self._saved_at >= self.min_interval_s
        if due or last_epoch_of_fit(trainer):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._saved_at = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step and not trainer.fast_dev_run:
            super()._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))  # the final state
