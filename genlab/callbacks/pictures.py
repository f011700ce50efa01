"""What the picture callbacks share: enlarged grids, PNG and GIF files sent to the image loggers, and the
cadence of the costly pictures (at the end of training, and every k epochs when asked). Also `LearningCurves`."""

import logging
import math
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid, save_image

from genlab import plots
from genlab.errors import ConfigError
from genlab.utils.images import model_to_unit
from genlab.utils.loggers import log_image, logger_step
from genlab.utils.speed import release_free_memory

log = logging.getLogger(__name__)


def enlarge(image: Tensor, min_width: int) -> Tensor:
    """`[C, H, W]` -> the same picture scaled by the smallest whole factor that makes it at least `min_width`
    px wide, nearest-neighbour (each pixel a sharp square): a 16 px digit stays readable on screen."""
    factor = max(1, math.ceil(min_width / image.shape[-1]))
    return F.interpolate(image[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else image


def image_grid(images: Tensor, nrow: int, min_width: int = 0) -> Tensor:
    """Model images `[B, C, H, W]` in [-1, 1] -> one enlarged grid `[C, H', W']` in [0, 1] (on the CPU)."""
    return enlarge(make_grid(model_to_unit(images.detach()).cpu(), nrow=nrow, padding=2), min_width)


def publish_grid(trainer: L.Trainer, grid: Tensor, path: Path, key: str) -> Path:
    """Save `grid` `[C, H, W]` in [0, 1] as a PNG at `path` and send it to the loggers that take images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    log_image(trainer.loggers, key, grid, logger_step(trainer))
    return path


def publish_png(trainer: L.Trainer, path: Path, key: str) -> None:
    """Send a PNG written elsewhere (a matplotlib figure) to the loggers that take images."""
    with Image.open(path) as picture:
        pixels = torch.frombuffer(bytearray(picture.convert("RGB").tobytes()), dtype=torch.uint8)
        size = picture.size
    image = pixels.view(size[1], size[0], 3).permute(2, 0, 1).float().div(255)  # (H, W, 3) -> (3, H, W)
    log_image(trainer.loggers, key, image, logger_step(trainer))


def write_gif(frames: list[Path], path: Path, frame_ms: int = 400, max_frames: int = 100) -> Path | None:
    """An animated GIF of the PNG `frames` in order (at most `max_frames`, evenly spaced, the last always kept),
    looping, the last frame held three times longer. None when there are no frames."""
    if not frames:
        return None
    if len(frames) > max_frames:
        picks = torch.linspace(0, len(frames) - 1, max_frames).round().long().unique()
        frames = [frames[i] for i in picks]
    images = [Image.open(f).convert("RGB") for f in frames]
    size = images[-1].size  # a resumed run with another grid size: frames follow the latest one
    images = [im if im.size == size else im.resize(size, Image.NEAREST) for im in images]
    durations = [frame_ms] * (len(images) - 1) + [3 * frame_ms]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


class EndOfRun(L.Callback):
    """A costly picture: drawn when training ends (`<name>.png`) and, when `every_n_epochs` is set, also every
    that many epochs (`<name>_epoch_XXX.png`). A model without the capability (`missing` says why) is skipped
    with one log line when training starts."""

    def __init__(self, dirpath: str, every_n_epochs: int | None = None) -> None:
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ConfigError(
                f"{type(self).__name__}: every_n_epochs={every_n_epochs} is invalid; expected >= 1, or null (only "
                f"when training ends)"
            )
        self.dirpath, self.every_n_epochs = Path(dirpath), every_n_epochs
        self.active = True

    def missing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """Why this picture cannot be drawn for this run, or None when it can."""
        return None

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        """Write the picture(s), each named `<name><suffix>.png`, and send them to the image loggers."""
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        reason = self.missing(trainer, pl_module)
        self.active = reason is None
        if reason and trainer.is_global_zero:
            log.info("%s: skipped (%s)", type(self).__name__, reason)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.active and self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module, f"_epoch_{epoch:03d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            self._draw(trainer, pl_module, "")

    @rank_zero_only
    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        self.draw(trainer, pl_module, suffix)
        release_free_memory()


class LearningCurves(EndOfRun):
    """`dirpath/<family>.png`: the run's scalars against the step, read back from the CSV logger's metrics.csv
    (one figure per family present: losses, KL and reconstruction, D accuracy, ACGAN's auxiliary accuracy,
    divergence estimates, codebook terms) and `sample_quality.png` from `quality_path` (see `genlab.plots`).
    With `every_n_epochs` the same files are redrawn along the way. Skipped, with one log line, when the run
    has no CSV logger."""

    def __init__(self, dirpath: str, quality_path: str | None = None, every_n_epochs: int | None = None) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.quality_path = Path(quality_path) if quality_path else None

    @staticmethod
    def _csv_logger(trainer: L.Trainer) -> CSVLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)

    def missing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        if self._csv_logger(trainer) is None:
            return "no CSV logger to read the curves from; add it with logger=[csv,...]"
        return None

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        logger = self._csv_logger(trainer)
        logger.save()  # flush the rows Lightning still buffers
        csv_path = Path(logger.experiment.metrics_file_path)
        for path in plots.learning_curves(csv_path, self.quality_path, self.dirpath):
            publish_png(trainer, path, f"curves/{path.stem}")
