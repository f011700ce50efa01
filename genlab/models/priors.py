"""Priors over the code grids of a trained VQ-VAE, so that it can generate: `fit` on the training set's codes,
then `sample(n, generator) -> [n, h, w]` code indices in [0, K).

- `GMMPrior`: a Gaussian mixture (scikit-learn) over the flattened encoder outputs; samples snap to the nearest code.
- `VAEPrior`: a small VAE over the grid of codes, with a categorical decoder per position.
- `PixelCNNPrior`: a gated PixelCNN (van den Oord et al. 2016), sampled autoregressively, as in the VQ-VAE paper.

Each is an `nn.Module` whose state dict holds everything `sample` needs; `genlab.prior` saves and restores it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import check_choice
from genlab.models.losses import kl_standard_normal
from genlab.nets.mlp import MLPDecoder, MLPEncoder
from genlab.nets.pixelcnn import GatedPixelCNN

COVARIANCE_TYPES = ("full", "diag")


@dataclass
class CodeGrid:
    """What a prior models: grids `(h, w)` of indices into a codebook of K = `codebook_size` codes of `code_dim`."""

    codebook_size: int
    grid: tuple[int, int]
    code_dim: int


class CodePrior(nn.Module):
    """What every prior shares: the VQ-VAE's codebook size K, grid `(h, w)` and code dimension D."""

    name = "prior"

    def __init__(self, codes: CodeGrid) -> None:
        super().__init__()
        self.codebook_size, self.grid, self.code_dim = codes.codebook_size, tuple(codes.grid), codes.code_dim

    def fit(self, codes: Tensor, features: Tensor, codebook: Tensor) -> dict[str, float]:
        """Train on codes `[N, h, w]`, encoder outputs `[N, D, h, w]` and the codebook `[K, D]`; returns figures."""
        raise NotImplementedError

    def score(self, codes: Tensor, features: Tensor) -> dict[str, float]:
        """Held-out figures (per grid) for codes `[N, h, w]` and features `[N, D, h, w]`."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """`n` code grids `[n, h, w]` (long) in [0, K)."""
        raise NotImplementedError


@dataclass
class Training:
    """How a learned prior trains: Adam at `lr` for `epochs` passes over the codes in batches of `batch_size`."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3


