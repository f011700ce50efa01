"""Logger helpers: the W&B factory (offline when there is no API key) and image logging to any logger."""

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor

from genlab.errors import check_choice

log = logging.getLogger(__name__)


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text()


def wandb_logger(
    project: str,
    save_dir: str,
    group: str | None = None,
    name: str | None = None,
    mode: str = "auto",
    tags: list[str] | None = None,
    log_model: bool = False,
) -> WandbLogger:
    """A WandbLogger writing under `save_dir`; mode `auto` runs offline when no API key is configured."""
    check_choice("logger.wandb.mode", mode, ("auto", "online", "offline"))
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_wandb_key() else "offline")
        if mode == "offline":
            log.info("W&B: no API key found, logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        group=group or None,
        name=name or None,
        offline=mode == "offline",
        tags=list(tags or []),
        log_model=log_model,
    )


def logger_step(trainer: "L.Trainer") -> int:
    """The step of the last training batch on the axis Lightning's loggers put scalars on: batches that
    stepped, not optimiser steps (a GAN takes several per batch). Epoch-end training scalars are logged on
    this step too, so an image made at an epoch end lines up with them. Lightning exposes the counter only as
    private loop state; this is the one place that reads it (`test_images_and_scalars_share_the_step_axis`
    breaks if it moves)."""
    return max(trainer.fit_loop.epoch_loop._batches_that_stepped - 1, 0)


def log_image(loggers: list[Logger], key: str, image: Tensor, step: int) -> None:
    """Send one image [C, H, W] in [0, 1] to every logger that accepts images (TensorBoard, W&B)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)


def finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run so that the next Hydra job of a multirun gets a run of its own."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()
