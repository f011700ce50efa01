"""`python -m genlab.download datasets=[mnist,cifar10] inception=true`: fetch data and weights ahead of time."""

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.utils.config import config_dir
from genlab.utils.runner import run_main, run_task


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="download")
def _hydra_main(cfg: DictConfig) -> None:
    from genlab.tasks.download import download

    print(f"genlab.download: datasets into {cfg.paths.data_dir}, weights into {cfg.paths.cache_dir}")
    run_task(download, cfg)


def main() -> None:
    run_main(_hydra_main)


if __name__ == "__main__":
    main()
