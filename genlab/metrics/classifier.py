"""The dataset classifier: a small CNN trained once per dataset and settings, cached on disk.

Its penultimate features (`features`, `[B, feature_dim]`) and softmax give the classifier-feature FID/KID,
the classifier Inception Score, mode coverage, class-KL and precision/recall.
"""

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.metrics.cache import atomic_save, digest, load_file, split_tensors, weights_hash
from genlab.utils.images import uint8_to_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierSettings:
    """What the cached classifier depends on (besides the dataset); part of its cache key."""

    width: int = 16
    feature_dim: int = 128
    epochs: int = 3
    min_steps: int = 600  # small datasets (digits) get at least this many optimiser steps
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class Classifier(nn.Module):
    """Two conv blocks (conv-BN-ReLU-maxpool), a `feature_dim` ReLU layer, a linear head to `num_classes`.

    Input `[B, C, H, W]` in [-1, 1] (any H, W >= 8); `features(x)` -> `[B, feature_dim]`, `forward(x)` -> logits.
    """

    def __init__(self, channels: int, num_classes: int, width: int = 16, feature_dim: int = 128) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.body = nn.Sequential(block(channels, width), block(width, 2 * width), nn.AdaptiveAvgPool2d(4))
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.body(x))  # (B, C, H, W) -> (B, 2w, 4, 4) -> (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def train_classifier(images: Tensor, labels: Tensor, num_classes: int, settings: ClassifierSettings) -> Classifier:
    """Fit on uint8 images `[N, C, H, W]` with labels `[N]`; returns the net in eval mode."""
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        net = Classifier(images.shape[1], num_classes, settings.width, settings.feature_dim)
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
        per_epoch = -(-len(images) // settings.batch_size)
        epochs = max(settings.epochs, -(-settings.min_steps // per_epoch))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr * 3, total_steps=epochs * per_epoch)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(images), generator=gen).split(settings.batch_size):
                loss = F.cross_entropy(net(uint8_to_model(images[idx])), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: Classifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images `[N, C, H, W]`."""
    correct = sum(
        int((net(uint8_to_model(x)).argmax(1) == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    return correct / len(images)


def cached_classifier(
    dataset_key: str, datamodule, cache_dir: str | Path, settings: ClassifierSettings
) -> tuple[Classifier, dict]:
    """The classifier for `datamodule`, trained on its training images only (the training file minus the
    validation images: `datamodule.train_pool()`), never on validation or test images; tested on the test split.

    Cached under `<cache_dir>/classifiers/`, keyed by `dataset_key` (without `subset`: see `train_pool`), the
    hold-out of the validation images and `settings`. Returns (net in eval mode, info: test accuracy, cache file,
    hash of the weights).
    """
    key = digest(
        {"dataset": dataset_key, "trained_on": "train minus val", **datamodule.pool_holdout, **asdict(settings)}
    )
    path = Path(cache_dir) / "classifiers" / f"{dataset_key.split('|')[0]}-{key}.pt"
    stored = load_file(path)
    if stored is None:
        (x_train, y_train), (x_test, y_test) = (
            split_tensors(d) for d in (datamodule.train_pool(), datamodule.load("test"))
        )
        start = time.perf_counter()
        net = train_classifier(x_train, y_train.long(), datamodule.num_classes, settings)
        acc = accuracy(net, x_test, y_test.long())
        log.info(
            "Trained the %s classifier in %.1f s: test accuracy %.4f (cached at %s)",
            dataset_key,
            time.perf_counter() - start,
            acc,
            path,
        )
        stored = {
            "state_dict": net.state_dict(),
            "test_acc": acc,
            "n_train": len(x_train),
            "channels": x_train.shape[1],
            "num_classes": datamodule.num_classes,
            "settings": asdict(settings),
        }
        atomic_save(stored, path)
    net = Classifier(stored["channels"], stored["num_classes"], settings.width, settings.feature_dim)
    net.load_state_dict(stored["state_dict"])
    net.eval().requires_grad_(False)
    info = {"test_acc": stored["test_acc"], "n_train": stored.get("n_train"), "path": str(path)}
    return net, {**info, "weights_hash": weights_hash(stored["state_dict"])}
