"""Choose on validation data, report on test data: the two references of the sample-quality metrics, the images
the dataset classifier learns from, and the splits a datamodule accepts (scikit-learn digits, offline)."""

import pytest
import torch

from genlab.data import DigitsDataModule
from genlab.data.base import seeded_split
from genlab.errors import ConfigError
from genlab.metrics import QualityMetrics, classifier, keys
from genlab.metrics.cache import dataset_key
from genlab.metrics.reference import reference_path
from genlab.utils.images import uint8_to_model
from tests.test_metrics import _Samples as _Images  # a stand-in model serving given images

SETTINGS = {"epochs": 1, "min_steps": 20, "width": 8}


def quality_metrics(cache) -> QualityMetrics:
    return QualityMetrics(str(cache), classifier_settings=SETTINGS, inception=False, batch_size=100, kid_subsets=10)


@pytest.mark.parametrize("split", ["val", "validation", "Test"])
def test_load_refuses_a_split_that_is_not_on_disk(split):
    dm = DigitsDataModule(image_size=8, channels=1)
    with pytest.raises(ConfigError, match=rf"^split '{split}' is not on disk for DigitsDataModule; expected one of: "):
        dm.load(split)
    assert len(dm.load("train")) + len(dm.load("test")) == 1797


def test_val_metrics_compare_with_the_held_out_validation_images_and_test_metrics_with_the_test_split(tmp_path):
    dm = DigitsDataModule(image_size=16, channels=1, val_fraction=0.1, split_seed=3)
    quality = quality_metrics(tmp_path)
    quality.setup(dm)
    dm.setup("fit")
    val_images, test_images = dm.data_val.images, dm.load("test").images
    assert len(val_images) == 144 and len(test_images) == 359
    # the validation images scored against each reference: identical to the val one, a real gap to the test one
    fake = quality.features(_Images(uint8_to_model(val_images)), len(val_images))
    on_val, protocol_val = quality.compute(fake, "val")
    on_test, protocol_test = quality.compute(fake, "test")
    assert abs(on_val[keys.CFID]) < 1e-3 and on_test[keys.CFID] > 100 * max(abs(on_val[keys.CFID]), 1e-3)
    assert torch.equal(quality.references["val"]["classifier"]["labels"], dm.data_val.labels)
    p_val, p_test = protocol_val["classifier"], protocol_test["classifier"]
    assert (p_val["reference_split"], p_val["n_real"], p_test["reference_split"], p_test["n_real"]) == (
        "val",
        144,
        "test",
        359,
    )
    assert p_val["reference"] == {
        "split": "val",
        "source": "held out of the training file",
        "n_images": 144,
        "val_fraction": 0.1,
        "split_seed": 3,
    }
    assert p_test["reference"] == {"split": "test", "source": "the test split", "n_images": 359}
    # another split seed holds out other images: its own cached val reference, not the first one's
    other = DigitsDataModule(image_size=16, channels=1, val_fraction=0.1, split_seed=4)
    extractor = quality.extractors["classifier"]
    assert reference_path(tmp_path, other, "val", extractor) != reference_path(tmp_path, dm, "val", extractor)
    again = quality_metrics(tmp_path)
    again.setup(other, splits=("val",))
    other.setup("fit")
    assert torch.equal(again.references["val"]["classifier"]["labels"], other.data_val.labels)


def test_without_validation_images_there_is_no_val_reference(tmp_path):
    dm = DigitsDataModule(image_size=16, channels=1, val_fraction=0.0)
    quality = quality_metrics(tmp_path)
    quality.setup(dm)
    assert not quality.has_reference("val") and quality.has_reference("test")
    with pytest.raises(ValueError, match="no 'val' reference"):
        quality.compute({}, "val")


def test_the_dataset_classifier_learns_from_the_training_images_only(tmp_path, monkeypatch):
    seen = []
    original = classifier.train_classifier
    monkeypatch.setattr(
        classifier, "train_classifier", lambda images, *args: seen.append(images) or original(images, *args)
    )
    settings = classifier.ClassifierSettings(**SETTINGS)
    dm = DigitsDataModule(image_size=16, channels=1, val_fraction=0.1, split_seed=3, subset=100)
    _, info = classifier.cached_classifier(dataset_key(dm, whole_file=True), dm, tmp_path, settings)
    pool = dm.load("train")
    kept, held_out = seeded_split(len(pool), 0.1, seed=3)
    # the training file minus the validation images of a run without subset (whatever `subset` says: the classifier
    # is a metric, one per dataset and hold-out, not the model's data)
    assert torch.equal(seen[0], pool.images[kept]) and info["n_train"] == len(kept) == 1438 - 144
    whole = DigitsDataModule(image_size=16, channels=1, val_fraction=0.1, split_seed=3)
    whole.setup("fit")
    assert torch.equal(pool.images[held_out], whole.data_val.images)  # what it did not see is the val reference
    _, whole_info = classifier.cached_classifier(dataset_key(whole), whole, tmp_path, settings)
    assert whole_info["path"] == info["path"] and len(seen) == 1  # one classifier for every subset
    # the cache key follows the hold-out: another split seed or val_fraction trains (and caches) another one
    for changed in ({"split_seed": 4}, {"val_fraction": 0.2}):
        other = DigitsDataModule(image_size=16, channels=1, **{"val_fraction": 0.1, "split_seed": 3, **changed})
        _, other_info = classifier.cached_classifier(dataset_key(other), other, tmp_path, settings)
        assert other_info["path"] != info["path"]
    assert len(seen) == 3 and len(seen[2]) == 1438 - round(1438 * 0.2)
    classifier.cached_classifier(dataset_key(dm, whole_file=True), dm, tmp_path, settings)
    assert len(seen) == 3  # the first one again: read from the cache
