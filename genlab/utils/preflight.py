"""A Hydra callback that rejects a run before Hydra creates its run dir: an output dir that cannot be
written, or a config value genlab does not accept. Multirun jobs are validated again inside each job. It also
notes what of the output dir exists, so that a run rejected later removes only what it created."""

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genlab.errors import ConfigError, GenlabError, genlab_cause
from genlab.utils import outputs
from genlab.utils.runner import fail
from genlab.utils.validate import validate_config


def check_writable(path: str, key: str) -> None:
    """Raise a GenlabError unless `path` is, or can be created as, a writable directory. A missing folder is
    created and removed again to be sure: permission bits do not show a read-only mount or a folder like /proc."""
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise GenlabError(f"{key}={target} cannot be created: {existing} is a file; expected a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GenlabError(
            f"{key}={target} cannot be written: {existing} is not writable; expected a writable directory"
        )
    if existing == target:
        return
    probe = target.relative_to(existing).parts[0]
    try:
        (existing / probe).mkdir()
    except FileExistsError:
        return  # made meanwhile by someone else: Hydra will use it
    except OSError as err:
        raise GenlabError(
            f"{key}={target} cannot be created: {existing} does not take new folders ({err.strerror}); expected "
            f"a writable directory"
        ) from None
    (existing / probe).rmdir()


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable(config.hydra.run.dir, "hydra.run.dir")
            validate_config(config, signatures=False)  # values first: no target (nor torch) is imported
            validate_config(config)
        except (ConfigError, GenlabError) as err:
            fail(str(err))  # SystemExit: Hydra turns a callback's ordinary exceptions into warnings
        except OmegaConfBaseException as err:
            cause = genlab_cause(err)  # a genlab resolver's own check (genlab_epochs)
            if cause is None:
                raise
            fail(str(cause))
        outputs.note_root(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except GenlabError as err:
            fail(str(err))
        outputs.note_root(config.hydra.sweep.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        outputs.note_job(config.hydra.runtime.output_dir)
