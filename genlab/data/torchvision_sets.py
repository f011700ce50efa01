"""MNIST, Fashion-MNIST and CIFAR-10, held in memory as uint8 tensors.

MNIST-style sets are read straight from the original idx files in `<root>/<Folder>/raw/` (`.gz` or
extracted), so a read-only copy of the four .gz files works offline and nothing is written next to
them; CIFAR-10 from the python batches in `<root>/cifar-10-batches-py/`. When files are missing and
`download` is true, torchvision's own download code fetches them.
"""

import gzip
import logging
import pickle
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from genlab.data.base import GenDataModule, ImageTensorDataset, convert_channels, resize_uint8
from genlab.errors import DatasetCorruptError, DatasetNotFoundError, check_choice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    tv_class: str  # class name in torchvision.datasets
    folder: str  # what the dataset lives under, inside root
    files: tuple[str, ...]  # what must be there
    classes: tuple[str, ...]


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# file-name prefixes of each split: [cifar-style, idx-style][split]
_PREFIX = ({"train": "data_batch", "test": "test_batch"}, {"train": "train-", "test": "t10k-"})
SPECS = {
    "mnist": Spec("MNIST", "MNIST/raw", _IDX, tuple(str(i) for i in range(10))),
    "fashion_mnist": Spec(
        "FashionMNIST",
        "FashionMNIST/raw",
        _IDX,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": Spec(
        "CIFAR10",
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}


def corrupt(path: Path, reason: object) -> DatasetCorruptError:
    return DatasetCorruptError(
        f"data file {path} is corrupt or truncated ({reason}); expected the complete original file: delete it "
        f"and download it again (data.download=true), or copy it again"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally .gz): the MNIST format, big-endian dims after a 4-byte magic. The data are
    decompressed straight into the returned (writable) array: one copy of the images in memory, not three."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
                raise corrupt(path, "not an idx file of bytes: bad magic number")
            dims = f.read(4 * magic[3])
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(magic[3]))
            # torch's allocator, not numpy's: numpy asks for huge pages for large arrays, and where the kernel
            # compacts memory to find them at first touch (THP defrag `madvise`, as here) writing MNIST's 47 MB
            # took 0.1 to 0.5 s against 0.035 s (docs/benchmarks.md, "Session 21")
            data = torch.empty(shape, dtype=torch.uint8).numpy()
            view, read = memoryview(data.reshape(-1)), 0
            while read < data.size and (n := f.readinto(view[read : read + (1 << 20)])):  # 1 MB at a time
                read += n
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise corrupt(path, err) from err
    if len(dims) < 4 * magic[3] or read != data.size or extra:
        found = f"{read}{'+' if extra else ''}" if len(dims) == 4 * magic[3] else "a truncated header and no"
        raise corrupt(path, f"{found} bytes of data where its header announces {data.size}")
    return data


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only builtins and numpy arrays: a crafted dataset file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct")}
    ALLOWED |= {("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}  # protocol-2 bytes

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def read_cifar_batches(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR python-format batches (pickled dicts with `data` [N, 3072] and `labels`) -> uint8 NCHW, labels."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                entry = _ArrayUnpickler(f, encoding="latin1").load()
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # (N, 3072) -> NCHW
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as err:
            raise corrupt(path, err) from err
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


def _find(folder: Path, name: str, gz_ok: bool = True) -> Path | None:
    """`folder/name`, or `folder/name.gz` where compressed files are read, if either exists."""
    for candidate in (folder / name, folder / f"{name}.gz") if gz_ok else (folder / name,):
        if candidate.exists():
            return candidate
    return None


class TorchvisionDataModule(GenDataModule):
    """`dataset` in {mnist, fashion_mnist, cifar10}; `root` holds torchvision's folder layout."""

    def __init__(self, dataset: str, root: str, download: bool = True, num_classes: int = 10, **kwargs) -> None:
        check_choice("data.dataset", dataset, SPECS)
        self.spec = SPECS[dataset]
        check_choice("data.num_classes", num_classes, (len(self.spec.classes),))
        super().__init__(num_classes=num_classes, class_names=list(self.spec.classes), **kwargs)
        self.dataset, self.root, self.download = dataset, Path(root).expanduser(), download

    def _missing(self, split: str | None = None) -> list[str]:
        """Expected files (of `split` only, when given) that are not on disk."""
        folder, gz_ok = self.root / self.spec.folder, self.spec.folder.endswith("raw")
        files = [f for f in self.spec.files if split is None or f.startswith(_PREFIX[self.dataset != "cifar10"][split])]
        return [f for f in files if _find(folder, f, gz_ok) is None]

    def prepare_data(self) -> None:
        if not self._missing() or not self.download:
            return
        log.info("Downloading %s to %s", self.dataset, self.root)
        tv_class = getattr(torchvision.datasets, self.spec.tv_class)
        # what the download may create: removed again if it fails, so nothing half-written stays behind
        created = [p for p in (self.root, self.root / self.spec.folder.split("/")[0]) if not p.exists()]
        try:
            for train in (True, False):
                tv_class(str(self.root), train=train, download=True)
        except Exception as err:  # offline, mirror down, disk full: all end in the same clear message
            if created:  # the outermost folder the download created
                shutil.rmtree(created[0], ignore_errors=True)
            raise self._not_found(f"download failed: {' '.join(str(err).split())}") from err

    def _not_found(self, reason: str) -> DatasetNotFoundError:
        folder = self.root / self.spec.folder
        return DatasetNotFoundError(
            f"dataset '{self.dataset}' not found in {folder} ({reason}). Expected files: "
            f"{', '.join(self._missing() or self.spec.files)} (MNIST-style files may be .gz). Provide them by "
            f"setting GENLAB_DATA_DIR (or data.root) to the folder that contains '{self.spec.folder.split('/')[0]}/', "
            f"or run online with data.download=true."
        )

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        if self._missing(split):
            self.prepare_data()
        if self._missing(split):
            raise self._not_found("download is disabled" if not self.download else "files still missing")
        folder = self.root / self.spec.folder
        if self.dataset == "cifar10":
            names = [f for f in self.spec.files if f.startswith("data_batch")] if train else ["test_batch"]
            return read_cifar_batches([folder / n for n in names])
        prefix = "train" if train else "t10k"
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    def read(self, split: str) -> ImageTensorDataset:
        images, labels = self._read(train=split == "train")
        images = convert_channels(resize_uint8(images, self.image_size), self.channels)
        return ImageTensorDataset(images, labels.long())
