"""Sample-quality metrics of generated features against cached real ones, with the protocol of each record."""

import platform
from collections.abc import Callable

import lightning
import torch
import torchmetrics
from torch import Tensor

from genlab.metrics import keys, stats
from genlab.metrics.features import Extractor


def classifier_metrics(
    real: dict[str, Tensor], fake: dict[str, Tensor], kid_subset_size: int = 1000, kid_subsets: int = 100, pr_k: int = 3
) -> dict[str, float]:
    """cFID, cKID, classifier IS, modes covered (>= 1% of samples), class-KL and precision/recall; with the
    requested `labels` of conditional samples in `fake`, the class agreement (classifier's label == requested)."""
    num_classes = real["probs"].shape[1]
    fake_hist = stats.class_histogram(fake["probs"].argmax(1), num_classes)
    real_hist = stats.class_histogram(real["probs"].argmax(1), num_classes)
    radii = real.get(f"radii_k{pr_k}")
    if radii is None:  # the real k-NN radii depend only on the reference: computed once per reference dict
        radii = real[f"radii_k{pr_k}"] = stats.kth_nn_radius(real["features"].float(), pr_k)
    precision, recall = stats.precision_recall(real["features"], fake["features"], k=pr_k, real_radii=radii)
    agreement = {}
    if "labels" in fake:
        agreement[keys.CLASS_AGREEMENT] = float((fake["probs"].argmax(1) == fake["labels"]).float().mean())
    return agreement | {
        keys.CFID: stats.fid(real["features"], fake["features"]),
        keys.CKID: stats.kid(real["features"], fake["features"], kid_subset_size, kid_subsets, memo=real),
        keys.CIS: stats.inception_score(fake["probs"]),
        keys.MODES: float(stats.mode_coverage(fake_hist)),
        keys.CLASS_KL: stats.class_kl(fake_hist, real_hist),
        keys.PRECISION: precision,
        keys.RECALL: recall,
    }


def inception_metrics(
    real: dict[str, Tensor], fake: dict[str, Tensor], kid_subset_size: int = 1000, kid_subsets: int = 100
) -> dict[str, float]:
    """Inception FID and KID."""
    return {
        keys.FID: stats.fid(real["features"], fake["features"]),
        keys.KID: stats.kid(real["features"], fake["features"], kid_subset_size, kid_subsets, memo=real),
    }


METRIC_SETS: dict[str, Callable[..., dict[str, float]]] = {
    "classifier": classifier_metrics,
    "inception": inception_metrics,
}


def protocol(n_real: int, n_fake: int, split: str, extractor: Extractor, **extra: object) -> dict:
    """How a record was computed: sample counts, reference split, extractor and its weights, resize, versions."""
    return {
        "n_real": n_real,
        "n_fake": n_fake,
        "reference_split": split,
        "extractor": extractor.name,
        "extractor_weights_sha256": extractor.weights_hash,
        "resize": extractor.resize,
        "versions": {
            "torch": torch.__version__,
            "torchmetrics": torchmetrics.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
        **extra,
    }
