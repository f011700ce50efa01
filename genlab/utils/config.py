"""Where the Hydra configs live, and the OmegaConf resolvers they use (registered on `import genlab`)."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError


def config_dir() -> str:
    """The Hydra config folder: `genlab/conf` inside the package (a wheel's copy, or in a checkout the committed
    symlink to the top-level `conf/`), else the checkout's `conf/` (a checkout made without symlink support)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    return str(packaged if (packaged / "train.yaml").is_file() else Path(__file__).resolve().parents[2] / "conf")


def project_root() -> str:
    """The repository root (the folder holding pyproject.toml) for a source checkout, or the working directory
    for a non-editable install (outputs/ and data/ then hang from where genlab is run)."""
    root = Path(__file__).resolve().parents[2]
    return str(root if (root / "pyproject.toml").is_file() and (root / "genlab").is_dir() else Path.cwd())


def wandb_group(default: str) -> str:
    """The W&B group of this Hydra job: in a multirun, the sweep (`<task>-<date>-<time>` from hydra.sweep.dir's
    last two folders), so each sweep is its own group; else `default` (the task name)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    sweep = Path(HydraConfig.get().sweep.dir)
    return "-".join([default, sweep.parent.name, sweep.name])


def multiply(a: float, b: float) -> float:
    """`${genlab_mul:a,b}`: a * b, e.g. a two-rate (TTUR) GAN's `lr_d: ${genlab_mul:${model.lr},4}`."""
    return a * b


RECIPE_EPOCHS = "recipe_epochs"


def recipe_epochs(default: int, *, _root_: DictConfig) -> int:
    """`${genlab_epochs:20}` (`trainer.max_epochs`' default): the length the model's recipe states for this
    dataset, `model.recipe_epochs.<data.dataset>` (e.g. `model=hinge_gan`: `{mnist: 40}`), else `default`. Keyed
    by dataset so that a length searched on MNIST never silently becomes the length on another dataset; counted
    in epochs, so it is the same recipe on a laptop, a GPU or a cluster. `trainer.max_epochs=N` wins over both."""
    model, data = _root_.get("model"), _root_.get("data")
    lengths = model.get(RECIPE_EPOCHS) if isinstance(model, DictConfig) else None
    if lengths is None:
        return default
    if not isinstance(lengths, DictConfig):
        raise ConfigError(
            f"model.{RECIPE_EPOCHS}={lengths!r} is invalid; expected a mapping from data.dataset to epochs, e.g. "
            f"{{mnist: 40}}, or null (to set this run's length: trainer.max_epochs={lengths})"
        )
    dataset = data.get("dataset") if isinstance(data, DictConfig) else None
    epochs = lengths.get(dataset, default) if isinstance(dataset, str) else default
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"model.{RECIPE_EPOCHS}.{dataset}={epochs!r} is invalid; expected an integer >= 1")
    return epochs


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
    if not OmegaConf.has_resolver("genlab_wandb_group"):
        OmegaConf.register_new_resolver("genlab_wandb_group", wandb_group)
    if not OmegaConf.has_resolver("genlab_mul"):
        OmegaConf.register_new_resolver("genlab_mul", multiply)
    if not OmegaConf.has_resolver("genlab_epochs"):
        OmegaConf.register_new_resolver("genlab_epochs", recipe_epochs)
