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


def kid(
    real: Tensor,
    fake: Tensor,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
    memo: dict[str, Tensor] | None = None,
) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018), mean over `subsets` random subsets: torchmetrics'
    `KernelInceptionDistance.compute`, one subset at a time (the same draws from the global RNG, in the same
    order, and its `poly_mmd`), with the heap's free pages handed back between subsets. Each subset makes three
    float64 kernels of `subset_size`^2 (8 MB each at 1,000); in a run, glibc kept them and RSS grew about 15 MB
    per subset (docs/benchmarks.md).

    When every fake image is in every subset (`len(fake) <= subset_size`, as in the per-epoch evaluation of
    1,000 samples), a subset's fake draw is a permutation of them all: the fake-fake kernel's sum and each real
    image's kernel sum over the fakes are then the same in every subset and are computed once, so a subset
    makes one kernel instead of three (the same value up to float64 summation order). That kernel, of the
    subset's real draw, depends only on `real` and on the draws, which `seed` and the sizes fix: with a `memo`
    dict that is kept with `real` (a reference's features), the draws and each one's kernel sum are stored in it
    and later evaluations against the same `real` make no kernel per subset (the same values, not recomputed)."""
    size = min(subset_size, len(real), len(fake))
    real, fake = real.double(), fake.double()
    if size == len(fake):
        return _kid_every_fake(real, fake, subsets, seed, memo)
    scores = []
    with torch.random.fork_rng():  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        for _ in range(subsets):
            real_idx = torch.randperm(len(real))[:size]
            fake_idx = torch.randperm(len(fake))[:size]
            f_real, f_fake = real[real_idx], fake[fake_idx]
            scores.append(poly_mmd(f_real, f_fake))
            del f_real, f_fake
            release_free_memory()
    return float(torch.stack(scores).mean())


def _kid_every_fake(real: Tensor, fake: Tensor, subsets: int, seed: int, memo: dict[str, Tensor] | None) -> float:
    """`kid` when its subsets hold every fake (float64 `real` `[N, D]`, `fake` `[n, D]`, subsets of n)."""
    size = len(fake)
    key = f"kid_real_draws/{len(real)}/{size}/{subsets}/{seed}"
    if memo is not None and key in memo:
        draws, real_sums = memo[key], memo[key + "/sums"]
    else:
        draws, real_sums = _kid_real_draws(real, size, subsets, seed)
        if memo is not None:
            memo[key], memo[key + "/sums"] = draws, real_sums
    fake_fake = poly_kernel(fake, fake)
    fake_sum = fake_fake.sum() - fake_fake.diagonal().sum()
    del fake_fake
    real_fake_sums = torch.cat([poly_kernel(chunk, fake).sum(1) for chunk in real.split(1000)])
    scores = (real_sums + fake_sum) / (size * (size - 1)) - 2 * real_fake_sums[draws].sum(1) / size**2
    release_free_memory()
    return float(scores.mean())


def _kid_real_draws(real: Tensor, size: int, subsets: int, seed: int) -> tuple[Tensor, Tensor]:
    """The real draw of each of `kid`'s subsets (`[subsets, size]`: torchmetrics' draws, a fake draw of `size`
    after each, from the global RNG seeded with `seed`) and the off-diagonal sum of each draw's kernel
    `[subsets]`."""
    draws, sums = [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(subsets):
            draws.append(torch.randperm(len(real))[:size])
            torch.randperm(size)  # the fake draw, a permutation of every fake: it moves the RNG as torchmetrics'
            subset = real[draws[-1]]
            real_real = poly_kernel(subset, subset)  # one tensor on both sides: BLAS's symmetric product
            sums.append(real_real.sum() - real_real.diagonal().sum())
            del real_real, subset
            release_free_memory()
    return torch.stack(draws), torch.stack(sums)


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
