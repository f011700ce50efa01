"""Sample quality of a generative model against a dataset: extractors, cached references, metrics, protocol."""

import logging
from collections.abc import Sequence
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
from genlab.models.sampling import sample_batches, sample_labels

log = logging.getLogger(__name__)


def is_labelled(datamodule) -> bool:
    """Single-label class data (the dataset classifier applies)."""
    return datamodule.num_classes > 1 and getattr(datamodule, "factor", "label") is not None


class QualityMetrics:
    """Classifier metrics on labelled data and Inception FID/KID where weights exist, against two references.

    `setup(datamodule, splits)` trains or loads the cached classifier and the cached reference features of each
    split: "val" (images held out of the training file, or the official validation split: `val/*` and the
    choice of the best checkpoint) and "test" (the test split: `test/*` and `genlab.evaluate`). Then
    `features(model, n)` embeds generated samples and `compute(fake, split)` returns (metrics, protocol) per set.
    """

    def __init__(
        self,
        cache_dir: str,
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
        self.cache_dir, self.batch_size = Path(cache_dir), batch_size
        self.use_classifier, self.use_inception = classifier, inception
        self.classifier_settings = ClassifierSettings(**(classifier_settings or {}))
        self.inception_weights, self.inception_download = inception_weights, inception_download
        self.kid_subset_size, self.kid_subsets, self.pr_k = kid_subset_size, kid_subsets, pr_k
        self.extractors: dict[str, Extractor] = {}
        self.references: dict[str, dict[str, dict[str, Tensor]]] = {}  # split -> extractor -> features
        self.reference_info: dict[str, dict] = {}  # split -> what the reference is (protocol)
        self.info: dict[str, object] = {}

    def setup(self, datamodule, splits: Sequence[str] = ("val", "test")) -> None:
        """Extractors (once), then the reference features of each of `splits` not set up yet. A "val" split
        without images (`data.val_fraction=0`) has no reference: `has_reference("val")` is then False."""
        if not self.extractors:
            self._setup_extractors(datamodule)
        for split in splits:
            if split in self.reference_info or not self.extractors:
                continue
            real = datamodule.reference(split)
            self.reference_info[split] = describe_reference(datamodule, split, real)
            if real is not None:
                self.references[split] = {
                    name: reference_features(
                        self.cache_dir, datamodule, split, extractor, pr_k=self.pr_k if name == "classifier" else None
                    )
                    for name, extractor in self.extractors.items()
                }

    def _setup_extractors(self, datamodule) -> None:
        if self.use_classifier and is_labelled(datamodule):
            # one classifier per dataset, whatever `subset` says: runs on subsets are scored by the same one
            key = dataset_key(datamodule, whole_file=True)
            net, info = cached_classifier(key, datamodule, self.cache_dir, self.classifier_settings)
            self.extractors["classifier"] = ClassifierExtractor(
                net, f"classifier-{key.split('|')[0]}", info["weights_hash"]
            )
            self.info[keys.CLASSIFIER_ACC] = info["test_acc"]
            self.info["classifier_n_train"] = info["n_train"]
        if self.use_inception:
            inception = load_inception(self.inception_weights, self.cache_dir, self.inception_download)
            if inception is not None:
                self.extractors["inception"] = inception

    def has_reference(self, split: str) -> bool:
        return split in self.references

    @property
    def monitor(self) -> str | None:
        """The headline quality key: classifier FID on labelled data, else Inception FID, else None."""
        return keys.CFID if "classifier" in self.extractors else keys.FID if "inception" in self.extractors else None

    def features(self, model, n: int, offset: int = 0) -> dict[str, dict[str, Tensor]]:
        """Features of `n` new samples per extractor (one pass of sampling feeds every extractor); a conditional
        model's requested labels go with the classifier's features (`labels`: its class agreement)."""
        batches = list(sample_batches(model, n, self.batch_size, offset))
        fake = {name: extract(ex, batches) for name, ex in self.extractors.items()}
        labels = sample_labels(model, n, offset)
        if labels is not None and "classifier" in fake:
            fake["classifier"]["labels"] = labels
        return fake

    @torch.no_grad()
    def reconstruction_accuracy(self, model, batches: Sequence[Tensor], labels: Tensor) -> dict[str, float]:
        """The fraction of test images whose reconstruction the dataset classifier labels as the image's own
        label (`recon_accuracy`); {} without a classifier."""
        if "classifier" not in self.extractors:
            return {}
        probs = extract(self.extractors["classifier"], (model.reconstruct(x).float() for x in batches))["probs"]
        return {keys.RECON_ACC: float((probs.argmax(1) == labels).float().mean())}

    def compute(
        self, fake: dict[str, dict[str, Tensor]], split: str, kid_subsets: int | None = None
    ) -> tuple[dict[str, float], dict[str, dict]]:
        """(metrics by key, protocol by extractor set) for the features of generated samples against the
        reference of `split` ("val" or "test", set up by `setup`)."""
        if split not in self.references:
            raise ValueError(f"no {split!r} reference was set up; expected one of: {sorted(self.references)}")
        metrics: dict[str, float] = {}
        protocols: dict[str, dict] = {}
        kid = {"kid_subset_size": self.kid_subset_size, "kid_subsets": kid_subsets or self.kid_subsets}
        for name, feats in fake.items():
            if not all(torch.isfinite(t).all() for t in feats.values() if t.is_floating_point()):
                # a diverged model: its metrics are meaningless, and some torch kernels crash on NaN input
                log.warning("Generated samples give non-finite %s features: %s metrics skipped", name, name)
                continue
            real = self.references[split][name]
            options = {**kid, "pr_k": self.pr_k} if name == "classifier" else kid
            metrics.update(METRIC_SETS[name](real, feats, **options))
            extra = (
                {k: self.info.get(k) for k in (keys.CLASSIFIER_ACC, "classifier_n_train")}
                if name == "classifier"
                else {}
            )
            protocols[name] = protocol(
                len(real["features"]),
                len(feats["features"]),
                split,
                self.extractors[name],
                **options,
                **extra,
                reference=self.reference_info[split],
            )
        return metrics, protocols


def describe_reference(datamodule, split: str, real) -> dict:
    """What a reference is, for the protocol: its split, where its images come from, how many there are."""
    n = 0 if real is None else len(real)
    if split == "test":
        return {"split": "test", "source": "the test split", "n_images": n}
    if datamodule.official_val:
        return {"split": "val", "source": "the official validation split", "n_images": n}
    return {"split": "val", "source": "held out of the training file", "n_images": n, **datamodule.holdout}
