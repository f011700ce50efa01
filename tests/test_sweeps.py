"""Sweeps: the same lr and latent keys for every model, resuming a stopped sweep, the Optuna search's value,
multi-process trainers under -m, and the launcher configs."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
ADVERSARIAL = {"gan", "dcgan", "wgan", "wgan_gp", "wgan_mlp", "lsgan", "hinge_gan", "acgan", "bigan"}


@pytest.mark.parametrize("model", MODELS)
def test_a_latent_and_lr_grid_has_the_same_keys_for_every_model_and_lr_sets_every_rate(model):
    """`-m model.latent_dim=.. model.lr=..` works for every model (the VQ-VAE's latent is a grid of codes, sized by
    code_dim): model.lr is each model's one learning rate, and both players' for every adversarial recipe."""
    latent = [] if model == "vqvae" else ["model.latent_dim=7"]
    cfg = compose_cfg([f"model={model}", *latent, "model.lr=0.0123"]).model
    rates = {k: cfg[k] for k in ("lr", "lr_g", "lr_d") if k in cfg}
    assert set(rates) == ({"lr", "lr_g", "lr_d"} if model in ADVERSARIAL else {"lr"})
    assert set(rates.values()) == {0.0123}, rates
    assert model == "vqvae" or cfg.latent_dim == 7


def test_an_explicit_player_rate_wins_over_model_lr():
    cfg = compose_cfg(["model=wgan_gp", "model.lr=0.01", "model.lr_d=0.003"]).model
    assert (cfg.lr_g, cfg.lr_d) == (0.01, 0.003)


def test_a_two_rate_recipe_scales_with_model_lr_and_keeps_its_ratio():
    """A TTUR recipe writes D's rate as a multiple of model.lr; a sweep over model.lr then scales both."""
    ttur = ["model=gan", "model.lr_d='${genlab_mul:${model.lr},4}'"]
    for lr in (1e-4, 3e-4):
        gan = instantiate(compose_cfg([*ttur, f"model.lr={lr}"]).model)
        opt_g, opt_d = gan.configure_optimizers()[0]
        assert opt_g.defaults["lr"] == pytest.approx(lr) and opt_d.defaults["lr"] == pytest.approx(4 * lr)
