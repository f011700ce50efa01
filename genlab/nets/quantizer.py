"""Vector quantiser of the VQ-VAE (van den Oord et al. 2017, https://arxiv.org/abs/1711.00937).

Each D-dimensional vector of the encoder's feature map snaps to its nearest of K codebook vectors. Gradients pass
to the encoder by the straight-through estimator. The codebook learns either by its own loss
||sg[z_e] - e||^2 or, with `ema=True`, by exponential moving averages of the vectors assigned to each code
(the paper's appendix A.1). Codes whose moving-average use falls below `restart_threshold` are dead and restart
at random encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox, section 3.3).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code frequencies `counts` `[K]`: K when codes are used uniformly, 1 when one is."""
    p = counts.float() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def _all_reduce(t: Tensor) -> Tensor:
    """Sum over ranks (in place) when running distributed, so every rank keeps the same codebook."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class VectorQuantizer(nn.Module):
    """`z_e` `[B, D, H, W]` -> (`z_q` `[B, D, H, W]` with straight-through gradients, codes `[B, H, W]` in [0, K),
    losses {"codebook", "commitment"} (unweighted scalars; "codebook" is zero with EMA updates)).

    `usage` is the moving average (decay `decay`) of how many vectors each code receives per training batch; it
    starts at 1 so new codes have about log(threshold)/log(decay) steps before they count as dead.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        ema: bool = False,
        decay: float = 0.99,
        restart_threshold: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if codebook_size < 2 or code_dim < 1:
            raise ConfigError(
                f"model.codebook_size={codebook_size}, model.code_dim={code_dim} are invalid; expected a codebook "
                f"of at least 2 codes of dimension at least 1"
            )
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"model.decay={decay} is invalid; expected a number in (0, 1), e.g. 0.99")
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.ema, self.decay, self.restart_threshold, self.eps = ema, decay, restart_threshold, eps
        self.codebook = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("usage", torch.ones(codebook_size))
        if ema:
            self.codebook.weight.requires_grad_(False)
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embed_sum", self.codebook.weight.detach().clone())

    def embed(self, codes: Tensor) -> Tensor:
        """Code indices `[B, H, W]` -> their vectors `[B, D, H, W]`."""
        return self.codebook(codes).permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)

    def nearest(self, z: Tensor) -> Tensor:
        """Vectors `[B, D, H, W]` -> index of the nearest code `[B, H, W]` (Euclidean)."""
        with torch.autocast(z.device.type, enabled=False):  # float32 distances (see forward)
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (B, D, H, W) -> (B*H*W, D)
            weight = self.codebook.weight
            dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ weight.t() + weight.pow(2).sum(1)
            return dist2.argmin(1).view(z.shape[0], *z.shape[2:])

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        # float32 whatever the autocast: bfloat16 distances pick the wrong code for near ties, and the EMA sums and
        # restarts write into float32 buffers (the decoder after it autocasts again)
        with torch.autocast(z_e.device.type, enabled=False):
            return self._quantize(z_e.float())

    def _quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        codes = self.nearest(z_e.detach())
        if self.training:
            self._update(z_e.detach(), codes)
            codes = self.nearest(z_e.detach()) if self.restart_threshold > 0 else codes
        e = self.embed(codes)
        codebook_loss = F.mse_loss(e, z_e.detach()) if not self.ema else z_e.new_zeros(())
        commitment_loss = F.mse_loss(z_e, e.detach())
        z_q = z_e + (e - z_e).detach()  # straight-through: forward e, backward identity to z_e
        return z_q, codes, {"codebook": codebook_loss, "commitment": commitment_loss}

    @torch.no_grad()
    def _update(self, z_e: Tensor, codes: Tensor) -> None:
        """Usage statistics, the EMA codebook step and dead-code restarts (training only)."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (B, D, H, W) -> (N, D)
        idx = codes.flatten()
        counts = _all_reduce(torch.bincount(idx, minlength=self.codebook_size).float())
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = _all_reduce(torch.zeros_like(self.embed_sum).index_add_(0, idx, flat))
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace smoothing
            used = counts > 0  # codes without vectors this batch keep their place
            self.codebook.weight[used] = self.embed_sum[used] / smoothed[used, None]
        if self.restart_threshold > 0:
            self._restart(flat)

    def _restart(self, flat: Tensor) -> None:
        dead = self.usage < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = flat[torch.randint(len(flat), (n_dead,), device=flat.device)]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(picks, src=0)  # the same restarts on every rank
        self.codebook.weight[dead] = picks
        self.usage[dead] = 1.0
        if self.ema:
            self.embed_sum[dead] = picks
            self.cluster_size[dead] = 1.0
