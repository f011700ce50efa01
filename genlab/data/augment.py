"""Extra training images for limited-data studies: noisy copies of the training images and a trained model's
samples. Validation and test images are never augmented.

The noise works on uint8 images `[N, C, H, W]` and returns uint8 images of the same shape; pixel values are
read in [0, 1] (`x / 255`) for the parameters:
- gaussian: x + sigma * N(0, 1), clipped to [0, 1];
- salt_pepper: each pixel (all its channels) set to 0 or 1 with probability `amount` (half each);
- poisson: Poisson(x * peak) / peak, clipped to [0, 1] (shot noise of `peak` photons at full brightness: lower is
  noisier; the mean is kept except where the clip cuts bright pixels).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genlab.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
NOISES = ("gaussian", "salt_pepper", "poisson")
CHUNK = 4096  # images per noise call: bounds the float copy of a large set


@dataclass(frozen=True)
class Augment:
    """What is added to the training set: `copies` noisy copies of every image per kind in `noise` (N real
    images become N * (1 + copies * len(noise))), and `generated` samples of the model in `run_dir` (its `ckpt`,
    opened by genlab.runs.open_run). `seed` draws the noise and the samples."""

    noise: tuple[str, ...] = ()
    copies: int = 1
    sigma: float = 0.1
    amount: float = 0.05
    peak: float = 30.0
    generated: int = 0
    run_dir: str | None = None
    ckpt: str = "best"
    seed: int = 0

    def __post_init__(self) -> None:
        noise = (self.noise,) if isinstance(self.noise, str) else tuple(self.noise or ())
        object.__setattr__(self, "noise", noise)
        for kind in noise:
            if kind not in NOISES:
                raise ConfigError(
                    f"data.augment.noise={list(noise)}: {kind!r} is not a noise kind; expected a list of: "
                    f"{', '.join(NOISES)}"
                )
        _check("copies", self.copies, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
        _check("sigma", self.sigma, lambda v: v >= 0, "a number >= 0 (pixel values in [0, 1])")
        _check("amount", self.amount, lambda v: 0 <= v <= 1, "a fraction of the pixels in [0, 1]")
        _check("peak", self.peak, lambda v: v > 0, "a number > 0 (photons at full brightness)")
        _check("generated", self.generated, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
        if self.generated and not self.run_dir:
            raise ConfigError(
                f"data.augment.generated={self.generated} needs data.augment.run_dir; expected the run directory of "
                f"a trained model (e.g. outputs/train/<date>/<time>) whose samples join the training set"
            )
        if self.run_dir and not self.generated:
            raise ConfigError(
                f"data.augment.run_dir={self.run_dir} is set but data.augment.generated=0; expected the number of "
                f"samples to add (e.g. data.augment.generated=5000), or data.augment.run_dir=null"
            )

    @property
    def active(self) -> bool:
        return bool(self.noise and self.copies) or self.generated > 0


def _check(key: str, value: object, accepts, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not accepts(value):
        raise ConfigError(f"data.augment.{key}={value!r} is invalid; expected {what}")


def as_augment(value: "Augment | Mapping | None") -> Augment:
    """An `Augment` from a config mapping (`data.augment`), an Augment, or None (nothing added)."""
    if value is None:
        return Augment()
    if isinstance(value, Augment):
        return value
    options = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else dict(value)
    known = {f.name for f in fields(Augment)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"data.augment.{unknown[0]} is not an option; expected one of: {', '.join(sorted(known))}")
    return Augment(**options)


# -- noise: uint8 [N, C, H, W] -> uint8 [N, C, H, W] ---------------------------------------------------------------
def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def gaussian_noise(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    noise = torch.randn(images.shape, generator=generator).mul_(sigma * 255.0)
    return _to_uint8(images.float().add_(noise))


def salt_pepper_noise(images: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    n, _, h, w = images.shape
    u = torch.rand((n, 1, h, w), generator=generator)  # one draw per pixel, shared by its channels
    out = images.clone()
    out.masked_fill_((u < amount / 2).expand_as(out), 255)
    out.masked_fill_(((u >= amount / 2) & (u < amount)).expand_as(out), 0)
    return out


def poisson_noise(images: Tensor, peak: float, generator: torch.Generator) -> Tensor:
    counts = torch.poisson(images.float().mul_(peak / 255.0), generator=generator)
    return _to_uint8(counts.mul_(255.0 / peak))


def noisy_copy(images: Tensor, kind: str, augment: Augment, generator: torch.Generator) -> Tensor:
    """One noisy copy of `images` (uint8 `[N, C, H, W]`), computed CHUNK images at a time."""
    noise = {
        "gaussian": lambda x: gaussian_noise(x, augment.sigma, generator),
        "salt_pepper": lambda x: salt_pepper_noise(x, augment.amount, generator),
        "poisson": lambda x: poisson_noise(x, augment.peak, generator),
    }[kind]
    return torch.cat([noise(chunk) for chunk in images.split(CHUNK)])


# -- a trained model's samples -------------------------------------------------------------------------------------
def generated_images(augment: Augment, shape: tuple[int, ...], label_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """`augment.generated` uint8 samples `[M, *shape]` of the run in `augment.run_dir`, and their labels: the
    class each was drawn for when the model is conditional, else -1 (unknown)."""
    from genlab.models.sampling import sample_batches, sample_labels
    from genlab.runs import open_run
    from genlab.utils.images import model_to_uint8

    try:
        run = open_run(run_dir=augment.run_dir, ckpt=augment.ckpt)
    except CheckpointError as err:  # say which setting named the run
        raise CheckpointError(f"data.augment: {err}") from err
    n = augment.generated
    with torch.random.fork_rng():
        torch.manual_seed(augment.seed)
        images = torch.cat([model_to_uint8(x.cpu()) for x in sample_batches(run.model, n, batch_size=500)])
    if tuple(images.shape[1:]) != tuple(shape):
        raise ConfigError(
            f"data.augment.run_dir={augment.run_dir} makes images of shape {list(images.shape[1:])}, the data "
            f"{list(shape)}; expected a model trained on this data's image_size and channels"
        )
    labels = sample_labels(run.model, n)
    labels = torch.full((n, *label_shape), -1, dtype=torch.long) if labels is None or label_shape else labels
    log.info("data.augment: %d samples of %s (%s)", n, run.checkpoint, "labelled" if labels.min() >= 0 else "no labels")
    return images, labels


def augmented(images: Tensor, labels: Tensor, augment: Augment) -> tuple[Tensor, Tensor]:
    """The real training images `[N, C, H, W]` (uint8) and labels, followed by their noisy copies (kind by kind,
    copy by copy, each in the order of the real images) and then the generated samples."""
    generator = torch.Generator().manual_seed(augment.seed)
    parts_x, parts_y = [images], [labels]
    for kind in augment.noise:
        for _ in range(augment.copies):
            parts_x.append(noisy_copy(images, kind, augment, generator))
            parts_y.append(labels)
    if augment.generated:
        x, y = generated_images(augment, tuple(images.shape[1:]), tuple(labels.shape[1:]))
        parts_x.append(x)
        parts_y.append(y.to(labels.dtype))
    out_x, out_y = torch.cat(parts_x), torch.cat(parts_y)
    log.info(
        "Training set: %d real images + %d noisy copies (%s) + %d generated = %d images",
        len(images),
        len(images) * augment.copies * len(augment.noise),
        ", ".join(augment.noise) or "none",
        augment.generated,
        len(out_x),
    )
    return out_x, out_y
