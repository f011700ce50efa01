"""`python -m genlab.report run_dir=... | sweep_dir=... | dir=<folder>` (or just `python -m genlab.report outputs/`):
a run's report.html, a sweep's summary, or a leaderboard of every run under a folder."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="report")
def _hydra_main(cfg: DictConfig) -> None:
    from genlab.tasks.report import report

    run_task(report, cfg)


def folder_argv(argv: list[str]) -> list[str]:
    """A bare folder argument (`python -m genlab.report outputs/`) becomes `dir=<folder>`."""
    return [
        argv[0],
        *(f"dir={a}" if "=" not in a and not a.startswith("-") and Path(a).is_dir() else a for a in argv[1:]),
    ]


def main() -> None:
    sys.argv = folder_argv(sys.argv)
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
