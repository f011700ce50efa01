"""How an entry point runs a task: `resume=` in place, user errors as one line, bugs with a logged traceback.

User errors (`GenlabError`, OmegaConf's config errors, an unknown `_target_`) end in one line on stderr and
exit status 1; a run rejected before it started leaves no run dir behind. Anything else is a programming
error: its full traceback goes to the run's log file and stderr says where. In a multirun a failed job is
reported and the sweep goes on; the process then says which jobs failed and exits non-zero (`run_main`). An
interrupted job stops the sweep, and so does a `SweepError` (one that every job would meet).

Each job that started leaves `status.json` in its run dir ({"status": "ok" | "failed" | "interrupted", "error":
first line}); a sweep job rejected before it started (its dir removed) is a line of `rejected_jobs.jsonl` in the
sweep dir. The sweep summary (genlab.reports) reads both.
"""

import atexit
import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import _save_config
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genlab.errors import ConfigError, GenlabError, PeerProcessLost, SweepError, TrainingInterrupted, genlab_cause
from genlab.utils import outputs
from genlab.utils.console import tidy_logging

log = logging.getLogger("genlab")
_failures: list[int] = []  # exit statuses of the failed jobs of this process
_sweep_jobs: dict[int, bool] = {}  # job number -> succeeded, for the jobs of a multirun
STATUS_FILE = "status.json"  # <run dir>/status.json: how the job ended
BEST_RECORD = "best.json"  # <run>/checkpoints/best.json: the checkpoint the checkpoint callback chose
REJECTED_FILE = "rejected_jobs.jsonl"  # <sweep dir>/rejected_jobs.jsonl: sweep jobs rejected before they started


def exit_code() -> int:
    """0 if every job of this process succeeded, else the first failure's status."""
    return _failures[0] if _failures else 0


def run_main(hydra_main: Callable[[], Any]) -> NoReturn:
    """Every entry point's `main`: run its `@hydra.main` function, then exit 0 if every job succeeded, else with
    the first failure's status after one line naming a sweep's failed jobs."""
    hydra_main()
    failed = [num for num, ok in _sweep_jobs.items() if not ok]
    if failed:
        print(
            f"genlab: {len(failed)} of {len(_sweep_jobs)} jobs failed: {', '.join(map(str, failed))}", file=sys.stderr
        )
    exit_now(exit_code())


def exit_now(code: int) -> NoReturn:
    """`sys.exit(code)` without Python's teardown of its modules once torch is loaded.

    With torch and Lightning imported, interpreter shutdown takes 1.2 to 2 s on 2 CPU cores after the last line
    of the program: `python -c "import lightning.pytorch"` takes 5.2 to 6.3 s, and 3.6 to 4.0 s when it ends in
    `os._exit(0)`; nearly all of the difference is Python's teardown of everything the imports built
    (docs/benchmarks.md, session 16). Every genlab run paid it.
    This does what that shutdown does that has an effect, in the same order (join the non-daemon threads, run the
    `atexit` handlers: logging's flush and close of the run's log file, W&B's and multiprocessing's own), flushes
    stdout and stderr, and ends the process with `code`. Without torch loaded (`--help`, a refused command) the
    shutdown is quick and `sys.exit` is kept, which also lets a caller that catches `SystemExit` go on; so it is
    under a profiler, tracer or debugger (`python -m cProfile`, pdb), which reports after the program returns."""
    private = hasattr(threading, "_shutdown") and hasattr(atexit, "_run_exitfuncs")
    if "torch" not in sys.modules or not private or _observed():
        sys.exit(code)
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach it
                stream.flush()
        os._exit(code)


def _observed() -> bool:
    """Whether a profiler, tracer or debugger watches this process (cProfile, coverage, pdb: `sys.setprofile` /
    `sys.settrace`, or a `sys.monitoring` tool on Python >= 3.12)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6))


def skipped_job(num: int) -> None:
    """Count sweep job `num`, done in an earlier run of the sweep and skipped now, as succeeded."""
    _sweep_jobs[num] = True


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
    so every task calls this once its input is validated: a rejected run then leaves no run dir behind. Rank 0
    only: under DDP the other ranks' Hydra configs (job name `train_ddp_process_<r>`) are not the run's."""
    if not rank_zero():
        return
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
    if isinstance(err, OmegaConfBaseException) and genlab_cause(err) is not None:
        return genlab_cause(err)  # raised by a genlab resolver (genlab_epochs) while OmegaConf resolved its key
    if isinstance(err, GenlabError | OmegaConfBaseException):
        return err
    if type(err).__name__ == "MisconfigurationException" and _raised_in_trainer_init(err):
        return ConfigError(f"trainer config: {err}")  # Lightning's own check of a trainer.* value
    if _peer_lost(err):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return PeerProcessLost(
            f"another process of this DDP run ended while this one waited for it ({first}); that process's own "
            f"output says why (killed, out of memory, an error of its own). `resume=<run dir>` continues from "
            f"checkpoints/last.ckpt where one was written"
        )
    return None


