"""Nets are sized from image_size and channels."""

import pytest
import torch

from genlab.errors import ConfigError
from genlab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32), (3, 64)])
def test_mlp_shapes(channels, size):
    enc = MLPEncoder(channels, size, hidden_dims=[32, 16], out_dim=5)
    dec = MLPDecoder(4, channels, size, hidden_dims=[16, 32], batch_norm=True, output="tanh")
    x = torch.randn(3, channels, size, size)
    assert enc(x).shape == (3, 5)
    y = dec(torch.randn(3, 4))
    assert y.shape == (3, channels, size, size)
    assert y.abs().max() <= 1


def test_encoder_without_head_exposes_its_width():
    enc = MLPEncoder(1, 8, hidden_dims=[32, 16])
    assert enc.out_dim == 16 and enc(torch.randn(2, 1, 8, 8)).shape == (2, 16)


def test_dropout_and_batchnorm_are_where_asked():
    enc = MLPEncoder(1, 8, hidden_dims=[16], out_dim=1, dropout=0.3)
    dec = MLPDecoder(4, 1, 8, hidden_dims=[16], batch_norm=True)
    assert any(isinstance(m, torch.nn.Dropout) for m in enc.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in dec.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())


def test_bad_activation_names_the_choices():
    with pytest.raises(ConfigError, match="'gelu2'.*relu"):
        MLPEncoder(1, 8, hidden_dims=[4], activation="gelu2")


# -- the fully connected layer of the conv nets (InfoGAN's MNIST nets) ----------------------------------------------
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_conv_nets_take_a_fully_connected_hidden_layer(norm):
    g = ConvDecoder(1, 28, latent_dim=6, width=4, hidden=12, norm=norm)
    d = ConvEncoder(1, 28, width=4, hidden=10, norm=norm)
    assert g(torch.randn(3, 6)).shape == (3, 1, 28, 28)
    assert d.out_dim == 10 and d(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert ConvEncoder(1, 28, width=4, hidden=10, out_dim=2)(torch.randn(3, 1, 28, 28)).shape == (3, 2)
    # z reaches the 7x7 projection through a nonlinearity: G is no longer linear in z before its first norm
    fc = [m for m in g.project.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fc] == [(6, 12), (12, 8 * 7 * 7)]
    assert [m.out_features for m in d.modules() if isinstance(m, torch.nn.Linear)] == [10]


@pytest.mark.parametrize(
    ("net", "kwargs", "match"),
    [
        (ConvEncoder, {"hidden": -3}, "hidden=-3"),
        (ConvDecoder, {"latent_dim": 4, "hidden": 2.5}, "hidden=2.5"),
        (ConvEncoder, {"hidden": 8, "spatial": True}, "spatial"),
        (ConvDecoder, {"in_channels": 3, "hidden": 8}, "in_channels"),
    ],
)
def test_a_bad_hidden_width_names_the_value(net, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        net(1, 28, width=4, **kwargs)


def test_the_dcgan_arch_takes_hidden_from_the_command_line():
    from hydra.utils import instantiate

    from tests.conftest import compose_cfg

    cfg = compose_cfg(["model=dcgan", "data=digits", "model.generator.hidden=32", "model.discriminator.hidden=16"])
    gan = instantiate(cfg.model)
    assert gan.discriminator.trunk.out_dim == 16
    size = cfg.data.image_size
    assert gan.generator(torch.randn(2, cfg.model.latent_dim)).shape == (2, 1, size, size)


# -- the 512 px DCGAN (experiment dcgan_512) ----------------------------------------------------------------------
def _dcgan_512(*overrides: str):
    from hydra.utils import instantiate

    from tests.conftest import compose_cfg

    return instantiate(compose_cfg(["model=dcgan_paper", "data.image_size=512", "data.channels=3", *overrides]).model)


def test_the_full_size_512px_dcgan_builds_with_the_parameters_its_memory_estimate_counts():
    """experiment=dcgan_512's model (model=dcgan_paper) at 512 px, 3 channels, as configured (width 64): five blocks
    each way, z -> [B, 3, 512, 512] -> [B], shapes checked on the meta device (no memory, no compute). README's GPU
    memory estimate counts these 27.1M parameters: a change of widths changes them."""
    with torch.device("meta"):
        gan = _dcgan_512()
        x = gan.generator(torch.randn(2, gan.latent_dim))
        score = gan.discriminator(x)[0]
    assert x.shape == (2, 3, 512, 512) and score.shape == (2,)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in gan.generator.modules()) == 5
    assert sum(isinstance(m, torch.nn.Conv2d) for m in gan.discriminator.modules()) == 5
    n_g, n_d = (sum(p.numel() for p in net.parameters()) for net in (gan.generator, gan.discriminator))
    assert (round(n_g / 1e6, 2), round(n_d / 1e6, 2)) == (20.06, 7.08)


def test_the_512px_dcgan_takes_two_training_steps(tmp_path):
    """The GAN engine's D and G steps (Adam, BatchNorm) at 512 px, width 8 so that it takes seconds on a CPU:
    two of each, every weight moved and finite."""
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    gan = _dcgan_512("model.generator.width=8")
    before = [p.detach().clone() for p in gan.parameters()]
    images = TensorDataset(torch.rand(4, 3, 512, 512) * 2 - 1, torch.full((4,), -1))
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        enable_model_summary=False,
        **quiet,
    )
    trainer.fit(gan, DataLoader(images, batch_size=2))
    assert gan.steps == {"batches": 2, "d": 2, "g": 2}
    assert all(not torch.equal(b, p) and p.isfinite().all() for b, p in zip(before, gan.parameters(), strict=True))
