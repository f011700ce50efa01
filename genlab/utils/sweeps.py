"""Training jobs in a sweep: a rerun into the same sweep dir finishes the sweep, and a search gets each run's best.

Rerunning a multirun into its sweep dir (`python -m genlab -m ... hydra.sweep.dir=D`) takes each job's dir as
it finds it. A job whose dir holds a run with the same overrides
- that ended ok is skipped: nothing of it is touched, and a search gets its value back from its files;
- that did not end (interrupted, killed, failed) resumes in place from `checkpoints/last.ckpt`, as `resume=` does;
  with no checkpoint yet it starts again, the earlier attempt's files removed but its log kept and continued.
A job dir holding a run with other overrides belongs to another sweep: the sweep stops with one line, before that
job touches anything. New jobs run as usual.

`optimized_metric` (a `val/*` key) is what a Hydra sweeper such as Optuna receives: its value at the checkpoint
that checkpoint selection kept (`checkpoints/best.json`), not at the last epoch. A failed job returns None, which
the Optuna sweeper records as a failed trial and goes on.
"""

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from genlab.errors import SweepError
from genlab.utils import runner
from genlab.utils.validate import check_values

log = logging.getLogger("genlab")


def previous_attempt(output_dir: Path, overrides: list[str]) -> str | None:
    """What an earlier run of this sweep left in the job dir `output_dir`: None (nothing started there), `done`,
    `resume` (a checkpoint to continue from) or `restart` (started, nothing to continue from). Raises a
    SweepError when the run there had other overrides."""
    saved = output_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return None
    before = [str(o) for o in yaml.safe_load(saved.read_text()) or []]
    if before != overrides:
        raise SweepError(
            f"{output_dir} holds a run of another sweep (its overrides: {' '.join(before)}; this job's: "
            f"{' '.join(overrides)}); rerun a sweep into its dir with the same overrides to finish it, or give this "
            f"one a new hydra.sweep.dir"
        )
    status = _json(output_dir / runner.STATUS_FILE).get("status")
    if status == "ok":
        return "done"
    return "resume" if (output_dir / "checkpoints" / "last.ckpt").is_file() else "restart"


def _json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def clear_attempt(output_dir: Path) -> None:
    """Remove what an earlier attempt that left nothing to resume wrote, apart from its log files."""
    for path in output_dir.iterdir():
        if path.suffix == ".log":
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def check_metric_name(metric: str) -> None:
    """A search chooses on validation data, never on the test split that reports results."""
    if not metric.startswith("val/"):
        raise SweepError(
            f"optimized_metric={metric} is not a validation metric; a search must choose on validation data (the "
            f"test split reports the result); expected a val/* key such as val/nelbo, val/loss or val/cfid"
        )


def objective(run_dir: Path, metric: str) -> float | None:
    """`metric` at the run's best checkpoint (`best.json`); the last epoch's value when no best was recorded."""
    best = _json(run_dir / "checkpoints" / runner.BEST_RECORD)
    at_best = best.get("metrics") or {}
    if metric in at_best:
        return at_best[metric]
    final = _json(run_dir / "metrics.json")
    if metric in final:
        log.info("optimized_metric=%s: not recorded at a best checkpoint; returning the last epoch's value", metric)
        return final[metric]
    raise unknown_metric(metric, {*at_best, *final})


def unknown_metric(metric: str, logged: Iterable[str]) -> SweepError:
    """The error for an `optimized_metric` the run did not log, listing the val/* keys it did."""
    names = ", ".join(sorted({k for k in logged if k.startswith("val/")})) or "(none)"
    return SweepError(f"optimized_metric={metric} was not logged by this run; expected one of: {names}")


def run_train_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> float | None:
    """Run the training `task` as one job (see the module docstring); returns `optimized_metric`'s value."""
    hydra_cfg = HydraConfig.get()
    output_dir, metric = Path(hydra_cfg.runtime.output_dir), cfg.get("optimized_metric")
    if hydra_cfg.mode == RunMode.MULTIRUN:
        job = hydra_cfg.job.num
        try:
            attempt = previous_attempt(output_dir, [str(o) for o in hydra_cfg.overrides.task])
            if attempt == "done":
                runner.skipped_job(job)
                print(f"genlab: job {job}: done in an earlier run of this sweep ({output_dir}): skipped")
                return objective(output_dir, metric) if metric else None
        except SweepError as err:
            runner.fail(f"job {job}: {err}")
        if attempt == "resume":
            print(f"genlab: job {job}: resuming the earlier run of this sweep in {output_dir}")
            with open_dict(cfg):
                cfg.resume = str(output_dir)
        elif attempt == "restart":
            print(f"genlab: job {job}: the earlier run in {output_dir} left no checkpoint: starting it again")
            if runner.rank_zero():  # a SLURM job runs this in every rank; only rank 0 writes files
                clear_attempt(output_dir)

    def train_and_score(cfg: DictConfig) -> float | None:
        if metric:
            check_metric_name(metric)
        task(cfg)
        return objective(output_dir, metric) if metric and runner.rank_zero() else None

    return runner.run_task(train_and_score, cfg, precheck=check_values)


def check_sweep_trainer(trainer: Any) -> None:
    """Under -m every job runs in this process; Lightning's DDP launcher would start the other ranks by running the
    command line again, -m included (a whole sweep in each rank): refuse that before anything starts."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes * launcher.num_nodes > 1
        and not launcher.cluster_environment.creates_processes_externally
    ):
        raise SweepError(
            f"-m cannot run a trainer of {launcher.num_processes * launcher.num_nodes} processes "
            f"({type(trainer.strategy).__name__}): Lightning starts its other ranks by rerunning the command line, "
            f"-m included; run each job without -m, or the sweep with launcher=slurm (SLURM starts each job's ranks)"
        )
