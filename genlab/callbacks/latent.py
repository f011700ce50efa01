"""Pictures of a model's latent space, drawn when training ends (see `EndOfRun` for the cadence): a t-SNE of
encoder means, traversals and interpolations through the decoder, and a VQ-VAE's codebook usage. Each is
skipped with one log line for a model without the capability, found by attribute, never by model name."""

import json
import math
from collections.abc import Iterator

import lightning.pytorch as L
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from genlab import plots
from genlab.callbacks.pictures import EndOfRun, image_grid, publish_grid, publish_png
from genlab.errors import check_choice
from genlab.models.steps import evaluating


def test_batches(trainer: L.Trainer, n: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The first `n` test images `[B, C, H, W]` in [-1, 1] with their labels `[B]` (-1: unlabelled), in batches."""
    seen = 0
    for x, y in trainer.datamodule.test_dataloader():
        if seen >= n:
            return
        yield x[: n - seen], y[: n - seen]
        seen += len(x)


def latent_means(pl_module: L.LightningModule, x: Tensor) -> Tensor:
    """`encode(x)` `[B, D]` in eval mode; a grid of codes (`latent_shape` (h, w), encode giving `[B, D*h*w]`) is
    pooled over its positions to `[B, D]`."""
    with evaluating(pl_module):
        z = pl_module.encode(x.to(pl_module.device)).flatten(1).float()
    if len(pl_module.latent_shape) > 1:
        z = z.view(len(z), -1, math.prod(pl_module.latent_shape)).mean(-1)  # (B, D*h*w) -> (B, D, h*w) -> (B, D)
    return z.cpu()


def embed_2d(features: np.ndarray, perplexity: float, max_iter: int, seed: int, threads: int) -> np.ndarray:
    """`[N, D]` -> `[N, 2]`: the features themselves when D <= 2 (padded with zeros when D = 1), else t-SNE.
    OpenMP threads are capped at `threads`: on cores shared with other busy processes, t-SNE's threads spin-wait
    (measured 7x slower with 2 threads than with 1 on 2 busy cores)."""
    if features.shape[1] <= 2:
        return np.pad(features, ((0, 0), (0, 2 - features.shape[1])))
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, (len(features) - 1) / 3)  # TSNE needs perplexity < N
    tsne = TSNE(perplexity=perplexity, max_iter=max_iter, init="pca", random_state=seed)
    with threadpool_limits(limits=threads, user_api="openmp"):
        return tsne.fit_transform(features)


class LatentTSNE(EndOfRun):
    """`dirpath/tsne.png`: the encoder means (`encode`) of the first `n_images` test images, embedded in 2-D by
    t-SNE (the latent itself when it is 2-D), coloured by label with a legend naming every class
    (`class_names` of the datamodule when it has them). A VQ-VAE's code vectors are pooled over positions."""

    def __init__(
        self,
        dirpath: str,
        n_images: int = 2000,
        perplexity: float = 30.0,
        max_iter: int = 1000,
        threads: int | None = None,
        seed: int = 0,
        every_n_epochs: int | None = None,
    ) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_images, self.perplexity, self.max_iter = n_images, perplexity, max_iter
        self.threads, self.seed = threads, seed

    def missing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        return None if hasattr(pl_module, "encode") else f"{type(pl_module).__name__} has no encoder (encode)"

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        feats, labels = [], []
        for x, y in test_batches(trainer, self.n_images):
            feats.append(latent_means(pl_module, x))
            labels.append(y)
        features, y = torch.cat(feats).numpy(), torch.cat(labels).numpy()
        # training is paused while a callback draws: t-SNE may take the process's share of the cores (threads=auto
        # gives each training process cores / processes, so CPU DDP ranks do not oversubscribe them)
        threads = self.threads or torch.get_num_threads()
        points = embed_2d(features, self.perplexity, self.max_iter, self.seed, threads)
        method = "t-SNE of the" if features.shape[1] > 2 else "the"
        title = f"{type(pl_module).__name__}: {method} {features.shape[1]}-d latent means of {len(y)} test images"
        names = getattr(trainer.datamodule, "class_names", None)
        path = plots.latent_scatter(points, y, self.dirpath / f"tsne{suffix}.png", title, class_names=names)
        # the legend as data beside the picture: the run report shows it as text (a reader, or a test, can read it)
        legend = [{"class": c, "name": n, "colour": col} for c, n, col in plots.legend_entries(y, names)]
        path.with_suffix(".json").write_text(json.dumps({"title": title, "legend": legend}, indent=1))
        publish_png(trainer, path, "latent/tsne")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation from `a` to `b` `[D]` at fractions `t` `[T]` -> `[T, D]` (linear when parallel)."""
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.sin().abs() < 1e-6:
        return torch.lerp(a[None], b[None], t[:, None])
    return (torch.sin((1 - t[:, None]) * omega) * a + torch.sin(t[:, None] * omega) * b) / omega.sin()


class LatentTraversal(EndOfRun):
    """For models that `decode` a flat latent (`latent_shape` of length 1: GANs, VAEs, autoencoders, BiGAN):

    - `dirpath/traversal.png`: a row per latent dimension (the first `dims`), that dimension swept over
      [-`span`, `span`] in `steps` steps with the others fixed (in standard deviations around the code mean
      for a model with `code_gaussian`, i.e. an autoencoder);
    - `dirpath/interpolation.png`: `pairs` rows, each from one latent to another, `slerp` or `linear`.

    The latents are the encodings of test images for models with `encode`, else the fixed grid noise (and
    labels, for conditional models). Grids are enlarged to at least `min_width` px."""

    def __init__(
        self,
        dirpath: str,
        dims: int = 8,
        steps: int = 11,
        span: float = 3.0,
        pairs: int = 4,
        interpolation: str = "slerp",
        min_width: int = 600,
        every_n_epochs: int | None = None,
    ) -> None:
        check_choice("callbacks.latent_traversal.interpolation", interpolation, ("slerp", "linear"))
        super().__init__(dirpath, every_n_epochs)
        self.dims, self.steps, self.span, self.pairs = dims, steps, span, pairs
        self.interpolation, self.min_width = interpolation, min_width

    def missing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        shape = getattr(pl_module, "latent_shape", None)
        if not hasattr(pl_module, "decode") or shape is None:
            return f"{type(pl_module).__name__} has no decoder (decode)"
        if len(shape) != 1:
            return f"{type(pl_module).__name__}'s latent is a grid {tuple(shape)}, not a flat vector"
        return None

    def _anchors(self, trainer: L.Trainer, pl_module: L.LightningModule, k: int) -> tuple[Tensor, Tensor | None]:
        """`k` latents `[k, D]` (fewer when the test set is smaller) and their labels `[k]` or None."""
        if hasattr(pl_module, "encode"):
            x = torch.cat([x for x, _ in test_batches(trainer, k)])
            with evaluating(pl_module):
                return pl_module.encode(x.to(pl_module.device)), None
        z, y = pl_module.fixed_inputs()
        return z[:k], None if y is None else y[:k]

    def _sweep(self, pl_module: L.LightningModule, base: Tensor) -> Tensor:
        """`[dims * steps, D]`: `base` repeated, dimension i swept along row i."""
        dims, t = min(self.dims, base.numel()), torch.linspace(-self.span, self.span, self.steps, device=base.device)
        center, scale = torch.zeros_like(base), torch.ones_like(base)
        if hasattr(pl_module, "code_gaussian"):
            mean, cov = pl_module.code_gaussian()
            center, scale = mean.to(base), cov.diagonal().sqrt().to(base)
        z = base.repeat(dims * self.steps, 1)
        for i in range(dims):
            z[i * self.steps : (i + 1) * self.steps, i] = center[i] + t * scale[i]
        return z

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        z, y = self._anchors(trainer, pl_module, 2 * self.pairs)
        sweep = self._sweep(pl_module, z[0])
        images = pl_module.generate(sweep, None if y is None else y[0].expand(len(sweep)))
        grid = image_grid(images, self.steps, self.min_width)
        publish_grid(trainer, grid, self.dirpath / f"traversal{suffix}.png", "latent/traversal")
        if len(z) < 2:
            return
        t = torch.linspace(0, 1, self.steps, device=z.device)
        rows = [self._interpolate(z[i], z[i + 1], t) for i in range(0, len(z) - 1, 2)]
        labels = None if y is None else y[: 2 * len(rows) : 2].repeat_interleave(self.steps)  # a row: a's label
        images = pl_module.generate(torch.cat(rows), labels)
        grid = image_grid(images, self.steps, self.min_width)
        publish_grid(trainer, grid, self.dirpath / f"interpolation{suffix}.png", "latent/interpolation")

    def _interpolate(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """`[T, D]` from `a` to `b` at fractions `t` `[T]`."""
        return slerp(a, b, t) if self.interpolation == "slerp" else torch.lerp(a[None], b[None], t[:, None])


class CodebookUsage(EndOfRun):
    """`dirpath/usage.png`: for a model with a codebook (`codes(x)` and `codebook_size`, the VQ-VAE), how often
    each code is chosen over the positions of the first `n_images` test images, as a bar plot."""

    def __init__(self, dirpath: str, n_images: int = 2000, every_n_epochs: int | None = None) -> None:
        super().__init__(dirpath, every_n_epochs)
        self.n_images = n_images

    def missing(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        if hasattr(pl_module, "codes") and hasattr(pl_module, "codebook_size"):
            return None
        return f"{type(pl_module).__name__} has no codebook (codes, codebook_size)"

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, suffix: str) -> None:
        counts, n = torch.zeros(pl_module.codebook_size, dtype=torch.long), 0
        for x, _ in test_batches(trainer, self.n_images):
            with evaluating(pl_module):
                codes = pl_module.codes(x.to(pl_module.device)).cpu()
            counts += torch.bincount(codes.flatten(), minlength=pl_module.codebook_size)
            n += len(x)
        title = f"codebook usage over {n} test images"
        path = plots.codebook_usage(counts.numpy(), self.dirpath / f"usage{suffix}.png", title)
        publish_png(trainer, path, "codebook/usage")
