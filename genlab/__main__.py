"""`python -m genlab [overrides]`: the training task (see `python -m genlab --help`)."""

import sys

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import resume_argv, run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from genlab.tasks.train import train

    metrics = run_task(train, cfg)
    return None if not metrics else metrics.get(cfg.get("optimized_metric") or "", None)


def main() -> None:
    """Console entry point: `resume=<run dir>` becomes that run's saved overrides, then Hydra runs the task."""
    sys.argv = resume_argv(sys.argv)
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
