"""Data path: genlab's batched uint8 gather vs torchvision's per-item pipeline over the same images.

torchvision's MNIST.__getitem__ builds a PIL image per item and applies ToTensor + Normalize; the
baseline here does exactly that on the same uint8 tensor, with the same DataLoader settings.
Uses real MNIST from $GENLAB_DATA_DIR when present, else the embedded digits resized to 28 px.

    python -m benchmarks.data_path [--epochs 2] [--batch-size 128]
"""

import argparse
import os
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from genlab.data import DigitsDataModule, TorchvisionDataModule


class PerItemPIL(Dataset):
    """torchvision's per-item path: uint8 -> PIL -> ToTensor -> Normalize((0.5,), (0.5,)) -> [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i, 0].numpy(), mode="L")
        return self.transform(img), int(self.labels[i])


def epoch_seconds(loader: DataLoader, epochs: int) -> float:
    best = float("inf")
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    root = Path(os.environ.get("GENLAB_DATA_DIR", "data"))
    if (root / "MNIST" / "raw").is_dir():
        dm, name = TorchvisionDataModule("mnist", str(root), download=False, image_size=28, channels=1), "MNIST"
    else:
        dm, name = DigitsDataModule(image_size=28, channels=1, val_fraction=0.0), "digits (28 px)"
    dm.batch_size = args.batch_size
    dm.setup("fit")
    train = dm.data_train
    ours = epoch_seconds(dm.train_dataloader(), args.epochs)
    baseline = PerItemPIL(train.images, train.labels)
    theirs = epoch_seconds(DataLoader(baseline, batch_size=args.batch_size, shuffle=True), args.epochs)
    n = len(train)
    print(f"data path, {name}, {n} training images, batch {args.batch_size}, num_workers 0, best of {args.epochs}")
    print(f"  torchvision per-item PIL pipeline: {theirs:7.3f} s/epoch  ({n / theirs:10.0f} img/s)")
    print(f"  genlab in-memory uint8 batches:    {ours:7.3f} s/epoch  ({n / ours:10.0f} img/s)")
    print(f"  speed-up: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
