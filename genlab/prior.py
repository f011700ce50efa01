"""`python -m genlab.prior run_dir=<run> prior=gmm|vae|pixelcnn`: fit a prior over the code grids of a finished
VQ-VAE run, so that the run can generate.

Writes `<run>/checkpoints/prior-<name>.pt` (the prior's config and state), `<run>/prior-<name>.json` (its fit
and held-out figures) and `<run>/samples/prior-<name>.png` (a grid of 64 samples from seed 0). Afterwards
`load_run(run_dir)` (or `attach_prior(model, run_dir)` on a model rebuilt elsewhere) gives a model whose
`sample(n)` uses that prior (the newest one fitted, or the one named).
"""

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid, save_image

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.errors import GenlabError
from genlab.models.priors import CodeGrid, CodePrior
from genlab.utils.images import model_to_unit

log = logging.getLogger(__name__)


def find_checkpoint(run_dir: Path, ckpt: str = "best") -> Path:
    """`best` (the newest best-*.ckpt, else last.ckpt), `last`, or a path."""
    if ckpt not in ("best", "last"):
        path = Path(ckpt)
    else:
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        path = best[-1] if ckpt == "best" and best else run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise GenlabError(f"ckpt={ckpt}: no checkpoint at {path}; expected a genlab run dir with checkpoints/")
    return path


def load_run(
    run_dir: str | Path, ckpt: str = "best", prior: str | None = None, attach: bool = True
) -> tuple[DictConfig, L.LightningModule]:
    """The run's config and its model with the checkpoint's weights (eval mode), and (with `attach`) a fitted
    prior attached when the model takes one and one exists (`prior`: its name; None: the newest)."""
    run_dir = Path(run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise GenlabError(f"run_dir={run_dir} has no .hydra/config.yaml; expected the directory of a genlab run")
    cfg = OmegaConf.load(config)
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)  # not this process's Hydra dir
    model = instantiate(cfg.model)
    state = torch.load(find_checkpoint(run_dir, ckpt), map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.on_load_checkpoint(state)
    model.eval()
    if attach and hasattr(model, "set_prior") and list((run_dir / "checkpoints").glob("prior-*.pt")):
        attach_prior(model, run_dir, prior)
    return cfg, model


def attach_prior(model: L.LightningModule, run_dir: str | Path, name: str | None = None) -> CodePrior:
    """Load `<run_dir>/checkpoints/prior-<name>.pt` (None: the newest) into `model.set_prior`."""
    found = sorted(Path(run_dir, "checkpoints").glob(f"prior-{name or '*'}.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise GenlabError(
            f"prior={name}: no fitted prior in {run_dir}/checkpoints; fit one with "
            f"python -m genlab.prior run_dir={run_dir} prior=gmm (or vae, pixelcnn)"
        )
    saved = torch.load(found[-1], map_location="cpu", weights_only=False)
    prior = instantiate(saved["config"], codes=CodeGrid(**saved["build"]))
    prior.load_state_dict(saved["state_dict"])
    model.set_prior(prior.eval())
    return prior


@torch.no_grad()
def encode_split(model: L.LightningModule, loader, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes `[N, h, w]` and encoder outputs `[N, D, h, w]` of up to `limit` images of `loader`."""
    codes, features, seen = [], [], 0
    for x, _ in loader:
        z_e = model.encoder(x.to(model.device))
        codes.append(model.quantizer.nearest(z_e).cpu())
        features.append(z_e.cpu())
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    return torch.cat(codes)[:limit], torch.cat(features)[:limit]


def fit_prior(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.run_dir)
    run_cfg, model = load_run(run_dir, cfg.ckpt, attach=False)
    if not hasattr(model, "set_prior"):
        raise GenlabError(f"run_dir={run_dir} holds a {type(model).__name__}; priors are fitted on VQ-VAE runs")
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(run_cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    codes, features = encode_split(model, datamodule.train_dataloader(), cfg.fit_images)
    test_codes, test_features = encode_split(model, datamodule.test_dataloader(), cfg.test_images)
    q = model.quantizer
    build = {"codebook_size": q.codebook_size, "grid": list(model.latent_shape), "code_dim": q.code_dim}
    prior: CodePrior = instantiate(cfg.prior, codes=CodeGrid(**build))
    log.info("fitting the %s prior on %d code grids %s", prior.name, len(codes), tuple(model.latent_shape))
    figures = prior.fit(codes, features, q.codebook.weight.detach().cpu())
    figures |= prior.score(test_codes, test_features)
    saved = {
        "config": OmegaConf.to_container(cfg.prior, resolve=True),
        "build": build,
        "state_dict": prior.state_dict(),
    }
    torch.save(saved, saved_path(run_dir, prior.name))
    (run_dir / f"prior-{prior.name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    model.set_prior(prior.eval())
    images = model.generate(*model.fixed_inputs())
    (run_dir / "samples").mkdir(exist_ok=True)
    grid = run_dir / "samples" / f"prior-{prior.name}.png"
    save_image(make_grid(model_to_unit(images).cpu(), nrow=model.grid_nrow, padding=2), grid)
    log.info("prior %s: %s\n  saved %s\n  grid %s", prior.name, figures, saved_path(run_dir, prior.name), grid)
    return figures


def saved_path(run_dir: Path, name: str) -> Path:
    return run_dir / "checkpoints" / f"prior-{name}.pt"


@hydra.main(version_base="1.3", config_path="conf", config_name="prior")
def _hydra_main(cfg: DictConfig) -> None:
    from genlab.utils.runner import run_task

    run_task(fit_prior, cfg)


def main() -> None:
    from genlab.utils.runner import run_main

    run_main(_hydra_main)


if __name__ == "__main__":
    main()
