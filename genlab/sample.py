"""`python -m genlab.sample run_dir=... n=64 format=grid|png|npz`: samples of a trained model."""

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="sample")
def _hydra_main(cfg: DictConfig) -> None:
    from genlab.tasks.sample import sample

    run_task(sample, cfg)


def main() -> None:
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
