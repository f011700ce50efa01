"""The prior task (`python -m genlab.prior run_dir=<run> prior=gmm|vae|pixelcnn`): fit a prior over the code grids
of a finished VQ-VAE run, so that the run can generate.

Writes `<run>/checkpoints/prior-<name>.pt` (the prior's config and state), `<run>/prior-<name>.json` (its fit
and held-out figures) and `<run>/samples/prior-<name>.png` (a grid of 64 samples from seed 0). Afterwards every
entry point that opens the run (`genlab.runs.open_run`: evaluate, sample) attaches the latest prior fitted, or
the one named with `use_prior=<name>`.
"""

import json
import logging
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid, save_image

from genlab.errors import GenlabError
from genlab.models.priors import CodeGrid, CodePrior
from genlab.runs import PRIOR_PATTERN, open_run, run_options
from genlab.utils.images import model_to_unit

log = logging.getLogger(__name__)


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
    run_dir = Path(cfg.run_dir).expanduser()
    run = open_run(**run_options(cfg), attach=False)
    model = run.model
    if not hasattr(model, "set_prior"):
        raise GenlabError(f"run_dir={run_dir} holds a {type(model).__name__}; priors are fitted on VQ-VAE runs")
    torch.manual_seed(cfg.seed)
    datamodule = run.datamodule()
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
    return run_dir / "checkpoints" / PRIOR_PATTERN.format(name=name)
