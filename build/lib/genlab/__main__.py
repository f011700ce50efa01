"""`python -m genlab [overrides]`: the training task (see `python -m genlab --help`)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)

log = logging.getLogger("genlab")


def run_task(task, cfg: DictConfig):
    """Run `task(cfg)`; user errors (bad config values, missing data) end in one message and exit code 1."""
    import lightning.pytorch  # noqa: F401  (it adds a console handler on import)
    from hydra.errors import InstantiationException

    from genlab.errors import GenlabError

    # Hydra's handlers already print and file every record; drop Lightning's extra console handler.
    logging.getLogger("lightning.pytorch").handlers.clear()
    try:
        return task(cfg)
    except (GenlabError, InstantiationException) as err:
        # instantiate() wraps our errors; show the original message, not Hydra's wrapper
        cause = err.__cause__ if isinstance(err.__cause__, GenlabError) else err
        log.error("%s", cause)
        print(f"genlab: error: {cause}", file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from genlab.tasks.train import train

    metrics = run_task(train, cfg)
    return None if not metrics else metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