class TrainedPrior(CodePrior):
    """A prior trained by gradient descent on `loss(codes) -> nats per grid`; samples at `temperature`."""

    def __init__(self, codes: CodeGrid, training: Training, temperature: float, seed: int) -> None:
        super().__init__(codes)
        self.training_options, self.temperature, self.seed = training, temperature, seed

    def loss(self, codes: Tensor) -> Tensor:
        """Negative log-likelihood (or its bound) per grid in nats, averaged over the batch `[B, h, w]`."""
        raise NotImplementedError

    def fit(self, codes: Tensor, features: Tensor, codebook: Tensor) -> dict[str, float]:
        options = self.training_options
        torch.manual_seed(self.seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=options.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.train()
        for _ in range(options.epochs):
            total, order = 0.0, torch.randperm(len(codes), generator=generator)
            for start in range(0, len(codes), options.batch_size):
                batch = codes[order[start : start + options.batch_size]]
                loss = self.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
        self.eval()
        return {"train_nll": total / len(codes)}  # the last epoch's mean

    @torch.no_grad()
    def score(self, codes: Tensor, features: Tensor) -> dict[str, float]:
        nll = sum(float(self.loss(c)) * len(c) for c in codes.split(512)) / len(codes)
        return {"test_nll": nll, "test_bits_per_code": nll / math.log(2) / math.prod(self.grid)}


class GMMPrior(CodePrior):
    """Gaussian mixture over encoder outputs flattened to `D * h * w` (fitted by scikit-learn's EM); a sample is
    reshaped to `[D, h, w]` and each vector snaps to its nearest code."""

    name = "gmm"

    def __init__(
        self,
        codes: CodeGrid,
        n_components: int = 100,
        covariance_type: str = "diag",
        reg_covar: float = 1e-4,
        max_iter: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(codes)
        check_choice("prior.covariance_type", covariance_type, COVARIANCE_TYPES)
        self.n_components, self.covariance_type, self.reg_covar = n_components, covariance_type, reg_covar
        self.max_iter, self.seed = max_iter, seed
        dim = self.code_dim * self.grid[0] * self.grid[1]
        scale_shape = (n_components, dim, dim) if covariance_type == "full" else (n_components, dim)
        self.register_buffer("weights", torch.full((n_components,), 1.0 / n_components))
        self.register_buffer("means", torch.zeros(n_components, dim))
        self.register_buffer("scales", torch.zeros(scale_shape))  # Cholesky factors (full) or std devs (diag)
        self.register_buffer("codebook", torch.zeros(self.codebook_size, self.code_dim))

    def fit(self, codes: Tensor, features: Tensor, codebook: Tensor) -> dict[str, float]:
        from sklearn.mixture import GaussianMixture

        x = features.flatten(1).double().cpu().numpy()  # (N, D, h, w) -> (N, D*h*w)
        self.gmm = GaussianMixture(
            self.n_components, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
            max_iter=self.max_iter, random_state=self.seed,
        )  # fmt: skip
        self.gmm.fit(x)
        self.weights.copy_(torch.from_numpy(self.gmm.weights_))
        self.means.copy_(torch.from_numpy(self.gmm.means_))
        cov = torch.from_numpy(self.gmm.covariances_)
        self.scales.copy_(torch.linalg.cholesky(cov) if self.covariance_type == "full" else cov.sqrt())
        self.codebook.copy_(codebook)
        return {"train_loglik": float(self.gmm.score(x)), "converged": float(self.gmm.converged_)}

    def score(self, codes: Tensor, features: Tensor) -> dict[str, float]:
        return {"test_loglik": float(self.gmm.score(features.flatten(1).double().cpu().numpy()))}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        component = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        scales = self.scales.cpu()[component]
        noise = (scales @ eps.unsqueeze(2)).squeeze(2) if self.covariance_type == "full" else scales * eps
        z = (self.means.cpu()[component] + noise).float().view(n, self.code_dim, *self.grid)  # (n, D*h*w) -> grid
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (n, D, h, w) -> (n*h*w, D)
        codes = torch.cdist(flat, self.codebook.cpu().float()).argmin(1)
        return codes.view(n, *self.grid)


class VAEPrior(TrainedPrior):
    """A VAE over code grids (Kingma & Welling 2014): embedded codes `[N, e, h, w]` -> MLP -> N(mu, sigma) in
    `latent_dim`; MLP decoder -> logits `[N, K, h, w]`, a categorical per position. Loss: cross-entropy summed
    over positions + KL (nats per grid, a bound on the NLL). Samples draw each position from
    softmax(logits / temperature)."""

    name = "vae"

    def __init__(
        self,
        codes: CodeGrid,
        latent_dim: int = 32,
        embed_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 256),
        training: Training | None = None,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(codes, training or Training(), temperature, seed)
        side = self.grid[0]  # the MLP nets take square grids, as the conv nets make them
        self.embed = nn.Embedding(self.codebook_size, embed_dim)
        self.encoder = MLPEncoder(embed_dim, side, list(hidden_dims), out_dim=2 * latent_dim)
        self.decoder = MLPDecoder(latent_dim, self.codebook_size, side, list(hidden_dims)[::-1])
        self.latent_dim = latent_dim

    def loss(self, codes: Tensor) -> Tensor:
        mu, logvar = self.encoder(self.embed(codes).permute(0, 3, 1, 2)).chunk(2, dim=1)  # (B, h, w, e) -> (B, e, h, w)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        nll = F.cross_entropy(self.decoder(z), codes, reduction="none").flatten(1).sum(1)
        return (nll + kl_standard_normal(mu, logvar)).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.embed.weight.device)
        logits = self.decoder(z) / max(self.temperature, 1e-6)  # (n, K, h, w)
        probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, self.codebook_size).cpu()
        return torch.multinomial(probs, 1, generator=generator).view(n, *self.grid)


class PixelCNNPrior(TrainedPrior):
    """A gated PixelCNN over code grids; trained by cross-entropy (nats per grid), sampled in raster order."""

    name = "pixelcnn"

    def __init__(
        self,
        codes: CodeGrid,
        channels: int = 32,
        n_layers: int = 6,
        training: Training | None = None,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(codes, training or Training(), temperature, seed)
        self.net = GatedPixelCNN(self.codebook_size, channels, n_layers)

    def loss(self, codes: Tensor) -> Tensor:
        return F.cross_entropy(self.net(codes), codes, reduction="sum") / len(codes)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.net.sample(n, self.grid, generator, self.temperature)
