"""The datamodule contract shared by every dataset.

Batches are `(x, y)`: `x` float32 `[B, C, H, W]` in [-1, 1]; `y` long `[B]` (-1 when unlabelled) or
`[B, K]` attribute labels. Images are stored as uint8 and normalised once per batch in `collate`.
"""

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import partial

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlab.data.augment import Augment, as_augment, augmented
from genlab.data.sampler import EpochShuffle, ResumableDataLoader
from genlab.data.splits import seeded_split, subset_split  # noqa: F401  (seeded_split: used by the datasets)
from genlab.errors import ConfigError
from genlab.utils.images import uint8_to_model

log = logging.getLogger(__name__)


class ImageTensorDataset(Dataset):
    """Images held in memory as one uint8 tensor `[N, C, H, W]`; batches are gathered in one indexing op."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4, (images.dtype, images.shape)
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of indices: one gather instead of B item lookups.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]

    def select(self, indices: Tensor) -> "ImageTensorDataset":
        return ImageTensorDataset(self.images[indices], self.labels[indices])


def collate(
    batch: "tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]", flips: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """uint8 images (already gathered, or a list of items) -> (float [-1, 1] images, labels). With a `flips`
    generator, each image is mirrored left-right with probability 1/2, on the uint8 batch."""
    if isinstance(batch, list):
        batch = (torch.stack([b[0] for b in batch]), torch.stack([torch.as_tensor(b[1]) for b in batch]))
    images, labels = batch
    if flips is not None:
        flip = torch.rand(images.shape[0], generator=flips) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)  # (B,) -> (B, 1, 1, 1)
    return uint8_to_model(images), labels


def resize_uint8(images: Tensor, image_size: int) -> Tensor:
    """Resize uint8 `[N, C, h, w]` to `[N, C, image_size, image_size]` (antialiased bilinear)."""
    if images.shape[-1] == image_size and images.shape[-2] == image_size:
        return images
    out = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 `[N, c, H, W]` -> `[N, channels, H, W]`: grey is repeated to RGB, RGB is turned to luminance."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ConfigError(f"data.channels={channels} is not supported for {c}-channel images; expected 1 or 3")


def in_memory(dataset: Dataset, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """All uint8 images `[N, C, H, W]` and labels of a dataset (decoded once if it reads files per item)."""
    if isinstance(dataset, ImageTensorDataset):
        return dataset.images, dataset.labels
    parts = list(DataLoader(dataset, batch_size=batch_size))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


class GenDataModule(L.LightningDataModule, ABC):
    """Base datamodule: validation split, `subset`, augmentation, loaders, and the size/label attributes models need.

    `subset=N` trains on the first N images of the training file; the validation images are then drawn from the
    rest of it (see `subset_split`). `augment` adds noisy copies and a trained model's samples to the training set
    only (see genlab/data/augment.py).

    Subclasses implement `read(split)` for each split in `splits` (the splits on disk: "train" and "test", and
    "val" for datasets with an official validation split), returning a dataset of uint8 images with
    `select(indices)`. `load(split)` refuses any other split name. `reference(split)` gives the real images
    metrics compare against: "val" (what chooses the best checkpoint) and "test" (what is reported).
    """

    splits: tuple[str, ...] = ("train", "test")  # datasets with an official validation split add "val"

    def __init__(
        self,
        image_size: int,
        channels: int,
        num_classes: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        subset: int | None = None,
        split_seed: int = 0,
        class_names: list[str] | None = None,
        hflip: bool = False,
        shuffle_seed: int | None = None,
        augment: "Augment | Mapping | None" = None,
    ) -> None:
        super().__init__()
        # the training order's seed; None: the global seed at construction (genlab seeds before building data)
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else torch.initial_seed()
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} is out of range; expected 0 <= value < 1")
        if subset is not None and subset < 1:
            raise ConfigError(f"data.subset={subset} is invalid; expected a positive number of images or null")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} is not supported; expected 1 or 3")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.class_names = list(class_names) if class_names else None
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        # validation and test keep no activations for a backward pass: 4x the training batch fits where training
        # does, and the per-batch overhead is paid a quarter as often. Eval-mode nets give the same values at any
        # batch size (BatchNorm uses its running statistics); only the random draws (noise, samples) differ
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else 4 * batch_size
        # hflip's coin flips: their own stream, advanced once per training batch fetched and saved with the
        # checkpoint (state_dict), so they follow the loader's position and resume exactly
        self.flips = torch.Generator().manual_seed(self.shuffle_seed % 2**63)
        self.val_fraction, self.subset, self.split_seed = val_fraction, subset, split_seed
        self.augment = as_augment(augment)
        self.data_train = self.data_val = self.data_test = None
        self._real_train: Dataset | None = None  # the real training images, before augmentation
        self._short = 0  # validation images that `subset` left no room for in the rest of the file

    @property
    def official_val(self) -> bool:
        return "val" in self.splits

    def load(self, split: str) -> Dataset:
        """The whole `split` as stored on disk (one of `splits`), as a dataset with `select`."""
        if split not in self.splits:
            raise ConfigError(
                f"split {split!r} is not on disk for {type(self).__name__}; expected one of: "
                f"{', '.join(map(repr, self.splits))} (the validation images held out of the training file are "
                f"reference('val'), or data_val after setup)"
            )
        return self.read(split)

    @abstractmethod
    def read(self, split: str) -> Dataset:
        """The whole `split` (one of `splits`): called by `load`, which has checked the name."""

    def _train_val(self, pool: Dataset) -> tuple[Tensor, Dataset | None]:
        """(indices of `pool` the model trains on, the validation dataset or None)."""
        if self.official_val:
            return torch.arange(self.subset or len(pool)), self.load("val")
        if self.subset is None:
            train_idx, val_idx = seeded_split(len(pool), self.val_fraction, self.split_seed)
        else:
            train_idx, val_idx, self._short = subset_split(len(pool), self.subset, self.val_fraction, self.split_seed)
            if self._short:
                log.warning(
                    "data.subset=%d leaves %d of the %d images of the training file for validation, fewer than "
                    "val_fraction=%s asks (%d): the other %d come out of the first %d, which leaves %d for training",
                    self.subset,
                    len(pool) - self.subset,
                    len(pool),
                    self.val_fraction,
                    len(val_idx),
                    self._short,
                    self.subset,
                    len(train_idx),
                )
        return train_idx, pool.select(val_idx) if len(val_idx) else None

    @property
    def holdout(self) -> dict:
        """What divides the training file into training and validation images (part of cache keys)."""
        if self.official_val:
            return {"val": "official"}
        return {**self.pool_holdout, **({"val_after_first": self.subset} if self.subset is not None else {})}

    @property
    def pool_holdout(self) -> dict:
        """The hold-out that `train_pool` leaves out: the validation images of a run without `subset`."""
        if self.official_val:
            return {"val": "official"}
        return {"val_fraction": self.val_fraction, "split_seed": self.split_seed}

    def reference(self, split: str) -> Dataset | None:
        """Real images that metrics compare against, never trained on: "val" (held out of the training file,
        or the official validation split; None when `val_fraction` is 0) chooses the best checkpoint, "test"
        (the test split) gives the reported figures."""
        if split == "test":
            return self.load("test")
        if split == "val":
            self._hold_out()
            return self.data_val
        raise ConfigError(f"reference split {split!r} is not supported; expected one of: 'val', 'test'")

    def train_pool(self) -> Dataset:
        """What the dataset classifier learns from: the training file minus the validation images of a run
        without `subset`, whatever `subset` says. The classifier is a metric, not the model's data: one per
        dataset and hold-out, so runs on different subsets are scored by the same classifier. (With a subset,
        the validation images come from the rest of the file and may be among these: they only choose the
        checkpoint; the reported figures use the test split, which the classifier never sees.)"""
        pool = self.load("train")
        if self.official_val:
            return pool
        return pool.select(seeded_split(len(pool), self.val_fraction, self.split_seed)[0])

    def _hold_out(self) -> None:
        """The real training images and the validation images (once)."""
        if self._real_train is not None:
            return
        pool = self.load("train")
        if self.subset is not None and self.subset > len(pool):
            raise ConfigError(
                f"data.subset={self.subset} is larger than the training file ({len(pool)} images); expected at most "
                f"{len(pool)} or null"
            )
        train_idx, self.data_val = self._train_val(pool)
        self._real_train = pool.select(train_idx)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            self._hold_out()
            self.data_train = self._real_train
            if self.augment.active:
                self.data_train = ImageTensorDataset(*augmented(*in_memory(self._real_train), self.augment))
        if self.data_test is None and stage in (None, "test", "validate", "predict"):
            self.data_test = self.load("test")

    def _held_out(self) -> str:
        """How the validation images shrank the training set, for messages ("" when they did not)."""
        if self.official_val or not self.val_fraction or (self.subset is not None and not self._short):
            return ""
        return f" after holding out val_fraction={self.val_fraction}"

    def check_trainable(self) -> None:
        """Raise a ConfigError if the training set is too small to train on; warn if a batch exceeds it."""
        n = len(self.data_train)
        subset = f" with data.subset={self.subset}" if self.subset is not None else ""
        if n < 2:
            lower = " or lower data.val_fraction" if self._held_out() else ""
            raise ConfigError(
                f"the training set has {n} image{'s' * (n != 1)}{subset}{self._held_out()}: too small to train on; "
                f"expected at least 2 (raise data.subset{lower})"
            )
        if self.batch_size > n:  # one warning, not an error: "the whole set per batch" is a fair reading
            log.warning(
                "data.batch_size=%d is larger than the training set (%d images%s%s): training on batches of %d",
                self.batch_size,
                n,
                subset,
                self._held_out(),
                n,
            )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # training order: a permutation of (seed, epoch), resumable mid-epoch (see genlab/data/sampler.py)
        sampler = EpochShuffle(len(dataset), seed=self.shuffle_seed) if train else None
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=min(self.batch_size, len(dataset)) if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train and len(dataset) >= self.batch_size,  # BatchNorm needs B > 1
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(collate, flips=self.flips if self.hflip and train else None),
        )

    def state_dict(self) -> dict:
        return {"flips": self.flips.get_state()} if self.hflip else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if "flips" in state_dict:
            self.flips.set_state(state_dict["flips"])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.data_val, train=False) if self.data_val is not None else []

    def test_dataloader(self) -> DataLoader:
        if self.data_test is None:
            self.data_test = self.load("test")
        return self._loader(self.data_test, train=False)
