"""The report task: a run's report, a sweep's summary, or the leaderboard of every run under a folder."""

from pathlib import Path

from omegaconf import DictConfig

from genlab.errors import ConfigError
from genlab.reports.collect import is_run


def _folder(key: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}={value} is not a folder; expected a run dir, a sweep dir or a folder of runs")
    return path


def report(cfg: DictConfig) -> Path:
    """Exactly one of `run_dir`, `sweep_dir`, `dir`; returns the HTML page written."""
    given = {k: cfg.get(k) for k in ("run_dir", "sweep_dir", "dir") if cfg.get(k)}
    if len(given) != 1:
        raise ConfigError(
            f"genlab.report takes exactly one of run_dir=, sweep_dir=, dir= (got {', '.join(given) or 'none'}); "
            f"e.g. python -m genlab.report outputs/"
        )
    key, value = next(iter(given.items()))
    folder = _folder(key, str(value))
    if key == "run_dir":
        if not is_run(folder):
            raise ConfigError(f"run_dir={value} is not a genlab run directory (no .hydra/config.yaml)")
        from genlab.reports.run import write_run_report

        out = write_run_report(folder)
    elif key == "sweep_dir":
        from genlab.reports.sweep import write_sweep_summary

        out = write_sweep_summary(folder)
    else:
        from genlab.reports.leaderboard import write_leaderboard

        out, text = write_leaderboard(folder, Path(cfg.output).expanduser() if cfg.get("output") else None)
        print(text)
    print(f"genlab.report: {out}")
    return out
