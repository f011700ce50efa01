"""VAE loss terms as pure functions. Reductions are documented per function; the adversarial objectives
are in `genlab.models.objectives`."""

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import check_choice

RECON_LOSSES = ("bce", "mse")
REDUCTIONS = ("sum", "mean")


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
