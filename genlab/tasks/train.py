"""The training task: validate, build everything from config, then (and only then) write into the run dir,
fit, test and write metrics.json.

Everything that can reject a run (config values, data, the model, a checkpoint, loggers) happens before the
first file is written, so a rejected run leaves no run dir behind (see genlab/utils/runner.py).
"""

import inspect
import json
import logging
import math
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from genlab.callbacks.config import StoreConfig
from genlab.callbacks.state import derive_seed
from genlab.errors import CheckpointError, ConfigError, TrainingInterrupted
from genlab.reports.run import write_run_report
from genlab.runs import find_checkpoint, load_checkpoint
from genlab.utils.checkpoints import check_fits
from genlab.utils.instantiate import instantiate_group
from genlab.utils.loggers import finish_wandb
from genlab.utils.runner import save_run_config
from genlab.utils.speed import channels_last, cheap_cuda_probe, compile_networks, resolve_precision, set_threads
from genlab.utils.sweeps import check_sweep_trainer
from genlab.utils.validate import validate_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) the configured model; returns the final metrics as plain floats."""
    validate_config(cfg)
    resolve_trainer_precision(cfg)
    output_dir = Path(cfg.paths.output_dir)
    # the run dir holds this run's own files (and, resumed, its checkpoints): nothing there is at risk
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    ckpt_path = resolve_ckpt_path(cfg)
    checkpoint = (
        load_checkpoint(ckpt_path, allow_unsafe=cfg.get("allow_unsafe_checkpoint", False)) if ckpt_path else None
    )
    with open_dict(cfg):
        cfg.seed = _seed(cfg, checkpoint)
    L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)  # config errors of the model come before any data loads
    if cfg.get("train"):
        datamodule.setup("fit")  # loads the data now: its errors come before any file is written
        if hasattr(datamodule, "check_trainable"):
            datamodule.check_trainable()
    _check_batch_norm(model, cfg)
    if checkpoint is not None:
        check_fits(ckpt_path, checkpoint, model, model_name(cfg))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if cfg.get("guard"):
        callbacks.append(instantiate(cfg.guard))
    callbacks.append(StoreConfig(OmegaConf.to_container(cfg, resolve=True)))  # checkpoints describe themselves
    loggers = _loggers(cfg, checkpoint)
    callbacks, progress = _progress(cfg, callbacks)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=progress
    )
    check_sweep_trainer(trainer)  # -m with a trainer that reruns the command line per rank: refused
    set_threads(cfg.get("threads", "auto"), trainer.num_devices if trainer.num_devices > 0 else 1)
    cheap_cuda_probe()
    if cfg.get("channels_last", True) and channels_last(model):
        log.debug("convolution weights in channels-last order")
    if cfg.get("compile"):
        log.info("torch.compile: %s (compiled at their first call)", ", ".join(compile_networks(model)))

    save_run_config(cfg, output_dir)  # the run has started: from here on the run dir is kept
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    # Lightning >= 2.6 takes weights_only; before, the check in load_checkpoint above is the only gate
    weights_only = _weights_only(not cfg.get("allow_unsafe_checkpoint", False))
    metrics: dict[str, float] = {}
    finished = False
    try:
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **weights_only)
            metrics.update(_floats(trainer.callback_metrics))
        if cfg.get("test"):
            ckpt = ckpt_path
            if cfg.get("train"):  # test the best checkpoint of this fit, or the final weights without one
                ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, **weights_only)
            metrics.update(_floats(trainer.callback_metrics))
        finished = True
    except SIGTERMException as err:  # DDP: Lightning's stop on SIGTERM, which would exit with status 0
        raise _interrupted_under_ddp(trainer) from err
    finally:
        finish_wandb(loggers, exit_code=0 if finished else 1)  # a failed job's W&B run is marked failed

    if trainer.is_global_zero:
        write_metrics(output_dir / "metrics.json", metrics)
        if cfg.get("report"):
            write_run_report(output_dir)
        _print_outputs(output_dir, trainer)
    return metrics


def _interrupted_under_ddp(trainer: L.Trainer) -> TrainingInterrupted:
    """Lightning's own stop on SIGTERM under DDP (with `callbacks.interruption` off, or a SIGTERM during
    `trainer.test`): a `SystemExit` that would end the job with status 0 and no status.json."""
    where = f"step {trainer.global_step} (epoch {trainer.current_epoch})"
    return TrainingInterrupted(f"interrupted by SIGTERM at {where}; no checkpoint was written", signal.SIGTERM)


def resolve_trainer_precision(cfg: DictConfig) -> None:
    """`trainer.precision=auto` becomes the value it stands for on this machine before anything records the config
    (the run's config.yaml and its checkpoints say what ran); a value Lightning would refuse is a ConfigError."""
    setting = cfg.trainer.get("precision", "32-true")
    precision, why = resolve_precision(setting, cfg.trainer.get("accelerator", "auto"))
    if precision != setting:
        with open_dict(cfg):
            cfg.trainer.precision = precision
        log.info("precision: %s (trainer.precision=%s)", precision, why)


def _progress(cfg: DictConfig, callbacks: list) -> tuple[list, bool]:
    """Progress shows only through the configured bar (`callbacks.progress_bar`), never a default one Lightning
    would add in its place; `trainer.enable_progress_bar=false` removes the configured one."""
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    return callbacks, any(isinstance(cb, ProgressBar) for cb in callbacks)


def _weights_only(value: bool) -> dict:
    return {"weights_only": value} if "weights_only" in inspect.signature(L.Trainer.fit).parameters else {}


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path`: a file, or `last` / `best` (the default under `resume=` is `last`) of this run dir."""
    ckpt = cfg.get("ckpt_path") or ("last" if cfg.get("resume") else None)
    if ckpt not in ("last", "best"):
        return ckpt
    run_dir = Path(cfg.paths.output_dir)
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        key = f"resume={cfg.resume}" if cfg.get("resume") else f"ckpt_path={ckpt}"
        raise CheckpointError(
            f"{key}: {run_dir / 'checkpoints' / 'last.ckpt'} does not exist (the run stopped before writing its first "
            f"checkpoint); expected a run dir holding checkpoints/last.ckpt, or start a new run"
        )
    return str(find_checkpoint(run_dir, ckpt))


def _seed(cfg: DictConfig, checkpoint: dict | None) -> int:
    """`seed`; when null, the resumed run's own seed, or a fresh random one (logged, and saved with the run)."""
    if cfg.get("seed") is not None:
        return cfg.seed
    saved = ((checkpoint or {}).get("callbacks") or {}).get("TrainingState", {}).get("seed")
    seed = saved if saved is not None else derive_seed(os.urandom(16)) % 2**31
    log.info("seed=null: using seed %d", seed)
    return seed


def model_name(cfg: DictConfig) -> str:
    """The model's config name (e.g. `gan`), or its `_target_` outside a Hydra run."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model") or cfg.model._target_
    return cfg.model._target_


def _check_batch_norm(model: nn.Module, cfg: DictConfig) -> None:
    """BatchNorm cannot train on batches of one image: say so before training crashes on it."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if cfg.get("train") and has_bn and cfg.data.get("batch_size", 2) < 2:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is too small for model={model_name(cfg)}: its networks use "
            f"BatchNorm, which needs at least 2 images per batch; expected data.batch_size >= 2"
        )


def _loggers(cfg: DictConfig, checkpoint: dict | None) -> list:
    """The configured loggers; under `resume=` a W&B logger continues the checkpoint's W&B run (a new run from
    `ckpt_path=` alone, e.g. a sweep started from one checkpoint, gets W&B runs of its own)."""
    state = ((checkpoint or {}).get("callbacks") or {}).get("TrainingState", {})
    run_id = state.get("wandb_run_id") if cfg.get("resume") else None
    entries = cfg.get("logger") or {}
    loggers = []
    for entry in entries.values():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            resume = {"id": run_id} if run_id and entry._target_.endswith("wandb_logger") else {}
            loggers.append(instantiate(entry, **resume))
    return loggers


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """Strict JSON: a non-finite value is written as null and its key listed under `nonfinite_metrics`."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    clean: dict[str, Any] = {k: (None if k in bad else v) for k, v in metrics.items()}
    if bad:
        clean["nonfinite_metrics"] = bad
        log.warning("Non-finite final metrics (written as null): %s", ", ".join(bad))
    path.write_text(json.dumps(clean, indent=2, sort_keys=True, allow_nan=False))


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
    if (output_dir / "report.html").is_file():  # last, so that it is the line a finished run ends on
        lines.append(f"  report: {output_dir / 'report.html'}")
    log.info("\n".join(lines))
