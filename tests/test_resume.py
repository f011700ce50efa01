"""Exact resume: a run interrupted (at an epoch end, or by a signal mid-epoch) and resumed in place ends with
weights and optimiser state bit-identical to an uninterrupted run of the same length."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
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
MLP = ["model.generator.hidden_dims=[32]", "model.discriminator.hidden_dims=[32]", "model.latent_dim=4"]
NETS = {"vae": ["model.encoder.hidden_dims=[32]", "model.decoder.hidden_dims=[32]", "model.latent_dim=4"]}
DCGAN = ["model.generator.width=4", "model.latent_dim=4"]  # 8 px: one stride-2 block
# gan: two G steps per batch, its EMA generator with standing BatchNorm statistics and its cosine decay; wgan: MLP
# nets, an EMA without a decay; dcgan: + hflip coin flips and R1 every 4th D step; cgan: labels through G, the
# projection head and the RNG, the cosine schedule of experiment=gan_mnist. Every cosine decay here (gan, wgan_gp,
# dcgan, cgan) has T_max pinned to the full run's 3 epochs, as `T_max: ${trainer.max_epochs}` would give the 1-epoch
# first half T_max 1, a different schedule (the checkpoint keeps the scheduler's T_max)
COSINE = "{_target_:torch.optim.lr_scheduler.CosineAnnealingLR,_partial_:true,T_max:3}"
NETS |= {
    "gan": [*MLP, f"model.scheduler_g={COSINE}", f"model.scheduler_d={COSINE}"],
    "wgan": MLP,
    "wgan_gp": [*MLP, f"model.scheduler_g={COSINE}", f"model.scheduler_d={COSINE}"],
    "dcgan": [*DCGAN, "data.hflip=true", f"model.scheduler_g={COSINE}", f"model.scheduler_d={COSINE}"],
    "cgan": [*MLP, f"model.scheduler_g={COSINE}", f"model.scheduler_d={COSINE}"],
    "dcgan_paper": DCGAN,  # BatchNorm in D, G's step on the D step's batch (reuse_fake)
}
MODELS = list(NETS)


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


@pytest.mark.parametrize("at_validation", [False, True], ids=["in_its_last_batch", "while_it_validates"])
@pytest.mark.parametrize("model", ["cgan", "vae"])
def test_a_signal_at_an_epoch_end_resumes_bit_exactly(tmp_path, model, at_validation):
    """The signal arrives during an epoch's last batch, or after it while the epoch validates: the checkpoint must
    hold the epoch's end (schedulers stepped per epoch), not a state between its batches and its end hooks."""
    extra = [f"model.scheduler={COSINE}"] if model == "vae" else []
    run(tmp_path / "straight", model, "trainer.max_epochs=3", *extra)
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAfter", "+callbacks.stop.batches=4"]
    stop.append(f"+callbacks.stop.at_validation={at_validation}")
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "split", model, "trainer.max_epochs=3", *extra, *stop)
    run(tmp_path / "split", model, "trainer.max_epochs=3", *extra, f"resume={tmp_path / 'split'}")
    assert_identical(final_state(tmp_path / "straight"), final_state(tmp_path / "split"))


# Lightning's default trainer (not debug=fast): sanity validation steps before training, again on resume, and
# full epochs; only what is not the trainer's is made small (nets, image size, sample-quality effort)
DEFAULT_TRAINER = [
    "logger=[]",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.accelerator=cpu",
    "data.image_size=8",
    "test=false",
    "metrics.n_samples=200",
    "metrics.quality.classifier_settings.min_steps=100",
]


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_resume_with_the_default_trainer_is_bit_exact(tmp_path, model):
    def run_default(out: Path, *overrides: str) -> None:
        train(compose_cfg([*DEFAULT_TRAINER, f"model={model}", *NETS[model], *overrides], output_dir=out))

    assert compose_cfg(DEFAULT_TRAINER).trainer.num_sanity_val_steps > 0
    run_default(tmp_path / "straight", "trainer.max_epochs=2")
    run_default(tmp_path / "split", "trainer.max_epochs=1")
    run_default(tmp_path / "split", "trainer.max_epochs=2", f"resume={tmp_path / 'split'}")
    assert_identical(final_state(tmp_path / "straight"), final_state(tmp_path / "split"))


