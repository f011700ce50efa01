"""Autoencoder family: conv nets at every size, the vector quantiser, the gated PixelCNN, the autoencoder as a
generator and the conv VAE's loss terms."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from genlab.errors import ConfigError
from genlab.models import VAE, VQVAE, Autoencoder
from genlab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genlab.nets.mlp import hidden_widths
from genlab.nets.pixelcnn import GatedPixelCNN
from genlab.nets.quantizer import VectorQuantizer, perplexity

SIZES = [16, 28, 32, 64, 128]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_conv_vae_nets_shapes(size, channels):
    enc = ConvEncoder(channels, size, width=4)
    dec = ConvDecoder(channels, size, latent_dim=8, width=4, output="none")
    h = enc(torch.randn(2, channels, size, size))
    assert h.shape == (2, enc.out_dim)
    assert dec(torch.randn(2, 8)).shape == (2, channels, size, size)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("size", "n_blocks", "grid"), [(16, 1, 8), (28, 1, 14), (28, 2, 7), (32, 2, 8), (64, 1, 32)])
def test_vqvae_nets_shapes_and_grids(size, n_blocks, grid, channels):
    enc = ConvEncoder(channels, size, width=4, n_blocks=n_blocks, spatial=True, out_channels=5, res_blocks=1)
    dec = ConvDecoder(channels, size, in_channels=5, width=4, n_blocks=n_blocks, res_blocks=1)
    z = enc(torch.randn(2, channels, size, size))
    assert z.shape == (2, 5, grid, grid) and enc.out_shape == (5, grid, grid)
    x = dec(z)
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1


def tiny_vqvae(codebook_size=8, **kwargs) -> VQVAE:
    enc = ConvEncoder(1, 16, width=4, n_blocks=1, spatial=True, out_channels=3)
    dec = ConvDecoder(1, 16, in_channels=3, width=4, n_blocks=1)
    return VQVAE(enc, dec, partial(torch.optim.Adam), codebook_size=codebook_size, code_dim=3, **kwargs)


def test_straight_through_gradient_reaches_the_encoder():
    model = tiny_vqvae()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    z_q, _, _ = model.quantizer(model.encoder(x))
    F.mse_loss(model.decoder(z_q), x).backward()  # the reconstruction loss alone
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def quantizer_on_two_codes(restart_threshold: float) -> tuple[VectorQuantizer, torch.Tensor, torch.Tensor]:
    """An EMA quantiser with 4 codes on the axes; the input's vectors sit near codes 0 and 1 only."""
    q = VectorQuantizer(4, 2, ema=True, decay=0.5, restart_threshold=restart_threshold)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        q.embed_sum.copy_(q.codebook.weight)
    vectors = torch.tensor([[1.5, 0.2], [1.3, 0.0], [0.1, 2.0], [0.0, 1.8]])
    before = q.codebook.weight.detach().clone()
    q.train()
    q(vectors.T.reshape(1, 2, 2, 2))  # (N, D) -> (1, D, 2, 2)
    return q, before, vectors


def test_ema_moves_used_codes_and_keeps_unused_ones():
    q, before, vectors = quantizer_on_two_codes(restart_threshold=0.0)
    after = q.codebook.weight
    assert not torch.allclose(after[0], before[0]) and not torch.allclose(after[1], before[1])
    assert after[0, 0] > 1.0 and after[1, 1] > 1.0  # towards the mean of their vectors
    assert torch.equal(after[2:], before[2:])


def test_dead_code_restart_moves_unused_codes_onto_encoder_outputs():
    q, before, vectors = quantizer_on_two_codes(restart_threshold=0.9)  # usage 0.5 < 0.9 after one step: dead
    after = q.codebook.weight
    for code in after[2:]:
        assert not torch.equal(code, before[2]) and (code - vectors).norm(dim=1).min() < 1e-6
    assert torch.equal(q.usage[2:], torch.ones(2))


