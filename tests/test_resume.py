"""Exact resume: a run interrupted (at an epoch end, or by a signal mid-epoch) and resumed in place ends with
weights and optimiser state bit-identical to an uninterrupted run of the same length."""

from pathlib import Path

import pytest
import torch

from genlab.errors import TrainingInterrupted
from genlab.tasks.train import train
from tests.conftest import FAST, compose_cfg

# tiny nets, 4 batches an epoch: a WGAN's n_critic=5 cycle crosses both the epoch ends and the interruptions
TINY = [
    "data.image_size=8",
    "data.batch_size=16",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "test=false",
]
NETS = {
    "vae": ["model.encoder.hidden_dims=[32]", "model.decoder.hidden_dims=[32]", "model.latent_dim=4"],
    "gan": ["model.generator.hidden_dims=[32]", "model.discriminator.hidden_dims=[32]", "model.latent_dim=4"],
}
NETS["wgan"] = NETS["gan"]
MODELS = list(NETS)  # the lead adds wgan_gp here


def run(out: Path, model: str, *overrides: str) -> None:
    train(compose_cfg([*FAST, f"model={model}", *TINY, *NETS[model], *overrides], output_dir=out))


def final_state(out: Path) -> dict:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"weights": ckpt["state_dict"], "optim": ckpt["optimizer_states"], "step": ckpt["global_step"]}


def assert_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    flat_a, flat_b = dict(_flatten(a)), dict(_flatten(b))
    assert flat_a.keys() == flat_b.keys()
    differ = [k for k in flat_a if not torch.equal(flat_a[k], flat_b[k])]
    assert not differ, f"{len(differ)} of {len(flat_a)} tensors differ, e.g. {differ[:3]}"


def _flatten(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}.{i}")


@pytest.mark.parametrize("model", MODELS)
def test_resume_at_an_epoch_end_is_bit_exact(tmp_path, model):
    run(tmp_path / "straight", model, "trainer.max_epochs=3")
    run(tmp_path / "split", model, "trainer.max_epochs=1")
    run(tmp_path / "split", model, "trainer.max_epochs=3", f"resume={tmp_path / 'split'}")
    assert_identical(final_state(tmp_path / "straight"), final_state(tmp_path / "split"))


@pytest.mark.parametrize("model", MODELS)
def test_resume_after_a_signal_mid_epoch_is_bit_exact(tmp_path, model):
    run(tmp_path / "straight", model, "trainer.max_epochs=3")
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAfter", "+callbacks.stop.batches=6"]
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "split", model, "trainer.max_epochs=3", *stop)
    interrupted = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["global_step"] < final_state(tmp_path / "straight")["step"]
    run(tmp_path / "split", model, "trainer.max_epochs=3", f"resume={tmp_path / 'split'}")
    assert_identical(final_state(tmp_path / "straight"), final_state(tmp_path / "split"))
