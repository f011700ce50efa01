"""When sample quality is evaluated during training, what the best checkpoint is when nothing was evaluated,
and which models are not scored (short runs on scikit-learn digits)."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from genlab.callbacks.metrics import SampleQuality
from genlab.tasks.train import train
from tests.conftest import FAST, compose_cfg


def run(out: Path, *overrides: str) -> None:
    train(compose_cfg([*FAST, "data=digits", *overrides], output_dir=out))


def records(out: Path) -> list[dict]:
    path = out / "sample_quality.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def recorded_best(out: Path) -> str:
    """The best checkpoint the Checkpoint callback recorded in last.ckpt's callback state."""
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return next(v for k, v in ckpt["callbacks"].items() if k.startswith("Checkpoint"))["best_model_path"]


def said(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def due_epochs(max_epochs: int, max_steps: int, stop_epoch: int | None = None, every: int = 3) -> list[int]:
    """Epochs at which a fresh SampleQuality evaluates, for a fit of 10 optimiser steps an epoch."""
    callback, due = SampleQuality(metrics=None, every_n_epochs=every), []
    for epoch in range(max_epochs if max_epochs > 0 else 10):
        step = 10 * (epoch + 1) if max_steps < 0 else min(10 * (epoch + 1), max_steps)
        stop = epoch == stop_epoch
        trainer = SimpleNamespace(
            current_epoch=epoch, max_epochs=max_epochs, max_steps=max_steps, global_step=step, should_stop=stop
        )
        if callback._due(trainer):
            due.append(epoch)
        if trainer.should_stop or step == max_steps:
            break
    return due


def test_evaluation_follows_every_n_epochs_and_runs_once_more_when_the_fit_ends():
    assert due_epochs(max_epochs=8, max_steps=-1) == [2, 5, 7]  # every 3rd epoch and the last
    assert due_epochs(max_epochs=-1, max_steps=100) == [2, 5, 8, 9]  # by steps: every 3rd, not every epoch
    assert due_epochs(max_epochs=20, max_steps=45) == [2, 4]  # max_steps ends the fit in epoch 4
    assert due_epochs(max_epochs=20, max_steps=-1, stop_epoch=3) == [2, 3]  # a GAN's G-step budget: should_stop


def test_a_gan_trained_by_steps_is_evaluated_every_n_epochs_and_at_its_last_step(tmp_path):
    # 6 batches an epoch, one G step each: 16 G steps end the fit in epoch 2, after its 4th batch
    run(
        tmp_path,
        "model=gan_base",
        "trainer.max_epochs=-1",
        "trainer.max_steps=16",
        "metrics.every_n_epochs=2",
        "test=false",
    )
    val = [r for r in records(tmp_path) if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    assert val[-1]["step"] == torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    best = min(val, key=lambda r: r["cfid"])["epoch"]
    assert recorded_best(tmp_path) == str(tmp_path / "checkpoints" / f"best-epoch{best:03d}.ckpt")
    assert Path(recorded_best(tmp_path)).is_file()


def test_without_validation_images_there_are_no_val_metrics_and_best_is_last(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run(tmp_path, "model=gan", "data.val_fraction=0", "trainer.max_epochs=2")
    assert [r["split"] for r in records(tmp_path)] == ["test"]  # no val/* against some other images
    assert records(tmp_path)[0]["protocol"]["classifier"]["reference"]["split"] == "test"
    assert recorded_best(tmp_path) == "" and not list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert said(caplog, "falls back to last.ckpt") == [
        "data.val_fraction=0: no validation images, so no val/cfid (no val/* metrics, sample quality included) "
        "to choose the best checkpoint by: `best` falls back to last.ckpt"
    ]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/cfid" in metrics and not [k for k in metrics if k.startswith("val/")]


def test_best_falls_back_to_last_with_one_line_when_no_evaluation_ran(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run(tmp_path, "model=vae", "trainer.max_epochs=2", "trainer.limit_val_batches=0", "test=false")
    assert recorded_best(tmp_path) == "" and not list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert said(caplog, "falls back to last.ckpt") == [
        "no val/nelbo was logged during training (no evaluation ran): `best` falls back to last.ckpt"
    ]


@pytest.mark.parametrize("prior", [False, True])
def test_a_vqvae_is_scored_only_with_a_prior(tmp_path, caplog, monkeypatch, prior):
    from genlab.models.vqvae import VQVAE

    class Uniform(torch.nn.Module):  # a stand-in prior over the code grid (what `genlab.prior` attaches)
        def sample(self, n: int, generator=None) -> torch.Tensor:
            return torch.randint(4, (n, *self.grid), generator=generator)

    if prior:  # attached before training: the model then samples from it, and is scored
        original = VQVAE.on_fit_start

        def attach(self):
            self.set_prior(Uniform())
            self.prior.grid = self.latent_shape
            original(self)

        monkeypatch.setattr(VQVAE, "on_fit_start", attach)
    with caplog.at_level(logging.INFO):
        run(tmp_path, "model=vqvae", "model.codebook_size=4")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    if prior:
        assert [r["split"] for r in records(tmp_path)] == ["val", "test"] and "test/cfid" in metrics
        assert not said(caplog, "can_sample")
    else:
        assert records(tmp_path) == [] and not [k for k in metrics if k.endswith("cfid")]
        assert len(said(caplog, "VQVAE.can_sample is False")) == 1
