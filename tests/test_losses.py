"""Loss functions against closed forms and torch.distributions."""

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


@pytest.mark.parametrize(
    "call",
    [
        lambda: losses.reconstruction(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "l1", "sum"),
        lambda: losses.reconstruction(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "bce", "none"),
    ],
)
def test_unknown_loss_names_are_rejected(call):
    with pytest.raises(ConfigError, match="expected one of"):
        call()
