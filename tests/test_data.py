"""The data layer's contract, checked on tiny fake datasets written in their official layouts into tmp_path.

Batches are `(x, y)`: x float32 [B, C, S, S] in [-1, 1]; y long [B] (-1 when unlabelled) or [B, K]. Offline: a
fixture refuses every socket connection, and downloads are made to fail by monkeypatching.
"""

import gzip
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from sklearn.datasets import load_digits

from genlab.data import (
    CelebADataModule,
    DigitsDataModule,
    DSpritesDataModule,
    GenDataModule,
    ImageFileDataset,
    ImageFolderDataModule,
    ImageTensorDataset,
    TorchvisionDataModule,
    collate,
)
from genlab.errors import ConfigError, DatasetNotFoundError
from tests import data_fixtures as fx

BATCH = 8
BATCHES = {"batch_size": BATCH, "eval_batch_size": BATCH}  # evaluation batches too (genlab's default: 4x)
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
CLASSES = {"cat": 8, "dog": 10, "owl": 6}  # image folder: 24 images, 3 classes
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_COLUMNS = {"color": 0, "shape": 1, "scale": 2, "orientation": 3, "posX": 4, "posY": 5}
IDENTIFIABLE = ["mnist", "fashion_mnist", "cifar10", "image_folder", "dsprites"]  # each image carries its id
SEEDED_VAL = ["digits", *IDENTIFIABLE]  # validation split drawn from the training pool (not CelebA's official one)
TENSOR_SETS = ["digits", "mnist", "cifar10", "dsprites"]  # held in memory as ImageTensorDataset


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the data tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def build(name: str, root: Path, write: bool = True, **kwargs) -> tuple[GenDataModule, object]:
    """(datamodule for `name` over fake data under `root`, what the writer returned); `kwargs` override."""
    root = Path(root)
    if name == "digits":
        return DigitsDataModule(**{"image_size": 8, "channels": 1, **BATCHES, **kwargs}), None
    if name in ("mnist", "fashion_mnist", "cifar10"):
        if name == "cifar10":
            source, size, channels = fx.write_cifar10(root) if write else None, 32, 3
        else:
            source, size, channels = fx.write_mnist(root, FOLDERS[name]) if write else None, 28, 1
        defaults = {"dataset": name, "root": str(root), "download": False, "image_size": size, "channels": channels}
        return TorchvisionDataModule(**{**defaults, **BATCHES, **kwargs}), source
    if name == "celeba":
        source = fx.write_celeba(root) if write else None
        return CelebADataModule(**{"root": str(root), "image_size": 32, "channels": 3, **BATCHES, **kwargs}), source
    if name == "image_folder":
        source = fx.write_image_folder(root / "images", CLASSES) if write else None
        defaults = {"root": str(root / "images"), "image_size": 16, "channels": 3, **BATCHES}
        return ImageFolderDataModule(**{**defaults, **kwargs}), source
    if name == "dsprites":
        path = root / "dsprites" / DSPRITES_FILE
        source = fx.write_dsprites(path) if write else None
        defaults = {"path": str(path), "download": False, "image_size": 64, "channels": 1, **BATCHES}
        return DSpritesDataModule(**{**defaults, **kwargs}), source
    raise AssertionError(name)


def ids(name: str, dataset) -> list:
    """Identities of a dataset's images, in dataset order (file paths, or the ids the fake writers embedded)."""
    if isinstance(dataset, ImageFileDataset):
        return [str(p) for p in dataset.files]
    if name == "dsprites":
        return [fx.dsprites_id(img.numpy()) for img in dataset.images]
    return [fx.image_id(img.numpy()) for img in dataset.images]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x + 1).mul(127.5).round().to(torch.uint8)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(root).rglob("*"))}


def drain(dm: GenDataModule) -> None:
    """Iterate every loader of a set-up datamodule once."""
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for _ in loader:
            pass


# ------------------------------------------------------------------------------------------- value range


