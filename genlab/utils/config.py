"""OmegaConf resolvers used by conf/ (registered on `import genlab`)."""

from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> str:
    """The repository root (the folder holding conf/), or the working directory for a non-editable install."""
    root = Path(__file__).resolve().parents[2]
    return str(root if (root / "conf").is_dir() else Path.cwd())


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
