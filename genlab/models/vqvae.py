"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning", https://arxiv.org/abs/1711.00937)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from genlab.models.autoencoder import unit_mse
from genlab.models.base import GenerativeModule
from genlab.models.steps import SplitSteps, evaluating, optimizers
from genlab.nets.quantizer import VectorQuantizer, perplexity


class VQVAE(SplitSteps, GenerativeModule):
    """Encoder `[B, C, H, W]` -> `[B, code_dim, h, w]`, vector quantiser (K = `codebook_size` codes), decoder of the
    quantised grid -> `[B, C, H, W]` in [-1, 1].

    Loss = MSE (on the [-1, 1] scale) + codebook loss (unless `ema`) + `commitment` x commitment loss. Logged:
    `*/recon`, `*/mse` (per pixel on the [0, 1] scale, as the autoencoder's), `*/codebook`, `*/commitment`,
    `*/perplexity` and `*/codes_used` (share of the K codes used; over the whole split for val and test, per
    batch in training).

    The latent is the code grid `[B, h, w]` (`latent_shape`); `decode` takes it. `encode(x)` gives the quantised
    vectors flattened, `[B, code_dim * h * w]` (= `latent_dim`), and `codes(x)` the grid of indices.
    Generation needs a prior over code grids (`genlab.prior`, then `set_prior`). Without one `sample(n)` decodes
    uniformly random codes (noise, with a warning; `can_sample` is False, so no sample-quality metrics), and the
    training grid (`fixed_inputs`) decodes the codes of the first validation images, i.e. it shows
    reconstructions until a prior is fitted; with a prior it shows prior samples drawn from a fixed seed. The best
    checkpoint is chosen by `val/loss` (the base's monitor).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: Callable[..., Optimizer],
        codebook_size: int = 512,
        code_dim: int = 64,
        commitment: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        restart_threshold: float = 0.0,
        lr: float = 2e-4,
        num_fixed: int = 64,
    ) -> None:
        grid = tuple(encoder.out_shape[1:])
        super().__init__(grid, num_fixed=num_fixed)
        self.latent_dim = code_dim * grid[0] * grid[1]  # what encode() returns; the grid is latent_shape
        self.encoder, self.decoder = encoder, decoder
        self.quantizer = VectorQuantizer(codebook_size, code_dim, ema, decay, restart_threshold)
        self.optimizer, self.lr, self.commitment = optimizer, lr, commitment
        self.register_buffer("fixed_codes", torch.randint(codebook_size, (num_fixed, *grid)))
        self.register_buffer("eval_counts", torch.zeros(codebook_size), persistent=False)
        self.__dict__["prior"] = None  # a plain attribute, out of the state dict: the prior has its own file

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def can_sample(self) -> bool:
        """Whether `sample` draws from a fitted prior. Without one it decodes uniform random codes: noise that
        sample-quality metrics do not score (`SampleQuality` checks this)."""
        return self.prior is not None

    def set_prior(self, prior: nn.Module | None) -> None:
        """Use `prior` (with `sample(n, generator) -> [n, h, w]` codes) for `sample` and the grids."""
        self.__dict__["prior"] = None if prior is None else prior.to(self.device)

    # -- encoding and decoding -----------------------------------------------------------------------------
    def codes(self, x: Tensor) -> Tensor:
        """Images `[B, C, H, W]` -> code indices `[B, h, w]` in [0, K)."""
        return self.quantizer.nearest(self.encoder(x))

    def encode(self, x: Tensor) -> Tensor:
        """Images -> quantised vectors, flattened: `[B, code_dim * h * w]`."""
        return self.quantizer.embed(self.codes(x)).flatten(1)  # (B, D, h, w) -> (B, D*h*w)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Code grids `[B, h, w]` (long) -> images `[B, C, H, W]` in [-1, 1]."""
        return self.decoder(self.quantizer.embed(z.long()))

    def reconstruct(self, x: Tensor) -> Tensor:
        with evaluating(self):
            return self.decode(self.codes(x))

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.prior is None:
            rank_zero_warn("this VQ-VAE has no prior: sampling uniform codes; fit one with python -m genlab.prior")
            return torch.randint(self.codebook_size, (n, *self.latent_shape), generator=generator).to(self.device)
        return self.prior.sample(n, generator).to(self.device)

    def fixed_inputs(self) -> tuple[Tensor, None]:
        if self.prior is None:
            return self.fixed_codes, None
        return self.prior.sample(len(self.fixed_codes), torch.Generator().manual_seed(0)).to(self.device), None

    # -- training --------------------------------------------------------------------------------------------
    def _step(self, batch: tuple[Tensor, Tensor], split: str, batch_idx: int = 0) -> Tensor:
        x, _ = batch
        z_q, codes, terms = self.quantizer(self.encoder(x))
        x_hat = self.decoder(z_q)
        recon = F.mse_loss(x_hat, x)
        loss = recon + terms["codebook"] + self.commitment * terms["commitment"]
        counts = torch.bincount(codes.flatten(), minlength=self.codebook_size).float()
        logged = {"loss": loss, "recon": recon, "mse": unit_mse(x_hat.detach(), x), **terms}
        if split == "train":
            logged |= {"perplexity": perplexity(counts), "codes_used": (counts > 0).float().mean()}
        else:
            self.eval_counts += counts
            if split == "val" and batch_idx == 0:  # the grid shows these images' codes until a prior is fitted
                self.fixed_codes[: len(codes)] = codes[: len(self.fixed_codes)]
        self.log_split(split, logged, batch_size=x.shape[0])
        return loss

    def _log_usage(self, split: str) -> None:
        counts = self.trainer.strategy.reduce(self.eval_counts, reduce_op="sum")
        self.log_dict({f"{split}/perplexity": perplexity(counts), f"{split}/codes_used": (counts > 0).float().mean()})
        self.eval_counts.zero_()

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.eval_counts.zero_()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.eval_counts.zero_()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_usage("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_usage("test")

    def configure_optimizers(self) -> Optimizer:
        return optimizers(self, self.optimizer, self.lr)
