"""The one place where image value ranges are converted.

Inside models images are float tensors in [-1, 1]. Datasets store uint8 in [0, 255]; losses, metrics
and callbacks use [0, 1].
"""

import torch
from torch import Tensor


def uint8_to_model(x: Tensor) -> Tensor:
    """uint8 [..., H, W] in [0, 255] -> float32 in [-1, 1]."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def model_to_unit(x: Tensor) -> Tensor:
    """float in [-1, 1] -> float in [0, 1] (clamped)."""
    return x.add(1.0).mul_(0.5).clamp_(0.0, 1.0)


def unit_to_model(x: Tensor) -> Tensor:
    """float in [0, 1] -> float in [-1, 1]."""
    return x.mul(2.0).sub_(1.0)


def unit_to_uint8(x: Tensor) -> Tensor:
    """float in [0, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def model_to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] `[..., H, W]` -> uint8 in [0, 255] (rounded, clamped), for PNGs and .npz files."""
    return model_to_unit(x).mul_(255.0).round_().to(torch.uint8)


def model_to_extractor(x: Tensor) -> Tensor:
    """Model output `[B, C, H, W]` in [-1, 1] -> uint8 `[B, 3, H, W]`, what torchmetrics' Inception expects.

    Grey images (C = 1) are repeated to 3 channels; the extractor resizes to 299 px itself.
    """
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got shape {tuple(x.shape)}")
    return model_to_uint8(x).expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else model_to_uint8(x)
