"""The training task: seed, build everything from config, fit, test, write metrics.json."""

import json
import logging
import zipfile
from pathlib import Path

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.callbacks.config import StoreConfig
from genlab.errors import GenlabError
from genlab.utils.instantiate import instantiate_group
from genlab.utils.loggers import finish_wandb

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) the configured model; returns the final metrics as plain floats."""
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks.append(StoreConfig(OmegaConf.to_container(cfg, resolve=True)))  # checkpoints describe themselves
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    try:
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(_floats(trainer.callback_metrics))
        if cfg.get("test"):
            ckpt = cfg.get("ckpt_path")
            if cfg.get("train"):  # test the best checkpoint of this fit, or the final weights without one
                ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None)
            metrics.update(_floats(trainer.callback_metrics))
    finally:
        finish_wandb(loggers)

    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        _print_outputs(output_dir, trainer)
    return metrics


def check_checkpoint(path: str) -> None:
    """Fail early, with one message, on a checkpoint that is missing or not a torch.save archive."""
    if not Path(path).is_file():
        raise GenlabError(
            f"ckpt_path={path} does not exist; expected a .ckpt file written by genlab (e.g. "
            f"<run dir>/checkpoints/last.ckpt)"
        )
    if not zipfile.is_zipfile(path):
        raise GenlabError(
            f"ckpt_path={path} is not a valid PyTorch checkpoint (corrupt or truncated file); "
            f"expected a .ckpt written by torch.save, e.g. <run dir>/checkpoints/last.ckpt"
        )


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _print_outputs(output_dir: Path, trainer: L.Trainer) -> None:
    ckpt = trainer.checkpoint_callback
    lines = [f"Run directory: {output_dir}"]
    if ckpt is not None:
        lines.append(f"  checkpoints: {ckpt.dirpath} (best: {Path(ckpt.best_model_path).name or '-'}, last.ckpt)")
    for sub in ("samples", "reconstructions"):
        pngs = sorted((output_dir / sub).glob("*.png"))
        if pngs:
            lines.append(f"  {sub}: {len(pngs)} grids, latest {pngs[-1]}")
    lines.append(
        f"  metrics: {output_dir / 'metrics.json'}"
        + (f", {output_dir / 'metrics.csv'}" if (output_dir / "metrics.csv").exists() else "")
    )
    log.info("\n".join(lines))
