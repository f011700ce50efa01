"""BiGAN (Donahue et al. 2017, https://arxiv.org/abs/1605.09782; also ALI, Dumoulin et al. 2017): a
generator G: z -> x, an encoder E: x -> z, and a discriminator on pairs, D(x, E(x)) real vs D(G(z), z)
fake. G and E are trained together (one optimiser) on the inverted labels. Only the objective and the
networks differ from `GAN`; the schedule, clipping, schedulers and EMA are the engine's. The R1 penalty
(`r1_gamma`) takes the gradient with respect to both halves of the real pair (x, E(x)), E(x) held fixed as
D's data."""

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models.gan import GAN


class BiGAN(GAN):
    """`encoder`: `[B, C, H, W]` -> `[B, latent_dim]`; `discriminator`: a pair trunk `(x, z)` -> `[B, out_dim]`
    (e.g. `genlab.nets.JointDiscriminator`). Other arguments as `GAN`."""

    def __init__(self, generator: nn.Module, encoder: nn.Module, discriminator: nn.Module, **kwargs) -> None:
        if kwargs.get("conditional"):
            raise ConfigError("model.conditional=true is not supported by bigan; expected false")
        if kwargs.get("reuse_fake"):
            raise ConfigError(
                "model.reuse_fake=true is not supported by bigan (its G and E train on pairs); expected false"
            )
        if kwargs.get("loss") == "wasserstein_gp":
            raise ConfigError("model.loss=wasserstein_gp is not supported by bigan (its critic takes (x, z) pairs)")
        super().__init__(generator, discriminator, **kwargs)
        self.encoder = encoder

    def encode(self, x: Tensor) -> Tensor:
        """E(x): `[B, C, H, W]` -> `[B, latent_dim]`."""
        return self.encoder(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E(x)) in eval mode: `[B, C, H, W]` in [-1, 1] -> same shape and range."""
        with self.eval_mode():
            return self.decode(self.encode(x.to(self.device)))

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.generator.parameters()
        yield from self.encoder.parameters()

    def _pairs(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """D's scores on the real pairs (x, E(x)) and the fake pairs (G(z), z): each `[B]`."""
        z = self.sample_latent(x.shape[0], self.step_noise())
        real_out, _ = self.discriminator(self._noisy(x), self.encoder(x))
        fake_out, _ = self.discriminator(self._noisy(self.generator(z)), z)
        return real_out, fake_out

    def discriminator_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():  # G and E are not updated by D's step: detach their outputs
            z = self.sample_latent(x.shape[0], self.step_noise())
            fake, code = self.generator(z), self.encoder(x)
        real_x, r1_step = self._noisy(x), self._r1_step()
        if r1_step:  # R1 on the real pair: the gradient with respect to x and E(x) together
            real_x, code = real_x.detach().requires_grad_(True), code.requires_grad_(True)
        real_out, _ = self.discriminator(real_x, code)
        fake_out, _ = self.discriminator(self._noisy(fake), z)
        loss = self.objective.d_loss(real_out, fake_out, *self._targets(x.shape[0]))
        logs = self._diagnostics(real_out, fake_out)
        if r1_step:
            loss = self._add_r1(loss, logs, real_out, real_x, code)
        logs["d_loss"] = loss
        if not self.training:  # evaluation: G and E's loss from the same scores (see GAN.discriminator_loss)
            logs["g_loss"] = self.objective.d_loss(fake_out, real_out)
        return loss, logs

    def generator_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_out, fake_out = self._pairs(x)
        loss = self.objective.d_loss(fake_out, real_out)  # D's loss with the labels swapped
        return loss, {"g_loss": loss}
