"""Metrics: known answers, an independent FID cross-check, the IWAE closed form, caching counted in calls."""

import logging
import math
import os
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from genlab.callbacks.metrics import rank_share
from genlab.data import DigitsDataModule, ImageFolderDataModule
from genlab.metrics import QualityMetrics, inception, iwae_log_px, keys, reconstruction_metrics, stats
from genlab.metrics.cache import dataset_key
from genlab.metrics.features import ClassifierExtractor
from genlab.metrics.likelihood import elbo, log_normal
from genlab.metrics.reference import reference_features
from genlab.utils.images import model_to_extractor
from tests import data_fixtures as fx


def gaussian_features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1)) @ mix + shift


def test_torchmetrics_fid_agrees_with_numpy_scipy_sqrtm():
    real, fake = gaussian_features(600, 16, 0), gaussian_features(500, 16, 10, shift=0.3)
    (mu1, s1), (mu2, s2) = (tuple(t.numpy() for t in stats.mean_cov(f)) for f in (real, fake))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert expected > 1.0
    assert stats.fid(real, fake) == pytest.approx(expected, rel=1e-3)


def test_fid_and_kid_vanish_on_one_set_and_grow_with_a_shift():
    real = gaussian_features(400, 8, 0)
    assert abs(stats.fid(real, real)) < 1e-6
    assert abs(stats.kid(real, real, subset_size=100, subsets=20)) < 0.05
    near, far = gaussian_features(400, 8, 5, 0.5), gaussian_features(400, 8, 5, 2.0)
    assert 0.1 < stats.fid(real, near) < stats.fid(real, far)
    assert 0 < stats.kid(real, near, subset_size=100) < stats.kid(real, far, subset_size=100)


def torchmetrics_kid(real, fake, subsets: int, subset_size: int, seed: int) -> float:
    """torchmetrics' own KernelInceptionDistance of the features `real` and `fake` `[N, D]`, its subsets drawn
    after `torch.manual_seed(seed)`."""
    from torchmetrics.image import KernelInceptionDistance

    with pytest.warns(UserWarning):  # "will save all extracted features"
        metric = KernelInceptionDistance(
            feature=stats._Features(real.shape[1]), subsets=subsets, subset_size=subset_size
        )
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return float(metric.compute()[0])


def test_kid_is_torchmetrics_kid_computed_one_subset_at_a_time():
    real, fake = gaussian_features(600, 16, 0), gaussian_features(500, 16, 10, shift=0.3)
    expected = torchmetrics_kid(real, fake, subsets=7, subset_size=200, seed=3)
    assert stats.kid(real, fake, subset_size=200, subsets=7, seed=3) == expected
    assert stats.kid(real, fake, subset_size=200, subsets=7, seed=4) != expected


def test_kid_with_every_fake_in_every_subset_is_torchmetrics_kid_with_one_kernel_per_subset(monkeypatch):
    """500 fakes and subsets of 500: the fake-fake kernel and the real-fake sums are computed once; the value is
    torchmetrics' up to float64 summation order, and a subset makes one kernel (the general path makes three).
    With a memo kept with the real features, a second evaluation makes no kernel per subset, and its value is the
    one it would have without the memo."""
    real, fake = gaussian_features(2500, 16, 0), gaussian_features(500, 16, 10, shift=0.3)
    later = gaussian_features(500, 16, 20, shift=0.5)  # the next evaluation's fakes
    expected = torchmetrics_kid(real, fake, subsets=6, subset_size=500, seed=3)
    calls = []
    kernel = stats.poly_kernel
    monkeypatch.setattr(stats, "poly_kernel", lambda a, b: calls.append(len(a)) or kernel(a, b))
    memo = {}
    value = stats.kid(real, fake, subset_size=500, subsets=6, seed=3, memo=memo)
    assert calls == [500] * 6 + [500, 1000, 1000, 500]  # a kernel per subset, the fakes, the real-fake sums
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert value == stats.kid(real, fake, subset_size=500, subsets=6, seed=3)  # the memo changes nothing
    calls.clear()
    assert stats.kid(real, later, subset_size=500, subsets=6, seed=3, memo=memo) == stats.kid(
        real, later, subset_size=500, subsets=6, seed=3
    )
    assert calls[:4] == [500, 1000, 1000, 500]  # with the memo: the fakes and the real-fake sums only
    assert stats.kid(real, later, subset_size=500, subsets=6, seed=3, memo=memo) == pytest.approx(
        torchmetrics_kid(real, later, subsets=6, subset_size=500, seed=3), rel=1e-9, abs=1e-12
    )
    assert value != pytest.approx(stats.kid(real, fake, subset_size=500, subsets=6, seed=4, memo=memo), rel=1e-9)
    assert sorted(memo) == [f"kid_real_draws/2500/500/6/{s}{end}" for s in (3, 4) for end in ("", "/sums")]