def test_collate_maps_uint8_exactly_to_model_range():
    pixels = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).view(1, 1, 2, 3).repeat(2, 1, 1, 1)
    labels = torch.tensor([3, -1])
    for batch in ((pixels, labels), [(pixels[0], labels[0]), (pixels[1], labels[1])]):  # gathered / per item
        x, y = collate(batch)
        assert x.dtype == torch.float32 and x.shape == (2, 1, 2, 3)
        assert x[0, 0, 0, 0].item() == -1.0 and x[0, 0, 1, 2].item() == 1.0  # exact, not approximately
        assert x[0, 0, 1, 0].item() == pytest.approx(128 / 127.5 - 1, abs=1e-7)
        torch.testing.assert_close(x, pixels.double().div(127.5).sub(1).float(), atol=1e-6, rtol=0)
        assert y.dtype == torch.long and y.tolist() == [3, -1]


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [
        ("digits", 8, 1),
        ("mnist", 28, 1),
        ("fashion_mnist", 28, 1),
        ("cifar10", 32, 3),
        ("celeba", 32, 3),
        ("image_folder", 16, 3),
        ("dsprites", 64, 1),
    ],
)
def test_batches_follow_the_contract(tmp_path, name, size, channels):
    dm, _ = build(name, tmp_path, image_size=size, channels=channels)
    dm.setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (min(BATCH, len(loader.dataset)), channels, size, size)
        assert x.dtype == torch.float32
        assert y.dtype == torch.long and y.shape == (len(x),)
        assert x.min() >= -1.0 and x.max() <= 1.0
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (BATCH, channels, size, size)
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # every fake set has 0 and 255 pixels
    if name in ("celeba", "image_folder"):
        assert (y == -1).all()  # no attribute / num_classes=0: unlabelled
    else:
        assert ((y >= 0) & (y < dm.num_classes)).all()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_pixels_map_exactly(tmp_path, name):
    dm, source = build(name, tmp_path)
    x, _ = next(iter(dm.test_dataloader()))  # the test loader keeps file order
    pixels = torch.from_numpy(source["test_images"][:BATCH]).view(x.shape)
    torch.testing.assert_close(x, pixels.double().div(127.5).sub(1).float(), atol=1e-6, rtol=0)
    flat = x.reshape(len(x), -1)
    assert (flat[:, -3] == -1.0).all() and (flat[:, -1] == 1.0).all()  # pixels 0 and 255, exactly
    assert flat[:, -2] == pytest.approx(128 / 127.5 - 1, abs=1e-6)


def test_image_folder_pixels_map_exactly(tmp_path):
    dm, source = build("image_folder", tmp_path)
    dm.setup()
    loader = dm.val_dataloader()
    x, _ = next(iter(loader))
    for image, path in zip(x, loader.dataset.files, strict=False):
        pixels = torch.from_numpy(source[path][1]).permute(2, 0, 1)  # PNG is lossless: HWC -> CHW
        torch.testing.assert_close(image, pixels.double().div(127.5).sub(1).float(), atol=1e-6, rtol=0)
        assert image[:, -1, -1].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)


