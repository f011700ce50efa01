"""How an entry point runs a task: `resume=` in place, user errors as one line, bugs with a logged traceback.

User errors (`GenlabError`, OmegaConf's config errors, an unknown `_target_`) end in one line on stderr and
exit status 1; a run rejected before it started leaves no run dir behind. Anything else is a programming
error: its full traceback goes to the run's log file and stderr says where. In a multirun a failed job is
reported and the sweep goes on (the process still exits non-zero); an interrupted job stops the sweep.
"""

import logging
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import _save_config
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genlab.errors import GenlabError, TrainingInterrupted

log = logging.getLogger("genlab")
_failures: list[int] = []  # exit statuses of the failed jobs of this process


def exit_code() -> int:
    """0 if every job of this process succeeded, else the first failure's status."""
    return _failures[0] if _failures else 0


def fail(message: str) -> None:
    """Print one error line and exit 1 (used before Hydra has set anything up)."""
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(1)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<run dir>` -> that run's saved overrides, then `hydra.run.dir=<run dir>`, then the other arguments
    (later ones win, so `resume=DIR trainer.max_epochs=50` extends a run)."""
    given = [a for a in argv[1:] if a.startswith("resume=")]
    if not given:
        return argv
    value = given[-1].split("=", 1)[1]
    run_dir = Path(value).expanduser().resolve()
    if any(a in ("-m", "--multirun") for a in argv):
        fail(f"resume={value} continues one run; it cannot be combined with -m/--multirun")
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        what = "does not exist" if not run_dir.exists() else "is not a genlab run directory (no .hydra/overrides.yaml)"
        fail(f"resume={value} {what}; expected a run directory such as outputs/train/<date>/<time>")
    user = [a for a in argv[1:] if not a.startswith("resume=")]
    merged: dict[str, str] = {}
    previous = yaml.safe_load(saved.read_text()) or []
    _check_saved_overrides(previous, saved, user)
    for override in [*previous, f"hydra.run.dir={run_dir}", f"resume={run_dir}", *user]:
        if _key(override) != "ckpt_path" or override in user:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return [argv[0], *merged.values()]


def _check_saved_overrides(previous: list, saved: Path, user: list[str]) -> None:
    """The run dir's saved overrides are data: a `_target_` in them must be one genlab trusts (genlab.runs)."""
    from genlab.errors import CheckpointError
    from genlab.runs import check_override_targets

    given = {_key(a): a.split("=", 1)[1] for a in user if "=" in a}
    if given.get("allow_unsafe_checkpoint", "false").lower() == "true":
        return
    trusted = [t.strip() for t in given.get("trusted_targets", "").strip("[]").split(",") if t.strip()]
    try:
        check_override_targets(previous, str(saved), trusted)
    except CheckpointError as err:
        fail(str(err))


def save_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write `.hydra/` (config, Hydra config, overrides) as Hydra would. conf/hydra sets `output_subdir: null`,
    so every task calls this once its input is validated: a rejected run then leaves no run dir behind."""
    folder = output_dir / ".hydra"
    _save_config(cfg, "config.yaml", folder)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.instance().cfg
        _save_config(hydra_cfg, "hydra.yaml", folder)
        _save_config(hydra_cfg.hydra.overrides.task, "overrides.yaml", folder)


def user_error(err: BaseException) -> BaseException | None:
    """The error to show as one line if `err` is the user's (bad config, data, checkpoint), else None."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        if str(err).startswith("Error locating target"):
            return err
        err = err.__cause__
    if isinstance(err, GenlabError | OmegaConfBaseException):
        return err
    return None


def _message(err: BaseException) -> str:
    text = str(err).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original message
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _remove_unstarted(output_dir: Path) -> bool:
    """Remove a run dir that the rejected run created and never started (no .hydra/, at most its log file)."""
    if not output_dir.is_dir() or (output_dir / ".hydra").exists():
        return False
    if any(p.suffix != ".log" for p in output_dir.iterdir()):
        return False
    for handler in _file_handlers():
        if Path(handler.baseFilename).parent == output_dir:
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(output_dir)
    return True


def _log_traceback(err: BaseException, output_dir: Path) -> Path:
    """Append the traceback to the run's log file (Hydra's file handler) and return that file's path."""
    handlers = _file_handlers()
    record = logging.LogRecord("genlab", logging.ERROR, __file__, 0, "internal error", None, (type(err), err, None))
    record.exc_info = (type(err), err, err.__traceback__)
    if handlers:
        for handler in handlers:
            handler.handle(record)
        return Path(handlers[0].baseFilename)
    path = output_dir / "error.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(traceback.format_exception(err)))
    return path


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task(cfg)` inside a Hydra job and turn its failures into the messages and exit codes above."""
    import lightning.pytorch  # noqa: F401  (it adds a console handler on import)

    # Hydra's handlers already print and file every record; drop Lightning's extra console handler.
    logging.getLogger("lightning.pytorch").handlers.clear()
    hydra_cfg = HydraConfig.get()
    output_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return task(cfg)
    except TrainingInterrupted as err:
        log.error("%s", err)
        print(f"genlab: {err}", file=sys.stderr)
        _failures.append(128 + err.signum)
        sys.exit(128 + err.signum)  # in a sweep too: a preemption stops the whole process
    except Exception as err:
        shown = user_error(err)
        job = f"job {hydra_cfg.job.num}: " if multirun else ""
        if shown is not None:
            if not _remove_unstarted(output_dir):
                log.error("%s", _message(shown))
            print(f"genlab: error: {job}{_message(shown)}", file=sys.stderr)
        else:
            where = _log_traceback(err, output_dir)
            print(
                f"genlab: internal error: {job}{type(err).__name__}: {err}\n  This is a bug in genlab or in code "
                f"it runs, not a problem with your input; the full traceback is in {where}",
                file=sys.stderr,
            )
        _failures.append(1)
        if not multirun:
            sys.exit(1)
        return None  # a failed sweep job: report it and let the other jobs run