def test_inception_score_known_answers():
    one_hot = torch.eye(10).repeat(50, 1)  # confident and balanced: IS = number of classes
    assert stats.inception_score(one_hot) == pytest.approx(10.0, rel=1e-6)
    assert stats.inception_score(torch.eye(10)[torch.zeros(500, dtype=torch.long)]) == pytest.approx(1.0)
    assert stats.inception_score(torch.full((500, 10), 0.1)) == pytest.approx(1.0)


def test_mode_collapse_shows_in_coverage_and_class_kl():
    real = stats.class_histogram(torch.arange(1000) % 10, 10)
    collapsed = stats.class_histogram(torch.tensor([1, 4, 7]).repeat(333), 10)
    almost = stats.class_histogram(torch.cat([torch.arange(995) % 9, torch.full((5,), 9)]), 10)  # class 9: 0.5%
    assert stats.mode_coverage(real) == 10 and stats.mode_coverage(collapsed) == 3
    assert stats.mode_coverage(almost) == 9
    assert stats.class_kl(real, real) == pytest.approx(0.0, abs=1e-9)
    assert stats.class_kl(collapsed, real) == pytest.approx(math.log(10 / 3), rel=1e-3)


def test_precision_recall_tell_collapse_from_spread():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 8, generator=g) * 10
    real = centres.repeat_interleave(100, 0) + torch.randn(1000, 8, generator=g)
    collapsed = centres[:2].repeat_interleave(500, 0) + torch.randn(1000, 8, generator=g)
    p, r = stats.precision_recall(real, real + 1e-4)
    assert p == 1.0 and r == 1.0
    p, r = stats.precision_recall(real, collapsed)
    assert p > 0.8 and 0.1 < r < 0.35  # good samples of 2 of 10 modes
    p, r = stats.precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0