# what a rank meets when another rank's process is gone: genlab's shared-memory transport, then gloo's TCP
_PEER_LOST = (
    "local all-reduce: another rank ended",  # PeerGone's two messages, also when c10d re-raises them from
    "ended while rank",  # genlab's process group as a RuntimeError
    "Connection closed by peer",
    "Connection reset by peer",
    "caused by a remote worker crashing",
)


def _peer_lost(err: BaseException) -> bool:
    if type(err).__name__ == "PeerGone":  # genlab.utils.local_comm (not imported here: it imports torch)
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _PEER_LOST)


def _raised_in_trainer_init(err: BaseException) -> bool:
    """Whether `err` came from Lightning's `Trainer.__init__` (that is, from the user's trainer.* values)."""
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "__init__" and Path(code.co_filename).match("lightning/pytorch/trainer/trainer.py"):
            return True
        tb = tb.tb_next
    return False


def _message(err: BaseException) -> str:
    text = str(err).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original message
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _remove_unstarted(output_dir: Path) -> bool:
    """After a run was rejected before it started (no .hydra/): remove what this process created for it and
    nothing else (see genlab/utils/outputs.py). A run dir Hydra made goes with the parents it made for it; in a
    folder that existed only the log files that appeared go. Returns whether the run's log files went."""
    if not output_dir.is_dir() or (output_dir / ".hydra").exists():
        return False
    handlers = [h for h in _file_handlers() if Path(h.baseFilename).parent == output_dir]
    logs = {Path(h.baseFilename) for h in handlers}
    if any(p not in logs for p in output_dir.iterdir() if outputs.created(p)):
        return False  # the job wrote more than its log: keep it, as a run that started
    ours = [h for h in handlers if outputs.created(Path(h.baseFilename))]
    for handler in ours:
        logging.getLogger().removeHandler(handler)
        handler.close()
        Path(handler.baseFilename).unlink(missing_ok=True)
    top = outputs.created_top(output_dir)
    if top is not None:
        folder = output_dir
        while not any(folder.iterdir()):  # only folders that are empty now: a concurrent run's stay
            folder.rmdir()
            if folder == top:
                break
            folder = folder.parent
    return bool(ours)


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


def rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def record_status(status: str, error: str = "") -> None:
    """Leave how this job ended where the reports find it (rank 0 only): `status.json` in a run dir that started,
    else, for a failed sweep job that left no run dir (rejected before it started), a line of the sweep dir's
    `rejected_jobs.jsonl`. Tasks that keep no run dir of their own (evaluate, sample) leave nothing when ok."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    if not rank_zero():
        return
    error = error.strip().splitlines()[0] if error.strip() else ""
    if (output_dir / ".hydra").is_dir():
        (output_dir / STATUS_FILE).write_text(json.dumps({"status": status, "error": error}) + "\n")
    elif status != "ok" and hydra_cfg.mode == RunMode.MULTIRUN and Path(hydra_cfg.sweep.dir).is_dir():
        record = {"job": hydra_cfg.job.num, "overrides": list(hydra_cfg.overrides.task), "error": error}
        with (Path(hydra_cfg.sweep.dir) / REJECTED_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")


def lazy_task(path: str) -> Callable[[DictConfig], Any]:
    """The task `module:function`, imported when it is called: an entry point imports its task (and torch) only
    after `run_task`'s precheck has passed."""
    module, name = path.split(":")

    def task(cfg: DictConfig) -> Any:
        return getattr(importlib.import_module(module), name)(cfg)

    return task


def run_task(
    task: Callable[[DictConfig], Any], cfg: DictConfig, precheck: Callable[[DictConfig], None] | None = None
) -> Any:
    """Run `task(cfg)` inside a Hydra job and turn its failures into the messages and exit codes above.
    `precheck(cfg)`, torch-free, runs first: a bad value or a missing run dir is refused before the seconds that
    `import lightning` takes (the task checks again, with what needs torch)."""
    hydra_cfg = HydraConfig.get()
    output_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        _sweep_jobs[hydra_cfg.job.num] = False  # until it returns
    try:
        if precheck is not None:
            precheck(cfg)
        import lightning.pytorch  # noqa: F401  (it adds console handlers on import)

        tidy_logging()  # Hydra's handlers already print and file every record: each line once
        result = task(cfg)
        _release_job_memory()
    except TrainingInterrupted as err:
        log.error("%s", err)
        if rank_zero():  # under DDP every rank stops; the terminal they share shows it once
            print(f"genlab: {err}", file=sys.stderr)
        record_status("interrupted", str(err))
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
        record_status("failed", _message(shown) if shown is not None else f"{type(err).__name__}: {err}")
        _failures.append(1)
        if not multirun or isinstance(err, SweepError):
            sys.exit(1)  # a SweepError: every other job would fail the same way
        return None  # a failed sweep job: report it and let the other jobs run
    if multirun:
        _sweep_jobs[hydra_cfg.job.num] = True
    record_status("ok")
    return result


def _release_job_memory() -> None:
    """After a job: collect its cyclic garbage (the trainer, model, data and callbacks refer to one another) and
    hand the freed heap back to the OS, so that the next job of an in-process sweep, or the process's exit,
    starts from the memory of an idle interpreter."""
    import gc

    from genlab.utils.speed import release_free_memory

    gc.collect()
    release_free_memory()
