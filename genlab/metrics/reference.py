"""Reference features of real images, computed once per (dataset, split, extractor, image size) and cached.

Two references: "val" (images held out of the training file, or the official validation split) for `val/*` and
the choice of the best checkpoint, "test" (the test split) for `test/*` and `genlab.evaluate`."""

import logging
from pathlib import Path

from torch import Tensor

from genlab.metrics.cache import atomic_save, dataset_key, digest, load_file, split_tensors
from genlab.metrics.features import Extractor, extract
from genlab.metrics.stats import kth_nn_radius, mean_cov
from genlab.utils.images import uint8_to_model

log = logging.getLogger(__name__)


def split_key(datamodule, split: str) -> dict:
    """What defines `split` beyond the dataset: the validation images depend on the hold-out of the training file."""
    return {"split": split, **(datamodule.holdout if split == "val" else {})}


def reference_path(cache_dir: str | Path, datamodule, split: str, extractor: Extractor) -> Path:
    key = dataset_key(datamodule)
    ident = digest(
        {"dataset": key, **split_key(datamodule, split), "extractor": extractor.name, "weights": extractor.weights_hash}
    )
    return Path(cache_dir) / "reference" / f"{key.split('|')[0]}-{split}-{extractor.name}-{ident}.pt"


def reference_features(
    cache_dir: str | Path, datamodule, split: str, extractor: Extractor, batch_size: int = 500, pr_k: int | None = None
) -> dict[str, Tensor]:
    """Features (`features`, `probs` for classifiers), their `mean`/`cov` and `labels` of the real `split`
    ("val" or "test": `datamodule.reference(split)`, which must exist), and with `pr_k` the distance of each
    real image's features to its `pr_k`-th nearest neighbour (`radii_k<pr_k>`, for precision/recall).

    Read from `<cache_dir>/reference/` when there; otherwise computed (the extractor runs) and cached. The
    radii are cached with the features: a 10,000-row k-NN search costs about 100 MB of transient memory on
    every run that computes it, more than anything else in a run's evaluation (docs/benchmarks.md).
    """
    path = reference_path(cache_dir, datamodule, split, extractor)
    stored = load_file(path)
    if stored is None:
        images, labels = split_tensors(datamodule.reference(split))
        stored = extract(extractor, (uint8_to_model(x) for x in images.split(batch_size)))
        stored["mean"], stored["cov"] = mean_cov(stored["features"])
        stored["labels"] = labels
        atomic_save(stored, path)
        log.info("Cached %s reference features of %d %s images at %s", extractor.name, len(images), split, path)
    radii = f"radii_k{pr_k}"
    if pr_k is not None and radii not in stored:  # also a file cached before the radii were kept in it
        stored[radii] = kth_nn_radius(stored["features"].float(), pr_k)
        try:
            atomic_save(stored, path)
        except OSError as err:  # a read-only shared cache: the radii serve this run, and are computed again next time
            log.warning("Could not add the k-NN radii to the cached reference %s (%s); using them unsaved", path, err)
    return stored
