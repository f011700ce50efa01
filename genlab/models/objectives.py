"""Adversarial objectives as small objects. D's adversarial outputs are raw scores `[B]` (logits for the
classifying objectives, critic values for the Wasserstein ones).

Each objective names the divergence its D estimates (`divergence`: "jsd", "wasserstein" or None), which
names the logged and monitored key `*/jsd` or `*/wasserstein`.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError, check_choice


class Objective:
    """D minimises `d_loss(real, fake)` (+ `penalty`), G minimises `g_loss(fake)`."""

    divergence: str | None = None
    classifies = False  # D's score is a real/fake decision: its accuracy is logged
    uses_targets = False  # the loss has real/fake targets: label smoothing and flipping apply
    threshold = 0.0  # a score above it means "real"

    def d_loss(self, real: Tensor, fake: Tensor, real_target: Tensor | None = None, fake_target: Tensor | None = None):
        raise NotImplementedError

    def g_loss(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def estimate(self, real: Tensor, fake: Tensor) -> Tensor | None:
        """The divergence estimate (lower is better for G), or None."""
        return None

    def penalty(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor | None:
        return None

    def after_d_step(self, discriminator: nn.Module) -> None:
        """Called after each D update (weight clipping)."""


def _targets(scores: Tensor, target: Tensor | None, value: float) -> Tensor:
    return torch.full_like(scores, value) if target is None else target


class BCE(Objective):
    """Goodfellow et al. 2014 (https://arxiv.org/abs/1406.2661): D = sigmoid(score),
    L_D = -E[log D(x)] - E[log(1 - D(G(z)))]; G: non-saturating -E[log D(G(z))], or with `saturating`
    the minimax E[log(1 - D(G(z)))], whose gradient vanishes while D rejects the samples."""

    divergence, classifies, uses_targets = "jsd", True, True

    def __init__(self, saturating: bool = False) -> None:
        self.saturating = saturating

    def d_loss(self, real, fake, real_target=None, fake_target=None):
        return F.binary_cross_entropy_with_logits(real, _targets(real, real_target, 1.0)) + (
            F.binary_cross_entropy_with_logits(fake, _targets(fake, fake_target, 0.0))
        )

    def g_loss(self, fake):
        if self.saturating:
            return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    def estimate(self, real, fake):
        # JSD estimate log 2 - L_D / 2: the optimal-D identity (Goodfellow et al. 2014, Thm. 1)
        return math.log(2.0) - 0.5 * self.d_loss(real, fake)


class LeastSquares(Objective):
    """LSGAN (Mao et al. 2017, https://arxiv.org/abs/1611.04076) with the 0-1 coding a=0, b=1, c=1:
    L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2], L_G = 1/2 E[(D(G(z)) - 1)^2]."""

    classifies, uses_targets, threshold = True, True, 0.5

    def d_loss(self, real, fake, real_target=None, fake_target=None):
        return 0.5 * (real - _targets(real, real_target, 1.0)).pow(2).mean() + 0.5 * (
            (fake - _targets(fake, fake_target, 0.0)).pow(2).mean()
        )

    def g_loss(self, fake):
        return 0.5 * (fake - 1.0).pow(2).mean()


class Hinge(Objective):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],
    L_G = -E[D(G(z))]."""

    classifies = True

    def d_loss(self, real, fake, real_target=None, fake_target=None):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


class Wasserstein(Objective):
    """WGAN (Arjovsky et al. 2017, https://arxiv.org/abs/1701.07875): critic f, L_D = E[f(G(z))] - E[f(x)],
    L_G = -E[f(G(z))]; `clip_value` clamps every critic weight to [-c, c] after each update."""

    divergence = "wasserstein"

    def __init__(self, clip_value: float | None = None) -> None:
        if clip_value is not None and clip_value <= 0:
            raise ConfigError(f"model.clip_value={clip_value} is invalid; expected a positive number or null")
        self.clip_value = clip_value

    def d_loss(self, real, fake, real_target=None, fake_target=None):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()

    def estimate(self, real, fake):
        return real.mean() - fake.mean()  # the critic's Wasserstein-1 estimate, up to its Lipschitz constant

    def after_d_step(self, discriminator):
        if self.clip_value is not None:
            with torch.no_grad():  # one fused clamp over every weight (a loop costs ~10 kernel calls per tensor)
                params = list(discriminator.parameters())
                torch._foreach_clamp_min_(params, -self.clip_value)
                torch._foreach_clamp_max_(params, self.clip_value)


class WassersteinGP(Wasserstein):
    """WGAN-GP (Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028): the Wasserstein loss plus
    `gp_weight` * E[(||grad f(x_hat)||_2 - 1)^2] at x_hat = a x + (1 - a) G(z), a ~ U[0, 1] drawn per sample,
    the norm taken over all non-batch dimensions."""

    def __init__(self, gp_weight: float = 10.0) -> None:
        super().__init__(clip_value=None)
        if gp_weight <= 0:
            raise ConfigError(f"model.gp_weight={gp_weight} is invalid; expected a positive number")
        self.gp_weight = gp_weight

    def penalty(self, critic, real, fake):
        return self.gp_weight * gradient_penalty(critic, real, fake)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """E[(||grad_x f(x_hat)||_2 - 1)^2] on interpolates x_hat = alpha x + (1 - alpha) G(z) of `real` and `fake`
    `[B, ...]`; `alpha` `[B]` in [0, 1], drawn U[0, 1] per sample when None (given: a test fixes them).

    A mean over the batch: under DDP each rank takes the mean of its share and DDP averages the gradients, which
    for equal shares is the gradient of the mean over the whole batch (tests/test_ddp.py checks it)."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.to(real).view(-1, *[1] * (real.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()  # (B, C, H, W) -> (B, C*H*W) -> (B,)


OBJECTIVES = {
    "bce": BCE,
    "least_squares": LeastSquares,
    "hinge": Hinge,
    "wasserstein": Wasserstein,
    "wasserstein_gp": WassersteinGP,
}


def make_objective(
    loss: str, saturating: bool = False, clip_value: float | None = None, gp_weight: float = 10.0
) -> Objective:
    """Build an objective by name; options that do not apply to it are refused rather than ignored."""
    check_choice("model.loss", loss, OBJECTIVES)
    if clip_value is not None and loss != "wasserstein":
        raise ConfigError(f"model.clip_value={clip_value} applies only to model.loss=wasserstein, not {loss!r}")
    if saturating and loss != "bce":
        raise ConfigError(f"model.saturating=true applies only to model.loss=bce, not {loss!r}")
    if loss == "bce":
        return BCE(saturating)
    if loss == "wasserstein":
        return Wasserstein(clip_value)
    if loss == "wasserstein_gp":
        return WassersteinGP(gp_weight)
    return OBJECTIVES[loss]()
