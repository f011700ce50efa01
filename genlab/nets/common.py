"""Pieces shared by every net: activations, norms, label conditioning, the discriminator heads."""

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError, check_choice

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "silu": nn.SiLU}
OUTPUTS = {"none": nn.Identity, "tanh": nn.Tanh}
# 2-D norms; "layer" normalises over (C, H, W) per sample, as the WGAN-GP critic does (Gulrajani et al. 2017, §4).
NORMS_2D = {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c), "none": lambda c: nn.Identity()}


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def output_activation(name: str) -> nn.Module:
    check_choice("output", name, OUTPUTS)
    return OUTPUTS[name]()


def norm_2d(name: str, channels: int) -> nn.Module:
    check_choice("norm", name, NORMS_2D)
    return NORMS_2D[name](channels)


class LabelConditioning(nn.Module):
    """Concatenates a learned embedding of the label to z: `[B, D]`, `[B]` -> `[B, D + embed_dim]`.

    With `num_classes == 0` it is the identity and `out_dim == latent_dim`.
    """

    def __init__(self, latent_dim: int, num_classes: int = 0, embed_dim: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim or num_classes) if num_classes else None
        self.out_dim = latent_dim + (self.embed.embedding_dim if self.embed is not None else 0)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is None:
            return z
        if y is None:
            raise ValueError("this generator is conditional: pass labels y [B]")
        return torch.cat([z, self.embed(y)], dim=1)  # (B, D) + (B, E) -> (B, D + E)


class DiscriminatorHeads(nn.Module):
    """A feature trunk (`[...] -> [B, trunk.out_dim]`) with an adversarial head `[B]` and, for a conditional
    model (`num_classes > 0`), a class head: `auxiliary` (ACGAN, Odena et al. 2017: a classifier head
    `[B, num_classes]`, returned beside the score) or `projection` (Miyato & Koyama 2018,
    https://arxiv.org/abs/1802.05637: the score gains the inner product of a learned class embedding with the
    features, `adv(h) + <embed(y), h>`; no second output)."""

    def __init__(self, trunk: nn.Module, num_classes: int = 0, class_head: str = "auxiliary") -> None:
        super().__init__()
        check_choice("model.class_head", class_head, ("auxiliary", "projection"))
        features = getattr(trunk, "out_dim", None)
        if not isinstance(features, int):
            raise ConfigError(
                f"discriminator {type(trunk).__name__} must expose an integer `out_dim` (its feature width); "
                f"build it with out_dim: null so that genlab adds the heads"
            )
        self.trunk = trunk
        self.adv = nn.Linear(features, 1)
        head = class_head if num_classes else None
        self.aux = nn.Linear(features, num_classes) if head == "auxiliary" else None
        self.embed = nn.Embedding(num_classes, features) if head == "projection" else None

    def forward(self, *inputs: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.trunk(*inputs)  # (B, features)
        score = self.adv(h).squeeze(1)  # (B,)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator has a projection head: pass labels y [B]")
            score = score + (self.embed(y) * h).sum(1)  # (B, F) . (B, F) -> (B,)
        # float32 out of D whatever the autocast: the objectives' means and differences of scores (a critic's
        # E[f(x)] - E[f(G(z))]) lose their digits in bfloat16, whose step at 20 is 0.125
        return score.float(), (self.aux(h).float() if self.aux is not None else None)  # (B,), (B, K) or None
