"""Where the Hydra configs live, and the OmegaConf resolvers they use (registered on `import genlab`)."""

from pathlib import Path

from omegaconf import OmegaConf


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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
    if not OmegaConf.has_resolver("genlab_wandb_group"):
        OmegaConf.register_new_resolver("genlab_wandb_group", wandb_group)
    if not OmegaConf.has_resolver("genlab_mul"):
        OmegaConf.register_new_resolver("genlab_mul", multiply)
