"""Gated PixelCNN over a grid of discrete codes (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders", https://arxiv.org/abs/1606.05328): vertical and horizontal stacks, so that the receptive
field has no blind spot, and gated tanh * sigmoid units."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedLayer(nn.Module):
    """One gated layer: (vertical `[B, C, H, W]`, horizontal `[B, C, H, W]`) -> the same two.

    The vertical stack sees the rows above; the horizontal stack sees the pixels to the left in the row and,
    through a 1x1 link, the vertical stack. The first layer (`first=True`, mask A) also hides the current pixel
    and has no residual connection.
    """

    def __init__(self, channels: int, kernel: int = 3, first: bool = False) -> None:
        super().__init__()
        half = kernel // 2
        self.first = first
        self.vertical = nn.Conv2d(channels, 2 * channels, (half + 1, kernel), padding=(half, half))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, half + 1), padding=(0, half))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        # mask A: the vertical kernel's bottom row (the current row) and the horizontal kernel's last column
        # (the current pixel) are zeroed in the first layer
        v_mask, h_mask = torch.ones_like(self.vertical.weight), torch.ones_like(self.horizontal.weight)
        if first:
            v_mask[:, :, -1] = 0
            h_mask[:, :, :, -1] = 0
        self.register_buffer("v_mask", v_mask, persistent=False)
        self.register_buffer("h_mask", h_mask, persistent=False)

    @staticmethod
    def gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)  # (B, 2C, H, W) -> 2 x (B, C, H, W)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        height, width = v.shape[-2:]
        pad_v, pad_h = self.vertical.padding, self.horizontal.padding
        v_pre = F.conv2d(v, self.vertical.weight * self.v_mask, self.vertical.bias, padding=pad_v)[..., :height, :]
        h_pre = F.conv2d(h, self.horizontal.weight * self.h_mask, self.horizontal.bias, padding=pad_h)[..., :width]
        h_out = self.out(self.gate(h_pre + self.link(v_pre)))
        return self.gate(v_pre), h_out if self.first else h + h_out


class GatedPixelCNN(nn.Module):
    """Codes `[B, H, W]` in [0, K) -> logits `[B, K, H, W]`, the logits at each position depending only on the
    codes above it and to its left (raster order)."""

    def __init__(self, codebook_size: int, channels: int = 64, n_layers: int = 8, kernel: int = 3) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.embed = nn.Embedding(codebook_size, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, first=i == 0) for i in range(n_layers))
        self.head = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1), nn.ReLU(), nn.Conv2d(2 * channels, codebook_size, 1)
        )

    def forward(self, codes: Tensor) -> Tensor:
        return self.logits(self.embed(codes).permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)

    def logits(self, x: Tensor) -> Tensor:
        """Embedded codes `[B, C, H, W]` -> logits `[B, K, H, W]`."""
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """`n` grids `[n, H, W]` drawn position by position in raster order (H * W forward passes)."""
        device = next(self.parameters()).device
        codes = torch.zeros(n, *shape, dtype=torch.long, device=device)
        for i in range(shape[0]):
            for j in range(shape[1]):
                logits = self(codes)[:, :, i, j] / max(temperature, 1e-6)  # (n, K)
                probs = torch.softmax(logits.float(), dim=1).cpu()
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        return codes
