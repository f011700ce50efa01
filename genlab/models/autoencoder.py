"""Deterministic autoencoder used as a generator (Hinton & Salakhutdinov 2006, "Reducing the dimensionality of
data with neural networks", https://doi.org/10.1126/science.1127647): new images are decoded from codes drawn near
the codes of the training images."""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from genlab.errors import ConfigError, check_choice
from genlab.models.base import GenerativeModule
from genlab.models.steps import SplitSteps, evaluating, optimizers

SAMPLE_MODES = ("gaussian", "perturb", "interpolate")


def unit_mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per pixel on the [0, 1] scale of images given in [-1, 1]: `[B, C, H, W]` x 2 -> scalar."""
    return (x_hat - x).pow(2).mean() / 4.0


class Autoencoder(SplitSteps, GenerativeModule):
    """Encoder `[B, C, H, W]` -> code `[B, latent_dim]` (the bottleneck), decoder -> `[B, C, H, W]` in [-1, 1].

    Trained on the per-pixel MSE on the [0, 1] scale (`*/mse`). The depth is the encoder's (and mirrored
    decoder's) number of hidden layers (MLP) or stride-2 blocks (conv). `sample(n)` decodes codes drawn by
    `sample_mode`:

    - `gaussian`: from N(mean, covariance) of the training codes of the latest epoch (full covariance);
    - `perturb`: a stored training code plus `noise_scale` times the per-dimension code std times N(0, 1);
    - `interpolate`: (1 - t) a + t b for two stored training codes a, b and t ~ U(0, 1).

    The running sums and a bank of the last `bank_size` training codes are buffers saved in the checkpoint.
    Under DDP each rank keeps its own (rank 0's, which draws the grids and samples, covers its shard).
    """

    monitor = "val/mse"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: Callable[..., Optimizer],
        latent_dim: int,
        lr: float = 1e-3,
        sample_mode: str = "gaussian",
        noise_scale: float = 0.5,
        bank_size: int = 1024,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
    ) -> None:
        super().__init__(latent_dim)
        check_choice("model.sample_mode", sample_mode, SAMPLE_MODES)
        if getattr(encoder, "out_dim", None) != latent_dim:
            raise ConfigError(
                f"model.encoder gives {getattr(encoder, 'out_dim', '?')} features but model.latent_dim={latent_dim}; "
                f"set the encoder's out_dim to ${{model.latent_dim}}"
            )
        self.encoder, self.decoder = encoder, decoder
        self.optimizer, self.scheduler, self.lr = optimizer, scheduler, lr
        self.sample_mode, self.noise_scale = sample_mode, noise_scale
        self.register_buffer("code_count", torch.zeros(()))
        self.register_buffer("code_sum", torch.zeros(latent_dim))
        self.register_buffer("code_outer", torch.zeros(latent_dim, latent_dim))
        self.register_buffer("bank", torch.zeros(bank_size, latent_dim))
        self.register_buffer("bank_seen", torch.zeros((), dtype=torch.long))

    def encode(self, x: Tensor) -> Tensor:
        """Images `[B, C, H, W]` -> codes `[B, latent_dim]`."""
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """`[B, C, H, W]` in [-1, 1] -> its reconstruction, same shape and range (eval mode, no grad)."""
        with evaluating(self):
            return self.decode(self.encode(x))

    # -- the code distribution ----------------------------------------------------------------------------
    def code_gaussian(self) -> tuple[Tensor, Tensor]:
        """Mean `[D]` and covariance `[D, D]` of the training codes seen in the latest epoch (N(0, I) before)."""
        n = self.code_count
        if n < 2:
            return torch.zeros_like(self.code_sum), torch.eye(self.latent_dim, device=self.device)
        mean = self.code_sum / n
        cov = self.code_outer / n - torch.outer(mean, mean)
        return mean, cov + 1e-5 * torch.eye(self.latent_dim, device=self.device)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):  # a Cholesky factor needs float32 products
            return self._sample_latent(n, generator)

    def _sample_latent(self, n: int, generator: torch.Generator | None) -> Tensor:
        mean, cov = self.code_gaussian()
        eps = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        stored = min(int(self.bank_seen), len(self.bank))
        if self.sample_mode == "gaussian" or stored == 0:
            return mean + eps @ torch.linalg.cholesky(cov).T  # (n, D) @ (D, D): rows ~ N(mean, cov)
        pick = torch.randint(stored, (2, n), generator=generator).to(self.device)
        a, b = self.bank[pick[0]], self.bank[pick[1]]
        if self.sample_mode == "perturb":
            return a + self.noise_scale * cov.diagonal().sqrt() * eps
        t = torch.rand(n, 1, generator=generator).to(self.device)
        return (1 - t) * a + t * b

    def _remember(self, z: Tensor) -> None:
        with torch.autocast(z.device.type, enabled=False):  # float32 statistics and bank, whatever the autocast
            self._accumulate(z.detach().float())

    def _accumulate(self, z: Tensor) -> None:
        self.code_count += len(z)
        self.code_sum += z.sum(0)
        self.code_outer += z.T @ z  # (D, B) @ (B, D)
        z = z[-len(self.bank) :]
        self.bank[(self.bank_seen + torch.arange(len(z), device=z.device)) % len(self.bank)] = z  # a ring buffer
        self.bank_seen += len(z)

    # -- training --------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        for stat in (self.code_count, self.code_sum, self.code_outer):
            stat.zero_()

    def _step(self, batch: tuple[Tensor, Tensor], split: str, batch_idx: int = 0) -> Tensor:
        x, _ = batch
        z = self.encoder(x)
        mse = unit_mse(self.decoder(z), x)
        if split == "train":
            self._remember(z)
        self.log_split(split, {"mse": mse}, batch_size=x.shape[0])
        return mse

    def configure_optimizers(self) -> Optimizer | dict:
        return optimizers(self, self.optimizer, self.lr, self.scheduler)
