"""`python -m genlab [overrides]`: the training task (see `python -m genlab --help`)."""

import sys

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import lazy_task, resume_argv, run_main
from genlab.utils.sweeps import run_train_job


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Train; returns `optimized_metric` at the run's best checkpoint (for sweepers), or None."""
    return run_train_job(lazy_task("genlab.tasks.train:train"), cfg)


def main() -> None:
    """Console entry point: `resume=<run dir>` becomes that run's saved overrides, then Hydra runs the task."""
    sys.argv = resume_argv(sys.argv)
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
