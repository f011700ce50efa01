"""Sample quality of a generative model against a dataset: extractors, cached references, metrics, protocol."""

import logging
from pathlib import Path

import torch
from torch import Tensor

from genlab.metrics import keys
from genlab.metrics.cache import dataset_key
from genlab.metrics.classifier import ClassifierSettings, cached_classifier
from genlab.metrics.features import ClassifierExtractor, Extractor, extract
from genlab.metrics.inception import load_inception
from genlab.metrics.quality import METRIC_SETS, protocol
from genlab.metrics.reference import reference_features
from genlab.models.sampling import sample_batches

log = logging.getLogger(__name__)


def is_labelled(datamodule) -> bool:
    """Single-label class data (the dataset classifier applies)."""
    return datamodule.num_classes > 1 and getattr(datamodule, "factor", "label") is not None


class QualityMetrics:
    """Classifier metrics on labelled data and Inception FID/KID where weights exist.

    `setup(datamodule)` trains or loads the cached classifier and the cached reference features; then
    `features(model, n)` embeds generated samples and `compute(fake)` returns (metrics, protocol) per set.
    """

    def __init__(
        self,
        cache_dir: str,
        reference_split: str = "test",
        classifier: bool = True,
        classifier_settings: dict | None = None,
        inception: bool = True,
        inception_weights: str | None = None,
        inception_download: bool = True,
        batch_size: int = 500,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        pr_k: int = 3,
    ) -> None:
        self.cache_dir, self.reference_split, self.batch_size = Path(cache_dir), reference_split, batch_size
        self.use_classifier, self.use_inception = classifier, inception
        self.classifier_settings = ClassifierSettings(**(classifier_settings or {}))
        self.inception_weights, self.inception_download = inception_weights, inception_download
        self.kid_subset_size, self.kid_subsets, self.pr_k = kid_subset_size, kid_subsets, pr_k
        self.extractors: dict[str, Extractor] = {}
        self.references: dict[str, dict[str, Tensor]] = {}
        self.info: dict[str, object] = {}

    def setup(self, datamodule) -> None:
        if self.extractors:
            return
        if self.use_classifier and is_labelled(datamodule):
            key = dataset_key(datamodule)
            net, info = cached_classifier(key, datamodule, self.cache_dir, self.classifier_settings)
            self.extractors["classifier"] = ClassifierExtractor(
                net, f"classifier-{key.split('|')[0]}", info["weights_hash"]
            )
            self.info[keys.CLASSIFIER_ACC] = info["test_acc"]
        if self.use_inception:
            inception = load_inception(self.inception_weights, self.cache_dir, self.inception_download)
            if inception is not None:
                self.extractors["inception"] = inception
        for name, extractor in self.extractors.items():
            self.references[name] = reference_features(self.cache_dir, datamodule, self.reference_split, extractor)

    @property
    def monitor(self) -> str | None:
        """The headline quality key: classifier FID on labelled data, else Inception FID, else None."""
        return keys.CFID if "classifier" in self.extractors else keys.FID if "inception" in self.extractors else None

    def features(self, model, n: int, offset: int = 0) -> dict[str, dict[str, Tensor]]:
        """Features of `n` new samples per extractor (one pass of sampling feeds every extractor)."""
        batches = list(sample_batches(model, n, self.batch_size, offset))
        return {name: extract(ex, batches) for name, ex in self.extractors.items()}

    def compute(
        self, fake: dict[str, dict[str, Tensor]], kid_subsets: int | None = None
    ) -> tuple[dict[str, float], dict[str, dict]]:
        """(metrics by key, protocol by extractor set) for the features of generated samples."""
        metrics: dict[str, float] = {}
        protocols: dict[str, dict] = {}
        kid = {"kid_subset_size": self.kid_subset_size, "kid_subsets": kid_subsets or self.kid_subsets}
        for name, feats in fake.items():
            if not all(torch.isfinite(t).all() for t in feats.values() if t.is_floating_point()):
                # a diverged model: its metrics are meaningless, and some torch kernels crash on NaN input
                log.warning("Generated samples give non-finite %s features: %s metrics skipped", name, name)
                continue
            real = self.references[name]
            options = {**kid, "pr_k": self.pr_k} if name == "classifier" else kid
            metrics.update(METRIC_SETS[name](real, feats, **options))
            extra = {keys.CLASSIFIER_ACC: self.info.get(keys.CLASSIFIER_ACC)} if name == "classifier" else {}
            protocols[name] = protocol(
                len(real["features"]),
                len(feats["features"]),
                self.reference_split,
                self.extractors[name],
                **options,
                **extra,
            )
        return metrics, protocols
