"""The contract every generative model offers to callbacks, metrics and tasks."""

from abc import abstractmethod

import lightning.pytorch as L
import torch
from torch import Tensor


class GenerativeModule(L.LightningModule):
    """Base class: `latent_dim`, a fixed-noise buffer for grids, `generate(z)` and `sample(n)`.

    Images are `[B, C, H, W]` floats in [-1, 1]. `monitor` / `monitor_mode` name the logged metric that
    selects the best checkpoint. Models with an encoder also define `encode(x)` and `reconstruct(x)`.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(self, latent_dim: int, num_fixed_noise: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # Persistent so that a resumed run keeps drawing its grids from the same noise.
        self.register_buffer("fixed_noise", torch.randn(num_fixed_noise, latent_dim))

    def sample_noise(self, n: int) -> Tensor:
        """Prior samples `[n, latent_dim]` on the module's device."""
        return torch.randn(n, self.latent_dim, device=self.device)

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Latents `[B, latent_dim]` -> images `[B, C, H, W]` in [-1, 1], in the current train/eval mode."""

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] from latents `z`, in eval mode (BatchNorm running stats, no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(z.to(self.device))
        finally:
            self.train(was_training)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """`n` new images `[n, C, H, W]` in [-1, 1]. `y` is for conditional models and ignored here."""
        return self.generate(self.sample_noise(n))
