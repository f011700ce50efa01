"""Loss functions against closed forms and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genlab.errors import ConfigError
from genlab.models import losses


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(losses.kl_standard_normal(mu, logvar), expected)
    assert torch.all(losses.kl_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


def test_bce_sum_is_the_bernoulli_nll_per_image_and_mean_divides_by_pixels():
    logits, target = torch.randn(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    p = torch.sigmoid(logits)
    nll = -(target * p.log() + (1 - target) * (1 - p).log()).flatten(1).sum(1).mean()
    torch.testing.assert_close(losses.reconstruction(logits, target, "bce", "sum"), nll)
    torch.testing.assert_close(losses.reconstruction(logits, target, "bce", "mean") * 25, nll)


def test_mse_is_on_the_unit_scale():
    logits, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)  # sigmoid(0) = 0.5
    assert losses.reconstruction(logits, target, "mse", "sum").item() == pytest.approx(0.25 * 48)
    assert losses.reconstruction(logits, target, "mse", "mean").item() == pytest.approx(0.25)


def test_bce_gan_losses_closed_form():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-1.0, 0.3])
    sig = torch.sigmoid
    d = -(sig(real).log().mean() + (1 - sig(fake)).log().mean())
    torch.testing.assert_close(losses.discriminator_loss("bce", real, fake), d)
    torch.testing.assert_close(losses.generator_loss("bce", fake), -sig(fake).log().mean())
    torch.testing.assert_close(losses.generator_loss("bce", fake, saturating=True), (1 - sig(fake)).log().mean())


def test_non_saturating_loss_keeps_its_gradient_when_d_rejects_samples():
    fake = torch.tensor([-8.0], requires_grad=True)  # D is sure the sample is fake
    (g_sat,) = torch.autograd.grad(losses.generator_loss("bce", fake, saturating=True), fake)
    (g_ns,) = torch.autograd.grad(losses.generator_loss("bce", fake), fake)
    assert abs(g_ns.item()) > 100 * abs(g_sat.item())


def test_wasserstein_losses():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.5, -0.5])
    assert losses.discriminator_loss("wasserstein", real, fake).item() == pytest.approx(-2.0)
    assert losses.generator_loss("wasserstein", fake).item() == pytest.approx(0.0)
    assert losses.divergence_estimate("wasserstein", real, fake).item() == pytest.approx(2.0)


def test_jsd_estimate_is_log2_for_a_perfect_d_and_zero_for_a_blind_one():
    big = torch.full((8,), 50.0)
    assert losses.divergence_estimate("bce", big, -big).item() == pytest.approx(math.log(2), abs=1e-6)
    assert losses.divergence_estimate("bce", torch.zeros(8), torch.zeros(8)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: losses.reconstruction(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "l1", "sum"),
        lambda: losses.reconstruction(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "bce", "none"),
        lambda: losses.discriminator_loss("hinge2", torch.zeros(1), torch.zeros(1)),
    ],
)
def test_unknown_loss_names_are_rejected(call):
    with pytest.raises(ConfigError, match="expected one of"):
        call()
