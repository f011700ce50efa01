"""The divergence guard: a non-finite loss, gradient or state, or a loss beyond guard.max_loss, stops the run with
a message naming the step, the model part and the value; the last good checkpoint is never overwritten;
guard.skip_nonfinite skips."""

import re
from pathlib import Path

import pytest
import torch

from genlab.errors import DivergenceError
from genlab.tasks.train import train
from tests.conftest import FAST, compose_cfg

TINY = [
    "data.image_size=8",
    "data.batch_size=16",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "test=false",
    "model.latent_dim=4",
]
VAE = ["model=vae", "model.encoder.hidden_dims=[16]", "model.decoder.hidden_dims=[16]", *TINY]
GAN = ["model=gan_base", "model.generator.hidden_dims=[16]", "model.discriminator.hidden_dims=[16]", *TINY]


def run(out: Path, *overrides: str) -> None:
    train(compose_cfg([*FAST, *overrides], output_dir=out))


def test_exploding_learning_rate_stops_the_run(tmp_path):
    with pytest.raises(DivergenceError) as info:  # the probe: default VAE nets at lr=1e6
        run(tmp_path, "model=vae", *TINY, "model.lr=1e6", "trainer.max_epochs=5")
    assert str(info.value) == (
        "training diverged at step 1 (epoch 0, batch 1): non-finite loss nan in the model; no checkpoint had been "
        "written yet. Lower the learning rate, or set guard.skip_nonfinite=true to skip such steps (at most "
        "guard.max_skips)"
    )
    assert not (tmp_path / "checkpoints").exists()


def test_nan_in_a_gan_step_names_the_discriminator(tmp_path):
    poison = ["+callbacks.poison._target_=tests.helpers.PoisonBatches", "+callbacks.poison.batches=[2]"]
    with pytest.raises(DivergenceError) as info:
        run(tmp_path, *GAN, *poison)
    assert str(info.value).startswith(
        "training diverged at step 4 (epoch 0, batch 2): non-finite loss nan in discriminator; no checkpoint had "
        "been written yet."
    )


def test_last_good_checkpoint_is_never_overwritten_by_a_nonfinite_state(tmp_path):
    poison = ["+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch", "+callbacks.poison.epoch=1"]
    poison.append("callbacks.last_checkpoint.min_interval_s=0")  # a write at every epoch end: the guard sees it
    with pytest.raises(
        DivergenceError,
        match=r"non-finite value nan in state_dict\..* \(checkpoint not written\); "
        r"the last good checkpoint is kept: .*last\.ckpt",
    ):
        run(tmp_path, *VAE, "trainer.max_epochs=3", *poison)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


@pytest.mark.parametrize("model", [VAE, GAN])
def test_skip_nonfinite_skips_up_to_max_skips(tmp_path, model):
    poison = ["+callbacks.poison._target_=tests.helpers.PoisonBatches", "+callbacks.poison.batches=[1,5]"]
    run(tmp_path / "ok", *model, "trainer.max_epochs=2", *poison, "guard.skip_nonfinite=true", "guard.max_skips=2")
    last = torch.load(tmp_path / "ok" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["callbacks"]["DivergenceGuard"] == {"skipped": 2}
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    with pytest.raises(DivergenceError, match=r"after skipping 1 such steps \(guard\.max_skips=1\)"):
        run(
            tmp_path / "stop", *model, "trainer.max_epochs=2", *poison, "guard.skip_nonfinite=true", "guard.max_skips=1"
        )


def test_a_finite_loss_beyond_max_loss_stops_the_run_and_null_turns_it_off(tmp_path):
    """The sweep probe `model=wgan_gp model.lr=1e4` ran to the end with a critic loss of 7e17 before max_loss."""
    gp = ["model=wgan_gp", "model.generator.hidden_dims=[16]", "model.discriminator.hidden_dims=[16]", *TINY]
    with pytest.raises(DivergenceError, match=r"loss (\S+) beyond guard\.max_loss=1e\+10 in discriminator") as info:
        run(tmp_path / "stop", *gp, "model.lr=1e4", "trainer.max_epochs=5")
    assert float(re.search(r"loss (\S+) beyond", str(info.value)).group(1)) > 1e10
    run(tmp_path / "off", *gp, "model.lr=1e4", "trainer.max_epochs=1", "guard.max_loss=null")  # finite: runs on


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "guard.max_loss=0 is invalid; expected a number > 0, or null"),
        ("-1.0", "guard.max_loss=-1.0 is invalid; expected a number > 0, or null"),
        ("true", "guard.max_loss=True has the wrong type; expected a number"),
    ],
)
def test_bad_max_loss_is_refused(tmp_path, value, message):
    with pytest.raises(Exception, match=re.escape(message)):
        run(tmp_path, *GAN, f"guard.max_loss={value}")
