"""OmegaConf resolvers used by genlab/conf/ (registered on `import genlab`)."""

from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> str:
    """The repository root (the folder holding pyproject.toml) for a source checkout, or the working directory
    for a non-editable install (outputs/ and data/ then hang from where genlab is run)."""
    root = Path(__file__).resolve().parents[2]
    return str(root if (root / "pyproject.toml").is_file() and (root / "genlab").is_dir() else Path.cwd())


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("genlab_root"):
        OmegaConf.register_new_resolver("genlab_root", project_root)
