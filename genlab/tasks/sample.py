"""The sample task: n images from a trained model as a grid, a folder of PNGs, or an .npz (uint8 NHWC)."""

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torchvision.utils import save_image

from genlab.errors import check_choice
from genlab.models.sampling import sample_batches
from genlab.runs import open_run, run_options
from genlab.utils.images import model_to_uint8, model_to_unit

log = logging.getLogger(__name__)
FORMATS = ("grid", "png", "npz")


def sample(cfg: DictConfig) -> Path:
    """Writes `n` samples (per class with `per_class` for conditional models) under `output` and returns it."""
    check_choice("format", cfg.format, FORMATS)
    run = open_run(**run_options(cfg), device=cfg.device)
    model, ckpt = run.model, run.checkpoint
    num_classes = getattr(model, "num_classes", 0) or 0
    out = Path(cfg.output).expanduser() if cfg.get("output") else default_output(Path(ckpt), cfg.get("run_dir"))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.per_class and num_classes > 0:
        for label in range(num_classes):
            _write(_sample_class(model, label, cfg.n, cfg.batch_size), out, f"class_{label}", cfg)
    else:
        images = torch.cat(list(sample_batches(model, cfg.n, cfg.batch_size))).cpu()
        _write(images, out, "samples", cfg)
    print(f"genlab.sample: {cfg.n} samples{' per class' if cfg.per_class and num_classes else ''} from {ckpt} -> {out}")
    return out


def default_output(ckpt: Path, run_dir: str | None = None) -> Path:
    """Where samples go without `output`: `<run>/generated` for `run_dir` or a checkpoint in a run's checkpoints/
    folder, else `<checkpoint name>-samples/` next to the checkpoint file."""
    if run_dir:
        return Path(run_dir).expanduser() / "generated"
    if ckpt.parent.name == "checkpoints" and (ckpt.parent.parent / ".hydra").is_dir():
        return ckpt.parent.parent / "generated"
    return ckpt.parent / f"{ckpt.stem}-samples"


@torch.no_grad()
def _sample_class(model, label: int, n: int, batch_size: int) -> torch.Tensor:
    """`n` samples `[n, C, H, W]` of class `label`, drawn `batch_size` at a time, on the CPU."""
    parts = []
    for start in range(0, n, batch_size):
        y = torch.full((min(batch_size, n - start),), label, dtype=torch.long, device=model.device)
        parts.append(model.sample(len(y), y=y).float().cpu())
    return torch.cat(parts)


def _write(images: torch.Tensor, out: Path, name: str, cfg: DictConfig) -> None:
    """images `[N, C, H, W]` in [-1, 1] -> `name.png` grid, `name/000000.png`..., or `name.npz` (`x`: N, H, W, C)."""
    if cfg.format == "grid":
        save_image(model_to_unit(images), out / f"{name}.png", nrow=cfg.nrow, padding=2)
        return
    pixels = model_to_uint8(images).permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
    if cfg.format == "npz":
        np.savez_compressed(out / f"{name}.npz", x=pixels)
        return
    folder = out / name
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(pixels):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:06d}.png")
