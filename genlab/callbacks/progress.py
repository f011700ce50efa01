"""Progress in the terminal: Lightning's Rich bar when a person watches, one line per epoch otherwise (CI, nohup,
a cluster log), where a redrawn bar would leave thousands of carriage returns."""

import logging
import time
from collections.abc import Mapping

import lightning.pytorch as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from genlab.utils.console import interactive

log = logging.getLogger(__name__)


def progress_bar(refresh_rate: int = 10, every_n_epochs: int = 1, metrics: list[str] | None = None) -> ProgressBar:
    """A `RichBar(refresh_rate, metrics)` (Lightning's Rich bar) in an interactive terminal, else
    `EpochLines(every_n_epochs, metrics)`. `refresh_rate: 0` turns both off (as it does Lightning's bars); so does
    `callbacks.progress_bar=null`."""
    if interactive():
        return RichBar(refresh_rate=refresh_rate, metrics=metrics)
    return EpochLines(every_n_epochs=every_n_epochs if refresh_rate > 0 else 0, metrics=metrics)


def main_scalars(values: Mapping[str, float], monitor: str | None, validated: bool) -> dict[str, float]:
    """The scalars worth a glance at the end of an epoch: per split (train, and val when it ran this epoch) the
    epoch means of its losses (its first 3 scalars when none is named `*loss`), and the checkpoint's metric."""
    shown: dict[str, float] = {}
    for split in ("train", "val") if validated else ("train",):
        names = {_epoch_name(k): k for k in values if k.startswith(f"{split}/") and not k.endswith("_step")}
        names = {n: k for n, k in names.items() if not n.endswith("_steps")}  # a GAN's step counters
        losses = [n for n in names if n.endswith("loss")] or list(names)[:3]
        shown |= {n: float(values[names[n]]) for n in losses}
    if monitor and monitor in values and (validated or not monitor.startswith("val/")):
        shown[monitor] = float(values[monitor])
    return shown


def _epoch_name(key: str) -> str:
    return key.removesuffix("_epoch")


class RichBar(RichProgressBar):
    """Lightning's Rich bar, showing the current step's losses (or `metrics`) rather than every `prog_bar` value."""

    def __init__(self, refresh_rate: int = 10, metrics: list[str] | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.metrics = list(metrics) if metrics else None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if self.metrics is not None:
            picked = {k: values.get(f"{k}_step", values.get(k)) for k in self.metrics}
            return {k: v for k, v in picked.items() if v is not None}
        steps = {k.removesuffix("_step"): v for k, v in values.items() if k.endswith("_step")}
        return main_scalars(steps, None, validated=False)


class EpochLines(ProgressBar):
    """One log line per training epoch and nothing in between, e.g.
    `epoch 3/19 | step 1200 | 12.3 s | train/loss 140.2 | val/loss 139.1 | val/nelbo 139.1`.

    `metrics` names the scalars to show (default: `main_scalars`); `every_n_epochs: 0` shows nothing. The step is
    `trainer.global_step` (optimiser steps: for GANs, both players')."""

    def __init__(self, every_n_epochs: int = 1, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.every_n_epochs = every_n_epochs
        self.metrics = list(metrics) if metrics else None
        self._enabled = True
        self._start = time.perf_counter()
        self._validated = False

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.every_n_epochs > 0

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._validated = time.perf_counter(), False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if self.is_enabled and ((trainer.current_epoch + 1) % self.every_n_epochs == 0 or last):
            log.info("%s", self.line(trainer))

    def line(self, trainer: L.Trainer) -> str:
        """This epoch's line (see the class docstring)."""
        epoch = f"epoch {trainer.current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            epoch += f"/{trainer.max_epochs - 1}"
        parts = [epoch, f"step {trainer.global_step}", f"{time.perf_counter() - self._start:.1f} s"]
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if self.metrics is not None:
            picked = {k: values.get(f"{k}_epoch", values.get(k)) for k in self.metrics}
            scalars = {k: v for k, v in picked.items() if v is not None}
        else:
            monitor = trainer.checkpoint_callback.monitor if trainer.checkpoint_callback else None
            scalars = main_scalars(values, monitor, self._validated)
        parts += [f"{name} {value:.4g}" for name, value in scalars.items()]
        return " | ".join(parts)
