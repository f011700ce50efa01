"""Sweeps: the same lr and latent keys for every model, resuming a stopped sweep, the Optuna search's value,
multi-process trainers under -m, and the launcher configs."""

import csv
import json
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra.types import RunMode
from hydra.utils import instantiate

from genlab.callbacks.objective import ObjectiveCheck
from genlab.errors import SweepError
from genlab.reports.collect import read_sweep
from genlab.utils.sweeps import check_metric_name, clear_attempt, objective, previous_attempt
from tests.conftest import compose_cfg
from tests.test_cli import FAST, genlab

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
ADVERSARIAL = {
    "gan",
    "gan_base",
    "dcgan",
    "dcgan_paper",
    "wgan",
    "wgan_gp",
    "wgan_gp_paper",
    "wgan_mlp",
    "lsgan",
    "hinge_gan",
    "acgan",
    "cgan",
    "bigan",
}


@pytest.mark.parametrize("model", MODELS)
def test_a_latent_and_lr_grid_has_the_same_keys_for_every_model_and_lr_sets_every_rate(model):
    """`-m model.latent_dim=.. model.lr=..` works for every model (the VQ-VAE's latent is a grid of codes, sized by
    code_dim): model.lr is each model's one learning rate, and both players' for every adversarial recipe."""
    latent = [] if model == "vqvae" else ["model.latent_dim=7"]
    cfg = compose_cfg([f"model={model}", *latent, "model.lr=0.0123"]).model
    rates = {k: cfg[k] for k in ("lr", "lr_g", "lr_d") if k in cfg}
    assert set(rates) == ({"lr", "lr_g", "lr_d"} if model in ADVERSARIAL else {"lr"})
    assert set(rates.values()) == {0.0123}, rates
    assert model == "vqvae" or cfg.latent_dim == 7


def test_an_explicit_player_rate_wins_over_model_lr():
    cfg = compose_cfg(["model=wgan_gp", "model.lr=0.01", "model.lr_d=0.003"]).model
    assert (cfg.lr_g, cfg.lr_d) == (0.01, 0.003)


def test_a_two_rate_recipe_scales_with_model_lr_and_keeps_its_ratio():
    """A TTUR recipe writes D's rate as a multiple of model.lr; a sweep over model.lr then scales both."""
    ttur = ["model=gan", "model.lr_d='${genlab_mul:${model.lr},4}'"]
    for lr in (1e-4, 3e-4):
        gan = instantiate(compose_cfg([*ttur, f"model.lr={lr}"]).model)
        opt_g, opt_d = gan.configure_optimizers()[0]
        assert opt_g.defaults["lr"] == pytest.approx(lr) and opt_d.defaults["lr"] == pytest.approx(4 * lr)


# ------------------------------------------------------------------------------------------- resume a sweep
TINY_SWEEP = [
    "model=vae",
    "model.latent_dim=2,3,4",
    "model.encoder.hidden_dims=[16]",
    "model.decoder.hidden_dims=[16]",
    *FAST,
    "data.image_size=8",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
    "report=false",
    "logger=[]",
    "~callbacks.sample_quality",
]


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    }


def test_a_sweep_killed_mid_job_finishes_on_a_rerun_with_every_job_done_once(tmp_path):
    """Job 1 is killed (SIGKILL, the whole sweep) as its second epoch starts: job 0 is done, job 2 never started.
    The same command again skips job 0 untouched, resumes job 1 from its last checkpoint and runs job 2."""
    sweep = tmp_path / "sweep"
    kill = ["+callbacks.kill._target_=tests.helpers.KillAtEpoch", "+callbacks.kill.epoch=1", "+callbacks.kill.job=1"]
    every_epoch = "callbacks.last_checkpoint.min_interval_s=0"  # by default none in a run's first 60 s
    args = ["-m", *TINY_SWEEP, *kill, every_epoch, f"hydra.sweep.dir={sweep}"]
    first = genlab(tmp_path, *args)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert json.loads((sweep / "0" / "status.json").read_text())["status"] == "ok"
    assert not (sweep / "1" / "status.json").exists() and not (sweep / "2").exists()
    stopped = torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["epoch"] == 0
    done = files_of(sweep / "0")

    rerun = genlab(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"job 0: done in an earlier run of this sweep ({sweep / '0'}): skipped" in rerun.stdout
    assert files_of(sweep / "0") == done  # not retrained, not rewritten
    log = (sweep / "1" / "train.log").read_text()
    assert log.count(f"Restoring states from the checkpoint path at {sweep / '1' / 'checkpoints' / 'last.ckpt'}") == 1
    assert log.count("Training started") == 2  # the killed start and the resumed one, no third from scratch
    for job in ("1", "2"):
        final = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert final["epoch"] == 1 and final["global_step"] == 2 * 2  # 2 epochs of 2 batches, not more
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"], r["model.latent_dim"]) for r in rows] == [
        ("0", "ok", "2"),
        ("1", "ok", "3"),
        ("2", "ok", "4"),
    ]


