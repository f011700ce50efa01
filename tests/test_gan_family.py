"""The adversarial engine and the GAN family: nets at every size, objectives against closed forms, which
networks each step moves, the schedule counted exactly, ACGAN, BiGAN, EMA, per-rank noise, step axes."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from genlab.data import DigitsDataModule
from genlab.data.base import collate
from genlab.errors import ConfigError
from genlab.models import GAN, BiGAN
from genlab.models.gan import r1_penalty
from genlab.models.objectives import BCE, Hinge, LeastSquares, Wasserstein, WassersteinGP, gradient_penalty
from genlab.nets import ConvDecoder, ConvEncoder, DiscriminatorHeads, JointDiscriminator, MLPDecoder, MLPEncoder
from genlab.nets.conv import SIZES
from genlab.utils.runner import user_error
from tests.test_models import CountingSGD, changed, make_trainer, snapshot


# -- nets ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [s for s in SIZES if s <= 256])
def test_dcgan_nets_build_at_every_size(size, channels):
    width = 4 if size >= 128 else 8
    g = ConvDecoder(channels, size, latent_dim=6, width=width)
    d = DiscriminatorHeads(ConvEncoder(channels, size, width=width, norm="layer"), num_classes=3)
    x = g(torch.randn(2, 6))
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    adv, aux = d(x)
    assert adv.shape == (2,) and aux.shape == (2, 3)


def test_the_512px_dcgan_has_five_upsampling_blocks_and_steps():
    g = ConvDecoder(3, 512, latent_dim=100, width=16)
    d = DiscriminatorHeads(ConvEncoder(3, 512, width=16))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 5
    x = g(torch.randn(2, 100))
    assert x.shape == (2, 3, 512, 512)
    d(x)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.ndim > 1)


@pytest.mark.parametrize("size", [0, -4, 7, 48, 1024])
def test_unbuildable_image_sizes_name_the_accepted_ones(size):
    with pytest.raises(ConfigError, match=f"data.image_size={size} cannot be built.*28, 32, 64"):
        ConvDecoder(1, size, latent_dim=4)


def test_critic_norm_choice_is_respected():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ConvEncoder(1, 28, width=4, norm="layer").modules())
    assert any(isinstance(m, nn.GroupNorm) for m in ConvEncoder(1, 28, width=4, norm="layer").modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ConvDecoder(1, 28, latent_dim=4, width=4).modules())


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=dcgan_paper", "model.loss=wasserstein_gp", "model.discriminator.norm=layer"],  # the advised override
        ["model=wgan_gp"],
        ["model=wgan_gp", "model/arch=mlp"],
        ["model=wgan_gp", "model/arch=mlp", "model.discriminator.norm=batch"],
    ],
)
def test_gradient_penalty_is_refused_exactly_when_the_critic_has_batchnorm(make_cfg, overrides):
    cfg = make_cfg(*overrides).model
    if cfg.discriminator.norm == "batch":
        with pytest.raises(InstantiationException) as info:
            instantiate(cfg)
        assert str(user_error(info.value)).startswith("model.loss=wasserstein_gp needs a critic without BatchNorm")
    else:
        critic = instantiate(cfg).discriminator
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())


# -- objectives ------------------------------------------------------------------------------------------
REAL, FAKE = torch.tensor([2.0, 0.5, -0.3]), torch.tensor([-1.0, 0.3, 1.5])


def test_objectives_match_their_papers():
    sig = torch.sigmoid
    bce_d = -(sig(REAL).log().mean() + (1 - sig(FAKE)).log().mean())
    torch.testing.assert_close(BCE().d_loss(REAL, FAKE), bce_d)
    torch.testing.assert_close(BCE().g_loss(FAKE), -sig(FAKE).log().mean())
    torch.testing.assert_close(BCE(saturating=True).g_loss(FAKE), (1 - sig(FAKE)).log().mean())
    torch.testing.assert_close(
        LeastSquares().d_loss(REAL, FAKE), 0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean()
    )
    torch.testing.assert_close(LeastSquares().g_loss(FAKE), 0.5 * ((FAKE - 1) ** 2).mean())
    torch.testing.assert_close(
        Hinge().d_loss(REAL, FAKE), (1 - REAL).clamp(min=0).mean() + (1 + FAKE).clamp(min=0).mean()
    )
    torch.testing.assert_close(Hinge().g_loss(FAKE), -FAKE.mean())
    torch.testing.assert_close(Wasserstein().d_loss(REAL, FAKE), FAKE.mean() - REAL.mean())
    torch.testing.assert_close(Wasserstein().estimate(REAL, FAKE), REAL.mean() - FAKE.mean())


def test_label_smoothing_is_the_bce_with_a_soft_real_target():
    soft = torch.full_like(REAL, 0.9)
    expected = nn.functional.binary_cross_entropy_with_logits(REAL, soft) + nn.functional.softplus(FAKE).mean()
    torch.testing.assert_close(BCE().d_loss(REAL, FAKE, soft, torch.zeros_like(FAKE)), expected)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    w = torch.randn(3, 4, 4)  # f(x) = <w, x> over all non-batch dims: grad = w for every x, norm ||w|| over (C, H, W)
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    penalty = WassersteinGP(gp_weight=10.0).penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    torch.testing.assert_close(penalty, 10.0 * (w.norm() - 1) ** 2)


def test_gradient_penalty_draws_alpha_per_sample():
    seen = []

    def critic(x):
        seen.append(x.detach())
        return x.flatten(1).sum(1)

    gradient_penalty(critic, torch.zeros(16, 1, 2, 2), torch.ones(16, 1, 2, 2))
    x_hat = seen[0]  # = 1 - alpha, constant within a sample
    assert torch.all(x_hat.flatten(1).std(1) == 0)
    assert x_hat.flatten(1)[:, 0].unique().numel() == 16


def test_r1_penalty_of_a_linear_critic_is_exact():
    w = torch.randn(3, 4, 4)  # D(x) = <w, x>: grad_x = w for every x, so E||grad||^2 = ||w||^2
    real = torch.randn(5, 3, 4, 4, requires_grad=True)
    torch.testing.assert_close(r1_penalty((real * w).flatten(1).sum(1), real), w.pow(2).sum())


@pytest.mark.parametrize("joint", [True, False])  # D without batch statistics (one joint forward off R1 steps), or with
def test_r1_is_added_to_d_loss_on_every_r1_every_th_d_step(joint):
    torch.manual_seed(0)
    model = gan(r1_gamma=4.0, r1_every=3)
    model._d_batch_stats = not joint
    model.train()
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.zeros(16, dtype=torch.long)
    for d_step in range(7):
        model.steps["d"] = d_step
        state = model.noise.get_state()
        loss, logs = model.discriminator_loss(x, y)
        model.noise.set_state(state)  # the same fake batch without the penalty
        model.r1_gamma = 0.0
        plain, _ = model.discriminator_loss(x, y)
        model.r1_gamma = 4.0
        if d_step % 3:
            assert "r1" not in logs
            torch.testing.assert_close(loss, plain)
            continue
        real = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(model.discriminator(real)[0].sum(), real)
        torch.testing.assert_close(logs["r1"], expected.pow(2).flatten(1).sum(1).mean())
        torch.testing.assert_close(loss, plain + 0.5 * 4.0 * 3 * logs["r1"])
        loss.backward()  # the penalty trains D: its graph reaches D's weights
        assert all(p.grad is not None for p in model.discriminator.parameters())
        model.zero_grad()
    model.eval()
    assert "r1" not in model.discriminator_loss(x, y)[1]  # validation and test: no penalty


def test_bigan_r1_takes_the_gradient_with_respect_to_both_halves_of_the_real_pair():
    torch.manual_seed(0)
    model = gan(cls=BiGAN, r1_gamma=2.0, r1_every=2)
    model.train()
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.zeros(16, dtype=torch.long)
    for d_step, penalised in [(0, True), (1, False)]:
        model.steps["d"] = d_step
        state = model.noise.get_state()
        loss, logs = model.discriminator_loss(x, y)
        model.noise.set_state(state)
        model.r1_gamma = 0.0
        plain, _ = model.discriminator_loss(x, y)
        model.r1_gamma = 2.0
        if not penalised:
            assert "r1" not in logs
            torch.testing.assert_close(loss, plain)
            continue
        real, code = x.clone().requires_grad_(True), model.encoder(x).detach().requires_grad_(True)
        gx, gz = torch.autograd.grad(model.discriminator(real, code)[0].sum(), (real, code))
        expected = (gx.flatten(1).pow(2).sum(1) + gz.pow(2).sum(1)).mean()
        assert gz.abs().sum() > 0  # the code half counts
        torch.testing.assert_close(logs["r1"], expected)
        torch.testing.assert_close(loss, plain + 0.5 * 2.0 * 2 * expected)
        loss.backward()  # trains D only: G and E are not in the D step's graph
        assert all(p.grad is not None for p in model.discriminator.parameters())
        assert all(p.grad is None for p in model.generator_parameters())
        model.zero_grad()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r1_gamma": -1.0}, "model.r1_gamma=-1.0 is invalid; expected a number >= 0"),
        ({"r1_every": 0}, "model.r1_every=0 is invalid; expected an integer >= 1"),
        ({"loss": "hinge2"}, "model.loss='hinge2' is not supported"),
        ({"clip_value": 0.01}, "clip_value=0.01 applies only to model.loss=wasserstein"),
        ({"n_gen": 0}, "model.n_gen=0 is invalid"),
        ({"skip_d_every": 1}, "model.skip_d_every=1 is invalid"),
        ({"label_smoothing": 1.5}, "model.label_smoothing=1.5 is out of range"),
        ({"loss": "wasserstein", "label_smoothing": 0.1}, "need loss bce or least_squares"),
        ({"instance_noise": 0.1}, "instance_noise=0.1 with instance_noise_steps=0 is invalid"),
        ({"ema_decay": 1.0}, "model.ema_decay=1.0 is out of range"),
        ({"lr_d": 0.0}, "model.lr_d=0.0 is invalid"),
        ({"reuse_fake": "yes"}, "model.reuse_fake='yes' is invalid; expected true or false"),
        (
            {"conditional": True},
            "model.conditional=true \\(e.g. model=acgan\\) needs labelled data, but data.num_classes=0",
        ),
    ],
)
def test_bad_engine_options_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        gan(**kwargs)


# -- stepping --------------------------------------------------------------------------------------------
def gan(log=None, latent=8, size=8, num_classes=0, cls=GAN, **kwargs) -> GAN:
    log = [] if log is None else log
    g = MLPDecoder(
        latent, 1, size, [32], activation="leaky_relu", batch_norm=True, output="tanh", num_classes=num_classes
    )
    nets = {"generator": g, "discriminator": MLPEncoder(1, size, [32], activation="leaky_relu")}
    if cls is BiGAN:
        nets["encoder"] = MLPEncoder(1, size, [32], out_dim=latent)
        nets["discriminator"] = JointDiscriminator(MLPEncoder(1, size, [32]), latent, hidden=16, dropout=0.0)
    return cls(
        **nets,
        latent_dim=latent,
        optimizer_g=partial(CountingSGD, name="G", log=log),
        optimizer_d=partial(CountingSGD, name="D", log=log),
        num_classes=num_classes,
        **{"lr_g": 0.01, "lr_d": 0.01, **kwargs},
    )


def fit(model, tmp_path, max_epochs=1, batches=4, ckpt_path=None, max_steps=-1, callbacks=None, logger=False):
    trainer = make_trainer(
        tmp_path, max_epochs=max_epochs, limit_train_batches=batches, limit_val_batches=0, max_steps=max_steps
    )
    trainer.callbacks += callbacks or []
    if logger:
        trainer.loggers = [logger]
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, channels=1, batch_size=16), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    ("kwargs", "epochs", "expected"),
    [
        ({"n_critic": 2}, 2, "D DG D DG | D DG D DG"),
        ({"n_gen": 2}, 1, "DGG DGG DGG DGG"),
        ({"n_critic": 3, "n_gen": 2}, 2, "D D DGG D | D DGG D D"),  # the cycle runs on across the epoch end
        ({"skip_d_every": 2}, 1, "DG G DG G"),
        ({"d_only_every": 2}, 3, "D D D D | DG DG DG DG | D D D D"),  # epochs 0 and 2 train only D
        ({"g_only_every": 2, "n_gen": 2}, 2, "GG GG GG GG | DGG DGG DGG DGG"),
    ],
)
def test_the_schedule_steps_each_player_exactly(tmp_path, kwargs, epochs, expected):
    log = []
    fit(gan(log, **kwargs), tmp_path, max_epochs=epochs)
    assert "".join(log) == expected.replace(" ", "").replace("|", "")


def test_the_schedule_continues_exactly_after_a_resume(tmp_path):
    straight, resumed = [], []
    fit(gan(straight, n_critic=3), tmp_path, max_epochs=2, batches=5)
    first = gan(resumed, n_critic=3)
    trainer = fit(first, tmp_path, max_epochs=1, batches=5)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    fit(gan(resumed, n_critic=3), tmp_path, max_epochs=2, batches=5, ckpt_path=tmp_path / "one.ckpt")
    assert "".join(resumed) == "".join(straight) == "DDDGDD" + "DGDDDGD"


def test_max_steps_counts_generator_steps_with_two_g_steps_per_turn(tmp_path):
    log = []
    fit(gan(log, n_critic=2, n_gen=2), tmp_path, max_epochs=100, max_steps=6)
    assert log.count("G") == 6 and "".join(log) == "DDGG" * 3


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(GAN, {}), (GAN, {"conditional": True, "num_classes": 10}), (BiGAN, {})],
    ids=["gan", "acgan", "bigan"],
)
def test_each_player_step_moves_only_its_networks(tmp_path, cls, extra):
    g_nets = ["generator"] + (["encoder"] if cls is BiGAN else [])
    for only, moved, still in (
        ("d_only_every", ["discriminator"], g_nets),
        ("g_only_every", g_nets, ["discriminator"]),
    ):
        model = gan(cls=cls, **extra, **{only: 1})  # every epoch trains only that player
        before = {name: snapshot(getattr(model, name)) for name in moved + still}
        fit(model, tmp_path, batches=1)
        assert all(changed(before[name], getattr(model, name)) for name in moved), only
        for name in still:
            assert all(torch.equal(b, p) for b, p in zip(before[name], getattr(model, name).parameters(), strict=True))


def test_gradient_clipping_bounds_the_update(tmp_path):
    model = gan(grad_clip_d=1e-3)
    d0 = snapshot(model.discriminator)
    fit(model, tmp_path, batches=1)  # SGD lr 0.01: the update is lr * clipped gradient
    step = torch.cat([(p - b).flatten() for b, p in zip(d0, model.discriminator.parameters(), strict=True)])
    assert 0 < step.norm() <= 0.01 * 1e-3 * 1.01  # float32 rounding of the parameter difference


@pytest.mark.parametrize(("interval", "expected_halvings"), [("g_step", 6), ("epoch", 2)])
def test_schedulers_step_per_player_at_their_interval(tmp_path, interval, expected_halvings):
    halve = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = gan(scheduler_g=halve, scheduler_d=halve, scheduler_interval=interval, n_critic=2)
    trainer = fit(model, tmp_path, max_epochs=2, batches=6)  # 6 G steps over 2 epochs
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**expected_halvings)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**expected_halvings)


def test_label_flip_and_instance_noise_schedule():
    model = gan(label_smoothing=0.1, label_flip=1.0, instance_noise=0.5, instance_noise_steps=4)
    real, fake = model._targets(4)
    assert torch.all(real == 0.0) and torch.all(fake == 0.9)  # every label flipped; the smoothed one too
    x = torch.zeros(1000)
    assert model._noisy(x).std() == pytest.approx(0.5, rel=0.1)
    model.steps["g"] = 2
    assert model._noisy(x).std() == pytest.approx(0.25, rel=0.1)
    model.steps["g"] = 4
    assert torch.equal(model._noisy(x), x)
    model.eval()
    model.steps["g"] = 0
    assert torch.equal(model._noisy(x), x) and torch.all(model._targets(4)[0] == 1.0)  # eval: clean inputs


def test_ema_generator_lags_the_live_one_and_is_what_sample_uses(tmp_path):
    model = gan(ema_decay=0.9)
    fit(model, tmp_path, batches=4)
    live, ema = snapshot(model.generator), snapshot(model.generator_ema)
    assert all(not torch.equal(a, b) for a, b in zip(live, ema, strict=True))
    z = torch.randn(4, 8)
    with model.eval_mode():
        assert torch.equal(model.generate(z), model.generator_ema(z)) and not torch.equal(
            model.generator(z), model.generate(z)
        )
    assert "generator_ema.net.0.weight" in model.state_dict()


def test_ema_generator_gets_batchnorm_statistics_of_its_own_without_touching_the_rng(tmp_path):
    """ema_bn=standing: before it generates, the EMA generator's BatchNorm statistics are the mean over its own
    outputs on fixed noise (not the live G's), recomputed once per G step; the global RNG stream is untouched."""
    model = gan(ema_decay=0.9)
    fit(model, tmp_path, batches=4)
    bn = next(m for m in model.generator_ema.modules() if isinstance(m, nn.BatchNorm1d))
    live_bn = next(m for m in model.generator.modules() if isinstance(m, nn.BatchNorm1d))
    torch.manual_seed(3)
    model.sample(2)
    after_sample = torch.rand(1)
    torch.manual_seed(3)
    torch.randn(2, 8)
    assert torch.equal(torch.rand(1), after_sample)  # sample drew its 2 latents and nothing more
    stats = bn.running_mean.clone()
    assert not torch.allclose(stats, live_bn.running_mean)
    with torch.no_grad():  # what the statistics should be: the EMA generator's own batch statistics
        model.generator_ema.train()
        h = model.generator_ema.net[0](model.sample_latent(4096, torch.Generator().manual_seed(0)))
        model.generator_ema.eval()
    assert torch.allclose(stats, h.mean(0), atol=1e-5)
    model.generator_ema.net[0].weight.data.add_(1.0)
    model.sample(2)
    assert torch.equal(bn.running_mean, stats)  # same G step: not recomputed
    model.steps["g"] += 1
    model.sample(2)
    assert not torch.equal(bn.running_mean, stats)  # a new G step: recomputed
    live = gan(ema_decay=0.9, ema_bn="live")
    fit(live, tmp_path / "live", batches=4)
    ema_bn = next(m for m in live.generator_ema.modules() if isinstance(m, nn.BatchNorm1d))
    live.sample(2)
    assert torch.equal(
        ema_bn.running_mean, next(m for m in live.generator.modules() if isinstance(m, nn.BatchNorm1d)).running_mean
    )


def test_ema_warmup_forgets_the_first_weights():
    """ema_warmup: decay min(ema_decay, (1 + t) / (10 + t)) at G step t; at t = 0 that is 0.1."""
    model = gan(ema_decay=0.999, ema_warmup=True)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    before = snapshot(model.generator_ema)
    model._update_ema()
    for b, e, live in zip(before, snapshot(model.generator_ema), snapshot(model.generator), strict=True):
        assert torch.allclose(e, 0.1 * b + 0.9 * live)


def test_dcgan_init_draws_conv_and_batchnorm_weights_as_the_paper():
    torch.manual_seed(0)
    g = ConvDecoder(1, 28, latent_dim=16, width=32)
    d = ConvEncoder(1, 28, width=32)
    GAN(g, d, 16, torch.optim.Adam, torch.optim.Adam, init="dcgan")
    convs = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    norms = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.mean()) < 1e-3 and abs(weights.std() - 0.02) < 1e-3
    assert all(m.bias is None or not m.bias.any() for m in convs)
    scales = torch.cat([m.weight for m in norms])
    assert abs(scales.mean() - 1) < 0.01 and abs(scales.std() - 0.02) < 0.01
    with pytest.raises(ConfigError, match="model.init='xavier' is not supported; expected one of: None, 'dcgan'"):
        GAN(g, d, 16, torch.optim.Adam, torch.optim.Adam, init="xavier")


