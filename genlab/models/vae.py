"""Variational autoencoder (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114)."""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from genlab.errors import check_choice
from genlab.models import losses
from genlab.models.base import GenerativeModule
from genlab.models.steps import SplitSteps, evaluating, optimizers
from genlab.utils.images import model_to_unit, unit_to_model


class VAE(SplitSteps, GenerativeModule):
    """Gaussian encoder q(z|x), decoder p(x|z) with mean sigmoid(logits), prior N(0, I).

    Loss = recon + beta * KL, with `recon_loss` bce or mse and `reduction` sum (per image) or mean
    (per pixel; see `losses.reconstruction`). Whatever the training loss, `*/nelbo` logs the negative
    ELBO in nats per image under a Bernoulli decoder (BCE summed over pixels + KL), the number
    comparable across runs. `scheduler` is an optional LR-scheduler factory, stepped once per epoch.
    `encoder` maps `[B, C, H, W]` -> `[B, encoder.out_dim]`; linear heads give the mean and log-variance.
    """

    monitor = "val/nelbo"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        optimizer: Callable[..., Optimizer],
        lr: float = 1e-3,
        beta: float = 1.0,
        recon_loss: str = "bce",
        reduction: str = "sum",
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
    ) -> None:
        super().__init__(latent_dim)
        check_choice("model.recon_loss", recon_loss, losses.RECON_LOSSES)
        check_choice("model.reduction", reduction, losses.REDUCTIONS)
        self.encoder, self.decoder = encoder, decoder
        self.mu = nn.Linear(encoder.out_dim, latent_dim)
        self.logvar = nn.Linear(encoder.out_dim, latent_dim)
        self.optimizer, self.scheduler, self.lr, self.beta = optimizer, scheduler, lr, beta
        self.recon_loss, self.reduction = recon_loss, reduction

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, C, H, W]` -> (mean, log-variance), each `[B, latent_dim]`."""
        h = self.encoder(x)
        return self.mu(h).float(), self.logvar(h).float()  # float32 under autocast: the KL sums in full precision

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean `[B, latent_dim]`."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return unit_to_model(torch.sigmoid(self.decoder(z)))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean: `[B, C, H, W]` in [-1, 1] -> same shape and range. The whole model in eval
        mode (a BatchNorm encoder's running statistics stay as they are), no grad; each module's mode restored."""
        with evaluating(self):
            return self.decode(self.encode(x.to(self.device)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns decoder logits `[B, C, H, W]` for a reparameterised z, and the posterior (mu, logvar)."""
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z).float(), mu, logvar  # float32 logits: the ELBO is a sum of 784 terms

    def loss_terms(self, x: Tensor) -> dict[str, Tensor]:
        """Scalars for images `[B, C, H, W]`: loss = recon + beta * kl, and the Bernoulli nelbo."""
        logits, mu, logvar = self(x)
        target = model_to_unit(x)
        recon = losses.reconstruction(logits, target, self.recon_loss, self.reduction)
        kl = losses.kl_standard_normal(mu, logvar).mean()
        bce_sum = (
            recon
            if (self.recon_loss, self.reduction) == ("bce", "sum")
            else losses.reconstruction(logits, target, "bce", "sum")
        )
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "nelbo": bce_sum + kl}

    def _step(self, batch: tuple[Tensor, Tensor], split: str, batch_idx: int = 0) -> Tensor:
        x, _ = batch
        terms = self.loss_terms(x)
        self.log_split(split, terms, batch_size=x.shape[0])
        return terms["loss"]

    def configure_optimizers(self) -> Optimizer | dict:
        return optimizers(self, self.optimizer, self.lr, self.scheduler)
