"""Rebuild a trained model from a run dir or a checkpoint (whose resolved config travels inside it)."""

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.callbacks.config import CONFIG_KEY
from genlab.errors import ConfigError, GenlabError


def find_checkpoint(run_dir: str | None, ckpt_path: str | None, ckpt: str = "best") -> Path:
    """`ckpt_path`, or in `<run_dir>/checkpoints/`: best (`best-*.ckpt`), last (`last.ckpt`) or a path."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
    elif run_dir:
        folder = Path(run_dir).expanduser() / "checkpoints"
        if ckpt == "best":
            found = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
            path = found[-1] if found else folder / "best-*.ckpt"
        elif ckpt == "last":
            path = folder / "last.ckpt"
        else:
            path = Path(ckpt).expanduser()
            path = path if path.is_absolute() or path.exists() else folder / ckpt
    else:
        raise ConfigError(
            "neither run_dir nor ckpt_path is set; expected run_dir=<a run directory> or ckpt_path=<.ckpt>"
        )
    if not path.is_file():
        raise GenlabError(
            f"checkpoint {path} does not exist; expected ckpt=best|last|<path> inside run_dir=<run dir> "
            f"(with checkpoints/best-*.ckpt, checkpoints/last.ckpt) or ckpt_path=<file.ckpt>"
        )
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: zip, pickle and torch all raise their own errors
        raise GenlabError(f"checkpoint {path} could not be read ({err.__class__.__name__}: {err})") from err


def run_config(checkpoint: dict, path: Path, run_dir: str | None) -> DictConfig:
    """The config stored in the checkpoint, else the run dir's `.hydra/config.yaml`."""
    if CONFIG_KEY in checkpoint:
        return OmegaConf.create(checkpoint[CONFIG_KEY])
    for folder in [Path(run_dir)] if run_dir else [path.parent.parent, path.parent]:
        saved = folder / ".hydra" / "config.yaml"
        if saved.is_file():
            return OmegaConf.load(saved)
    raise GenlabError(
        f"checkpoint {path} has no stored config and no .hydra/config.yaml was found next to it; "
        f"expected a checkpoint written by genlab (or run_dir=<its run directory>)"
    )


def restore(run_dir: str | None, ckpt_path: str | None, ckpt: str = "best", device: str = "cpu"):
    """(config, model in eval mode with the checkpoint's weights, datamodule, checkpoint path)."""
    path = find_checkpoint(run_dir, ckpt_path, ckpt)
    checkpoint = load_checkpoint(path)
    if "state_dict" not in checkpoint:
        raise GenlabError(f"checkpoint {path} has no state_dict; expected a Lightning checkpoint written by genlab")
    cfg = run_config(checkpoint, path, run_dir)
    model = instantiate(cfg.model)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise GenlabError(
            f"checkpoint {path} does not fit model {cfg.model._target_} built from its config: {' '.join(first)}"
        ) from err
    datamodule = instantiate(cfg.data)
    return cfg, model.to(device).eval(), datamodule, path