def test_spectral_norm_bounds_every_layer_of_d(tmp_path):
    """spectral_norm=true: every linear layer of D (heads included) is parametrised; after training steps
    the effective weights have a largest singular value of about 1, and the module still saves and loads."""
    model = gan(spectral_norm=True)
    layers = [m for m in model.discriminator.modules() if isinstance(m, nn.Linear)]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    fit(model, tmp_path, batches=4)
    for m in layers:
        assert torch.linalg.matrix_norm(m.weight.detach(), ord=2) == pytest.approx(1.0, abs=0.1)
    again = gan(spectral_norm=True)
    again.load_state_dict(model.state_dict())
    assert all(not nn.utils.parametrize.is_parametrized(m, "weight") for m in gan().discriminator.modules())
    projection = gan(spectral_norm=True, num_classes=2, conditional=True, class_head="projection")
    assert nn.utils.parametrize.is_parametrized(projection.discriminator.embed, "weight")  # the class embedding too


def test_generate_keeps_frozen_subnetworks_in_eval_mode():
    model = gan(ema_decay=0.99)
    model.generator_ema.eval()
    model.sample(3)
    assert model.training and model.generator.training and not model.generator_ema.training


def test_ranks_draw_different_noise_and_a_rank_draws_the_same_twice():
    draws = []
    for rank in (0, 1, 0):
        torch.manual_seed(7)
        model = gan()
        model._trainer = SimpleNamespace(global_rank=rank)
        model.setup("fit")
        draws.append(model.sample_latent(4, model.noise))
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])


