"""Checks the dataset-classifier metrics on real MNIST (issue acceptance 2).

    GENLAB_DATA_DIR=../shared/data python -m benchmarks.metrics_mnist

Trains (or loads from the cache dir) the MNIST classifier and prints its test accuracy, the classifier FID of
10,000 training images against the test set next to that of 10,000 uniform-noise images, and the classifier
IS and mode coverage of the test set.
"""

import os
import time
from pathlib import Path

import torch

from genlab.data import TorchvisionDataModule
from genlab.metrics import QualityMetrics, keys
from genlab.metrics.cache import split_tensors
from genlab.utils.images import uint8_to_model


class Images:
    """A stand-in generator that serves fixed images in [-1, 1]."""

    device = torch.device("cpu")

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.i = images, 0

    def sample(self, n: int, y=None) -> torch.Tensor:
        self.i += n
        return uint8_to_model(self.images[self.i - n : self.i])


def main() -> None:
    root = os.environ.get("GENLAB_DATA_DIR", "data")
    cache = os.environ.get("GENLAB_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache"))
    dm = TorchvisionDataModule(dataset="mnist", root=root, download=False, image_size=28, channels=1)
    start = time.perf_counter()
    quality = QualityMetrics(cache, inception=False)
    quality.setup(dm, splits=("test",))
    print(
        f"classifier test accuracy: {quality.info[keys.CLASSIFIER_ACC]:.4f} (setup {time.perf_counter() - start:.1f} s)"
    )
    train, _ = split_tensors(dm.load("train"))
    test, _ = split_tensors(dm.load("test"))
    noise = torch.randint(
        0, 256, (10000, *train.shape[1:]), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    results = {}
    for name, images in [("train[:10000]", train[:10000]), ("uniform noise", noise), ("test", test)]:
        results[name], _ = quality.compute(quality.features(Images(images), len(images)), "test")
        r = results[name]
        print(
            f"{name:>14} vs test: cFID {r[keys.CFID]:.4f}  cIS {r[keys.CIS]:.3f}  modes {r[keys.MODES]:.0f}  "
            f"class-KL {r[keys.CLASS_KL]:.5f}  precision {r[keys.PRECISION]:.3f}  recall {r[keys.RECALL]:.3f}"
        )
    ratio = results["train[:10000]"][keys.CFID] / results["uniform noise"][keys.CFID]
    print(f"train-vs-test cFID / noise cFID = {100 * ratio:.4f} %")


if __name__ == "__main__":
    main()
