"""Logger helpers: a CSV logger that appends on resume, the W&B factory (offline without an API key or a
reachable server, files under the run dir) and image logging to any logger."""

import csv
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as L
from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch import Tensor

from genlab.errors import GenlabError, check_choice
from genlab.utils.images import unit_to_uint8

log = logging.getLogger(__name__)


class _ResumingWriter(ExperimentWriter):
    """Lightning's writer warns that a non-empty log dir "will be deleted" and removes metrics.csv; genlab's run
    dir always holds other files, and a resumed run must keep its history: continue the existing file instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class CSVLogger(_CSVLogger):
    """`metrics.csv` (and hparams.yaml) in `save_dir/name/version`, appended to when the run is resumed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment


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
    id: str | None = None,
) -> WandbLogger:
    """A WandbLogger writing under `save_dir`; mode `auto` runs offline when no API key is configured. Online
    falls back to offline when the server does not answer within a few seconds. `id` continues that W&B run."""
    check_choice("logger.wandb.mode", mode, ("auto", "online", "offline"))
    _check_key()
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_wandb_key() else "offline")
        if mode == "offline":
            log.info("W&B: no API key found, logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    if mode == "online" and not _reachable(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"):
        log.warning(
            "W&B: the server is not reachable; logging offline to %s/wandb (sync later with `wandb sync`)", save_dir
        )
        mode = "offline"
    _keep_files_under(Path(save_dir) / "wandb")
    os.makedirs(save_dir, exist_ok=True)
    resume = {"id": id, "resume": "allow"} if id else {}
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        group=group or None,
        name=name or None,
        offline=mode == "offline",
        tags=list(tags or []),
        log_model=log_model,
        **resume,
    )


def _check_key() -> None:
    """A malformed WANDB_API_KEY is one clear line (the key itself is never printed)."""
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        return
    secret = key.split("-", 1)[-1]
    if not re.fullmatch(r"[\w-]+", secret) or len(secret) < 40:
        raise GenlabError(
            f"WANDB_API_KEY is malformed ({len(key)} characters; expected 40 or more letters, digits or "
            f"underscores, as shown at https://wandb.ai/authorize); fix it, or unset it to log offline"
        )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the server of `url` opens within `timeout` seconds (DNS included)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _keep_files_under(folder: Path) -> None:
    """wandb's settings, cache and staging files go under the run dir, not the home dir or /tmp."""
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        if not os.environ.get(var) or var in _SET_BY_GENLAB:  # the user's own setting wins
            os.environ[var] = str(folder / sub)
            _SET_BY_GENLAB.add(var)


_SET_BY_GENLAB: set[str] = set()


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
            # wandb >= 0.2x casts a float image to uint8 without scaling (a [0, 1] grid comes out black)
            logger.log_image(key=key, images=[unit_to_uint8(image)], step=step)


def finish_wandb(loggers: list[Any], exit_code: int = 0) -> None:
    """Close the W&B run so that the next Hydra job of a multirun gets a run of its own; `exit_code=1` marks
    it failed."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish(exit_code=exit_code)