def test_dsprites_pixels_are_exactly_minus_one_and_one(tmp_path):
    dm, source = build("dsprites", tmp_path)
    dm.setup()
    x, _ = next(iter(dm.val_dataloader()))
    for image, i in zip(x, ids("dsprites", dm.data_val), strict=False):
        torch.testing.assert_close(image[0], torch.from_numpy(source["imgs"][i]).float() * 2 - 1, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------- labels


def test_digits_labels_belong_to_their_images():
    dm, _ = build("digits", Path("unused"))
    dm.setup()
    digits = load_digits()
    scaled = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    targets: dict[bytes, set[int]] = {}
    for image, target in zip(scaled, digits.target, strict=True):
        targets.setdefault(image.tobytes(), set()).add(int(target))
    assert dm.num_classes == 10 and dm.class_names == [str(i) for i in range(10)]
    assert set(dm.data_train.labels.tolist()) == set(range(10))
    for dataset in (dm.data_train, dm.data_val, dm.data_test):
        for image, label in zip(dataset.images, dataset.labels, strict=True):
            assert int(label) in targets[image[0].numpy().tobytes()]
    assert len(dm.data_test) == round(len(digits.images) * 0.2)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_labels_follow_the_files(tmp_path, name):
    dm, source = build(name, tmp_path)
    dm.setup()
    assert dm.num_classes == 10 and len(dm.class_names) == 10
    assert dm.data_test.labels.tolist() == source["test_labels"].tolist()
    for dataset in (dm.data_train, dm.data_val):
        expected = [int(source["train_labels"][i]) for i in ids(name, dataset)]
        assert dataset.labels.tolist() == expected


@pytest.mark.parametrize("attribute", [None, *fx.CELEBA_ATTRIBUTES])
def test_celeba_uses_official_partition_and_attribute_labels(tmp_path, attribute):
    kwargs = {"attribute": attribute, "num_classes": 2} if attribute else {}
    dm, source = build("celeba", tmp_path, **kwargs)
    dm.setup()
    assert dm.num_classes == (2 if attribute else 0)
    for dataset, part in ((dm.data_train, 0), (dm.data_val, 1), (dm.data_test, 2)):
        names = sorted(n for n, p in source["split"].items() if p == part)
        assert [p.name for p in dataset.files] == names
        if attribute:
            column = source["attributes"].index(attribute)
            assert dataset.labels.tolist() == [int(source["values"][n][column] == 1) for n in names]
        else:
            assert dataset.labels.tolist() == [-1] * len(names)
    _, y = next(iter(dm.train_dataloader()))
    assert y.dtype == torch.long and y.shape == (BATCH,)


def test_image_folder_labels_come_from_subfolders(tmp_path):
    dm, source = build("image_folder", tmp_path, num_classes=3)
    dm.setup()
    assert dm.class_names == sorted(CLASSES)
    for dataset in (dm.data_train, dm.data_val, dm.data_test):
        assert dataset.labels.tolist() == [source[p][0] for p in dataset.files]
    assert set(dm.data_train.labels.tolist()) == {0, 1, 2}
    _, y = next(iter(dm.train_dataloader()))
    assert y.dtype == torch.long and ((y >= 0) & (y < 3)).all()


@pytest.mark.parametrize("layout", ["flat", "subfolders_ignored"])
def test_image_folder_unlabelled(tmp_path, layout):
    if layout == "flat":
        fx.write_image_folder(tmp_path / "flat", None)
        dm = ImageFolderDataModule(root=str(tmp_path / "flat"), image_size=16, channels=3, batch_size=BATCH)
    else:
        dm, _ = build("image_folder", tmp_path, num_classes=0)
    dm.setup()
    assert len(dm.data_train) + len(dm.data_val) + len(dm.data_test) == 24
    for dataset in (dm.data_train, dm.data_val, dm.data_test):
        assert dataset.labels.dtype == torch.long and (dataset.labels == -1).all()
    _, y = next(iter(dm.train_dataloader()))
    assert y.tolist() == [-1] * BATCH


@pytest.mark.parametrize("factor", list(DSPRITES_COLUMNS))
def test_dsprites_factor_label(tmp_path, factor):
    dm, source = build("dsprites", tmp_path, factor=factor)
    dm.setup()
    assert dm.num_classes == fx.DSPRITES_SIZES[DSPRITES_COLUMNS[factor]]
    column = source["latents_classes"][:, DSPRITES_COLUMNS[factor]]
    for dataset in (dm.data_train, dm.data_val, dm.data_test):
        assert dataset.labels.tolist() == column[ids("dsprites", dataset)].tolist()
    _, y = next(iter(dm.train_dataloader()))
    assert y.shape == (BATCH,) and y.dtype == torch.long


def test_dsprites_all_factors(tmp_path):
    dm, source = build("dsprites", tmp_path, factor=None)
    dm.setup()
    assert dm.num_classes == 0
    for dataset in (dm.data_train, dm.data_val, dm.data_test):
        assert dataset.labels.tolist() == source["latents_classes"][ids("dsprites", dataset)].tolist()
    _, y = next(iter(dm.train_dataloader()))
    assert y.shape == (BATCH, 6) and y.dtype == torch.long


# ------------------------------------------------------------------------------------------- splits and subset


@pytest.mark.parametrize("name", IDENTIFIABLE)
def test_subset_is_the_first_training_images_and_validation_comes_from_the_rest(tmp_path, name):
    dm, _ = build(name, tmp_path, subset=5, val_fraction=0.2, split_seed=3)
    dm.setup("fit")
    pool = ids(name, dm.load("train"))  # the training file, in file order
    if name in ("mnist", "fashion_mnist", "cifar10"):
        assert pool == list(range(len(pool)))  # the fake files number their images in order
    assert ids(name, dm.data_train) == pool[:5]  # exactly the first 5, all of them trained on
    val = ids(name, dm.data_val)
    assert len(val) == round(len(pool) * 0.2)  # a full-size validation set ...
    assert set(val) <= set(pool[5:]) and len(set(val)) == len(val)  # ... held out of the rest of the file
    again, _ = build(name, tmp_path, write=False, subset=5, val_fraction=0.2, split_seed=3)
    other, _ = build(name, tmp_path, write=False, subset=5, val_fraction=0.2, split_seed=4)
    again.setup("fit")
    other.setup("fit")
    assert ids(name, again.data_val) == val and set(ids(name, other.data_val)) != set(val)  # drawn by split_seed
    x, _ = next(iter(dm.train_dataloader()))
    assert len(x) == 5  # fewer images than batch_size: one partial batch, not dropped


def test_subset_celeba_takes_the_first_official_training_images(tmp_path):
    dm, source = build("celeba", tmp_path, subset=4)
    dm.setup("fit")
    train = sorted(n for n, p in source["split"].items() if p == 0)
    assert [p.name for p in dm.data_train.files] == train[:4]
    assert [p.name for p in dm.data_val.files] == sorted(n for n, p in source["split"].items() if p == 1)


def test_subset_digits_trains_on_the_first_images_and_validates_on_as_many_as_without_subset():
    full, _ = build("digits", Path("unused"), split_seed=5)
    part, _ = build("digits", Path("unused"), split_seed=5, subset=37)
    full.setup("fit")
    part.setup("fit")
    file = part.load("train")
    assert torch.equal(part.data_train.images, file.images[:37])
    assert torch.equal(part.data_train.labels, file.labels[:37])
    assert len(part.data_val) == len(full.data_val) == round(len(file) * 0.1)
    first = {bytes(img.numpy()) for img in file.images[:37]}
    assert not first & {bytes(img.numpy()) for img in part.data_val.images}  # none of the 37 is a validation image
    # the whole file as a subset: the same split as no subset
    whole, _ = build("digits", Path("unused"), split_seed=5, subset=len(file))
    whole.setup("fit")
    assert torch.equal(whole.data_train.images, full.data_train.images)
    assert torch.equal(whole.data_val.images, full.data_val.images)


def test_subset_without_room_for_validation_takes_the_rest_from_the_subset_and_says_so(caplog):
    dm, _ = build("digits", Path("unused"), subset=1400, val_fraction=0.1, split_seed=2)
    with caplog.at_level("WARNING", logger="genlab.data.base"):
        dm.setup("fit")
    file = dm.load("train")  # 1438 images: 38 after the first 1400, 144 validation images wanted
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "data.subset=1400 leaves 38 of the 1438 images of the training file for validation, fewer than "
        "val_fraction=0.1 asks (144): the other 106 come out of the first 1400, which leaves 1294 for training"
    ]
    key = lambda images: {bytes(img.numpy()) for img in images}  # noqa: E731
    val, train = key(dm.data_val.images), key(dm.data_train.images)
    assert len(dm.data_val) == 144 and len(dm.data_train) == 1294 and not val & train
    assert key(file.images[1400:]) <= val and train <= key(file.images[:1400])


