"""`python -m genlab.evaluate run_dir=... | ckpt_path=...`: metrics of a trained model into metrics.json."""

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.locate import check_run_options
from genlab.utils.runner import lazy_task, run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    run_task(lazy_task("genlab.tasks.evaluate:evaluate"), cfg, precheck=check_run_options)


def main() -> None:
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
