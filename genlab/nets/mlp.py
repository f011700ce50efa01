"""MLP encoders and decoders sized from `image_size` and `channels`.

`MLPEncoder` serves as VAE encoder trunk and as GAN discriminator; `MLPDecoder` as VAE decoder and
GAN generator. Images are `[B, C, H, W]`.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from genlab.errors import ConfigError, check_choice
from genlab.nets.common import LabelConditioning, output_activation
from genlab.nets.common import activation as _activation

NORMS_1D = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


def mlp_layers(
    dims: Sequence[int], activation: str, batch_norm: bool = False, dropout: float = 0.0, norm: str = "none"
) -> list:
    """Linear -> [norm] -> activation -> [Dropout] for each consecutive pair in `dims`; `norm` none, batch
    or layer (`batch_norm=True` is `norm="batch"`)."""
    check_choice("norm", norm, NORMS_1D)
    norm_cls = NORMS_1D["batch" if batch_norm else norm]
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers.append(nn.Linear(d_in, d_out, bias=norm_cls is None))
        if norm_cls is not None:
            layers.append(norm_cls(d_out))
        layers.append(_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


def hidden_widths(width: int, depth: int, reverse: bool = False) -> list[int]:
    """`depth` hidden layer widths halving from `width` (512, 2 -> [512, 256]); `reverse` for the mirrored decoder."""
    if depth < 1 or width < 2 ** (depth - 1):
        raise ConfigError(f"depth={depth} with width={width} is invalid; expected depth >= 1 and width >= 2^(depth-1)")
    widths = [width // 2**i for i in range(depth)]
    return widths[::-1] if reverse else widths


class MLPEncoder(nn.Module):
    """`[B, C, H, W]` -> `[B, out_dim]`, or the last hidden features `[B, hidden_dims[-1]]` if `out_dim` is None."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        hidden_dims: Sequence[int],
        out_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        dims = [channels * image_size * image_size, *hidden_dims]
        layers = mlp_layers(dims, activation, dropout=dropout, norm=norm)
        if out_dim is not None:
            layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim if out_dim is not None else dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))  # (B, C, H, W) -> (B, C*H*W) -> (B, out_dim)


class MLPDecoder(nn.Module):
    """`[B, latent_dim]` (and labels `[B]` when `num_classes > 0`) -> `[B, C, H, W]`; `output` none (raw,
    e.g. logits) or tanh (in [-1, 1])."""

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        image_size: int,
        hidden_dims: Sequence[int],
        activation: str = "relu",
        batch_norm: bool = False,
        output: str = "none",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.cond = LabelConditioning(latent_dim, num_classes)
        dims = [self.cond.out_dim, *hidden_dims]
        layers = mlp_layers(dims, activation, batch_norm=batch_norm)
        out = [nn.Linear(dims[-1], channels * image_size * image_size), output_activation(output)]
        self.net = nn.Sequential(*layers, *out)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(self.cond(z, y)).view(z.shape[0], *self.shape)  # (B, C*H*W) -> (B, C, H, W)
