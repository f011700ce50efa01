"""Convolutional encoders and decoders sized from `image_size` and `channels` (DCGAN: Radford et al. 2016,
https://arxiv.org/abs/1511.06434). Shared by the DCGAN family, the conv VAE, autoencoders and the VQ-VAE.

Sizes: 28 (7 -> 14 -> 28) and every power of two from 8 to 512. Each block halves (encoder) or doubles
(decoder) the resolution with a 4x4 stride-2 convolution; by default there are min(log2(size) - 2, 5) blocks,
so 64 px goes 4 -> 64 and 512 px 16 -> 512 in five blocks. Block widths are `width` on the image side,
doubling towards the latent side up to `width * max_mult`.
"""

import math

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nets.common import LabelConditioning, activation, norm_2d, output_activation
from genlab.nets.mlp import mlp_layers

SIZES = (8, 16, 28, 32, 64, 128, 256, 512)


def is_channels_last(t: Tensor) -> bool:
    """Whether a 4-d tensor is laid out channels-last and not also plainly contiguous (as a tensor with one
    channel, or 1x1 pixels, is in both orders)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class _FlattenInOrder(torch.autograd.Function):
    """`x.flatten(1)` whose gradient goes back in `x`'s memory order. Flattening a channels-last map copies it
    to the plain order, so its gradient arrives in the plain order; the elementwise backward before it (the
    activation's, the norm's) then mixes a plain gradient with a channels-last saved input and takes
    TensorIterator's strided path: a LeakyReLU backward on a 64x128x7x7 bf16 map took 1.06 ms instead of ~0.1
    (docs/benchmarks.md, session 16). Differentiable, so WGAN-GP's double backward goes through it."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return x.flatten(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


class Flatten(nn.Flatten):
    """`nn.Flatten()` (the features of a conv map) that hands a channels-last input its gradient channels-last."""

    def forward(self, x: Tensor) -> Tensor:
        if is_channels_last(x) and torch.is_grad_enabled() and x.requires_grad:
            return _FlattenInOrder.apply(x)
        return super().forward(x)


def resolution_plan(image_size: int, n_blocks: int | None = None) -> tuple[int, int]:
    """`(n_blocks, start)`: how many stride-2 blocks and the resolution on the latent side."""
    if image_size not in SIZES:
        raise ConfigError(
            f"data.image_size={image_size} cannot be built by the conv nets; expected one of: "
            f"{', '.join(map(str, SIZES))}"
        )
    most = 2 if image_size == 28 else int(math.log2(image_size)) - 2
    n = min(most, 5) if n_blocks is None else n_blocks
    if not 1 <= n <= most:
        raise ConfigError(f"n_blocks={n_blocks} is invalid for image_size={image_size}; expected 1 to {most}")
    return n, image_size // 2**n


def block_widths(width: int, n: int, max_mult: int = 8) -> list[int]:
    """Channels after each block, from the image side: width, 2 width, 4 width, ... capped at max_mult width."""
    if width < 1:
        raise ConfigError(f"width={width} is invalid; expected a positive integer")
    return [width * min(2**i, max_mult) for i in range(n)]


def check_hidden(hidden: int) -> None:
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
        raise ConfigError(f"hidden={hidden!r} is invalid; expected 0 (no fully connected layer) or a positive width")


