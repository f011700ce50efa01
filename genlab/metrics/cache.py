"""On-disk cache helpers: keys, hashes, atomic writes, and the uint8 tensors of a dataset split."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlab.errors import CheckpointError, GenlabError
from genlab.utils.checkpoints import read


def digest(obj: object, length: int = 12) -> str:
    """A short stable hash of a JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def weights_hash(state_dict: dict[str, Tensor], length: int = 12) -> str:
    """A short sha256 of a state dict's tensors, in key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def file_hash(path: str | Path, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to `path` through a temporary file, so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_file(path: Path) -> dict | None:
    """The cached object at `path` (tensors and plain containers only), or None when it is absent."""
    if not path.is_file():
        return None
    try:
        stored = read(path, key="cache file")
    except CheckpointError as err:
        raise GenlabError(
            f"the metrics cache file {path} is not one genlab wrote (corrupt, or it holds pickled Python objects "
            f"that could run code), so genlab refuses to load it; delete it and genlab computes it again"
        ) from err
    if not isinstance(stored, dict):
        raise GenlabError(f"the metrics cache file {path} is not a dict; delete it and genlab computes it again")
    return stored


def dataset_key(datamodule, whole_file: bool = False) -> str:
    """`<name>|<hash>` identifying a datamodule's images and splits: class, dataset, source, image size, channels,
    labels, how the splits are drawn (`split_seed`, `val_fraction`, `subset`, `test_fraction`) and, for a folder
    of image files, their names, sizes and modification times (`fingerprint()`).
    `whole_file`: the key of the same data without `subset` (what the dataset classifier learns from)."""
    name = getattr(datamodule, "dataset", None) or type(datamodule).__name__.removesuffix("DataModule").lower()
    fields = {
        "class": type(datamodule).__name__,
        "name": name,
        "image_size": datamodule.image_size,
        "channels": datamodule.channels,
        "num_classes": datamodule.num_classes,
    }
    for attr in (
        "root",
        "path",
        "attribute",
        "factor",
        "test_fraction",
        "crop",
        "split_seed",
        "val_fraction",
        "subset",
    ):
        if hasattr(datamodule, attr):
            fields[attr] = str(None if whole_file and attr == "subset" else getattr(datamodule, attr))
    if hasattr(datamodule, "fingerprint"):
        fields["files"] = datamodule.fingerprint()
    return f"{name}-{datamodule.image_size}px|{digest(fields)}"


def split_tensors(dataset: Dataset, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """All uint8 images `[N, C, H, W]` and labels of a dataset split (in memory already, or read once)."""
    if hasattr(dataset, "images"):
        return dataset.images, dataset.labels
    images, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        images.append(x)
        labels.append(y)
    return torch.cat(images), torch.cat(labels)
