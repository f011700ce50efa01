"""One optimisation step per model, GAN stepping counted exactly, and the GenerativeModule contract."""

from functools import partial

import lightning.pytorch as L
import pytest
import torch

from genlab.data import DigitsDataModule
from genlab.errors import ConfigError
from genlab.models import GAN, VAE
from genlab.nets import MLPDecoder, MLPEncoder


class CountingSGD(torch.optim.SGD):
    """SGD that appends its `name` to a shared log at every step."""

    def __init__(self, params, lr, name, log):
        super().__init__(params, lr=lr)
        self.name, self.log = name, log

    def step(self, closure=None):
        self.log.append(self.name)
        return super().step(closure)


def tiny_gan(log=None, **kwargs) -> GAN:
    log = [] if log is None else log
    return GAN(
        generator=MLPDecoder(8, 1, 8, hidden_dims=[32], activation="leaky_relu", batch_norm=True, output="tanh"),
        discriminator=MLPEncoder(1, 8, hidden_dims=[32], activation="leaky_relu"),
        latent_dim=8,
        optimizer_g=partial(CountingSGD, name="G", log=log),
        optimizer_d=partial(CountingSGD, name="D", log=log),
        lr_g=0.01,
        lr_d=0.01,
        **kwargs,
    )


def tiny_vae(**kwargs) -> VAE:
    return VAE(MLPEncoder(1, 8, [32]), MLPDecoder(4, 1, 8, [32]), 4, partial(torch.optim.Adam), **kwargs)


def make_trainer(tmp_path, **kwargs) -> L.Trainer:
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(accelerator="cpu", enable_model_summary=False, default_root_dir=tmp_path, **quiet, **kwargs)


def fit(model, tmp_path, max_epochs=1, limit_train_batches=None, max_steps=-1, batch_size=16):
    dm = DigitsDataModule(image_size=8, channels=1, batch_size=batch_size)
    trainer = make_trainer(
        tmp_path,
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=limit_train_batches,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    return trainer


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module, skip_output_bias=False) -> bool:
    pairs = list(zip(before, module.parameters(), strict=True))
    if skip_output_bias:  # d/db of E[f(fake)] - E[f(real)] is 1 - 1 = 0: a critic's output bias never moves
        pairs = pairs[:-1]
    return all(not torch.equal(b, p) for b, p in pairs)


def test_vae_step_changes_every_parameter(tmp_path):
    vae = tiny_vae()
    before = snapshot(vae)
    fit(vae, tmp_path, limit_train_batches=1)
    assert changed(before, vae)


@pytest.mark.parametrize("loss", ["bce", "wasserstein"])
def test_gan_step_changes_both_players(tmp_path, loss):
    log = []
    gan = tiny_gan(log, loss=loss)
    g0, d0 = snapshot(gan.generator), snapshot(gan.discriminator)
    fit(gan, tmp_path, limit_train_batches=1)
    assert log == ["D", "G"]
    assert changed(g0, gan.generator)
    assert changed(d0, gan.discriminator, skip_output_bias=loss == "wasserstein")


@pytest.mark.parametrize("n_critic", [1, 2, 5])
def test_d_takes_exactly_n_critic_steps_per_g_step_across_epochs(tmp_path, n_critic):
    log = []
    trainer = fit(tiny_gan(log, n_critic=n_critic), tmp_path, max_epochs=3, limit_train_batches=7)
    # 21 batches: one D step each, and a G step after every n_critic-th D step, also across epoch ends.
    assert log.count("D") == 21
    assert log.count("G") == 21 // n_critic
    assert "".join(log).startswith(("D" * n_critic + "G") * (21 // n_critic))
    assert trainer.global_step == len(log)


def test_max_steps_counts_generator_steps(tmp_path):
    log = []
    trainer = fit(tiny_gan(log, n_critic=3), tmp_path, max_epochs=100, max_steps=4)
    assert log.count("G") == 4 and log.count("D") == 12
    assert log[-1] == "G" and trainer.global_step == 16


def test_wgan_clips_the_critic(tmp_path):
    gan = tiny_gan(loss="wasserstein", n_critic=5, clip_value=0.01)
    fit(gan, tmp_path, limit_train_batches=6)
    weights = torch.cat([p.detach().flatten() for p in gan.discriminator.parameters()])
    assert weights.abs().max().item() <= 0.01
    assert weights.abs().max().item() == pytest.approx(0.01)  # the constraint is active, not vacuous


def test_saturating_option_changes_the_generator_update(tmp_path):
    gans = []
    for saturating in (False, True):
        torch.manual_seed(0)
        gan = tiny_gan(saturating=saturating)
        torch.manual_seed(1)
        fit(gan, tmp_path, limit_train_batches=1)
        gans.append(torch.cat([p.flatten() for p in gan.generator.parameters()]))
    assert not torch.allclose(gans[0], gans[1])


def test_sample_contract_and_fixed_noise_buffer():
    gan, vae = tiny_gan(), tiny_vae()
    for model in (gan, vae):
        x = model.sample(5)
        assert x.shape == (5, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
        assert "fixed_noise" in model.state_dict() and model.fixed_noise.shape == (64, model.latent_dim)
        assert model.training  # sampling restores train mode
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert vae.encode(x).shape == (3, 4) and vae.reconstruct(x).shape == (3, 1, 8, 8)
    assert not hasattr(gan, "encode") and not hasattr(gan, "reconstruct")


def test_vae_learns_on_digits(tmp_path):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(1, 8, [128]), MLPDecoder(8, 1, 8, [128]), 8, partial(torch.optim.Adam), lr=3e-3)
    dm = DigitsDataModule(image_size=8, channels=1, batch_size=32)
    trainer = make_trainer(tmp_path, max_epochs=6)
    before = trainer.validate(vae, datamodule=dm, verbose=False)[0]["val/nelbo"]
    trainer.fit(vae, datamodule=dm)
    after = trainer.validate(vae, datamodule=dm, verbose=False)[0]
    assert after["val/nelbo"] < 0.75 * before
    assert after["val/kl"] > 1.0  # the latent code is used: no posterior collapse


def test_vae_reduction_mean_weights_kl_more():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    logs = {}
    for reduction in ("sum", "mean"):
        torch.manual_seed(0)
        vae = tiny_vae(reduction=reduction)
        vae.log_eval = lambda d, batch_size: logs.__setitem__(reduction, d)  # noqa: B023
        torch.manual_seed(1)
        vae._step((x, None), "val")
    s, m = logs["sum"], logs["mean"]
    torch.testing.assert_close(s["val/recon"], m["val/recon"] * 64)  # 64 = C*H*W
    torch.testing.assert_close(s["val/kl"], m["val/kl"])
    torch.testing.assert_close(s["val/nelbo"], m["val/nelbo"])  # the reported ELBO does not depend on it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_critic": 0}, "n_critic=0"), ({"loss": "hinge2"}, "'hinge2'"), ({"clip_value": -1.0}, "clip_value=-1.0")],
)
def test_bad_gan_options_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tiny_gan(**kwargs)


def test_vae_options_are_rejected_with_choices():
    with pytest.raises(ConfigError, match="'l1'.*'bce', 'mse'"):
        tiny_vae(recon_loss="l1")


def test_vae_scheduler_steps_once_per_epoch(tmp_path):
    vae = tiny_vae(lr=1e-3, scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    trainer = fit(vae, tmp_path, max_epochs=3, limit_train_batches=2)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)
