"""A few lines at the start of training: the model and its networks, the data, the device and the run dir.

It stands in for Lightning's model summary table (`trainer.enable_model_summary: false`), which lists every
submodule but says nothing about the data, the device or where the run writes.
"""

import logging

import lightning.pytorch as L
from torch import nn

log = logging.getLogger(__name__)


def count(n: int) -> str:
    """`1234567` -> `1.2M`, `8256` -> `8.3K`, `12` -> `12`."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def networks(model: nn.Module) -> dict[str, int]:
    """Parameters of each top-level child that has any (a GAN's generator and discriminator, a VAE's encoder,
    decoder, ...), in registration order."""
    sizes = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    return {name: n for name, n in sizes.items() if n}


def data_line(datamodule: L.LightningDataModule | None) -> str:
    """`Digits: 16x16 px, 1 channel, 10 classes | train 1,293, val 144, test 359 images | batch 64` (sizes of
    the splits loaded so far)."""
    if datamodule is None:
        return "data: -"
    name = type(datamodule).__name__.removesuffix("DataModule")
    size, channels = getattr(datamodule, "image_size", None), getattr(datamodule, "channels", None)
    shape = [f"{size}x{size} px" if size else None, f"{channels} channel{'s' * (channels != 1)}" if channels else None]
    classes = getattr(datamodule, "num_classes", 0)
    shape.append(f"{classes} classes" if classes else "unlabelled")
    splits = [(s, getattr(datamodule, f"data_{s}", None)) for s in ("train", "val", "test")]
    counts = ", ".join(f"{s} {len(d):,}" for s, d in splits if d is not None and hasattr(d, "__len__"))
    parts = [f"data: {name}: {', '.join(p for p in shape if p)}"]
    if counts:
        parts.append(f"{counts} images")
    if getattr(datamodule, "batch_size", None):
        parts.append(f"batch {datamodule.batch_size}")
    return " | ".join(parts)


def device_line(trainer: L.Trainer) -> str:
    """`device: cuda:0 (NVIDIA H200) x 2 devices, ddp, precision 16-mixed`."""
    device = trainer.strategy.root_device
    text = f"device: {device}"
    if device.type == "cuda":
        import torch

        text += f" ({torch.cuda.get_device_name(device)})"
    if trainer.world_size > 1:
        text += f" x {trainer.world_size} processes, {type(trainer.strategy).__name__.removesuffix('Strategy')}"
    return f"{text}, precision {trainer.precision}"


class RunSummary(L.Callback):
    """Logs the summary once, on rank zero, when fitting starts (after the data and the metrics are set up), or
    when testing starts without a fit; a test after a fit adds the test split's size if the summary lacked it."""

    def __init__(self) -> None:
        self._test_counted: bool | None = None  # None: nothing said yet

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._test_counted is None:
            self._say(trainer, pl_module)
        elif not self._test_counted and trainer.is_global_zero:
            test = getattr(trainer.datamodule, "data_test", None)
            if test is not None and hasattr(test, "__len__"):
                log.info("test split: %s images", f"{len(test):,}")

    def _say(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test_counted = getattr(trainer.datamodule, "data_test", None) is not None
        if trainer.is_global_zero:
            log.info("\n".join(summary_lines(trainer, pl_module)))


def summary_lines(trainer: L.Trainer, model: L.LightningModule) -> list[str]:
    """model and parameters (per network), data, device, run dir: one line each."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kind = type(model)
    return [
        f"model: {kind.__name__} ({kind.__module__}), {count(total)} parameters"
        + (f" ({count(trainable)} trainable)" if trainable != total else ""),
        "  networks: " + ", ".join(f"{name} {count(n)}" for name, n in networks(model).items()),
        "  " + data_line(trainer.datamodule),
        "  " + device_line(trainer),
        f"  run dir: {trainer.default_root_dir}",
    ]
