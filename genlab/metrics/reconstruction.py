"""Reconstruction error in the [0, 1] pixel scale: MSE and per-image PSNR through torchmetrics."""

import torch
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio

from genlab.metrics import keys
from genlab.utils.images import model_to_unit


@torch.no_grad()
def reconstruction_metrics(model, batches) -> dict[str, float]:
    """Mean squared error per pixel and mean per-image PSNR (dB, data range 1) of `model.reconstruct(x)`."""
    mse, psnr = MeanSquaredError(), PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    for x in batches:
        x = x.to(model.device)
        target, recon = model_to_unit(x).cpu(), model_to_unit(model.reconstruct(x).float()).cpu()
        mse.update(recon, target)
        psnr.update(recon, target)
    return {keys.MSE: float(mse.compute()), keys.PSNR: float(psnr.compute())}