def test_subset_larger_than_the_file_is_refused():
    dm, _ = build("digits", Path("unused"), subset=1439)
    with pytest.raises(ConfigError, match=r"^data.subset=1439 is larger than the training file \(1438 images\); "):
        dm.setup("fit")


def test_the_classifier_pool_does_not_depend_on_subset():
    """The dataset classifier (a metric) learns from the training file minus the validation images of a run
    without subset, for every subset: runs on 37 images and on all of them are scored by one classifier."""
    full, _ = build("digits", Path("unused"), split_seed=5)
    part, _ = build("digits", Path("unused"), split_seed=5, subset=37)
    full.setup("fit")
    assert torch.equal(part.train_pool().images, full.data_train.images)
    assert part.pool_holdout == full.pool_holdout and part.holdout != full.holdout  # the val reference differs


@pytest.mark.parametrize("name", IDENTIFIABLE)
def test_validation_split_is_seeded_and_disjoint(tmp_path, name):
    first, _ = build(name, tmp_path, val_fraction=0.25, split_seed=1)
    first.setup("fit")
    pool = ids(name, first.load("train"))
    train, val = ids(name, first.data_train), ids(name, first.data_val)
    assert len(val) == round(len(pool) * 0.25)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(pool) and train == sorted(train, key=pool.index)  # dataset order kept
    again, _ = build(name, tmp_path, write=False, val_fraction=0.25, split_seed=1)
    other, _ = build(name, tmp_path, write=False, val_fraction=0.25, split_seed=2)
    again.setup("fit")
    other.setup("fit")
    assert ids(name, again.data_val) == val and ids(name, again.data_train) == train
    assert set(ids(name, other.data_val)) != set(val)


