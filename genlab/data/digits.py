"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): the offline demo dataset."""

import torch

from genlab.data.base import GenDataModule, ImageTensorDataset, convert_channels, resize_uint8, seeded_split
from genlab.errors import check_choice


class DigitsDataModule(GenDataModule):
    """Digits resized from 8x8 to `image_size`. The held-out test split is a fixed 20% (seed 0)."""

    def __init__(self, num_classes: int = 10, test_fraction: float = 0.2, **kwargs) -> None:
        check_choice("data.num_classes", num_classes, (10,))
        super().__init__(num_classes=num_classes, class_names=[str(i) for i in range(10)], **kwargs)
        self.test_fraction = test_fraction
        self._all: ImageTensorDataset | None = None

    def read(self, split: str) -> ImageTensorDataset:
        if self._all is None:
            from sklearn.datasets import load_digits  # here: scikit-learn's import (0.1 s) only for runs that use it

            digits = load_digits()
            pixels = torch.from_numpy(digits.images).float().mul(255.0 / 16.0).round()  # (N, 8, 8) in [0, 16]
            images = resize_uint8(pixels.to(torch.uint8).unsqueeze(1), self.image_size)  # (N, 1, S, S)
            self._all = ImageTensorDataset(convert_channels(images, self.channels), torch.from_numpy(digits.target))
        train_idx, test_idx = seeded_split(len(self._all), self.test_fraction, seed=0)
        return self._all.select(train_idx if split == "train" else test_idx)