def test_a_job_dir_of_another_sweep_is_refused_before_it_is_touched(tmp_path):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- model=vae\n- model.lr=0.001\n")
    assert previous_attempt(job, ["model=vae", "model.lr=0.001"]) == "restart"  # started, no checkpoint yet
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert previous_attempt(job, ["model=vae", "model.lr=0.001"]) == "resume"
    (job / "status.json").write_text('{"status": "ok", "error": ""}')
    assert previous_attempt(job, ["model=vae", "model.lr=0.001"]) == "done"
    assert previous_attempt(tmp_path / "1", ["model=vae"]) is None
    with pytest.raises(SweepError, match=r"holds a run of another sweep \(its overrides: model=vae model.lr=0.001; "):
        previous_attempt(job, ["model=vae", "model.lr=0.01"])


# ------------------------------------------------------------------------------------------- the Optuna search
def test_optuna_receives_each_runs_best_and_a_failed_trial_does_not_stop_the_search(tmp_path):
    """Three trials (seeded: lr 3e-3, 1e30, 1e-3); every run's weights are scrambled before its last validation, so
    its best checkpoint (epoch 0) is far better than its last epoch. The 1e30 trial diverges: a failed trial."""
    sweep = tmp_path / "search"
    worse_last = ["+callbacks.noise._target_=tests.helpers.NoiseWeightsAtEpoch", "+callbacks.noise.epoch=1"]
    trials = ["hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=9", "model.lr=choice(1e-3,3e-3,1e30)"]
    fixed = ["model.latent_dim=2", "model.beta=1.0"]
    tiny = [o for o in TINY_SWEEP if not o.startswith(("model=", "model.latent_dim="))]
    proc = genlab(
        tmp_path, "hparams_search=vae_optuna", *tiny, *fixed, *trials, *worse_last, f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # one job failed; the search ran to its end
    assert "genlab: 1 of 3 jobs failed: 1" in proc.stderr
    best = {job: json.loads((sweep / job / "checkpoints" / "best.json").read_text()) for job in ("0", "2")}
    last = {job: json.loads((sweep / job / "metrics.json").read_text())["val/nelbo"] for job in ("0", "2")}
    assert all(best[j]["epoch"] == 0 and best[j]["metrics"]["val/nelbo"] < last[j] / 10 for j in best)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    winner = min(best, key=lambda j: best[j]["score"])
    assert result["best_value"] == pytest.approx(best[winner]["metrics"]["val/nelbo"], rel=1e-6)
    assert result["best_params"] == {"model.lr": {"0": 3e-3, "2": 1e-3}[winner]}
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed"), ("2", "ok")]


def test_optimized_metric_is_the_best_checkpoints_value_and_a_misspelt_one_names_the_logged_keys(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    record = {"checkpoint": "best-epoch003.ckpt", "monitor": "val/nelbo", "score": 90.0, "epoch": 3}
    (tmp_path / "checkpoints" / "best.json").write_text(json.dumps({**record, "metrics": {"val/nelbo": 90.0}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"val/nelbo": 120.0, "val/kl": 3.0, "test/nelbo": 95.0}))
    assert objective(tmp_path, "val/nelbo") == 90.0  # the best checkpoint's, not the last epoch's 120
    assert objective(tmp_path, "val/kl") == 3.0  # not recorded at the best: the last epoch's
    with pytest.raises(
        SweepError,
        match=r"^optimized_metric=val/nelbx was not logged by this run; expected one of: "
        r"val/kl, val/nelbo$",
    ):
        objective(tmp_path, "val/nelbx")
    with pytest.raises(SweepError, match="optimized_metric=test/nelbo is not a validation metric"):
        check_metric_name("test/nelbo")


# ------------------------------------------------------------------------------------------- -m and DDP
def test_a_sweep_of_ddp_jobs_is_refused_in_one_line_before_any_rank_starts(tmp_path):
    """Lightning's DDP launcher would rerun the whole command line, -m included, as each further rank."""
    sweep = tmp_path / "sweep"
    ddp = ["trainer=ddp_cpu", "trainer.devices=2"]
    proc = genlab(tmp_path, "-m", "model=vae", "model.latent_dim=2,4", *FAST, *ddp, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("genlab: error:")]
    assert errors == [
        "genlab: error: job 0: -m cannot run a trainer of 2 processes (DDPStrategy): Lightning starts its other ranks "
        "by rerunning the command line, -m included; run each job without -m, or the sweep with launcher=slurm "
        "(SLURM starts each job's ranks)"
    ], proc.stderr[-3000:]
    assert "#1 :" not in proc.stdout + proc.stderr  # the sweep stopped at its first job
    assert not (sweep / "0").exists() and json.loads((sweep / "rejected_jobs.jsonl").read_text())["job"] == 0


# ---------------------------------------------------------------------------- configs that cannot run here
def test_the_slurm_launcher_composes_with_its_cluster_settings_as_config_values():
    cfg = compose_cfg(
        ["launcher=slurm", "launcher.partition=gpu", "launcher.time=240", "launcher.gpus=4", "launcher.nodes=2"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.nodes) == ("gpu", 240, 2)
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # one rank per GPU, started by SLURM
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)  # what Lightning checks against SLURM's tasks


def test_the_local_launcher_runs_jobs_in_parallel_processes():
    launcher = compose_cfg(["launcher=local", "launcher.jobs=3"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 3


@pytest.mark.parametrize(
    ("search", "model", "metric"), [("vae_optuna", "vae", "val/nelbo"), ("gan_optuna", "dcgan", "val/cfid")]
)
def test_each_example_search_minimises_a_validation_metric_and_keeps_that_metrics_best_checkpoint(
    search, model, metric
):
    cfg = compose_cfg([f"hparams_search={search}"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.runtime.choices.model == model and cfg.optimized_metric == metric
    assert cfg.callbacks.model_checkpoint.monitor == metric and cfg.hydra.sweeper.direction == "minimize"
    assert {"model.lr", "model.latent_dim"} <= set(cfg.hydra.sweeper.params)
    compose_cfg([])  # leave Hydra's global config in run mode for the tests that follow


def test_a_rerun_sweep_lists_each_job_once_in_its_summary(tmp_path):
    """Job 0 was rejected, then ran on the rerun; job 1 was rejected twice: one row each, the latest record."""
    run = tmp_path / "0" / ".hydra"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    (run / "hydra.yaml").write_text("hydra: {job: {num: 0}}\n")
    (tmp_path / "0" / "status.json").write_text('{"status": "ok", "error": ""}')
    lines = [{"job": 0, "overrides": [], "error": "old"}, {"job": 1, "overrides": [], "error": "first"}]
    lines.append({"job": 1, "overrides": [], "error": "second"})
    (tmp_path / "rejected_jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [(r.job, r.status, r.error) for r in read_sweep(tmp_path)] == [(0, "ok", ""), (1, "failed", "second")]


def test_a_job_started_again_keeps_only_the_log_of_its_attempt_without_a_checkpoint(tmp_path):
    for name in (".hydra/overrides.yaml", "samples/epoch_000.png", "metrics.csv", "train.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_attempt(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["train.log"]


def test_a_search_with_a_misspelt_metric_stops_after_the_first_validation():
    check = ObjectiveCheck("val/nelbx")
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/nelbo": 1.0, "train/loss": 2.0})
    with pytest.raises(SweepError, match=r"^optimized_metric=val/nelbx was not logged by this run; expected one of: "):
        check.on_validation_end(trainer, None)
    ObjectiveCheck("val/cfid").on_validation_end(trainer, None)  # sample quality may come at a later epoch
    ObjectiveCheck("val/nelbo").on_validation_end(trainer, None)
    assert compose_cfg(["hparams_search=optuna"]).callbacks.objective_check.metric == "val/loss"
