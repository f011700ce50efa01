"""One way to open a run: find a checkpoint, load it safely, rebuild the model from allow-listed targets, and
attach what was fitted since (a VQ-VAE's prior). Training's resume, `evaluate`, `sample` and `prior` all go
through this module, so a check added here holds at every entry point.

A file from elsewhere (a checkpoint, a prior file, a run dir's saved config or overrides) is data, never code:
- files load with `weights_only=True` through `genlab.utils.checkpoints.read`, the one place that calls torch.load;
- a model, datamodule or prior is rebuilt from a stored config only when every `_target_` in it is named exactly
  in `TRUSTED_TARGETS` (genlab's own classes and the torch optimisers and schedulers its configs use) or in the
  user's `trusted_targets` list. `allow_unsafe_checkpoint=true` lifts both checks for a source the user trusts.
A user's own config and command line stay free to name any `_target_`: the allow-list is for what files say.
"""

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import CheckpointError, GenlabError
from genlab.utils.checkpoints import check_fits, load_checkpoint, read
from genlab.utils.locate import find_checkpoint, recorded_best, run_options  # noqa: F401  (part of this module's API)
from genlab.utils.runner import BEST_RECORD

log = logging.getLogger(__name__)

CONFIG_KEY = "genlab_config"  # the resolved config inside every checkpoint (genlab.callbacks.StoreConfig)
PRIOR_PATTERN = "prior-{name}.pt"  # <run>/checkpoints/prior-<name>.pt, written by `python -m genlab.prior`

_OPTIMIZERS = ("Adam", "AdamW", "Adamax", "Adagrad", "NAdam", "RAdam", "RMSprop", "SGD")
_SCHEDULERS = (
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "LinearLR",
    "ConstantLR",
    "PolynomialLR",
    "OneCycleLR",
)
# Exact names, not prefixes: `genlab.utils.runner.fail` or `torch.hub.load` are refused like `os.system`.
TRUSTED_TARGETS: frozenset[str] = frozenset(
    {
        *(f"genlab.models.{c}" for c in ("GAN", "BiGAN", "VAE", "Autoencoder", "VQVAE")),
        *(f"genlab.models.priors.{c}" for c in ("GMMPrior", "VAEPrior", "PixelCNNPrior", "Training")),
        *(f"genlab.nets.{c}" for c in ("ConvEncoder", "ConvDecoder", "MLPEncoder", "MLPDecoder", "JointDiscriminator")),
        "genlab.nets.mlp.hidden_widths",
        *(
            f"genlab.data.{c}"
            for c in (
                "DigitsDataModule",
                "TorchvisionDataModule",
                "CelebADataModule",
                "DSpritesDataModule",
                "ImageFolderDataModule",
            )
        ),
        *(f"torch.optim.{c}" for c in _OPTIMIZERS),
        *(f"torch.optim.lr_scheduler.{c}" for c in _SCHEDULERS),
    }
)


