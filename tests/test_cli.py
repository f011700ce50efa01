"""`python -m genlab` end to end, in subprocesses, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["debug=fast", "callbacks.progress_bar.refresh_rate=0"]


def genlab(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    run_env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data"), **(env or {})}
    run_env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "genlab", *args], capture_output=True, text=True, env=run_env, timeout=300
    )


def run_dir_of(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.mark.parametrize("model", ["vae", "wgan"])
def test_fast_run_writes_checkpoint_grids_and_metrics(tmp_path, model):
    out = run_dir_of(tmp_path)
    proc = genlab(tmp_path, f"model={model}", *FAST, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-epoch*.ckpt"))
    assert (out / "samples" / "epoch_000.png").is_file()
    assert (out / "reconstructions" / "epoch_000.png").is_file() == (model == "vae")
    metrics = json.loads((out / "metrics.json").read_text())
    monitor = "test/nelbo" if model == "vae" else "test/wasserstein"
    assert monitor in metrics and isinstance(metrics[monitor], float)
    assert "train/d_loss_epoch" in metrics if model == "wgan" else "train/loss_epoch" in metrics
    assert (out / "metrics.csv").is_file() and (out / ".hydra" / "config.yaml").is_file()
    assert f"Run directory: {out}" in proc.stdout + proc.stderr


def test_wandb_offline_without_api_key_gives_one_run_per_job_beside_csv(tmp_path):
    """No API key: W&B writes offline, one run per sweep job (a GAN and a VAE), and the CSV logger runs too."""
    sweep = tmp_path / "sweep"
    env = {"HOME": str(tmp_path), "WANDB_MODE": "", "WANDB_DIR": "", "WANDB_SILENT": "true"}
    proc = genlab(tmp_path, "-m", "model=gan,vae", "logger=[csv,wandb]", *FAST, f"hydra.sweep.dir={sweep}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        out = sweep / job
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, list((out / "wandb").iterdir()) if (out / "wandb").exists() else "no wandb dir"
        assert list(runs[0].glob("run-*.wandb")) and (runs[0] / "files").is_dir()
        assert (out / "metrics.csv").is_file() and (out / "checkpoints" / "last.ckpt").is_file()  # both loggers ran
    assert "model=vae" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()


def test_tensorboard_receives_scalars_and_the_sample_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run_dir_of(tmp_path)
    proc = genlab(tmp_path, "model=vae", "logger=tensorboard", *FAST, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents.*")).parent)).Reload()
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    assert "val/nelbo" in events.Tags()["scalars"]


def test_help_lists_the_config_groups(tmp_path):
    proc = genlab(tmp_path, "--help")
    assert proc.returncode == 0
    for group in ("model:", "data:", "trainer:", "logger:", "experiment:", "debug: fast"):
        assert group in proc.stdout, group
    models = next(line for line in proc.stdout.splitlines() if line.startswith("model:"))
    expected = {"gan", "vae", "wgan", "conv_vae", "autoencoder", "vqvae", "dcgan", "wgan_gp", "lsgan", "acgan", "bigan"}
    assert expected <= set(models[len("model:") :].replace(",", " ").split())


@pytest.mark.parametrize("entry", ["genlab", "genlab.evaluate", "genlab.sample", "genlab.prior", "genlab.report"])
def test_help_does_not_import_torch(entry):
    """`--help` answers in well under a second: nothing on its path may import torch (or Lightning)."""
    code = (
        f"import runpy, sys; sys.argv = [{entry!r}, '--help']\n"
        f"try:\n    runpy.run_module({entry!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr[-2000:]


@pytest.mark.parametrize(
    "entry, args, message",
    [
        ("genlab", ["trainer.max_epochs=-5"], "trainer.max_epochs=-5 is invalid"),
        ("genlab", ["-m", "model.lr=-1,-2"], "job 1: model.lr=-2 is invalid"),  # each sweep job checks its own
        ("genlab.evaluate", ["run_dir={tmp}/nowhere"], "does not exist"),
        ("genlab.sample", ["run_dir={tmp}"], "is not a genlab run directory (no checkpoints/)"),
        ("genlab.evaluate", ["ckpt_path={tmp}/none.ckpt"], "no checkpoint at"),
        ("genlab.prior", ["run_dir={tmp}/nowhere"], "does not exist"),
        ("genlab.prior", [], "genlab: error: run_dir is not set; expected run_dir=<a genlab run directory>"),
    ],
)
def test_bad_input_is_refused_before_torch_loads(tmp_path, entry, args, message):
    """A bad value or a missing run is one line at once, not after the seconds `import lightning` takes: the
    entry points check what needs no torch first (genlab.utils.runner.run_task's precheck)."""
    argv = [a.format(tmp=tmp_path) for a in args] + [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sw"]
    code = (
        f"import runpy, sys; sys.argv = [{entry!r}, *{argv!r}]\n"
        f"try:\n    runpy.run_module({entry!r}, run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, sorted(m for m in ('torch', 'lightning') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert message in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "1 []", proc.stderr[-2000:]


def test_unknown_option_is_rejected_with_the_valid_choices(tmp_path):
    proc = genlab(tmp_path, "model=nope")
    assert proc.returncode != 0
    assert "Could not find 'model/nope'" in proc.stderr and "Available options in 'model'" in proc.stderr


def test_missing_dataset_offline_is_one_clear_error(tmp_path):
    proc = genlab(tmp_path, "data=mnist", "data.download=false", *FAST, f"hydra.run.dir={run_dir_of(tmp_path)}")
    assert proc.returncode == 1
    assert "genlab: error: dataset 'mnist' not found in" in proc.stderr
    assert str(tmp_path / "no_data" / "MNIST" / "raw") in proc.stderr
    assert "train-images-idx3-ubyte" in proc.stderr and "GENLAB_DATA_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_value_names_the_value_and_the_choices(tmp_path):
    proc = genlab(tmp_path, "model=vae", "model.recon_loss=l1", *FAST, f"hydra.run.dir={run_dir_of(tmp_path)}")
    assert proc.returncode == 1
    assert "model.recon_loss='l1' is not supported; expected one of: 'bce', 'mse'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_missing_or_corrupt_checkpoint_is_one_clear_error(tmp_path, content):
    ckpt = tmp_path / "bad.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    proc = genlab(tmp_path, f"ckpt_path={ckpt}", *FAST, f"hydra.run.dir={run_dir_of(tmp_path)}")
    assert proc.returncode == 1
    expected = "does not exist" if content is None else "is not a valid PyTorch checkpoint"
    assert f"genlab: error: ckpt_path={ckpt} {expected}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_last_ckpt_is_the_final_state_even_when_an_early_epoch_is_best(tmp_path):
    import torch

    out = run_dir_of(tmp_path)
    # mode=max on a falling loss keeps an early epoch "best"; last.ckpt must still hold the final state
    args = ["model=vae", *FAST, "trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=val/nelbo"]
    proc = genlab(tmp_path, *args, "callbacks.model_checkpoint.mode=max", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 18)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "best.json", "last.ckpt"]


def test_a_model_config_in_a_user_folder_trains_without_copying_ours(tmp_path):
    """`--config-dir myconf` adds the user's folder to the search path: their model/mygan.yaml extends our gan."""
    mine = tmp_path / "myconf" / "model"
    mine.mkdir(parents=True)
    (mine / "mygan.yaml").write_text("defaults:\n  - gan\n  - _self_\n\nlatent_dim: 8\nlr_g: 1e-4\n")
    out = run_dir_of(tmp_path)
    args = ["--config-dir", str(tmp_path / "myconf"), "model=mygan", "logger=[]", *FAST, f"hydra.run.dir={out}"]
    proc = genlab(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    saved = (out / ".hydra" / "config.yaml").read_text()
    assert "_target_: genlab.models.GAN" in saved and "latent_dim: 8" in saved and "lr_g: 0.0001" in saved