def test_after_loading_a_checkpoint_each_rank_draws_the_noise_of_its_position():
    def model_at(rank: int) -> GAN:
        torch.manual_seed(7)
        model = gan()
        model._trainer = SimpleNamespace(global_rank=rank, current_epoch=1, global_step=0)
        model.setup("fit")
        return model

    def draw(model: GAN, checkpoint: dict | None = None) -> torch.Tensor:
        if checkpoint is not None:
            model.on_load_checkpoint(checkpoint)
        model.on_train_batch_start(None, 2)  # epoch 1, batch 2
        return model.sample_latent(4, model.noise)

    saved, rank0 = {}, model_at(0)
    rank0.sample_latent(5, rank0.noise)  # rank 0 has drawn some noise before it saves the checkpoint
    rank0.on_save_checkpoint(saved)
    resumed = [draw(model_at(rank), saved) for rank in (0, 1)]
    uninterrupted = [draw(model_at(rank)) for rank in (0, 1)]
    assert not torch.equal(*resumed)
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted, strict=True))


# -- ACGAN and BiGAN -------------------------------------------------------------------------------------
def two_class_batches(n=64):
    """Class 0: left half bright; class 1: right half bright. `[n, 1, 8, 8]` in [-1, 1], labels `[n]`."""
    y = torch.arange(n) % 2
    x = -torch.ones(n, 1, 8, 8)
    x[y == 0, :, :, :4] = 1.0
    x[y == 1, :, :, 4:] = 1.0
    return x + 0.05 * torch.randn_like(x), y


