"""Image files decoded per item: CelebA (official layout) and any image folder."""

import csv
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from genlab.data.base import GenDataModule, seeded_split
from genlab.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class ImageFileDataset(Dataset):
    """Decodes `files[i]`, centre-crops (to `crop` px, or the short side), resizes; yields uint8 `[C, S, S]`."""

    def __init__(
        self,
        files: Sequence[Path],
        labels: Tensor,
        image_size: int,
        channels: int,
        crop: int | None,
        strict: bool = True,
    ):
        self.files, self.labels = list(files), labels
        self.image_size, self.channels, self.crop, self.strict = image_size, channels, crop, strict
        self.mode = "L" if channels == 1 else "RGB"
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        for j in range(i, i + len(self.files)):  # not strict: an image that fails to decode is replaced by the next
            j %= len(self.files)
            try:
                return self._read(j), self.labels[j]
            except (OSError, ValueError, SyntaxError) as err:
                if self.strict:
                    raise unreadable(self.files[j], err, strict=True) from err
                self.skipped += 1
                log.warning(
                    "Skipped unreadable image %s (%s): %d so far in this process", self.files[j], err, self.skipped
                )
        raise DatasetCorruptError(f"none of the {len(self.files)} images can be read, e.g. {self.files[i]}")

    def _read(self, i: int) -> Tensor:
        with Image.open(self.files[i]) as img:
            img = img.convert(self.mode)
            crop = self.crop or min(img.size)
            x = T.functional.pil_to_tensor(img)  # (C, H, W) uint8
        x = T.functional.center_crop(x, [crop, crop])
        return T.functional.resize(x, [self.image_size, self.image_size], antialias=True)

    def select(self, indices: Tensor) -> "ImageFileDataset":
        files = [self.files[i] for i in indices.tolist()]
        return ImageFileDataset(files, self.labels[indices], self.image_size, self.channels, self.crop, self.strict)


def unreadable(path: Path, err: object, strict: bool, count: int = 1) -> DatasetCorruptError:
    many = f"{count} images cannot be read, e.g. " if count > 1 else "cannot read image "
    return DatasetCorruptError(
        f"data.strict={str(strict).lower()}: {many}{path} ({err}); expected readable images "
        f"({', '.join(IMAGE_SUFFIXES)}): remove or replace them, or set data.strict=false to skip them"
    )


def readable(files: list[Path]) -> tuple[list[int], list[tuple[Path, Exception]]]:
    """Indices of the files whose image header PIL can read, and the others with their errors."""
    good, bad = [], []
    for i, path in enumerate(files):
        try:
            with Image.open(path):
                good.append(i)
        except (OSError, ValueError, SyntaxError) as err:
            bad.append((path, err))
    return good, bad


