"""data.augment: noisy copies of the training images and a trained model's samples, added to the training set only."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from genlab.data import Augment, DigitsDataModule
from genlab.data.augment import NOISES, gaussian_noise, poisson_noise, salt_pepper_noise
from genlab.errors import CheckpointError, ConfigError
from genlab.models.sampling import sample_batches
from genlab.runs import open_run
from genlab.utils.images import model_to_uint8
from tests.conftest import FAST, compose_cfg


def grey(value: int, n: int = 64, channels: int = 1, size: int = 16) -> torch.Tensor:
    return torch.full((n, channels, size, size), value, dtype=torch.uint8)


def digits(**kwargs) -> DigitsDataModule:
    return DigitsDataModule(**{"image_size": 16, "channels": 1, "subset": 50, **kwargs})


# ------------------------------------------------------------------------------------------- the noise


def test_gaussian_noise_has_the_asked_spread_around_each_pixel():
    out = gaussian_noise(grey(128), sigma=0.1, generator=torch.Generator().manual_seed(0)).float()
    assert abs(out.mean().item() - 128) < 0.5
    assert abs(out.std().item() - 25.5) < 0.5  # sigma 0.1 of the [0, 1] range = 25.5 grey levels
    dark = gaussian_noise(grey(0), sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert dark.min() == 0 and (dark > 0).float().mean() > 0.4  # clipped at 0: about half the pixels stay black


def test_salt_and_pepper_sets_about_amount_of_the_pixels_to_black_or_white_and_leaves_the_rest():
    images = grey(128, n=200, channels=3)
    out = salt_pepper_noise(images, amount=0.1, generator=torch.Generator().manual_seed(0))
    changed = out != images
    assert set(out[changed].unique().tolist()) == {0, 255}  # a changed pixel is black or white, nothing else
    assert torch.equal(changed.all(1), changed.any(1))  # a pixel's three channels change together
    hit = changed[:, 0].float().mean().item()
    assert abs(hit - 0.1) < 0.005 and abs((out[:, 0] == 255).float().mean().item() - 0.05) < 0.005


def test_poisson_noise_keeps_the_mean_and_its_variance_follows_the_peak():
    for value in (32, 128):
        out = poisson_noise(grey(value, n=200), peak=30.0, generator=torch.Generator().manual_seed(0)).float()
        assert abs(out.mean().item() - value) < 1.0  # shot noise is unbiased away from the clip at 255
        # Var[255 / peak * Poisson(x * peak)] = 255 x / peak grey levels^2 (x in [0, 1]): darker pixels vary less
        assert abs(out.var().item() / (255 * value / 30.0) - 1) < 0.1
    assert poisson_noise(grey(0), 30.0, torch.Generator().manual_seed(0)).max() == 0  # black stays black


# ------------------------------------------------------------------------------------------- the datamodule


def test_noisy_copies_join_the_training_set_only():
    plain, noisy = digits(), digits(augment={"noise": list(NOISES), "copies": 2})
    plain.setup()
    noisy.setup()
    real = plain.data_train
    assert len(noisy.data_train) == 50 * (1 + 2 * 3) and noisy.data_train.images.dtype == torch.uint8
    assert torch.equal(noisy.data_train.images[:50], real.images)  # the real images first, untouched
    assert torch.equal(noisy.data_train.labels, real.labels.repeat(7))  # each copy keeps its image's label
    copies = noisy.data_train.images[50:].view(6, 50, 1, 16, 16)
    assert all((copy != real.images).any() for copy in copies)  # every copy is noisy, and no two are the same
    assert not torch.equal(copies[0], copies[1])
    salt = copies[2:4][copies[2:4] != real.images.expand(2, -1, -1, -1, -1)]
    assert set(salt.unique().tolist()) <= {0, 255}  # the third kind's copies: salt and pepper
    for split in ("val", "test"):
        assert torch.equal(noisy.reference(split).images, plain.reference(split).images)
    again = digits(augment={"noise": list(NOISES), "copies": 2})
    again.setup("fit")
    assert torch.equal(again.data_train.images, noisy.data_train.images)  # drawn from augment.seed


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        (
            {"noise": ["gaussian", "speckle"]},
            "data.augment.noise=['gaussian', 'speckle']: 'speckle' is not a noise kind;",
        ),
        ({"noise": ["gaussian"], "sigma": -0.1}, "data.augment.sigma=-0.1 is invalid; expected a number >= 0"),
        ({"amount": 1.5}, "data.augment.amount=1.5 is invalid; expected a fraction of the pixels in [0, 1]"),
        ({"copies": -1}, "data.augment.copies=-1 is invalid; expected an integer >= 0"),
        ({"peak": 0}, "data.augment.peak=0 is invalid; expected a number > 0"),
        ({"generated": -5}, "data.augment.generated=-5 is invalid; expected an integer >= 0"),
        ({"generated": 10}, "data.augment.generated=10 needs data.augment.run_dir; expected the run directory"),
        ({"run_dir": "x"}, "data.augment.run_dir=x is set but data.augment.generated=0; expected the number"),
        ({"sigmaa": 1}, "data.augment.sigmaa is not an option; expected one of: amount, ckpt, copies, generated,"),
    ],
)
def test_bad_augment_options_are_refused_in_one_line(augment, message):
    with pytest.raises(ConfigError) as info:
        digits(augment=augment)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_missing_run_or_checkpoint_is_named(tmp_path):
    missing = digits(augment={"generated": 10, "run_dir": str(tmp_path / "nowhere")})
    with pytest.raises(CheckpointError, match=r"^data.augment: run_dir=\S+nowhere does not exist; expected a run"):
        missing.setup("fit")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    empty = digits(augment={"generated": 10, "run_dir": str(tmp_path / "empty"), "ckpt": "last"})
    with pytest.raises(CheckpointError, match=r"^data.augment: run_dir=\S+empty ckpt=last: no checkpoint at "):
        empty.setup("fit")


# ------------------------------------------------------------------------------------------- a model's samples


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory) -> Path:
    """A tiny autoencoder trained on digits for one short epoch, in-process."""
    from genlab.tasks.train import train

    out = tmp_path_factory.mktemp("ae") / "run"
    overrides = [*FAST, "model=autoencoder", "model.encoder.hidden_dims.width=32", "model.latent_dim=4", "test=false"]
    train(compose_cfg([*overrides, "trainer.limit_train_batches=3", "callbacks.sample_quality=null"], output_dir=out))
    GlobalHydra.instance().clear()
    return out


def test_a_trained_models_samples_join_the_real_training_images(autoencoder_run):
    dm = digits(augment={"generated": 30, "run_dir": str(autoencoder_run), "seed": 3})
    dm.setup("fit")
    real = digits()
    real.setup("fit")
    assert len(dm.data_train) == 80 and torch.equal(dm.data_train.images[:50], real.data_train.images)
    model = open_run(run_dir=autoencoder_run).model  # what the data holds: this model's samples, seed 3
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expected = model_to_uint8(torch.cat(list(sample_batches(model, 30, batch_size=500))))
    assert torch.equal(dm.data_train.images[50:], expected)
    assert (dm.data_train.labels[50:] == -1).all()  # an unconditional model's samples have no class
    assert torch.equal(dm.reference("val").images, real.reference("val").images)  # validation stays real
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_a_conditional_models_samples_carry_the_class_they_were_drawn_for(monkeypatch):
    class Conditional(torch.nn.Module):
        """Stands in for a conditional generator: image i is filled with the grey level of its label."""

        num_classes, device = 10, torch.device("cpu")

        def sample(self, n, y=None):
            return (y.float() / 9 * 2 - 1).view(n, 1, 1, 1).expand(n, 1, 16, 16)

    opened = []
    monkeypatch.setattr(
        "genlab.runs.open_run", lambda **kw: opened.append(kw) or SimpleNamespace(model=Conditional(), checkpoint="x")
    )
    dm = digits(augment={"generated": 25, "run_dir": "some/run", "ckpt": "last"})
    dm.setup("fit")
    images, labels = dm.data_train.images[50:], dm.data_train.labels[50:]
    assert opened == [{"run_dir": "some/run", "ckpt": "last"}]
    assert torch.equal(labels, torch.arange(25) % 10)  # class-balanced, as genlab.sample draws them
    assert torch.equal(images[:, 0, 0, 0], (labels * 255 / 9).round().to(torch.uint8))  # each image, its own label


def test_samples_of_another_image_size_are_refused(autoencoder_run):
    dm = digits(image_size=8, augment={"generated": 4, "run_dir": str(autoencoder_run)})
    with pytest.raises(ConfigError, match=r"makes images of shape \[1, 16, 16\], the data \[1, 8, 8\]; expected"):
        dm.setup("fit")


def test_augment_dataclass_takes_one_kind_as_a_string():
    assert Augment(noise="poisson").noise == ("poisson",) and Augment(noise="poisson").active
    assert not Augment(noise=["poisson"], copies=0).active


# ------------------------------------------------------------------------------------------- the limited_data_gan study


def study_arms() -> list[str]:
    """The arms of the limited_data_gan sweep, in job order."""
    cfg = compose_cfg(["experiment=limited_data_gan"])
    return [arm.strip() for arm in cfg.hydra.sweeper.params.variant.split(",")]


def test_limited_data_gan_arms_train_on_what_the_study_says(tmp_path):
    """Each arm's composed config (real sizes, MNIST) and, on digits at the study's debug=fast sizes, the exact
    training set its datamodule builds: autoencoders first, each GAN-on-samples arm reading its own autoencoder."""
    arms = study_arms()
    assert arms[:3] == [f"limited_data_gan/autoencoder_depth{d}" for d in (1, 2, 3)] and len(arms) == 9
    sizes = {}
    for job, arm in enumerate(arms):
        cfg = compose_cfg(["experiment=limited_data_gan", f"variant={arm}"], output_dir=tmp_path / str(job))
        model = cfg.model._target_.rsplit(".", 1)[1]
        assert (model, cfg.data.dataset) == (("Autoencoder" if "autoencoder_" in arm else "GAN"), "mnist")
        assert cfg.data.subset == (None if arm.endswith("/full") else 5000)
        if "autoencoder_" in arm:
            assert cfg.model.encoder.hidden_dims.depth == int(arm[-1])
        if "gan_ae_depth" in arm:  # the samples of the autoencoder of the same depth: its job's run dir
            assert cfg.data.augment.generated == 5000
            ae_job = arms.index(arm.replace("gan_ae", "autoencoder"))  # a sibling of this job's run dir
            assert cfg.data.augment.run_dir == f"{tmp_path / str(job)}/../{ae_job}"
        if "autoencoder_" not in arm:
            assert cfg.trainer.max_steps == 15000 and cfg.trainer.max_epochs == -1  # the same G-step budget for all
        if "gan_ae_depth" not in arm:  # (samples need a trained autoencoder: see test_a_trained_models_samples_...)
            fast = compose_cfg(["experiment=limited_data_gan", f"variant={arm}", "debug=fast", "data=digits"])
            dm = instantiate(fast.data)
            dm.setup("fit")
            sizes[arm.split("/")[1]] = len(dm.data_train)
            if not arm.endswith("/full"):  # the first 40 images of the file, then their noisy copies
                assert torch.equal(dm.data_train.images[:40], dm.load("train").images[:40])
    # debug=fast sizes: 40 real images (the digits file has 1,438; the full set 1,294 after validation)
    assert sizes == {**{f"autoencoder_depth{d}": 40 for d in (1, 2, 3)}, "full": 1294, "first_n": 40, "noisy": 160}