def train_on_two_classes(model: GAN, steps: int = 150, swap: bool = False) -> list[dict]:
    """Alternating D and G Adam steps on `two_class_batches` (weight clipping after D's, as the engine does),
    with the two labels swapped when `swap`; returns D's logs of every step."""
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_logs = []
    for _ in range(steps):
        x, y = two_class_batches()
        y = 1 - y if swap else y
        for opt, fn in ((opt_d, model.discriminator_loss), (opt_g, model.generator_loss)):
            loss, logs = fn(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if opt is opt_d:
                model.objective.after_d_step(model.discriminator)
                d_logs.append(logs)
    return d_logs


def assert_draws_the_requested_class(model: GAN, swap: bool = False) -> None:
    for label in (0, 1):
        images = model.sample(200, y=torch.tensor(label))
        left, right = images[..., :4].mean(), images[..., 4:].mean()
        assert (left > right) == ((label == 0) != swap)  # G draws the class it was asked for


def test_acgan_learns_the_classes_and_honours_y():
    for swap in (False, True):  # the same init with the labels swapped: G must follow the labels, not its init
        torch.manual_seed(0)
        model = gan(num_classes=2, conditional=True)
        d_logs = train_on_two_classes(model, swap=swap)
        aux = [logs["aux_loss"].item() for logs in d_logs]
        assert sum(aux[-10:]) < 0.5 * sum(aux[:10])
        assert_draws_the_requested_class(model, swap)
    z, y = model.fixed_inputs()
    assert y.tolist() == [0] * 8 + [1] * 8 and torch.equal(z[:8], z[8:])  # pairs: same z, attribute off/on


def test_acgan_aux_fake_false_trains_d_classifier_on_real_images_only():
    torch.manual_seed(0)
    x, y = two_class_batches()
    both, real_only = gan(num_classes=2, conditional=True), gan(num_classes=2, conditional=True, aux_fake=False)
    real_only.load_state_dict(both.state_dict())
    for model in (both, real_only):
        model.step_noise = lambda: torch.Generator().manual_seed(1)  # the same fakes for both
    _, logs_both = both.discriminator_loss(x, y)
    _, logs_real = real_only.discriminator_loss(x, y)
    real_aux = real_only.discriminator(x)[1]
    assert torch.allclose(logs_real["aux_loss"], torch.nn.functional.cross_entropy(real_aux, y))
    assert logs_both["aux_loss"] > logs_real["aux_loss"]  # the generated images' term is gone
    g_loss, _ = real_only.generator_loss(x, y)
    g_loss.backward()  # G is still trained to be classified as its label
    assert all(p.grad is not None for p in real_only.generator.parameters())


def test_projection_head_adds_the_class_embedding_inner_product():
    torch.manual_seed(0)
    heads = DiscriminatorHeads(MLPEncoder(1, 8, [16], activation="leaky_relu"), num_classes=3, class_head="projection")
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    score, aux = heads(x, y=y)
    h = heads.trunk(x)
    expected = heads.adv(h).squeeze(1) + (heads.embed.weight[y] * h).sum(1)  # Miyato & Koyama 2018, eq. 3
    assert aux is None and torch.allclose(score, expected)
    assert not torch.allclose(score, heads(x, y=(y + 1) % 3)[0])  # the score depends on the label
    with pytest.raises(ValueError, match="pass labels y"):
        heads(x)
    unconditional = DiscriminatorHeads(MLPEncoder(1, 8, [16]), num_classes=0, class_head="projection")
    assert unconditional.embed is None and unconditional.aux is None
    with pytest.raises(ConfigError, match="model.class_head='softmax'.*auxiliary.*projection"):
        DiscriminatorHeads(MLPEncoder(1, 8, [16]), num_classes=3, class_head="softmax")


@pytest.mark.parametrize("loss", ["bce", "wasserstein", "wasserstein_gp"])
def test_projection_cgan_learns_the_classes_and_honours_y(loss):
    extra = {"clip_value": 0.1} if loss == "wasserstein" else {}
    for swap in (False, True):  # the same init with the labels swapped: G must follow the labels, not its init
        torch.manual_seed(0)
        model = gan(num_classes=2, conditional=True, class_head="projection", loss=loss, **extra)
        assert model.discriminator.aux is None and model.discriminator.embed is not None
        d_logs = train_on_two_classes(model, swap=swap)
        assert all("aux_loss" not in logs for logs in d_logs)
        if loss == "wasserstein":  # weight clipping covers the class embedding too
            assert model.discriminator.embed.weight.abs().max() <= 0.1
        assert_draws_the_requested_class(model, swap)


def test_bigan_trains_its_encoder_and_reconstructs(tmp_path):
    model = gan(cls=BiGAN)
    e0 = snapshot(model.encoder)
    fit(model, tmp_path, batches=2)
    assert changed(e0, model.encoder)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert model.encode(x).shape == (5, 8) and model.reconstruct(x).shape == x.shape
    assert model.training


# -- data and logging ------------------------------------------------------------------------------------
def test_hflip_mirrors_about_half_of_a_uint8_batch():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out, _ = collate((images, torch.zeros(200)), flips=torch.Generator().manual_seed(0))
    flipped = (out == collate((images.flip(-1), None))[0]).flatten(1).all(1)
    kept = (out == collate((images, None))[0]).flatten(1).all(1)
    assert torch.all(flipped ^ kept) and 70 < flipped.sum() < 130


def test_images_and_scalars_share_the_step_axis(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    from genlab.callbacks import SampleGrid

    steps = []
    logger = CSVLogger(tmp_path, name="", version="")
    log_metrics = logger.log_metrics
    monkeypatch.setattr(
        logger, "log_metrics", lambda metrics, step=None: (steps.append(("scalar", step)), log_metrics(metrics, step))
    )
    monkeypatch.setattr(
        "genlab.callbacks.pictures.log_image", lambda loggers, key, image, step: steps.append(("image", step))
    )
    fit(gan(n_critic=2), tmp_path, max_epochs=2, batches=4, callbacks=[SampleGrid(tmp_path / "samples")], logger=logger)
    image_steps = [s for kind, s in steps if kind == "image"]
    assert image_steps == [3, 7]  # on the batch axis of the scalars, not the 12 optimiser steps
    assert set(image_steps) <= {s for kind, s in steps if kind == "scalar"}


def test_discriminator_accuracy_is_logged(tmp_path):
    model = gan()
    trainer = fit(model, tmp_path, batches=2)
    assert {"train/d_acc_real_epoch", "train/d_acc_fake_epoch", "train/jsd_epoch"} <= set(trainer.callback_metrics)


@pytest.mark.parametrize(("reuse", "n_critic"), [(False, 1), (True, 1), (True, 2)])
def test_reuse_fake_trains_g_on_the_d_steps_batch_with_one_g_forward(tmp_path, reuse, n_critic):
    """reuse_fake: the first G step after a D step scores the very batch D was shown (G's graph kept), and G runs
    once on such a batch; without it G's step draws fresh noise and runs G again."""
    model = gan(reuse_fake=reuse, n_critic=n_critic)
    g_calls, d_inputs = [], []
    model.generator.register_forward_hook(lambda m, i, o: g_calls.append(o.requires_grad))
    model.discriminator.register_forward_pre_hook(
        lambda m, args, kwargs: d_inputs.append(args[0].detach().clone()), with_kwargs=True
    )
    fit(model, tmp_path, batches=4)
    g_batches = 4 // n_critic
    # the MLP critic has no BatchNorm: a D step is one forward on real and fake joint, a G step one on fake
    steps = [("d", x) if len(x) == 32 else ("g", x) for x in d_inputs]
    assert [kind for kind, _ in steps].count("g") == g_batches
    for i, (kind, x) in enumerate(steps):
        if kind == "g":
            assert steps[i - 1][0] == "d"
            assert torch.equal(x, steps[i - 1][1][16:]) == reuse  # the D step's generated half
    assert len(g_calls) == 4 + (0 if reuse else g_batches)
    assert g_calls.count(True) == g_batches  # with a graph: the batches G trains on


def test_reuse_fake_is_refused_by_bigan():
    with pytest.raises(ConfigError, match="model.reuse_fake=true is not supported by bigan"):
        gan(cls=BiGAN, reuse_fake=True)
