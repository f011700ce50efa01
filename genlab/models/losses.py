"""Loss functions as pure functions of logits and targets. Reductions are documented per function."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import check_choice

RECON_LOSSES = ("bce", "mse")
REDUCTIONS = ("sum", "mean")
GAN_LOSSES = ("bce", "wasserstein")


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over latent dims: `[B, D]` -> `[B]`."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction(logits: Tensor, target: Tensor, kind: str = "bce", reduction: str = "sum") -> Tensor:
    """Reconstruction loss of decoder `logits` against `target` in [0, 1], both `[B, C, H, W]`, -> scalar.

    The decoder mean is sigmoid(logits). `bce` is the Bernoulli negative log-likelihood in nats, `mse`
    the squared error on the [0, 1] scale. `sum` sums over the pixels of an image and averages over the
    batch (per-image, the scale of the KL term: the ELBO); `mean` also averages over pixels, which
    divides the reconstruction term by C*H*W and so weights the KL term C*H*W times more.
    """
    check_choice("recon_loss", kind, RECON_LOSSES)
    check_choice("reduction", reduction, REDUCTIONS)
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - target).pow(2)
    if reduction == "mean":
        return per_pixel.mean()
    return per_pixel.flatten(1).sum(1).mean()


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Loss minimised by D (or the critic) given its outputs `[B]` on real and generated images.

    bce: -E[log D(x)] - E[log(1 - D(G(z)))], D = sigmoid(logits) (Goodfellow et al. 2014).
    wasserstein: E[f(G(z))] - E[f(x)] for a critic f without sigmoid (Arjovsky et al. 2017).
    """
    check_choice("loss", kind, GAN_LOSSES)
    if kind == "wasserstein":
        return fake_logits.mean() - real_logits.mean()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(kind: str, fake_logits: Tensor, saturating: bool = False) -> Tensor:
    """Loss minimised by G given D's outputs `[B]` on generated images.

    bce, non-saturating (default): -E[log D(G(z))]; saturating: E[log(1 - D(G(z)))], the minimax form,
    whose gradient vanishes while D rejects the samples. wasserstein: -E[f(G(z))].
    """
    check_choice("loss", kind, GAN_LOSSES)
    if kind == "wasserstein":
        return -fake_logits.mean()
    if saturating:
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def divergence_estimate(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The divergence D's objective estimates (lower is better for G).

    bce: JSD estimate log 2 - L_D / 2 (the optimal-D identity of Goodfellow et al. 2014, Thm. 1);
    wasserstein: E[f(x)] - E[f(G(z))], the critic's Wasserstein-1 estimate (up to its Lipschitz constant).
    """
    loss = discriminator_loss(kind, real_logits, fake_logits)
    return -loss if kind == "wasserstein" else math.log(2.0) - 0.5 * loss
