"""A Hydra callback that rejects a run before Hydra creates its run dir: an output dir that cannot be
written, or a config value genlab does not accept. Multirun jobs are validated again inside each job."""

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genlab.errors import ConfigError, GenlabError
from genlab.utils.runner import fail
from genlab.utils.validate import validate_config


def check_writable(path: str, key: str) -> None:
    """Raise a GenlabError unless `path` is, or can be created as, a writable directory."""
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise GenlabError(f"{key}={target} cannot be created: {existing} is a file; expected a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GenlabError(
            f"{key}={target} cannot be written: {existing} is not writable; expected a writable directory"
        )


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable(config.hydra.run.dir, "hydra.run.dir")
            validate_config(config)
        except (ConfigError, GenlabError) as err:
            fail(str(err))  # SystemExit: Hydra turns a callback's ordinary exceptions into warnings

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except GenlabError as err:
            fail(str(err))