def test_validation_split_digits_sizes_and_determinism():
    modules = [build("digits", Path("unused"), val_fraction=0.15, split_seed=s)[0] for s in (4, 4, 9)]
    for dm in modules:
        dm.setup("fit")
    pool = len(modules[0].load("train"))
    assert len(modules[0].data_val) == round(pool * 0.15)
    assert len(modules[0].data_train) + len(modules[0].data_val) == pool
    assert torch.equal(modules[0].data_val.images, modules[1].data_val.images)
    assert not torch.equal(modules[0].data_val.images, modules[2].data_val.images)


@pytest.mark.parametrize("name", ["image_folder", "dsprites"])
def test_held_out_test_split_does_not_overlap(tmp_path, name):
    dm, _ = build(name, tmp_path, test_fraction=0.2)
    dm.setup()
    train, val, test = (set(ids(name, d)) for d in (dm.data_train, dm.data_val, dm.data_test))
    assert not (train | val) & test
    total = len(train) + len(val) + len(test)
    assert len(test) == round(total * 0.2)


@pytest.mark.parametrize("name", ["digits", "dsprites"])
def test_held_out_test_split_is_fixed(tmp_path, name):
    """Digits and dSprites hold out a fixed test split (seed 0), whatever split_seed says."""
    first, _ = build(name, tmp_path, split_seed=0)
    second, _ = build(name, tmp_path, write=False, split_seed=7)
    a, b = first.load("test"), second.load("test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("name", SEEDED_VAL)
def test_val_fraction_zero_gives_no_validation(tmp_path, name):
    dm, _ = build(name, tmp_path, val_fraction=0.0)
    dm.setup("fit")
    assert dm.data_val is None and dm.val_dataloader() == []
    assert len(dm.data_train) == len(dm.load("train"))


# ------------------------------------------------------------------------------------------- resizing, channels


@pytest.mark.parametrize(
    ("name", "size"),
    [("digits", 16), ("mnist", 16), ("mnist", 40), ("fashion_mnist", 20), ("cifar10", 24), ("dsprites", 32)],
)
def test_resize_in_memory_sets(tmp_path, name, size):
    dm, _ = build(name, tmp_path, image_size=size)
    native, _ = build(name, tmp_path, write=False)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (BATCH, dm.channels, size, size)
    reference = next(iter(native.test_dataloader()))[0]  # the same images, not resized
    expected = F.interpolate(to_uint8(reference).float(), size=(size, size), mode="bilinear", antialias=True)
    assert (to_uint8(x).float() - expected.round().clamp(0, 255)).abs().max() <= 1


@pytest.mark.parametrize(("name", "size"), [("celeba", 48), ("celeba", 20), ("image_folder", 8), ("image_folder", 24)])
def test_resize_file_sets(tmp_path, name, size):
    dm, _ = build(name, tmp_path, image_size=size)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (BATCH, 3, size, size) and x.min() >= -1 and x.max() <= 1
    if name == "celeba":  # black on the left, white on the right, after the centre crop
        assert (x[..., : size // 4] < -0.9).float().mean() > 0.95
        assert (x[..., -(size // 4) :] > 0.9).float().mean() > 0.95


@pytest.mark.parametrize(("crop", "columns"), [(None, slice(8, 24)), (8, slice(12, 20))])
def test_image_folder_centre_crops(tmp_path, crop, columns):
    pixels = np.random.default_rng(0).integers(0, 256, size=(16, 32, 3), dtype=np.uint8)  # wide: 32 x 16
    fx.write_png(tmp_path / "wide" / "a.png", pixels)
    dm = ImageFolderDataModule(str(tmp_path / "wide"), image_size=8, channels=3, crop=crop, test_fraction=0.0)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    rows = slice(0, 16) if crop is None else slice(4, 12)
    centre = torch.from_numpy(pixels[rows, columns]).permute(2, 0, 1)[None].float()
    expected = F.interpolate(centre, size=(8, 8), mode="bilinear", antialias=True).round()
    assert x.shape == (1, 3, 8, 8)
    assert (to_uint8(x).float() - expected).abs().max() <= 1


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist", "dsprites"])
def test_grey_to_rgb(tmp_path, name):
    dm, _ = build(name, tmp_path, channels=3)
    grey, _ = build(name, tmp_path, write=False, channels=1)
    x, _ = next(iter(dm.test_dataloader()))
    reference, _ = next(iter(grey.test_dataloader()))
    assert x.shape == (BATCH, 3, dm.image_size, dm.image_size)
    for c in range(3):
        assert torch.equal(x[:, c : c + 1], reference)


def test_grey_png_folder_to_rgb(tmp_path):
    source = fx.write_image_folder(tmp_path / "grey", {"a": 6, "b": 6}, grey=True)
    dm = ImageFolderDataModule(root=str(tmp_path / "grey"), image_size=16, channels=3, batch_size=4)
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (len(x), 3, 16, 16)
    for image, path in zip(x, dm.data_test.files, strict=False):
        expected = torch.from_numpy(source[path][1]).double().div(127.5).sub(1).float()
        for c in range(3):
            torch.testing.assert_close(image[c], expected, atol=1e-6, rtol=0)


def test_cifar_rgb_to_grey(tmp_path):
    dm, source = build("cifar10", tmp_path, channels=1)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (BATCH, 1, 32, 32)
    rgb = source["test_images"][:BATCH].astype(np.float64)
    luminance = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert np.abs(to_uint8(x)[:, 0].numpy().astype(np.float64) - luminance).max() <= 1


@pytest.mark.parametrize("name", ["celeba", "image_folder"])
def test_file_sets_rgb_to_grey(tmp_path, name):
    dm, _ = build(name, tmp_path, channels=1)
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (len(x), 1, dm.image_size, dm.image_size)
    if name == "image_folder":  # native size, so the values are PIL's own luminance
        for image, path in zip(x, dm.data_test.files, strict=False):
            with Image.open(path) as img:
                expected = torch.from_numpy(np.asarray(img.convert("L")).copy())
            assert torch.equal(to_uint8(image[0]), expected)


# ------------------------------------------------------------------------------------------- reading files


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("variant", ["gz", "extracted", "mixed"])
def test_mnist_reads_gz_and_extracted_files_without_writing(tmp_path, name, variant):
    source = fx.write_mnist(tmp_path, FOLDERS[name], gz=variant != "extracted")
    raw = tmp_path / FOLDERS[name] / "raw"
    if variant == "mixed":  # the test files extracted, the train files still gzipped
        for gz_path in raw.glob("t10k-*.gz"):
            gz_path.with_suffix("").write_bytes(gzip.decompress(gz_path.read_bytes()))
            gz_path.unlink()
    suffixes = {p.suffix for p in raw.iterdir()}
    assert suffixes == {"gz": {".gz"}, "extracted": {""}, "mixed": {"", ".gz"}}[variant]
    before = snapshot(tmp_path)
    dm = TorchvisionDataModule(dataset=name, root=str(tmp_path), download=True, image_size=28, channels=1)
    dm.prepare_data()  # files present: nothing to download even though download=True
    dm.setup()
    drain(dm)
    assert snapshot(tmp_path) == before
    pool = dm.load("train")
    assert torch.equal(pool.images[:, 0], torch.from_numpy(source["train_images"]))
    assert pool.labels.tolist() == source["train_labels"].tolist()
    assert torch.equal(dm.data_test.images[:, 0], torch.from_numpy(source["test_images"]))


@pytest.mark.parametrize("name", ["cifar10", "celeba", "image_folder", "dsprites"])
def test_reading_writes_nothing(tmp_path, name):
    dm, _ = build(name, tmp_path)
    before = snapshot(tmp_path)
    dm.prepare_data()
    dm.setup()
    drain(dm)
    assert snapshot(tmp_path) == before


def test_cifar_reads_all_five_training_batches(tmp_path):
    dm, source = build("cifar10", tmp_path)
    pool = dm.load("train")
    assert torch.equal(pool.images, torch.from_numpy(source["train_images"]))
    assert pool.labels.tolist() == source["train_labels"].tolist()


# ------------------------------------------------------------------------------------------- missing data


def _missing_fragments(name: str, root: Path) -> list[str]:
    fragments = {
        "mnist": ["'mnist'", str(root / "MNIST" / "raw"), *fx.MNIST_FILES],
        "fashion_mnist": ["'fashion_mnist'", str(root / "FashionMNIST" / "raw"), *fx.MNIST_FILES],
        "cifar10": ["'cifar10'", str(root / "cifar-10-batches-py"), *fx.CIFAR_FILES],
        "celeba": ["'celeba'", str(root / "celeba"), "img_align_celeba", *fx.CELEBA_FILES],
        "dsprites": ["'dsprites'", str(root / "dsprites" / DSPRITES_FILE), "imgs", "latents_classes"],
    }
    return [*fragments[name], "GENLAB_DATA_DIR"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeba", "dsprites"])
def test_missing_dataset_without_download(tmp_path, name):
    root = tmp_path / "empty"
    root.mkdir()
    dm, _ = build(name, root, write=False, download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
        dm.setup()
    message = str(info.value)
    for fragment in [*_missing_fragments(name, root), "download is disabled"]:
        assert fragment in message
    assert isinstance(info.value, FileNotFoundError)
    assert not any(root.iterdir())  # nothing was created


def test_missing_mnist_test_files_are_named(tmp_path):
    fx.write_mnist(tmp_path, "MNIST")
    for path in (tmp_path / "MNIST" / "raw").glob("t10k-*"):
        path.unlink()
    dm = TorchvisionDataModule(dataset="mnist", root=str(tmp_path), download=False, image_size=28, channels=1)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup()
    message = str(info.value).split("Expected files:")[1]
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeba", "dsprites"])
def test_failed_download_is_reported(tmp_path, monkeypatch, name):
    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("simulated outage")

    if name == "dsprites":
        monkeypatch.setattr(urllib.request, "urlretrieve", fail)
    else:
        tv_class = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "celeba": "CelebA"}
        monkeypatch.setattr(getattr(torchvision.datasets, tv_class[name]), "download", fail)
    dm, _ = build(name, tmp_path, write=False, download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
        dm.setup()
    message = str(info.value)
    assert calls, "the download was never attempted"
    assert "download failed" in message and "simulated outage" in message
    for fragment in _missing_fragments(name, tmp_path):
        assert fragment in message


@pytest.mark.parametrize(("folder", "reason"), [("nowhere", "does not exist"), ("", "no images")])
def test_missing_image_folder(tmp_path, folder, reason):
    root = tmp_path / folder
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(root), image_size=16, channels=3)
    with pytest.raises(DatasetNotFoundError, match=reason) as info:
        dm.setup()
    assert str(root) in str(info.value)


def test_dsprites_file_without_the_expected_keys(tmp_path):
    path = tmp_path / "dsprites.npz"
    np.savez(path, imgs=np.zeros((4, 64, 64), dtype=np.uint8))
    dm = DSpritesDataModule(path=str(path), download=False, image_size=64, channels=1)
    with pytest.raises(DatasetNotFoundError, match="latents_classes"):
        dm.setup()


# ------------------------------------------------------------------------------------------- bad config


def _celeba(root, **kw):
    return CelebADataModule(root=str(root), image_size=32, channels=3, **kw)


BAD_AT_INIT = [
    pytest.param(
        lambda r: DigitsDataModule(image_size=8, channels=1, num_classes=5),
        ["data.num_classes=5", "10"],
        id="digits-num_classes",
    ),
    pytest.param(
        lambda r: TorchvisionDataModule("svhn", str(r), image_size=32, channels=3),
        ["'svhn'", "'mnist'", "'fashion_mnist'", "'cifar10'"],
        id="torchvision-dataset",
    ),
    pytest.param(
        lambda r: TorchvisionDataModule("cifar10", str(r), num_classes=100, image_size=32, channels=3),
        ["num_classes=100", "10"],
        id="torchvision-num_classes",
    ),
    pytest.param(
        lambda r: _celeba(r, attribute="Smiling", num_classes=0),
        ["num_classes=0", "'Smiling'", "expected 2"],
        id="celeba-num_classes",
    ),
    pytest.param(
        lambda r: DSpritesDataModule(str(r / "d.npz"), factor="colour", image_size=64, channels=1),
        ["'colour'", *(repr(f) for f in DSPRITES_COLUMNS)],
        id="dsprites-factor",
    ),
    pytest.param(
        lambda r: DSpritesDataModule(str(r / "d.npz"), factor="shape", num_classes=10, image_size=64, channels=1),
        ["num_classes=10", "'shape'", "expected 3"],
        id="dsprites-num_classes",
    ),
    pytest.param(
        lambda r: DigitsDataModule(image_size=8, channels=1, val_fraction=1.5),
        ["val_fraction=1.5", "0 <= value < 1"],
        id="val_fraction-high",
    ),
    pytest.param(
        lambda r: _celeba(r, val_fraction=-0.1),
        ["val_fraction=-0.1", "0 <= value < 1"],
        id="val_fraction-negative",
    ),
    pytest.param(
        lambda r: DigitsDataModule(image_size=8, channels=2),
        ["channels=2", "1 or 3"],
        id="channels",
    ),
    pytest.param(
        lambda r: ImageFolderDataModule(str(r), image_size=8, channels=4),
        ["channels=4", "1 or 3"],
        id="channels-image_folder",
    ),
    pytest.param(
        lambda r: DigitsDataModule(image_size=8, channels=1, subset=0),
        ["subset=0"],
        id="subset",
    ),
]


@pytest.mark.parametrize(("make", "fragments"), BAD_AT_INIT)
def test_bad_config_values_are_rejected_on_construction(tmp_path, make, fragments):
    with pytest.raises(ConfigError) as info:
        make(tmp_path)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "fragments"),
    [
        ("celeba", {"attribute": "Smilling", "num_classes": 2}, ["'Smilling'", *fx.CELEBA_ATTRIBUTES]),
        ("image_folder", {"num_classes": 5}, ["num_classes=5", "3 class subfolders", "expected 3"]),
    ],
)
def test_bad_config_values_found_when_reading(tmp_path, name, kwargs, fragments):
    dm, _ = build(name, tmp_path, **kwargs)
    with pytest.raises(ConfigError) as info:
        dm.setup()
    for fragment in fragments:
        assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", TENSOR_SETS)
def test_train_loader_gathers_each_batch_in_one_call(tmp_path, monkeypatch, name):
    counts = {"items": 0, "batches": 0}
    get_item, get_items = ImageTensorDataset.__getitem__, ImageTensorDataset.__getitems__

    def count_item(self, i):
        counts["items"] += 1
        return get_item(self, i)

    def count_items(self, indices):
        counts["batches"] += 1
        assert len(indices) == BATCH
        return get_items(self, indices)

    monkeypatch.setattr(ImageTensorDataset, "__getitem__", count_item)
    monkeypatch.setattr(ImageTensorDataset, "__getitems__", count_items)
    dm, _ = build(name, tmp_path)
    dm.setup("fit")
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    n = len(dm.data_train)
    assert n % BATCH != 0  # the fake sets leave a remainder for drop_last to drop
    assert len(batches) == n // BATCH == counts["batches"]
    assert counts["items"] == 0
    assert all(x.shape[0] == BATCH and y.shape[0] == BATCH for x, y in batches)
    if name != "digits":
        read_id = fx.dsprites_id if name == "dsprites" else fx.image_id
        seen = [read_id(img.numpy()) for x, _ in batches for img in to_uint8(x)]
        assert len(set(seen)) == len(seen) == (n // BATCH) * BATCH  # each image at most once per epoch
        assert set(seen) <= set(ids(name, dm.data_train))
        assert seen != sorted(seen)  # shuffled


@pytest.mark.parametrize("name", ["celeba", "image_folder"])
def test_file_loaders_batch_items(tmp_path, name):
    dm, _ = build(name, tmp_path, batch_size=3)
    dm.setup()
    n = len(dm.data_train)
    batches = list(dm.train_dataloader())
    assert len(batches) == n // 3 and all(len(x) == 3 for x, _ in batches)
    sizes = [len(x) for x, _ in dm.val_dataloader()]
    assert sum(sizes) == len(dm.data_val)  # evaluation keeps the last partial batch


@pytest.mark.parametrize("name", ["mnist", "image_folder"])
def test_evaluation_loaders_keep_order_and_every_image(tmp_path, name):
    dm, source = build(name, tmp_path, **({"num_classes": 3} if name == "image_folder" else {}))
    dm.setup()
    for loader, dataset in ((dm.val_dataloader(), dm.data_val), (dm.test_dataloader(), dm.data_test)):
        images, labels = (torch.cat(parts) for parts in zip(*loader, strict=True))
        assert labels.tolist() == dataset.labels.tolist()
        if name == "mnist":
            assert [fx.image_id(img.numpy()) for img in to_uint8(images)] == ids(name, dataset)
        else:  # PNG pixels are HWC
            expected = [fx.image_id(source[path][1]) for path in dataset.files]
            assert [fx.image_id(img.permute(1, 2, 0).numpy()) for img in to_uint8(images)] == expected
