"""`python -m genlab.evaluate run_dir=... | ckpt_path=...`: metrics of a trained model into metrics.json."""

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    from genlab.tasks.evaluate import evaluate

    run_task(evaluate, cfg)


def main() -> None:
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