def test_perplexity_is_k_for_uniform_use_and_one_for_a_single_code():
    assert perplexity(torch.full((16,), 5.0)).item() == pytest.approx(16.0)
    assert perplexity(torch.tensor([0.0, 7.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == pytest.approx(2.0)


def test_pixelcnn_is_causal_in_raster_order():
    net = GatedPixelCNN(codebook_size=5, channels=8, n_layers=3)
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    i, j = 2, 2
    net.logits(x)[0, :, i, j].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0  # (H, W): positions the logits at (i, j) depend on
    order = torch.arange(25).view(5, 5)
    assert not seen[order >= i * 5 + j].any()  # nothing at or after (i, j)
    assert seen[i - 1, j + 1] and seen[i, j - 1] and seen[0, 0]  # above-right, left, and far back: no blind spot


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_autoencoder_depth_is_the_number_of_hidden_layers_and_it_samples(depth):
    enc = MLPEncoder(1, 8, hidden_widths(64, depth), out_dim=4)
    dec = MLPDecoder(4, 1, 8, hidden_widths(64, depth, reverse=True), output="tanh")
    model = Autoencoder(enc, dec, partial(torch.optim.Adam), 4)
    linear = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == depth + 1 and linear[-1].out_features == 4  # hidden layers + the bottleneck
    assert [m.out_features for m in dec.modules() if isinstance(m, torch.nn.Linear)][:-1] == hidden_widths(
        64, depth, reverse=True
    )
    x = model.sample(5)
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1


def test_autoencoder_samples_follow_the_training_codes():
    model = Autoencoder(MLPEncoder(1, 8, [16], out_dim=2), MLPDecoder(2, 1, 8, [16]), partial(torch.optim.Adam), 2)
    codes = torch.randn(4000, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([3.0, -1.0])
    model._remember(codes)
    z = model.sample_latent(4000)
    assert torch.allclose(z.mean(0), torch.tensor([3.0, -1.0]), atol=0.15)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), rtol=0.1)
    model.sample_mode = "interpolate"
    z = model.sample_latent(500)
    bank = model.bank[: len(model.bank)]
    assert (z.min(0).values >= bank.min(0).values - 1e-5).all() and (z.max(0).values <= bank.max(0).values).all()
    with pytest.raises(ConfigError, match="sample_mode"):
        Autoencoder(MLPEncoder(1, 8, [16], out_dim=2), MLPDecoder(2, 1, 8, [16]), torch.optim.Adam, 2, sample_mode="x")


def conv_vae(beta: float) -> VAE:
    torch.manual_seed(0)
    return VAE(ConvEncoder(1, 16, width=4), ConvDecoder(1, 16, latent_dim=3, width=4, output="none"), 3,
               partial(torch.optim.Adam), beta=beta)  # fmt: skip


def test_conv_vae_kl_is_zero_for_a_posterior_equal_to_the_prior():
    vae = conv_vae(beta=1.0)
    for head in (vae.mu, vae.logvar):  # mu = 0, log-variance = 0: q(z|x) = N(0, I)
        torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    terms = vae.loss_terms(torch.rand(4, 1, 16, 16) * 2 - 1)
    assert terms["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item())


def test_conv_vae_beta_scales_only_the_kl_term():
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    terms = {}
    for beta in (1.0, 3.0):
        torch.manual_seed(1)  # the same reparameterisation noise
        terms[beta] = conv_vae(beta).loss_terms(x)
    one, three = terms[1.0], terms[3.0]
    assert torch.allclose(one["recon"], three["recon"]) and torch.allclose(one["kl"], three["kl"])
    assert one["kl"] > 0
    assert (three["loss"] - one["loss"]).item() == pytest.approx(2 * one["kl"].item(), rel=1e-5)


@pytest.mark.parametrize("model_name", ["conv_vae", "conv_autoencoder", "vqvae", "bigan"])
def test_reconstruct_runs_in_eval_mode_and_restores_each_modules_mode(make_cfg, model_name):
    model = instantiate(make_cfg(f"model={model_name}", "data.image_size=16").model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms, "no BatchNorm: nothing to check"
    next(m for m in model.modules() if not list(m.children()) and m not in norms).eval()  # must stay in eval mode
    if getattr(model, "generator_ema", None) is not None:  # bigan: the EMA G's standing BatchNorm statistics come
        model.sample(2)  # from fixed noise, once per G step, before it first generates: not from reconstruct's x
    modes = {name: m.training for name, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    recon = model.reconstruct(x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items()), "reconstruct updated BatchNorm"
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not recon.requires_grad
    with torch.no_grad():
        model.eval()
        assert torch.equal(recon, model.reconstruct(x))  # the running statistics were used, not the batch's
