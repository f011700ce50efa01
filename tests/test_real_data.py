"""Slow checks on real MNIST (`make test-all`); skipped unless GENLAB_DATA_DIR (or ../shared/data) has it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENLAB_DATA_DIR", REPO.parent / "shared" / "data"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {DATA}"),
]


def genlab(out: Path, *args: str) -> dict:
    env = {**os.environ, "GENLAB_DATA_DIR": str(DATA)}
    cmd = [sys.executable, "-m", "genlab", *args, "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_wgan_trains_one_epoch_on_mnist_and_writes_grids(tmp_path):
    metrics = genlab(tmp_path, "model=wgan", "data=mnist", "trainer.max_epochs=1")
    assert (tmp_path / "samples" / "epoch_000.png").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "test/wasserstein" in metrics


def test_vae_reaches_100_nats_on_mnist_in_20_epochs(tmp_path):
    metrics = genlab(tmp_path, "experiment=vae_mnist")
    assert metrics["test/nelbo"] <= 100.0, metrics