def test_how_much_is_validated_does_not_change_training(tmp_path):
    run(tmp_path / "one", "gan", "trainer.max_epochs=2", "trainer.limit_val_batches=1")
    run(tmp_path / "three", "gan", "trainer.max_epochs=2", "trainer.limit_val_batches=3")
    assert_identical(final_state(tmp_path / "one"), final_state(tmp_path / "three"))


# ------------------------------------------------------------------------------------------- end to end


CLI_FAST = [
    "model=vae",
    "debug=fast",
    "callbacks.progress_bar.refresh_rate=0",
    "data.image_size=8",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data")}
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def wait_for_training(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (log.is_file() and "SIGTERM or SIGINT saves a resumable checkpoint" in log.read_text()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)


def test_sigterm_writes_a_checkpoint_exits_nonzero_and_resumes_in_place(tmp_path):
    out = tmp_path / "run"
    proc = start(tmp_path, *CLI_FAST, "trainer.max_epochs=100000", f"hydra.run.dir={out}")
    wait_for_training(proc, out / "train.log")
    while not (out / "metrics.csv").is_file():  # an epoch or more in: there is history to keep
        assert proc.poll() is None
        time.sleep(0.1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"resumable checkpoint written to {out / 'checkpoints' / 'last.ckpt'}" in stderr
    assert f"Resume with: python -m genlab resume={out}" in stderr
    stopped = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    rows_before = csv_rows(out / "metrics.csv")

    resumed = subprocess.run(
        [sys.executable, "-m", "genlab", f"resume={out}", f"trainer.max_epochs={stopped['epoch'] + 2}"],
        capture_output=True,
        text=True,
        env={**os.environ, "GENLAB_DATA_DIR": str(tmp_path)},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["epoch"] == stopped["epoch"] + 1 and final["global_step"] > stopped["global_step"]
    assert csv_rows(out / "metrics.csv")[: len(rows_before)] == rows_before  # the history is kept, then continued
    assert json.loads((out / "metrics.json").read_text())["test/nelbo"] is not None
    assert [p.parent for p in tmp_path.rglob(".hydra")] == [out]  # no second run dir
    both = stderr + resumed.stderr + resumed.stdout
    assert "exists and is not empty" not in both and "will be deleted" not in both


def test_killed_sweep_leaves_the_finished_jobs_intact(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start(tmp_path, "-m", *CLI_FAST, "trainer.max_epochs=1,100000,1", f"hydra.sweep.dir={sweep}")
    wait_for_training(proc, sweep / "1" / "train.log")
    done = {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()}
    assert (sweep / "0" / "metrics.json").is_file()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert {p: p.read_bytes() for p in (sweep / "0").rglob("*") if p.is_file()} == done
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "2").exists()


def test_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    for var, value in {"HOME": str(tmp_path), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    run(out, "vae", "trainer.max_epochs=1", "logger=wandb")
    run_id = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["TrainingState"]
    run_id = run_id["wandb_run_id"]
    run(out, "vae", "trainer.max_epochs=2", "logger=wandb", f"resume={out}")
    assert run_id and sorted(p.name.rsplit("-", 1)[-1] for p in (out / "wandb").glob("offline-run-*")) == [run_id] * 2


def test_a_new_run_from_a_checkpoint_gets_a_wandb_run_of_its_own(tmp_path, monkeypatch):
    """`ckpt_path=X` without `resume=` (e.g. a sweep started from X) must not write into X's W&B run."""
    for var, value in {"HOME": str(tmp_path), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    run(first, "vae", "trainer.max_epochs=1", "logger=wandb")
    state = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["TrainingState"]
    run(second, "vae", "trainer.max_epochs=2", "logger=wandb", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    ids = [p.name.rsplit("-", 1)[-1] for p in (second / "wandb").glob("offline-run-*")]
    assert state["wandb_run_id"] and len(ids) == 1 and ids[0] != state["wandb_run_id"]
