"""Safe loading, secrets, W&B fallbacks, strict metrics.json, no false Lightning warnings, determinism."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.errors import CheckpointError, GenlabError
from genlab.tasks.train import train, write_metrics
from genlab.utils.checkpoints import load_checkpoint
from genlab.utils.loggers import _reachable, wandb_logger
from tests.conftest import FAST, compose_cfg
from tests.test_cli import genlab


class _MakesADirectory:
    """Unpickling this calls os.makedirs(path): stands for any code a crafted checkpoint could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _MakesADirectory(marker)}, path)
    return path, marker


def test_crafted_checkpoint_does_not_run_its_code(tmp_path, crafted):
    path, marker = crafted
    proc = genlab(tmp_path, "debug=fast", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"genlab: error: ckpt_path={path} holds pickled Python objects that are not plain weights (Trying to load "
        f"unsupported GLOBAL os.makedirs); loading them can run arbitrary code, so genlab refuses. If you trust its "
        f"source, rerun with allow_unsafe_checkpoint=true"
    )
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_unsafe_loading_needs_the_opt_in_and_warns(crafted, caplog):
    path, marker = crafted
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    load_checkpoint(path, allow_unsafe=True)  # the user said they trust it: the payload runs
    assert marker.is_dir() and "allow_unsafe_checkpoint=true: loading" in caplog.text


def test_genlab_checkpoints_load_with_weights_only(tmp_path):
    train(compose_cfg([*FAST, "model=wgan", "data.image_size=8", "test=false"], output_dir=tmp_path))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)  # no pickled objects needed
    assert {"TrainingState", "DivergenceGuard"} <= {k.split("{")[0] for k in ckpt["callbacks"]}
    assert ckpt["callbacks"]["TrainingState"]["seed"] == 42


FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
SECRET = "s3cr3t-aws-value-that-must-not-leak"


def test_wandb_with_a_key_but_no_server_goes_offline_fast_and_leaks_no_secret(tmp_path):
    home, out = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    env = {
        "HOME": str(home),
        "WANDB_API_KEY": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
        "WANDB_MODE": "",
        "WANDB_SILENT": "true",
    }
    env = {**env, "WANDB_DIR": "", "WANDB_CONFIG_DIR": "", "WANDB_CACHE_DIR": "", "WANDB_DATA_DIR": ""}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "model=vae", "logger=[csv,wandb]", "debug=fast", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GENLAB_DATA_DIR": str(tmp_path), **env},
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B: the server is not reachable; logging offline to" in proc.stdout + proc.stderr
    assert elapsed < 60  # not wandb's own ~110 s of retries
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
    # wandb's settings, cache and logs stay under the run dir (matplotlib's own font cache may appear in ~/.cache)
    mpl = {home / ".cache", home / ".config"}
    assert [p for p in home.rglob("*") if "matplotlib" not in p.parts and p not in mpl] == []
    leaks = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and (FAKE_KEY.encode() in p.read_bytes() or SECRET.encode() in p.read_bytes())
    ]
    assert leaks == [] and FAKE_KEY not in proc.stdout + proc.stderr


def test_unreachable_server_is_detected_within_the_timeout(monkeypatch):
    def never_answers(*args, **kwargs):  # a server that never answers (the probe's thread ends later, quietly)
        time.sleep(30)
        raise TimeoutError

    monkeypatch.setattr(socket, "create_connection", never_answers)
    start = time.monotonic()
    assert not _reachable("https://api.wandb.ai", timeout=1.0)
    assert time.monotonic() - start < 3


def test_malformed_wandb_key_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key!")
    with pytest.raises(GenlabError) as info:
        wandb_logger(project="p", save_dir=str(tmp_path))
    assert str(info.value) == (
        "WANDB_API_KEY is malformed (10 characters; expected 40 or more letters, digits or underscores, as shown at "
        "https://wandb.ai/authorize); fix it, or unset it to log offline"
    )


def test_metrics_json_is_strict_and_flags_nonfinite_values(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, {"test/loss": float("nan"), "test/kl": 1.5, "val/x": float("inf")})

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "test/loss": None,
        "test/kl": 1.5,
        "val/x": None,
        "nonfinite_metrics": ["test/loss", "val/x"],
    }


def test_same_seed_and_config_give_identical_metrics_and_weights(tmp_path):
    overrides = [
        *FAST,
        "model=gan",
        "data.image_size=8",
        "trainer.max_epochs=2",
        "model.latent_dim=8",
        "model.generator.hidden_dims=[32]",
        "model.discriminator.hidden_dims=[32]",
    ]
    first = train(compose_cfg(overrides, output_dir=tmp_path / "a"))
    second = train(compose_cfg(overrides, output_dir=tmp_path / "b"))
    assert first == second and "test/jsd" in first
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
