"""Quality-selected GAN checkpoints, self-describing checkpoints, and `genlab.evaluate|sample|download`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF_DIR

FAST = ["debug=fast", "callbacks.progress_bar.refresh_rate=0", "logger=[]"]
BRIEF = "metrics.quality.classifier_settings.min_steps=100"  # the classifier debug=fast trained and cached


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENLAB_DATA_DIR": str(cwd / "no_data")}
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args = (*args, f"hydra.run.dir={cwd}/hydra")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Fast runs on digits. GAN: 3 epochs, quality every 2nd (epochs 1 and 2, the last): no metric at epoch 0."""
    out = {}
    for model, extra in (("gan", ["trainer.max_epochs=3", "metrics.every_n_epochs=2"]), ("vae", [])):
        folder = tmp_path_factory.mktemp(model)
        proc = run("genlab", f"model={model}", *FAST, *extra, f"hydra.run.dir={folder}", cwd=folder)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[model] = folder
    return out


def test_gan_best_checkpoint_is_chosen_by_classifier_fid(runs):
    folder = runs["gan"]
    records = [json.loads(line) for line in (folder / "sample_quality.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    assert all(r["protocol"]["classifier"]["n_fake"] == 200 for r in records)  # metrics.n_samples under debug=fast
    # chosen on the validation images (10% held out of the training file), reported on the test split
    assert {r["protocol"]["classifier"]["n_real"] for r in val} == {144}
    assert [r["protocol"]["classifier"]["reference"]["split"] for r in records] == ["val", "val", "test"]
    assert records[-1]["protocol"]["classifier"]["n_real"] == 359
    best_epoch = min(val, key=lambda r: r["cfid"])["epoch"]
    best = list((folder / "checkpoints").glob("best-*.ckpt"))
    assert [p.name for p in best] == [f"best-epoch{best_epoch:03d}.ckpt"]
    ckpt = torch.load(best[0], map_location="cpu", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Checkpoint"))
    assert state["monitor"] == "val/cfid"
    assert ckpt["genlab_config"]["model"]["_target_"] == "genlab.models.GAN"  # checkpoints describe themselves
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"test/cfid", "test/modes", "test/cis", "test/class_kl", "test/precision", "test/recall"} <= set(metrics)


def test_vae_keeps_its_likelihood_monitor(runs):
    ckpt = torch.load(next((runs["vae"] / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Checkpoint"))
    assert state["monitor"] == "val/nelbo"


def test_evaluate_writes_metrics_and_protocol_into_the_run_dir(runs):
    folder = runs["gan"]
    proc = run("genlab.evaluate", f"run_dir={folder}", "n_samples=300", "ckpt=last", BRIEF, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "test/cfid" in metrics  # the training metrics stay
    assert 0 <= metrics["eval/modes"] <= 10 and metrics["eval/cfid"] > 0 and metrics["eval/cis"] >= 1
    protocol = metrics["eval/protocol"]
    assert protocol["checkpoint"].endswith("last.ckpt") and protocol["n_samples"] == 300
    assert (protocol["classifier"]["n_fake"], protocol["classifier"]["n_real"]) == (300, 359)
    assert protocol["classifier"]["reference"] == {"split": "test", "source": "the test split", "n_images": 359}
    assert "in " in proc.stdout and "eval/cfid" in proc.stdout


def test_vae_evaluation_has_reconstruction_likelihood_and_the_table(runs, tmp_path):
    out = tmp_path / "vae_metrics.json"
    args = [f"run_dir={runs['vae']}", "n_samples=200", "metrics.iwae_k=8", "metrics.likelihood_table_n=4", BRIEF]
    proc = run("genlab.evaluate", *args, f"output={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert 0 < metrics["eval/recon_mse"] < 0.25 and metrics["eval/recon_psnr"] > 6
    assert metrics["eval/iwae_nll"] <= metrics["eval/nelbo"] + 1.0  # IWAE is the tighter bound (up to noise)
    assert metrics["eval/protocol"]["likelihood"]["iwae_k"] == 8
    table = (tmp_path / "likelihood_table.csv").read_text().splitlines()
    assert table[0] == "index,label,nelbo,iwae_nll_k8" and len(table) == 5


def test_a_copied_checkpoint_is_evaluated_away_from_its_run_dir(runs, tmp_path):
    copy = tmp_path / "elsewhere" / "model.ckpt"
    copy.parent.mkdir()
    shutil.copy(runs["gan"] / "checkpoints" / "last.ckpt", copy)
    proc = run("genlab.evaluate", f"ckpt_path={copy}", "n_samples=100", BRIEF, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval/cfid" in json.loads((tmp_path / "elsewhere" / "model.metrics.json").read_text())


def test_missing_or_incompatible_checkpoint_exits_with_one_message(runs, tmp_path):
    proc = run("genlab.evaluate", f"run_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"run_dir={tmp_path} is not a genlab run directory (no checkpoints/)" in proc.stderr
    ckpt = torch.load(runs["gan"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt["genlab_config"]["model"]["latent_dim"] = 8  # weights no longer fit the model the config builds
    torch.save(ckpt, tmp_path / "bad.ckpt")
    proc = run("genlab.evaluate", f"ckpt_path={tmp_path / 'bad.ckpt'}", cwd=tmp_path)
    assert proc.returncode == 1 and "does not fit model=genlab.models.GAN" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["npz", "png", "grid"])
def test_sample_writes_npz_pngs_or_a_grid(runs, tmp_path, fmt):
    from genlab.tasks.sample import sample

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "sample.yaml", overrides=[f"run_dir={runs['gan']}", "n=10", f"format={fmt}", f"output={tmp_path}"]
        )
    GlobalHydra.instance().clear()
    assert sample(cfg) == tmp_path
    if fmt == "npz":
        x = np.load(tmp_path / "samples.npz")["x"]
        assert x.shape == (10, 16, 16, 1) and x.dtype == np.uint8 and x.max() > x.min()
    elif fmt == "png":
        assert len(list((tmp_path / "samples").glob("*.png"))) == 10
    else:  # the grid holds exactly the model's samples under the task's seed, laid out 8 per row
        from PIL import Image
        from torchvision.utils import make_grid

        from genlab.models.sampling import sample_batches
        from genlab.runs import open_run

        model = open_run(runs["gan"]).model
        torch.manual_seed(cfg.seed)
        images = torch.cat(list(sample_batches(model, 10, 500)))
        expected = make_grid((images + 1) / 2, nrow=8, padding=2).mul(255).add(0.5).clamp(0, 255).byte()
        saved = torch.from_numpy(np.array(Image.open(tmp_path / "samples.png"))).permute(
            2, 0, 1
        )  # (H, W, 3) -> (3, H, W)
        assert saved.shape == (3, 2 * 18 + 2, 8 * 18 + 2) and torch.equal(saved, expected)
        assert saved.float().std() > 10  # not a blank picture


def test_download_reports_each_item_and_fails_cleanly_offline(tmp_path, monkeypatch, capsys):
    import socket

    from genlab.errors import GenlabError
    from genlab.tasks.download import download

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("GENLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path / "cache"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("download.yaml", overrides=["datasets=[digits,mnist]"])
        with pytest.raises(GenlabError, match="2 of 3 downloads failed: dataset mnist, inception weights"):
            download(cfg)
    GlobalHydra.instance().clear()
    out = capsys.readouterr().out
    assert "ok      dataset digits" in out and "FAILED  dataset mnist" in out
    assert f"FAILED  inception weights: could not download the InceptionV3 weights to {tmp_path / 'cache'}" in out


@pytest.fixture(scope="module")
def acgan_run(tmp_path_factory) -> Path:
    """A conditional model's run (one short epoch of ACGAN on digits), trained in-process."""
    from genlab.tasks.train import train
    from tests.conftest import compose_cfg

    out = tmp_path_factory.mktemp("acgan") / "run"
    overrides = [*FAST, "model=acgan", "test=false", "trainer.limit_train_batches=2", "callbacks.sample_quality=null"]
    train(compose_cfg(overrides, output_dir=out))
    GlobalHydra.instance().clear()
    return out


def sample_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("sample.yaml", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def test_sample_of_a_lone_checkpoint_writes_next_to_it(acgan_run, tmp_path):
    from genlab.tasks.sample import sample

    lone = tmp_path / "x" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(acgan_run / "checkpoints" / "last.ckpt", lone)
    assert sample(sample_cfg(f"ckpt_path={lone}", "n=4")) == tmp_path / "x" / "model-samples"
    assert (tmp_path / "x" / "model-samples" / "samples.png").is_file()
    in_run = acgan_run / "checkpoints" / "last.ckpt"  # a checkpoint inside a run dir: the run's generated/
    assert sample(sample_cfg(f"ckpt_path={in_run}", "n=4")) == acgan_run / "generated"
    assert sample(sample_cfg(f"run_dir={acgan_run}", "ckpt=last", "n=4")) == acgan_run / "generated"


def test_sample_per_class_draws_batch_size_at_a_time(acgan_run, tmp_path, monkeypatch):
    from genlab.models.base import GenerativeModule
    from genlab.tasks.sample import sample

    drawn = []
    original = GenerativeModule.sample

    def spy(self, n, y=None):
        drawn.append((n, y.unique().tolist()))
        return original(self, n, y)

    monkeypatch.setattr(GenerativeModule, "sample", spy)
    cfg = sample_cfg(f"run_dir={acgan_run}", "ckpt=last", "n=5", "batch_size=2", "per_class=true", "format=npz")
    out = sample(cfg)
    assert drawn == [(b, [label]) for label in range(10) for b in (2, 2, 1)]
    for label in range(10):
        assert np.load(out / f"class_{label}.npz")["x"].shape == (5, 16, 16, 1)


def test_test_metrics_of_a_run_equal_what_evaluate_computes_on_its_best_checkpoint(runs, tmp_path):
    """test/* (computed at the end of training on the best checkpoint) and `genlab.evaluate ckpt=best` draw the
    same samples from the same seed (metrics.seed) against the same test reference: the same numbers."""
    from genlab.tasks.evaluate import evaluate

    trained = json.loads((runs["gan"] / "metrics.json").read_text())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        overrides = [f"run_dir={runs['gan']}", "ckpt=best", "n_samples=200", "metrics.quality.kid_subsets=10"]
        cfg = compose("evaluate.yaml", overrides=[*overrides, BRIEF, f"output={tmp_path / 'm.json'}"])
    GlobalHydra.instance().clear()
    values = evaluate(cfg)
    names = ("cfid", "ckid", "cis", "modes", "class_kl", "precision", "recall")
    assert {k: values[k] for k in names} == pytest.approx({k: trained[f"test/{k}"] for k in names}, rel=1e-5)