class CelebADataModule(GenDataModule):
    """CelebA aligned faces, centre-cropped to 178 px and resized; `attribute` (e.g. Smiling) is the 0/1 label.

    Reads torchvision's layout `<root>/celeba/{img_align_celeba/, list_attr_celeba.txt,
    list_eval_partition.txt}` directly, using the official train/valid/test partition. torchvision's
    download code (Google Drive) is used only when those files are missing and `download` is true.
    """

    splits = ("train", "val", "test")
    REQUIRED = ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt")
    PARTITION = {"train": "0", "val": "1", "test": "2"}

    def __init__(self, root: str, attribute: str | None = None, download: bool = False, crop: int = 178, **kw):
        num_classes = 2 if attribute else 0
        names = [f"not {attribute}", attribute] if attribute else None
        super().__init__(num_classes=kw.pop("num_classes", num_classes), class_names=names, **kw)
        if self.num_classes != num_classes:
            raise ConfigError(
                f"data.num_classes={self.num_classes} does not match data.attribute={attribute!r}; "
                f"expected {num_classes}"
            )
        self.folder, self.attribute = Path(root).expanduser() / "celeba", attribute
        self.download, self.crop = download, crop

    def prepare_data(self) -> None:
        missing = [f for f in self.REQUIRED if not (self.folder / f).exists()]
        if not missing:
            return
        if not self.download:
            raise self._not_found(missing, "download is disabled")
        try:
            torchvision.datasets.CelebA(str(self.folder.parent), split="all", download=True)
        except Exception as err:
            raise self._not_found(missing, f"download failed: {err}") from err

    def _not_found(self, missing: list[str], reason: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"dataset 'celeba' not found in {self.folder} ({reason}). Expected: {', '.join(missing)} "
            f"(torchvision's CelebA layout). Provide them by setting GENLAB_DATA_DIR (or data.root) to the folder "
            f"that contains 'celeba/', or set data.download=true online (needs `gdown`)."
        )

    def _table(self, name: str, header: bool) -> tuple[list[str], dict[str, list[str]]]:
        with open(self.folder / name) as f:
            rows = list(csv.reader(f, delimiter=" ", skipinitialspace=True))
        columns = rows[1] if header else []
        rows = rows[2:] if header else rows
        return columns, {row[0]: row[1:] for row in rows if row}

    def read(self, split: str) -> ImageFileDataset:
        self.prepare_data()
        _, partition = self._table("list_eval_partition.txt", header=False)
        names = sorted(n for n, (p, *_) in partition.items() if p == self.PARTITION[split])
        labels = torch.full((len(names),), -1, dtype=torch.long)
        if self.attribute:
            columns, attrs = self._table("list_attr_celeba.txt", header=True)
            if self.attribute not in columns:
                raise ConfigError(
                    f"data.attribute={self.attribute!r} is not a CelebA attribute; expected one "
                    f"of: {', '.join(columns)}"
                )
            col = columns.index(self.attribute)
            labels = torch.tensor([int(attrs[n][col] == "1") for n in names], dtype=torch.long)
        files = [self.folder / "img_align_celeba" / n for n in names]
        return ImageFileDataset(files, labels, self.image_size, self.channels, self.crop)


class ImageFolderDataModule(GenDataModule):
    """Any folder of images. Labels come from subfolders (`root/<class>/*.png`) when present, else -1.

    The held-out test split is `test_fraction` of the images (seed `split_seed`).
    """

    def __init__(
        self, root: str, test_fraction: float = 0.1, crop: int | None = None, strict: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.test_fraction, self.crop = Path(root).expanduser(), test_fraction, crop
        self.strict = strict  # unreadable images: stop (true) or skip them with a warning (false)
        self._split: tuple[ImageFileDataset, ImageFileDataset] | None = None

    def fingerprint(self) -> str:
        """A hash of the image files' relative names, sizes and modification times (cheap: no file is read), so
        that caches keyed on this folder notice an image added, removed or changed."""
        h = hashlib.sha256()
        for folder, _, names in sorted(os.walk(self.root)):
            for name in sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES):
                stat = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), self.root)
                h.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def _scan(self) -> tuple[list[Path], Tensor, list[str]]:
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.root} does not exist; set data.root to a folder of "
                f"images ({', '.join(IMAGE_SUFFIXES)}), optionally one subfolder per class"
            )
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        good, bad = readable(files)
        if bad and self.strict:
            raise unreadable(bad[0][0], bad[0][1], strict=True, count=len(bad))
        if bad:
            log.warning(
                "Skipped %d unreadable image(s) under %s, e.g. %s (%s); set data.strict=true to stop instead",
                len(bad),
                self.root,
                bad[0][0],
                bad[0][1],
            )
            files = [files[i] for i in good]
        if classes:
            index = {c: i for i, c in enumerate(classes)}
            labels = [
                index.get(p.relative_to(self.root).parts[0], -1) if len(p.relative_to(self.root).parts) > 1 else -1
                for p in files
            ]
        else:
            labels = [-1] * len(files)
        return files, torch.tensor(labels, dtype=torch.long), classes

    def read(self, split: str) -> ImageFileDataset:
        if self._split is None:
            files, labels, classes = self._scan()
            if self.num_classes not in (0, len(classes)):
                raise ConfigError(
                    f"data.num_classes={self.num_classes} but {self.root} has {len(classes)} class "
                    f"subfolders; expected {len(classes)} (or 0 to ignore labels)"
                )
            if self.num_classes == 0:
                labels = torch.full_like(labels, -1)
            else:
                self.class_names = classes
            full = ImageFileDataset(files, labels, self.image_size, self.channels, self.crop, self.strict)
            train_idx, test_idx = seeded_split(len(full), self.test_fraction, self.split_seed)
            self._split = (full.select(train_idx), full.select(test_idx))
        return self._split[0] if split == "train" else self._split[1]
