"""Writers for tiny fake datasets in the official on-disk layouts (deterministic content, for tests).

Every writer returns the arrays it wrote so tests can compare what a datamodule yields against the source.
Grey and RGB images made by `fake_images` carry their index in their first two pixels (`image_id` reads it
back) and a 0, a 128 and a 255 pixel at their end, so value-range checks have known pixels to look at.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CELEBA_ATTRIBUTES = ("5_o_Clock_Shadow", "Smiling", "Bangs")
CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt")
DSPRITES_SIZES = (1, 3, 6, 40, 32, 32)  # classes per latent: color, shape, scale, orientation, posX, posY
KNOWN_PIXELS = {-3: 0, -2: 128, -1: 255}  # flat pixel position -> value, in every `fake_images` image


def fake_images(n: int, shape: tuple[int, ...], seed: int, start: int = 0) -> np.ndarray:
    """`n` random uint8 images of `shape`; image i holds id `start + i` in its first two pixels (C-order)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    ids = np.arange(start, start + n)
    flat[:, 0], flat[:, 1] = ids % 256, ids // 256
    for position, value in KNOWN_PIXELS.items():
        flat[:, position] = value
    return images


def image_id(image: np.ndarray) -> int:
    """The id `fake_images` wrote into a uint8 image (any layout with the same C-order flattening)."""
    flat = np.asarray(image).reshape(-1)
    return int(flat[0]) + 256 * int(flat[1])


# ----------------------------------------------------------------------------------------------- MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic 0, 0, 8 (ubyte), ndim; big-endian uint32 dims; the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write `array` as idx to `path` (plus `.gz`, gzip-compressed, when `gz`); returns the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """MNIST-style idx files in `<root>/<folder>/raw/` (28x28, labels 0..9); `folder` FashionMNIST for that set.

    Returns {"train_images": (N, 28, 28) uint8, "train_labels": (N,), "test_images", "test_labels"}.
    Test image ids continue after the training ids.
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": fake_images(n_train, (28, 28), seed),
        "train_labels": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "test_images": fake_images(n_test, (28, 28), seed + 1, start=n_train),
        "test_labels": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    raw = Path(root) / folder / "raw"
    for name, key in zip(MNIST_FILES, ("train_images", "train_labels", "test_images", "test_labels"), strict=True):
        write_idx(raw / name, arrays[key], gz)
    return arrays


# ----------------------------------------------------------------------------------------------- CIFAR-10


def write_cifar10(root: Path, n_per_batch: int = 12, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10 python batches in `<root>/cifar-10-batches-py/`: pickled dicts, `data` uint8 [N, 3072] in
    channel-major (R plane, G plane, B plane) order, `labels` a list of ints.

    Returns {"train_images": (5 * n_per_batch, 3, 32, 32) uint8, "train_labels", "test_images", "test_labels"}.
    """
    rng = np.random.default_rng(seed)
    n_train = 5 * n_per_batch
    arrays = {
        "train_images": fake_images(n_train, (3, 32, 32), seed),
        "train_labels": rng.integers(0, 10, size=n_train),
        "test_images": fake_images(n_test, (3, 32, 32), seed + 1, start=n_train),
        "test_labels": rng.integers(0, 10, size=n_test),
    }
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [slice(i * n_per_batch, (i + 1) * n_per_batch) for i in range(5)]
    for name, (key, rows) in zip(CIFAR_FILES, [("train", c) for c in chunks] + [("test", slice(None))], strict=True):
        images, labels = arrays[f"{key}_images"][rows], arrays[f"{key}_labels"][rows]
        entry = {
            "batch_label": f"{name} of 6",
            "labels": [int(v) for v in labels],
            "data": images.reshape(len(images), 3072),
            "filenames": [f"img_{i}.png" for i in range(len(images))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return arrays


# ----------------------------------------------------------------------------------------------- CelebA


def write_celeba(
    root: Path,
    partition: tuple[int, int, int] = (10, 3, 3),
    attributes: tuple[str, ...] = CELEBA_ATTRIBUTES,
    size: tuple[int, int] = (178, 218),
    seed: int = 0,
) -> dict[str, object]:
    """CelebA in torchvision's layout under `<root>/celeba/`: `img_align_celeba/000001.jpg...` (RGB JPEGs of
    `size` = (width, height), left part black, right part white, a random block in the middle),
    `list_attr_celeba.txt` and `list_eval_partition.txt`. The partition file lists the images shuffled over
    train/valid/test (0/1/2) with `partition` images each; columns are separated by one or two spaces.

    Returns {"names": [file names], "split": {name: 0|1|2}, "attributes": list, "values": {name: [1|-1, ...]}}.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    n = sum(partition)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    splits = rng.permutation(np.repeat([0, 1, 2], partition))
    values = rng.choice([1, -1], size=(n, len(attributes)))
    width, height = size
    for name in names:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[:, width // 2 + 8 :] = 255
        top, left = rng.integers(height // 4, height // 2), rng.integers(width // 4, width // 2)
        pixels[top : top + 16, left : left + 16] = rng.integers(40, 216, size=3, dtype=np.uint8)
        Image.fromarray(pixels).save(images / name, quality=95)
    rows = ["".join(f" {v:2d}" for v in row) for row in values]  # " 1 -1  1": one or two spaces, like the original
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n"
        + " ".join(attributes)
        + " \n"
        + "".join(f"{name}{row}\n" for name, row in zip(names, rows, strict=True))
    )
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {split}\n" for name, split in zip(names, splits, strict=True))
    )
    return {
        "names": names,
        "split": {name: int(s) for name, s in zip(names, splits, strict=True)},
        "attributes": list(attributes),
        "values": {name: [int(v) for v in row] for name, row in zip(names, values, strict=True)},
    }


