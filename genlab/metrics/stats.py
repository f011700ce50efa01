"""Features -> statistics -> number: small pure functions. FID and KID go through torchmetrics.

Feature tensors are `[N, D]` floats; probabilities are `[N, K]` rows summing to 1.
"""

import torch
from torch import Tensor, nn
from torchmetrics.image import FrechetInceptionDistance
from torchmetrics.image.kid import poly_kernel, poly_mmd

from genlab.utils.speed import release_free_memory


class _Features(nn.Module):
    """Identity "extractor": lets torchmetrics' FID/KID take precomputed features `[N, D]`."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    """`[N, D]` -> (mean `[D]`, unbiased covariance `[D, D]`), in float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def fid(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to `real` and `fake` features (torchmetrics' FID)."""
    metric = FrechetInceptionDistance(feature=_Features(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100, seed: int = 0) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018), mean over `subsets` random subsets: torchmetrics'
    `KernelInceptionDistance.compute`, one subset at a time (the same draws from the global RNG, in the same
    order, and its `poly_mmd`), with the heap's free pages handed back between subsets. Each subset makes three
    float64 kernels of `subset_size`^2 (8 MB each at 1,000); in a run, glibc kept them and RSS grew about 15 MB
    per subset (docs/benchmarks.md).

    When every fake image is in every subset (`len(fake) <= subset_size`, as in the per-epoch evaluation of
    1,000 samples), a subset's fake draw is a permutation of them all: the fake-fake kernel's sum and each real
    image's kernel sum over the fakes are then the same in every subset and are computed once, so a subset
    makes one kernel instead of three (the same value up to float64 summation order)."""
    size = min(subset_size, len(real), len(fake))
    real, fake = real.double(), fake.double()
    every_fake = size == len(fake)
    if every_fake:
        fake_fake = poly_kernel(fake, fake)
        fake_sum = fake_fake.sum() - fake_fake.diagonal().sum()
        del fake_fake
        real_fake_sums = torch.cat([poly_kernel(chunk, fake).sum(1) for chunk in real.split(1000)])
    scores = []
    with torch.random.fork_rng():  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        for _ in range(subsets):
            real_idx = torch.randperm(len(real))[:size]
            fake_idx = torch.randperm(len(fake))[:size]  # drawn in every case: the real draws stay torchmetrics'
            if every_fake:
                subset = real[real_idx]
                real_real = poly_kernel(subset, subset)  # one tensor on both sides: BLAS's symmetric product
                real_sum = real_real.sum() - real_real.diagonal().sum()
                del real_real
                score = (real_sum + fake_sum) / (size * (size - 1)) - 2 * real_fake_sums[real_idx].sum() / size**2
                scores.append(score)
            else:
                f_real, f_fake = real[real_idx], fake[fake_idx]
                scores.append(poly_mmd(f_real, f_fake))
                del f_real, f_fake
            release_free_memory()
    return float(torch.stack(scores).mean())


def inception_score(probs: Tensor, splits: int = 10) -> float:
    """IS (Salimans et al. 2016): mean over `splits` of exp(E_x KL(p(y|x) || p(y)))."""
    scores = []
    for part in probs.double().chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
        scores.append(kl.mean().exp())
    return float(torch.stack(scores).mean())


def class_histogram(predicted: Tensor, num_classes: int) -> Tensor:
    """Predicted labels `[N]` -> class frequencies `[num_classes]` summing to 1."""
    return torch.bincount(predicted, minlength=num_classes).double() / len(predicted)


def mode_coverage(hist: Tensor, threshold: float = 0.01) -> int:
    """Number of classes that receive at least `threshold` of the samples."""
    return int((hist >= threshold).sum())


def class_kl(fake_hist: Tensor, real_hist: Tensor, eps: float = 1e-6) -> float:
    """KL(fake || real) between class histograms (0 when they match; large when modes are over-drawn)."""
    p, q = fake_hist.double() + eps, real_hist.double() + eps
    p, q = p / p.sum(), q / q.sum()
    return float((p * (p / q).log()).sum())


def kth_nn_radius(x: Tensor, k: int, chunk: int = 256) -> Tensor:
    """Distance from each row of `x` to its k-th nearest other row `[N]`."""
    radii = [torch.cdist(part, x).kthvalue(k + 1, dim=1).values for part in x.split(chunk)]  # +1: self at 0
    return torch.cat(radii)


def _inside_any_ball(query: Tensor, centres: Tensor, radii: Tensor, chunk: int = 256) -> Tensor:
    """Boolean `[M]`: whether each query row lies within radii[j] of some centre j."""
    return torch.cat([(torch.cdist(part, centres) <= radii).any(1) for part in query.split(chunk)])


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, real_radii: Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991), k-NN balls.

    Precision: share of fake samples inside the real manifold; recall: share of real inside the fake one.
    `real_radii` (`kth_nn_radius(real, k)`) may be passed in when the real set is reused.
    """
    real, fake = real.float(), fake.float()
    real_radii = kth_nn_radius(real, k) if real_radii is None else real_radii
    precision = _inside_any_ball(fake, real, real_radii).double().mean()
    recall = _inside_any_ball(real, fake, kth_nn_radius(fake, k)).double().mean()
    return float(precision), float(recall)
