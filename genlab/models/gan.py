"""Adversarial training with manual optimisation: GAN (Goodfellow et al. 2014,
https://arxiv.org/abs/1406.2661) and WGAN (Arjovsky et al. 2017, https://arxiv.org/abs/1701.07875).

Variants are configs: `loss` (bce | wasserstein), `saturating`, `n_critic`, `clip_value`.

Stepping: every batch is one D step on a fresh real batch (as in both papers); after every
`n_critic`-th D step comes one G step, which reuses the fake batch generated for that D step. The
schedule follows `trainer.global_step`, so it continues across epochs and resumes exactly.

`trainer.max_steps` counts **generator steps** for this module: at fit start it is translated into
Lightning's count of optimiser steps, `max_steps * (n_critic + 1)`.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from genlab.errors import ConfigError, check_choice
from genlab.models import losses
from genlab.models.base import GenerativeModule


class GAN(GenerativeModule):
    """`generator`: `[B, latent_dim]` -> `[B, C, H, W]` in [-1, 1]; `discriminator`: images -> logits `[B, 1]`."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int,
        optimizer_g: Callable[..., Optimizer],
        optimizer_d: Callable[..., Optimizer],
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        loss: str = "bce",
        saturating: bool = False,
        n_critic: int = 1,
        clip_value: float | None = None,
    ) -> None:
        super().__init__(latent_dim)
        check_choice("model.loss", loss, losses.GAN_LOSSES)
        if n_critic < 1:
            raise ConfigError(f"model.n_critic={n_critic} is invalid; expected an integer >= 1")
        if clip_value is not None and clip_value <= 0:
            raise ConfigError(f"model.clip_value={clip_value} is invalid; expected a positive number or null")
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g, self.optimizer_d, self.lr_g, self.lr_d = optimizer_g, optimizer_d, lr_g, lr_d
        self.loss, self.saturating, self.n_critic, self.clip_value = loss, saturating, n_critic, clip_value
        self.monitor = "val/wasserstein" if loss == "wasserstein" else "val/jsd"

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.generator(z)

    def on_fit_start(self) -> None:
        # Lightning counts every optimiser step; translate max_steps from generator steps once per fit.
        loop = self.trainer.fit_loop.epoch_loop
        if loop.max_steps > 0 and getattr(self, "_steps_per_g", None) is None:
            self._steps_per_g = self.n_critic + 1
            loop.max_steps *= self._steps_per_g

    def _is_generator_turn(self) -> bool:
        """True when the D step of this batch completes a block of `n_critic` D steps (one cycle is n_critic + 1)."""
        return self.trainer.global_step % (self.n_critic + 1) == self.n_critic - 1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        g_turn = self._is_generator_turn()
        with torch.set_grad_enabled(g_turn):  # the graph through G is only needed for a G step
            fake = self.generator(self.sample_latent(x.shape[0]))
        d_loss, divergence = self._discriminator_step(opt_d, x, fake.detach())
        metrics = {"train/d_loss": d_loss, f"train/{self.monitor.split('/')[1]}": divergence}
        if g_turn:
            metrics["train/g_loss"] = self._generator_step(opt_g, fake)
        self.log_dict(metrics, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])

    def _discriminator_step(self, opt: Optimizer, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        with self.toggled_optimizer(opt):
            real_logits, fake_logits = self.discriminator(real).view(-1), self.discriminator(fake).view(-1)
            loss = losses.discriminator_loss(self.loss, real_logits, fake_logits)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
        if self.clip_value is not None:  # WGAN's crude Lipschitz constraint
            with torch.no_grad():
                for p in self.discriminator.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
        with torch.no_grad():
            divergence = losses.divergence_estimate(self.loss, real_logits, fake_logits)
        return loss.detach(), divergence

    def _generator_step(self, opt: Optimizer, fake: Tensor) -> Tensor:
        with self.toggled_optimizer(opt):
            loss = losses.generator_loss(self.loss, self.discriminator(fake).view(-1), self.saturating)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
        return loss.detach()

    def _eval_step(self, batch: tuple[Tensor, Tensor], split: str) -> None:
        x, _ = batch
        real_logits = self.discriminator(x).view(-1)
        fake_logits = self.discriminator(self.generator(self.sample_latent(x.shape[0]))).view(-1)
        self.log_dict(
            {
                f"{split}/d_loss": losses.discriminator_loss(self.loss, real_logits, fake_logits),
                f"{split}/g_loss": losses.generator_loss(self.loss, fake_logits, self.saturating),
                self.monitor.replace("val/", f"{split}/"): losses.divergence_estimate(
                    self.loss, real_logits, fake_logits
                ),
            },
            on_epoch=True,
            sync_dist=True,
            batch_size=x.shape[0],
        )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> tuple[Optimizer, Optimizer]:
        opt_g = self.optimizer_g(self.generator.parameters(), lr=self.lr_g)
        opt_d = self.optimizer_d(self.discriminator.parameters(), lr=self.lr_d)
        return opt_g, opt_d