# ----------------------------------------------------------------------------------------------- image folders


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_image_folder(
    root: Path,
    classes: dict[str, int] | None = None,
    size: int = 16,
    grey: bool = False,
    seed: int = 0,
) -> dict[Path, tuple[int, np.ndarray]]:
    """PNGs in class subfolders `<root>/<class>/<k>.png` (`classes`: name -> count), or flat `<root>/<k>.png`
    when `classes` is None (then 24 images). `size` x `size` pixels, RGB or `grey` (mode L).

    Returns {path: (class index in sorted class order, or -1 when flat; the pixels as HWC or HW uint8)}.
    """
    shape = (size, size) if grey else (size, size, 3)
    groups = [(None, 24)] if classes is None else sorted(classes.items())
    written, start = {}, 0
    for index, (name, count) in enumerate(groups):
        folder = Path(root) if name is None else Path(root) / name
        for k, pixels in enumerate(fake_images(count, shape, seed + index, start=start)):
            written[write_png(folder / f"{k:03d}.png", pixels)] = (-1 if name is None else index, pixels)
        start += count
    return written


# ----------------------------------------------------------------------------------------------- dSprites


def write_dsprites(path: Path, n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """A dSprites-format `.npz`: `imgs` (N, 64, 64) uint8 in {0, 1} (a square whose place follows posX/posY),
    `latents_classes` (N, 6) int64 and `latents_values` (N, 6) float64. Every row of latents_classes is
    distinct (posX, posY enumerate a grid), so a row identifies its image. Returns the three arrays.
    """
    rng = np.random.default_rng(seed)
    classes = np.stack(
        [
            np.zeros(n, dtype=np.int64),
            rng.integers(0, 3, size=n),
            rng.integers(0, 6, size=n),
            rng.integers(0, 40, size=n),
            np.arange(n) % 32,
            np.arange(n) // 32 % 32,
        ],
        axis=1,
    ).astype(np.int64)
    values = np.stack(
        [
            np.ones(n),
            classes[:, 1] + 1.0,
            0.5 + classes[:, 2] / 10,
            classes[:, 3] * 2 * np.pi / 40,
            classes[:, 4] / 31,
            classes[:, 5] / 31,
        ],
        axis=1,
    )
    imgs = np.zeros((n, 64, 64), dtype=np.uint8)
    for i, (x, y) in enumerate(classes[:, 4:6]):
        side = 4 + 2 * int(classes[i, 2])
        imgs[i, 2 * y : 2 * y + side, 2 * x : 2 * x + side] = 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=values)
    return {"imgs": imgs, "latents_classes": classes, "latents_values": values}


def dsprites_id(image: np.ndarray) -> int:
    """The index of a `write_dsprites` image (n <= 1024) from where its square starts: posX + 32 * posY."""
    rows, cols = np.nonzero(np.asarray(image).reshape(64, 64))
    top = rows.min()
    return int(cols[rows == top].min()) // 2 + 32 * (int(top) // 2)
