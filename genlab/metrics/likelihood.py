"""VAE likelihoods in nats per image: the negative ELBO and the importance-weighted bound on log p(x).

IWAE bound (Burda et al. 2016, https://arxiv.org/abs/1509.00519):
log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i | x)], z_i ~ q(z | x); it tightens as k grows.
`posterior(x) -> (mu, logvar)` `[B, D]`; `log_likelihood(x, z)` takes z `[k, B, D]` and returns `[k, B]`.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.metrics import keys
from genlab.utils.images import model_to_unit

Posterior = Callable[[Tensor], tuple[Tensor, Tensor]]
LogLikelihood = Callable[[Tensor, Tensor], Tensor]


def log_normal(z: Tensor, mu: Tensor | None = None, logvar: Tensor | None = None) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim (standard normal when mu, logvar are None)."""
    mu = torch.zeros_like(z) if mu is None else mu
    logvar = torch.zeros_like(z) if logvar is None else logvar
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def bernoulli_log_likelihood(decoder: nn.Module) -> LogLikelihood:
    """log p(x | z) for a decoder giving Bernoulli logits; x `[B, C, H, W]` in [-1, 1] (targets in [0, 1])."""

    def log_likelihood(x: Tensor, z: Tensor) -> Tensor:
        k, b = z.shape[:2]
        logits = decoder(z.reshape(k * b, -1))  # (k, B, D) -> (k*B, C, H, W)
        target = model_to_unit(x).unsqueeze(0).expand(k, *x.shape).reshape(logits.shape)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return -bce.reshape(k, b, -1).sum(-1)

    return log_likelihood


@torch.no_grad()
def iwae_log_px(
    x: Tensor, posterior: Posterior, log_likelihood: LogLikelihood, k: int = 100, chunk: int = 100
) -> Tensor:
    """The k-sample importance-weighted estimate of log p(x), `[B]` (k = 1 gives a one-sample ELBO)."""
    mu, logvar = posterior(x)
    std = torch.exp(0.5 * logvar)
    log_w = []
    for n in [chunk] * (k // chunk) + ([k % chunk] if k % chunk else []):
        z = mu + std * torch.randn(n, *mu.shape, device=mu.device, dtype=mu.dtype)  # (n, B, D)
        log_w.append(log_likelihood(x, z) + log_normal(z) - log_normal(z, mu, logvar))
    return torch.logsumexp(torch.cat(log_w), 0) - math.log(k)


@torch.no_grad()
def elbo(x: Tensor, posterior: Posterior, log_likelihood: LogLikelihood) -> Tensor:
    """One-sample reconstruction term minus the analytic KL(q(z|x) || N(0, I)), `[B]`."""
    mu, logvar = posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return log_likelihood(x, z.unsqueeze(0))[0] - kl


def vae_likelihood(model, batches, k: int = 100) -> dict[str, float]:
    """Test negative ELBO and IWAE negative log-likelihood (nats per image) of a VAE over image batches."""
    log_lik = bernoulli_log_likelihood(model.decoder)
    total_elbo = total_iwae = count = 0.0
    for x in batches:
        x = x.to(model.device)
        total_elbo += float(elbo(x, model.posterior, log_lik).sum())
        total_iwae += float(iwae_log_px(x, model.posterior, log_lik, k).sum())
        count += len(x)
    return {keys.NELBO: -total_elbo / count, keys.IWAE: -total_iwae / count}


def likelihood_table(model, images: Tensor, labels: Tensor, indices: list[int], k: int = 100) -> list[dict]:
    """Per-image rows: index, label, -ELBO and -log p(x) (IWAE, k samples), images `[N, C, H, W]` in [-1, 1]."""
    log_lik = bernoulli_log_likelihood(model.decoder)
    x = images[indices].to(model.device)
    nelbo = -elbo(x, model.posterior, log_lik)
    nll = -iwae_log_px(x, model.posterior, log_lik, k)
    return [
        {"index": i, "label": int(labels[i]), "nelbo": float(a), f"iwae_nll_k{k}": float(b)}
        for i, a, b in zip(indices, nelbo, nll, strict=True)
    ]
