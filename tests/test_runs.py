"""One way to open a run (genlab/runs.py): every entry point finds the recorded best checkpoint, refuses crafted
files (pickled code, stored configs naming code that is not genlab's, crafted prior and cache files) with one
line, and a VQ-VAE run samples through the prior fitted since."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from genlab.errors import CheckpointError, GenlabError
from genlab.models import GAN
from genlab.runs import TRUSTED_TARGETS, find_checkpoint, open_run
from genlab.tasks.train import train
from tests.conftest import CONF_DIR, FAST, compose_cfg
from tests.test_priors import TINY_VQVAE, prior_cfg
from tests.test_safety import _MakesADirectory


class MyGAN(GAN):
    """A user's own model class: trusted only when the user lists it in `trusted_targets`."""


def task_cfg(task: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(f"{task}.yaml", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def entry(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENLAB_DATA_DIR": str(cwd / "no_data")}
    return subprocess.run(
        [sys.executable, "-m", module, *args, f"hydra.run.dir={cwd}/hydra-{module}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan_run")
    train(compose_cfg([*FAST, "model=gan", "data.image_size=8", "trainer.max_epochs=2", "test=false"], out))
    GlobalHydra.instance().clear()
    return out


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory) -> Path:
    """A tiny VQ-VAE run with a fitted GMM prior."""
    from genlab.tasks.prior import fit_prior

    out = tmp_path_factory.mktemp("vq_run")
    train(compose_cfg([*FAST, *TINY_VQVAE], out))
    fit_prior(prior_cfg(out, "gmm"))
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("*.log"))
    return to


def crafted_payload(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _MakesADirectory(marker)}, path)
    return path


def crafted_config(run: Path, path: Path, target: str, marker: Path) -> Path:
    """The run's last.ckpt whose stored model config names `target` (weights and digest untouched)."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["genlab_config"]["model"] = {"_target_": target, "command": f"mkdir {marker}", "repo_or_dir": "x/y"}
    torch.save(ckpt, path)
    return path


# -- find ----------------------------------------------------------------------------------------------------------
def test_best_is_the_checkpoint_the_callback_recorded_not_the_newest_file(gan_run, tmp_path, caplog):
    run = copy_run(gan_run, tmp_path / "run")
    folder = run / "checkpoints"
    record = json.loads((folder / "best.json").read_text())
    recorded = folder / record["checkpoint"]
    assert recorded.is_file() and record["monitor"] == "val/cfid"
    newer = folder / "best-epoch099.ckpt"
    shutil.copy(folder / "last.ckpt", newer)  # a newer best-*.ckpt that nothing chose
    os.utime(newer, (time.time() + 100, time.time() + 100))
    assert find_checkpoint(run, "best") == recorded
    assert find_checkpoint(run, "last") == folder / "last.ckpt"
    assert find_checkpoint(run, "best-epoch099.ckpt") == newer
    (folder / "best.json").unlink()
    assert find_checkpoint(run, "best") == folder / "last.ckpt"
    assert "No best checkpoint was recorded" in caplog.text


def test_a_best_record_cannot_point_outside_its_folder(gan_run, tmp_path):
    run = copy_run(gan_run, tmp_path / "run")
    (run / "checkpoints" / "best.json").write_text(json.dumps({"checkpoint": "../../elsewhere.ckpt"}))
    with pytest.raises(CheckpointError, match=r"names '../../elsewhere.ckpt'; expected a checkpoint file name"):
        find_checkpoint(run, "best")


# -- load: pickled code --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["genlab.evaluate", "genlab.sample", "genlab.prior"])
def test_a_checkpoint_with_pickled_code_is_refused_by_every_entry_point(gan_run, tmp_path, module):
    marker = tmp_path / "code-ran"
    if module == "genlab.prior":  # prior opens run dirs: the crafted file is the run's last.ckpt
        run = copy_run(gan_run, tmp_path / "run")
        path = crafted_payload(run / "checkpoints" / "last.ckpt", marker)
        args = [f"run_dir={run}", "ckpt=last"]
    else:
        path = crafted_payload(tmp_path / "crafted.ckpt", marker)
        args = [f"ckpt_path={path}"]
    proc = entry(module, *args, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds pickled Python objects that are not plain weights" in lines[0]
    assert f"={path} " in lines[0] and "GLOBAL os.makedirs" in lines[0]
    assert not marker.exists()


# -- rebuild: targets named by a stored config ---------------------------------------------------------------------
@pytest.mark.parametrize("target", ["os.system", "torch.hub.load"])
@pytest.mark.parametrize("task", ["evaluate", "sample", "prior"])
def test_a_stored_config_naming_code_outside_genlab_is_refused(gan_run, tmp_path, task, target):
    from genlab.tasks.evaluate import evaluate
    from genlab.tasks.prior import fit_prior
    from genlab.tasks.sample import sample

    marker = tmp_path / "code-ran"
    if task == "prior":
        run = copy_run(gan_run, tmp_path / "run")
        crafted_config(gan_run, run / "checkpoints" / "last.ckpt", target, marker)
        cfg, fn = task_cfg("prior", f"run_dir={run}", "ckpt=last", "prior=gmm"), fit_prior
    else:
        path = crafted_config(gan_run, tmp_path / "crafted.ckpt", target, marker)
        cfg = task_cfg(task, f"ckpt_path={path}", f"output={tmp_path / 'out'}")
        fn = evaluate if task == "evaluate" else sample
    with pytest.raises(CheckpointError) as info:
        fn(cfg)
    assert f"names model._target_='{target}', which is not one of genlab's own classes" in str(info.value)
    assert "trusted_targets" in str(info.value) and "allow_unsafe_checkpoint=true" in str(info.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_evaluate_refuses_os_system_with_one_line_and_exit_1(gan_run, tmp_path):
    marker = tmp_path / "code-ran"
    path = crafted_config(gan_run, tmp_path / "crafted.ckpt", "os.system", marker)
    proc = entry("genlab.evaluate", f"ckpt_path={path}", cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"genlab: error: checkpoint {path} names model._target_='os.system'")
    assert not marker.exists()


def test_a_users_own_model_class_is_trusted_only_when_listed(gan_run, tmp_path):
    ckpt = torch.load(gan_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["genlab_config"]["model"]["_target_"] = "tests.test_runs.MyGAN"
    torch.save(ckpt, tmp_path / "mine.ckpt")
    with pytest.raises(CheckpointError, match=r"model._target_='tests.test_runs.MyGAN', which is not one of genlab"):
        open_run(ckpt_path=tmp_path / "mine.ckpt")
    run = open_run(ckpt_path=tmp_path / "mine.ckpt", trusted=["tests.test_runs.MyGAN"])
    assert type(run.model) is MyGAN and not run.model.training


def test_the_allow_list_is_exact_names_and_covers_every_shipped_config():
    shipped = set()
    for path in Path(CONF_DIR).rglob("*.yaml"):
        text = path.read_text()
        shipped |= {line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("_target_:")}
    built_from_files = {t for t in shipped if t.startswith(("genlab.models", "genlab.nets", "genlab.data", "torch."))}
    assert built_from_files <= TRUSTED_TARGETS
    assert not any(t.endswith("*") for t in TRUSTED_TARGETS)
    assert {"torch.hub.load", "os.system", "genlab.utils.runner.fail", "torch.load"}.isdisjoint(TRUSTED_TARGETS)


def test_resume_refuses_saved_overrides_that_name_foreign_code(gan_run, tmp_path):
    from tests.test_cli import genlab

    run = copy_run(gan_run, tmp_path / "run")
    saved = run / ".hydra" / "overrides.yaml"
    marker = tmp_path / "code-ran"
    saved.write_text(yaml.safe_dump(["+model._target_=os.system", f"+model.command=mkdir {marker}"]))
    proc = genlab(tmp_path, f"resume={run}")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "holds the override '+model._target_=os.system'" in proc.stderr and not marker.exists()


# -- attach: the VQ-VAE's prior ------------------------------------------------------------------------------------
def test_evaluate_and_sample_attach_the_fitted_prior(vq_run, tmp_path):
    run = open_run(vq_run)
    assert run.prior == "gmm" and run.model.prior is not None
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(run.model.sample_latent(5, gen()), run.model.prior.sample(5, gen()))
    assert open_run(vq_run, attach=False).model.prior is None
    assert open_run(vq_run, prior="none").model.prior is None  # prior=none: uniform codes, for comparison
    with pytest.raises(GenlabError, match=r"prior=pixelcnn: no fitted prior at .*prior-pixelcnn\.pt; fit one with"):
        open_run(vq_run, prior="pixelcnn")


@pytest.mark.parametrize("kind", ["payload", "os.system"])
def test_a_crafted_prior_file_is_refused(vq_run, tmp_path, kind):
    from genlab.tasks.sample import sample

    run = copy_run(vq_run, tmp_path / "run")
    path, marker = run / "checkpoints" / "prior-gmm.pt", tmp_path / "code-ran"
    if kind == "payload":
        crafted_payload(path, marker)
        expected = r"prior=.*prior-gmm\.pt holds pickled Python objects that are not plain weights"
    else:
        saved = torch.load(path, weights_only=True)
        saved["config"] = {"_target_": "os.system", "command": f"mkdir {marker}"}
        torch.save(saved, path)
        expected = r"prior file .*prior-gmm\.pt names prior._target_='os.system', which is not one of genlab's"
    with pytest.raises(CheckpointError, match=expected):
        sample(task_cfg("sample", f"run_dir={run}", "n=4", f"output={tmp_path / 'out'}"))
    assert not marker.exists()


def test_a_crafted_metrics_cache_file_is_refused(gan_run, tmp_path, monkeypatch):
    from genlab.tasks.evaluate import evaluate

    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path / "cache"))
    args = [f"run_dir={gan_run}", "n_samples=50", "metrics.quality.classifier_settings.min_steps=50"]
    evaluate(task_cfg("evaluate", *args, f"output={tmp_path / 'first.json'}"))
    cached = sorted((tmp_path / "cache").rglob("*.pt"))
    assert cached, "evaluate caches its classifier and reference features"
    marker = tmp_path / "code-ran"
    for path in cached:
        crafted_payload(path, marker)
    with pytest.raises(GenlabError, match=r"the metrics cache file .*\.pt is not one genlab wrote .* delete it"):
        evaluate(task_cfg("evaluate", *args, f"output={tmp_path / 'second.json'}"))
    assert not marker.exists()