def test_converter_takes_model_range_to_extractor_uint8_rgb():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    out = model_to_extractor(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[0, 2].flatten().tolist() == [0, 128, 255, 255]
    rgb = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(model_to_extractor(rgb).float(), ((rgb + 1) * 127.5).round())


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A randomly initialised torch-fidelity InceptionV3 saved to a file (the real weights are not here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path


def test_inception_fid_pipeline_runs_on_a_weights_file(random_inception_weights, tmp_path, monkeypatch):
    monkeypatch.setenv(inception.ENV_VAR, str(random_inception_weights))  # the env var is honoured
    extractor = inception.load_inception(None, tmp_path, download=False, feature="64")  # 2048: same path, slower
    images = torch.rand(6, 1, 16, 16) * 2 - 1  # grey, model range
    feats = extractor(images)["features"]
    assert feats.shape == (6, 64) and torch.isfinite(feats).all()
    assert abs(stats.fid(feats, feats)) < 1e-3
    assert not torch.equal(feats[0], feats[1])  # different images, different features
    assert len(extractor.weights_hash) == 12 and extractor.name == "inception-v3-compat-64"


def test_inception_runs_on_the_device_of_the_images(random_inception_weights, tmp_path):
    """Samples generated on a GPU go through Inception there; `meta` stands in for a GPU (shapes, no data)."""
    extractor = inception.load_inception(str(random_inception_weights), tmp_path, download=False, feature="64")
    feats = extractor.features(torch.zeros(3, 1, 16, 16, device="meta"))
    assert feats.shape == (3, 64) and feats.device.type == "meta"
    assert {p.device.type for p in extractor.net.parameters()} == {"meta"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inception_features_of_gpu_images_match_the_cpu(random_inception_weights, tmp_path):
    extractor = inception.load_inception(str(random_inception_weights), tmp_path, download=False, feature="64")
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    on_cpu = extractor(images)["features"]
    on_gpu = extractor(images.cuda())["features"]
    assert next(extractor.net.parameters()).is_cuda and on_gpu.device.type == "cpu"
    assert torch.allclose(on_gpu, on_cpu, atol=1e-3)


def test_offline_without_weights_skips_and_says_so_once(tmp_path, monkeypatch, caplog):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setattr(inception, "_skip_said", set())
    with caplog.at_level(logging.WARNING):
        assert inception.load_inception(None, tmp_path, download=True) is None
        assert inception.load_inception(None, tmp_path, download=True) is None
    said = [r.getMessage() for r in caplog.records if "Inception FID/KID skipped" in r.getMessage()]
    assert len(said) == 1 and "Name or service not known" in said[0]


def test_a_missing_configured_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="metrics.inception_weights=.*does not exist"):
        inception.load_inception(str(tmp_path / "nope.pth"), tmp_path, download=False)


class _Samples:
    """A stand-in model: `sample(n)` serves the given images in order."""

    device = torch.device("cpu")

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.i = images, 0

    def sample(self, n: int, y=None) -> torch.Tensor:
        self.i += n
        return self.images[self.i - n : self.i]


def test_reference_features_are_computed_once_per_dataset(tmp_path, monkeypatch):
    calls = []
    original = ClassifierExtractor.__call__
    monkeypatch.setattr(ClassifierExtractor, "__call__", lambda self, x: calls.append(len(x)) or original(self, x))
    dm = DigitsDataModule(image_size=16, channels=1)
    settings = {"epochs": 1, "min_steps": 20, "width": 8}
    first = QualityMetrics(str(tmp_path), classifier_settings=settings, inception=False, batch_size=100, kid_subsets=10)
    first.setup(dm)
    assert sum(calls) == 144 + 359  # the validation images and the whole test split, once each
    test_images = torch.cat([x for x, _ in dm.test_dataloader()])
    metrics, protocol = first.compute(first.features(_Samples(test_images), 300), "test")
    assert sum(calls) == 144 + 359 + 300
    calls.clear()
    second = QualityMetrics(
        str(tmp_path), classifier_settings=settings, inception=False, batch_size=100, kid_subsets=10
    )
    second.setup(DigitsDataModule(image_size=16, channels=1))  # a second evaluation: cached classifier and stats
    second.compute(second.features(_Samples(test_images), 300), "test")
    assert sum(calls) == 300
    p = protocol["classifier"]
    assert (p["n_real"], p["n_fake"], p["reference_split"]) == (359, 300, "test")
    assert p["extractor"] == "classifier-digits-16px" and len(p["extractor_weights_sha256"]) == 12
    assert {"torch", "torchmetrics"} <= set(p["versions"]) and "resize" in p
    assert metrics[keys.MODES] == 10 and metrics[keys.CFID] < 50 and metrics[keys.PRECISION] > 0.8
    reference = reference_features(tmp_path, dm, "test", second.extractors["classifier"])
    assert reference["features"].shape == (359, 128)


def test_the_reference_k_nn_radii_are_cached_with_its_features(tmp_path, monkeypatch):
    """The k-NN radii of precision/recall are computed once per reference and kept in its cache file (a
    10,000-row search costs ~100 MB of transient memory per run); a later run searches only its own samples."""
    rows = []
    original = stats.kth_nn_radius
    monkeypatch.setattr(stats, "kth_nn_radius", lambda x, k, **kw: rows.append(len(x)) or original(x, k, **kw))
    monkeypatch.setattr("genlab.metrics.reference.kth_nn_radius", stats.kth_nn_radius)
    dm = DigitsDataModule(image_size=16, channels=1)
    settings = {"epochs": 1, "min_steps": 20, "width": 8}
    make = lambda: QualityMetrics(str(tmp_path), classifier_settings=settings, inception=False, batch_size=100)  # noqa: E731
    make().setup(dm)
    assert sorted(rows) == [144, 359]  # the validation and the test reference, once each
    rows.clear()
    again = make()
    again.setup(DigitsDataModule(image_size=16, channels=1))
    test_images = torch.cat([x for x, _ in dm.test_dataloader()])
    metrics, _ = again.compute(again.features(_Samples(test_images), 300), "test")
    assert rows == [300]  # the generated features' own radii (recall); the reference's came from the cache
    stored = reference_features(tmp_path, dm, "test", again.extractors["classifier"])
    assert torch.equal(stored["radii_k3"], original(stored["features"].float(), 3))
    assert metrics[keys.PRECISION] > 0.8


def test_a_read_only_cache_without_radii_still_serves_the_run(tmp_path, monkeypatch, caplog):
    dm = DigitsDataModule(image_size=16, channels=1)
    settings = {"epochs": 1, "min_steps": 20, "width": 8}
    metrics = QualityMetrics(str(tmp_path), classifier_settings=settings, inception=False, pr_k=None)
    metrics.setup(dm, splits=("test",))  # a reference cached without radii (as before they were kept in it)
    extractor = metrics.extractors["classifier"]

    def read_only(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("genlab.metrics.reference.atomic_save", read_only)
    with caplog.at_level(logging.WARNING):
        stored = reference_features(tmp_path, dm, "test", extractor, pr_k=3)
    assert stored["radii_k3"].shape == (359,) and "using them unsaved" in caplog.text


def test_classifier_features_in_chunks_equal_one_forward():
    torch.manual_seed(0)
    from genlab.metrics.classifier import Classifier

    net = Classifier(1, 10, width=8, feature_dim=32)
    net.body[0][1].running_mean.uniform_(-0.5, 0.5)  # non-trivial BatchNorm statistics: eval mode uses them
    extractor = ClassifierExtractor(net, "c", "h")
    images = torch.rand(250, 1, 16, 16) * 2 - 1
    chunked = extractor(images)  # 100, 100, 50
    with torch.no_grad():
        h = net.eval().features(images)
    assert torch.allclose(chunked["features"], h, atol=1e-5)
    assert torch.allclose(chunked["probs"], torch.softmax(net.head(h), 1), atol=1e-6)


@pytest.mark.parametrize("change", [{"split_seed": 1}, {"val_fraction": 0.2}, {"subset": 100}])
def test_cache_key_changes_with_what_draws_the_splits(change):
    same = dataset_key(DigitsDataModule(image_size=16, channels=1))
    assert dataset_key(DigitsDataModule(image_size=16, channels=1)) == same  # one config, one key
    assert dataset_key(DigitsDataModule(image_size=16, channels=1, **change)) != same


def test_image_folder_cache_key_follows_its_files(tmp_path):
    written = sorted(fx.write_image_folder(tmp_path / "imgs"))
    key = lambda: dataset_key(ImageFolderDataModule(str(tmp_path / "imgs"), image_size=16, channels=3))  # noqa: E731
    first = key()
    assert key() == first
    fx.write_png(tmp_path / "imgs" / "extra.png", np.zeros((16, 16, 3), np.uint8))  # an image added
    added = key()
    assert added != first
    os.utime(written[0], ns=(1, 1))  # an image touched (same name and size)
    touched = key()
    assert touched not in (first, added)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")  # not part of the data
    assert key() == touched


def test_rank_shares_add_up_to_exactly_n():
    for n, world in [(1000, 3), (7, 4), (10, 1)]:
        shares = [rank_share(n, world, r) for r in range(world)]
        assert sum(c for c, _ in shares) == n
        assert [o for _, o in shares] == [sum(c for c, _ in shares[:r]) for r in range(world)]


class _Shift(nn.Module):
    device = torch.device("cpu")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2  # 0.1 in the [0, 1] scale


def test_reconstruction_mse_and_psnr_in_unit_scale():
    x = torch.rand(3, 8, 1, 4, 4) * 1.6 - 0.8  # stays inside [-1, 1] after the shift
    out = reconstruction_metrics(_Shift(), list(x))
    assert out[keys.MSE] == pytest.approx(0.01, rel=1e-4)
    assert out[keys.PSNR] == pytest.approx(20.0, rel=1e-4)


def test_iwae_recovers_the_closed_form_of_a_linear_gaussian_model():
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s2 I): log p(x) = log N(x; b, W W^T + s2 I)."""
    torch.manual_seed(0)
    d_x, d_z, s2 = 4, 2, 0.5
    w, b = torch.randn(d_x, d_z, dtype=torch.float64), torch.randn(d_x, dtype=torch.float64)
    x = torch.randn(5, d_x, dtype=torch.float64) * 2
    exact = torch.distributions.MultivariateNormal(b, w @ w.T + s2 * torch.eye(d_x, dtype=torch.float64)).log_prob(x)

    def log_lik(x_, z):  # z (k, B, d_z) -> (k, B)
        return log_normal(x_.expand(len(z), *x_.shape), z @ w.T + b, torch.full_like(x_, math.log(s2)))

    def posterior(x_):  # a deliberately imperfect q(z|x): the exact mean, twice the exact variance
        cov = torch.linalg.inv(torch.eye(d_z, dtype=torch.float64) + w.T @ w / s2)
        mu = (x_ - b) @ w @ cov.T / s2
        return mu, torch.log(2 * torch.diagonal(cov)).expand_as(mu)

    one = elbo(x.repeat(2000, 1), posterior, log_lik).view(2000, -1).mean(0)  # the ELBO, averaged over z
    many = iwae_log_px(x, posterior, log_lik, k=5000, chunk=1000)
    assert (one < exact).all()
    assert torch.allclose(many, exact, atol=0.02)
    assert (exact - many).mean() < (exact - one).mean() - 0.05  # the bound tightens with k


class _ValueClassifier:
    """A stand-in dataset classifier: an image filled with (c - 4.5) / 5 in [-1, 1] is class c."""

    name, weights_hash, resize = "value-classifier", "none", "none"

    def __call__(self, images):
        c = (images.flatten(1).mean(1) * 5 + 4.5).round().long().clamp(0, 9)
        return {"features": torch.nn.functional.one_hot(c, 10).float(), "probs": torch.eye(10)[c]}


class _Conditional:
    """A conditional model drawing class `(y + shift) % 10` when asked for class y; reconstructs as class
    `(label + shift) % 10` too."""

    device, num_classes = torch.device("cpu"), 10

    def __init__(self, shift: int) -> None:
        self.shift = shift

    @staticmethod
    def image(c):
        return ((c.float() - 4.5) / 5).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    def sample(self, n, y=None):
        return self.image((y + self.shift) % 10)

    def reconstruct(self, x):
        return self.image(((x.flatten(1).mean(1) * 5 + 4.5).round().long() + self.shift) % 10)


@pytest.mark.parametrize("shift, agreement", [(0, 1.0), (1, 0.0)])
def test_class_agreement_of_conditional_samples_and_reconstruction_accuracy(shift, agreement):
    """ACGAN's `class_agreement` (classifier label == requested class) and `recon_accuracy` (classifier label
    of G(E(x)) == label of x): 1 for a model that honours the request, 0 for one that draws the next class."""
    quality = QualityMetrics("unused", inception=False, batch_size=7)
    quality.extractors["classifier"] = _ValueClassifier()
    model = _Conditional(shift)
    fake = quality.features(model, 50, offset=3)
    assert fake["classifier"]["labels"].tolist() == [(3 + i) % 10 for i in range(50)]
    real = quality.extractors["classifier"](_Conditional.image(torch.arange(50) % 10))
    assert quality_metrics_of(real, fake["classifier"])[keys.CLASS_AGREEMENT] == agreement
    labels = torch.arange(30) % 10
    batches = list(_Conditional.image(labels).split(8))
    assert quality.reconstruction_accuracy(model, batches, labels) == {keys.RECON_ACC: agreement}


def quality_metrics_of(real, fake):
    from genlab.metrics.quality import classifier_metrics

    return classifier_metrics(real, fake, kid_subset_size=10, kid_subsets=2)
