"""Build lists of callbacks and loggers from config groups whose entries each have a `_target_`."""

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_group(cfg: DictConfig | None) -> list:
    """`{name: {_target_: ...}, ...}` -> list of objects (entries without `_target_`, or null, are skipped)."""
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry]