class ResBlock(nn.Module):
    """`x + conv1x1(act(norm(conv3x3(act(x)))))`, shape-preserving `[B, C, H, W]` (the VQ-VAE's residual block,
    van den Oord et al. 2017, section 4.1)."""

    def __init__(self, channels: int, norm: str = "batch", activation_name: str = "relu") -> None:
        super().__init__()
        self.net = nn.Sequential(
            activation(activation_name),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm != "batch"),
            norm_2d(norm, channels),
            activation(activation_name),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ConvEncoder(nn.Module):
    """`[B, C, H, W]` -> features `[B, out_dim]` (flattened, through a linear layer when `out_dim` is set) or,
    with `spatial=True`, the feature map `[B, out_channels or widths[-1], start, start]`.

    The first block has no norm (DCGAN); `norm` is batch, layer (WGAN-GP critic) or none. `res_blocks` residual
    blocks follow at the latent-side resolution. `hidden > 0` adds a fully connected layer of that width (with
    `norm` and the activation) after the flattened features, as InfoGAN's MNIST discriminator has (Chen et al.
    2016, appendix C.1); it is then the features (or the input of `out_dim`'s linear layer).
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        out_dim: int | None = None,
        n_blocks: int | None = None,
        norm: str = "batch",
        activation_name: str = "leaky_relu",
        max_mult: int = 8,
        spatial: bool = False,
        out_channels: int | None = None,
        res_blocks: int = 0,
        hidden: int = 0,
    ) -> None:
        super().__init__()
        n, start = resolution_plan(image_size, n_blocks)
        widths = block_widths(width, n, max_mult)
        check_hidden(hidden)
        if hidden and spatial:
            raise ConfigError(f"hidden={hidden} needs flattened features; expected hidden=0 with spatial=true")
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([channels, *widths[:-1]], widths, strict=True)):
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=i == 0 or norm != "batch"))
            layers += [norm_2d(norm if i > 0 else "none", c_out), activation(activation_name)]
        layers += [ResBlock(widths[-1], norm, activation_name) for _ in range(res_blocks)]
        if spatial and out_channels is not None:
            layers.append(nn.Conv2d(widths[-1], out_channels, 1))
        elif not spatial:
            layers.append(Flatten())  # (B, C', s, s) -> (B, C' s s)
            flat = widths[-1] * start * start
            if hidden:
                layers += mlp_layers([flat, hidden], activation_name, norm=norm)
                flat = hidden
            if out_dim is not None:
                layers.append(nn.Linear(flat, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_shape = (out_channels or widths[-1], start, start)
        self.out_dim = out_dim if out_dim is not None else (hidden or math.prod(self.out_shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """`[B, latent_dim]` (and labels `[B]` when `num_classes > 0`) -> `[B, C, H, W]`; with `in_channels` set,
    a feature map `[B, in_channels, start, start]` instead of a vector (the VQ-VAE's quantised grid).

    The vector is projected to `[widths[-1], start, start]` (then `res_blocks` residual blocks); each block
    doubles the resolution with BatchNorm (`norm`) and ReLU, the last one maps to `channels` with `output` none
    (logits) or tanh. `hidden > 0` puts a fully connected layer of that width (with `norm` and the activation)
    before the projection, as InfoGAN's MNIST generator has (Chen et al. 2016, appendix C.1): the projection
    alone is linear in z.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        latent_dim: int | None = None,
        width: int = 64,
        n_blocks: int | None = None,
        norm: str = "batch",
        activation_name: str = "relu",
        output: str = "tanh",
        max_mult: int = 8,
        num_classes: int = 0,
        in_channels: int | None = None,
        res_blocks: int = 0,
        hidden: int = 0,
    ) -> None:
        super().__init__()
        if (latent_dim is None) == (in_channels is None):
            raise ConfigError("ConvDecoder needs exactly one of latent_dim (a vector) or in_channels (a feature map)")
        n, start = resolution_plan(image_size, n_blocks)
        widths = block_widths(width, n, max_mult)[::-1]  # latent side first
        self.shape = (widths[0], start, start)
        check_hidden(hidden)
        if in_channels is None:
            self.cond = LabelConditioning(latent_dim, num_classes)
            project = nn.Linear(hidden or self.cond.out_dim, math.prod(self.shape), bias=norm != "batch")
            if hidden:
                project = nn.Sequential(*mlp_layers([self.cond.out_dim, hidden], activation_name, norm=norm), project)
            self.project = project
        elif hidden:
            raise ConfigError(f"hidden={hidden} needs a latent vector; expected hidden=0 with in_channels set")
        else:
            self.cond, self.project = None, nn.Conv2d(in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = [norm_2d(norm, widths[0]), activation(activation_name)]
        layers += [ResBlock(widths[0], norm, activation_name) for _ in range(res_blocks)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=norm != "batch"), norm_2d(norm, c_out)]
            layers.append(activation(activation_name))
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), output_activation(output)]
        self.net = nn.Sequential(*layers)
        # the first convolution after the projection: its weight's order (genlab.utils.speed.channels_last) is
        # the order the projected map is put in
        self._first_conv = next(
            f"net.{n}.weight" for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.cond is None:
            return self.net(self.project(z))
        h = self.project(self.cond(z, y)).view(z.shape[0], *self.shape)  # (B, C' s s) -> (B, C', s, s)
        if is_channels_last(self.get_parameter(self._first_conv)):
            # the whole decoder then runs channels-last, forward and backward (a plain map from the view would
            # meet channels-last gradients from the convolution in the norm's and activation's backward)
            h = h.contiguous(memory_format=torch.channels_last)
        return self.net(h)


class JointDiscriminator(nn.Module):
    """BiGAN's D trunk on pairs (x, z) (Donahue et al. 2017): `x_net(x)` features and an MLP of z,
    concatenated and mixed: `[B, C, H, W]`, `[B, latent_dim]` -> `[B, out_dim]`."""

    def __init__(self, x_net: nn.Module, latent_dim: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.x_net = x_net
        self.z_net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.joint = nn.Sequential(nn.Linear(x_net.out_dim + hidden, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.out_dim = hidden

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.joint(torch.cat([self.x_net(x), self.z_net(z)], dim=1))  # (B, F + H) -> (B, H)