def write_best_record(
    folder: Path,
    checkpoint: Path,
    monitor: str | None,
    score: float | None,
    epoch: int,
    metrics: dict[str, float | None] | None = None,
) -> None:
    """Record `checkpoint` as the run's best (written by the checkpoint callback, read by `recorded_best`), with
    the validation metrics of its epoch (`metrics`, non-finite ones as null): what a sweep's objective reads."""
    record = {"checkpoint": checkpoint.name, "monitor": monitor, "score": score, "epoch": epoch}
    if metrics is not None:
        record["metrics"] = metrics
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{BEST_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(folder / BEST_RECORD)


# -- rebuild -----------------------------------------------------------------------------------------------------
def _targets(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(config path, value) of every `_target_` in a nested config."""
    if isinstance(node, dict | DictConfig):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}")
    elif isinstance(node, list | tuple | ListConfig):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def check_targets(node: Any, path: str, source: str, trusted: Iterable[str] = (), allow_unsafe: bool = False) -> None:
    """Raise a CheckpointError unless every `_target_` under `node` (read from `source`) is trusted."""
    if allow_unsafe:
        return
    allowed = TRUSTED_TARGETS | set(trusted or ())
    for where, target in _targets(node, path):
        if target not in allowed:
            raise CheckpointError(
                f"{source} names {where}._target_={target!r}, which is not one of genlab's own classes; building it "
                f"could run arbitrary code, so genlab refuses. If it is your own class, add it to trusted_targets "
                f"(e.g. trusted_targets=[{target}]); if you trust the file, rerun with allow_unsafe_checkpoint=true"
            )


def check_override_targets(overrides: Iterable[str], source: str, trusted: Iterable[str] = ()) -> None:
    """Saved command-line overrides (e.g. `.hydra/overrides.yaml`, reused by `resume=`) are data as well."""
    allowed = TRUSTED_TARGETS | set(trusted or ())
    for override in overrides:
        key, _, value = str(override).partition("=")
        if "_target_" in key and value not in allowed:
            raise CheckpointError(
                f"{source} holds the override {override!r}, whose _target_ is not one of genlab's own classes; "
                f"building it could run arbitrary code, so genlab refuses. If it is your own class, add it to "
                f"trusted_targets; if you trust the run dir, rerun with allow_unsafe_checkpoint=true"
            )


def stored_config(checkpoint: dict, path: Path, run_dir: str | Path | None) -> DictConfig:
    """The resolved config inside the checkpoint, else `.hydra/config.yaml` of its run dir."""
    if isinstance(checkpoint.get(CONFIG_KEY), dict):
        return OmegaConf.create(checkpoint[CONFIG_KEY])
    for folder in [Path(run_dir)] if run_dir else [path.parent.parent, path.parent]:
        saved = folder / ".hydra" / "config.yaml"
        if saved.is_file():
            return OmegaConf.load(saved)
    raise CheckpointError(
        f"checkpoint {path} has no stored config and no .hydra/config.yaml was found next to it; expected a "
        f"checkpoint written by genlab (or run_dir=<its run directory>)"
    )


@dataclass
class Run:
    """An opened run: its config, its model (eval mode, the checkpoint's weights, a fitted prior attached), where
    they came from, and how to build its data."""

    cfg: DictConfig
    model: Any
    checkpoint: Path
    run_dir: Path | None
    prior: str | None

    def datamodule(self):
        return instantiate(self.cfg.data)


def open_run(
    run_dir: str | Path | None = None,
    ckpt_path: str | None = None,
    ckpt: str = "best",
    *,
    prior: str | None = None,
    attach: bool = True,
    device: str = "cpu",
    allow_unsafe: bool = False,
    trusted: Iterable[str] = (),
) -> Run:
    """Find, load, check and rebuild a run's model; attach its prior (`prior`: a name, None: the latest fitted,
    "none": no prior, e.g. to score a VQ-VAE's uniform codes against its prior)."""
    if prior == "none":
        attach, prior = False, None
    path = find_checkpoint(run_dir, ckpt, ckpt_path)
    key = "ckpt_path" if ckpt_path else "ckpt"
    checkpoint = load_checkpoint(path, key=key, allow_unsafe=allow_unsafe)
    cfg = stored_config(checkpoint, path, run_dir)
    for group in ("model", "data"):
        if group not in cfg:
            raise CheckpointError(f"the config stored with {path} has no `{group}`; expected a genlab run's config")
        check_targets(cfg[group], group, f"checkpoint {path}", trusted, allow_unsafe)
    model = instantiate(cfg.model)
    check_fits(path, checkpoint, model, cfg.model.get("_target_", "?"), key=key)
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    model = model.to(device).eval()
    folder = Path(run_dir).expanduser() if run_dir else _run_dir_of(path)
    attached = None
    if attach and hasattr(model, "set_prior"):
        attached = attach_prior(model, path.parent, prior, allow_unsafe=allow_unsafe, trusted=trusted)
    elif prior:
        raise GenlabError(f"prior={prior}: the model of {path} ({type(model).__name__}) takes no prior")
    return Run(cfg, model, path, folder, attached)


def _run_dir_of(path: Path) -> Path | None:
    """`<run>` for `<run>/checkpoints/x.ckpt` when `<run>` is a genlab run dir, else None."""
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / ".hydra").is_dir() else None


# -- attach ------------------------------------------------------------------------------------------------------
def prior_files(folder: Path, name: str | None = None) -> list[Path]:
    """Fitted prior files in a checkpoints folder, oldest first (`name`: only that prior)."""
    return sorted(folder.glob(PRIOR_PATTERN.format(name=name or "*")), key=lambda p: p.stat().st_mtime)


def attach_prior(
    model: Any, folder: Path, name: str | None = None, allow_unsafe: bool = False, trusted: Iterable[str] = ()
) -> str | None:
    """Give `model.set_prior` the prior fitted in `folder` (a run's checkpoints/): `name`, or the latest fitted
    (None when there is none and no name was asked for). Returns the prior's name."""
    found = prior_files(folder, name)
    if not found:
        if name:
            raise GenlabError(
                f"prior={name}: no fitted prior at {folder / PRIOR_PATTERN.format(name=name)}; fit one with "
                f"python -m genlab.prior run_dir={folder.parent} prior={name}"
            )
        return None
    model.set_prior(load_prior(found[-1], allow_unsafe, trusted).to(model.device))
    return found[-1].stem.removeprefix("prior-")


def load_prior(path: Path, allow_unsafe: bool = False, trusted: Iterable[str] = ()):
    """A prior rebuilt from its file: config (allow-listed targets), code-grid shape and state dict."""
    from genlab.models.priors import CodeGrid

    saved = read(path, key="prior", allow_unsafe=allow_unsafe)
    if not (isinstance(saved, dict) and {"config", "build", "state_dict"} <= saved.keys()):
        raise CheckpointError(f"prior={path} is not a genlab prior file; expected one written by genlab.prior")
    check_targets(saved["config"], "prior", f"prior file {path}", trusted, allow_unsafe)
    prior = instantiate(saved["config"], codes=CodeGrid(**saved["build"]))
    prior.load_state_dict(saved["state_dict"])
    return prior.eval()
