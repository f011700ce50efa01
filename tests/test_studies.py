"""Every experiment in conf/experiment/ runs in its `debug=fast` form (the folder is globbed: a new study is
picked up without touching this file), on small generated stand-ins of its data in the official layouts.

A study is an experiment whose `hydra.sweeper.params` is a grid. To keep the file within its time budget, a
study's fast form runs two jobs here: the first and the last value of the grid's first axis (what the study
compares: e.g. the VAE and the ACGAN of celeba_suite), every other axis at its first value. The single-run
experiments run as multiruns over `experiment=` (one per set of extra overrides they need).
"""

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from tests.conftest import compose_cfg
from tests.data_fixtures import write_celeba, write_cifar10, write_image_folder, write_mnist

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
FAST = ["debug=fast", "callbacks.progress_bar.refresh_rate=0", "metrics.inception_download=false"]
# per study: what the fast form needs beyond debug=fast to stay within seconds on a CPU: the 512 px DCGAN takes
# its steps at 512 px with nets of width 4 and draws no pictures (a grid of 64 images of 512 px is most of its
# cost); the GAN zoo's and the VQ-VAE's nets are narrowed; CelebA's stand-in trains no dataset classifier
# (it would decode JPEGs at every step)
CHEAP = {
    "dcgan_512": [
        "model.generator.width=4",
        "data.batch_size=2",
        "callbacks.sample_grid=null",
        "callbacks.latent_traversal=null",
    ],
    "gan_zoo_64": ["model.generator.width=8"],
    "vqvae_codebook": ["model.encoder.width=16", "model.decoder.width=16"],
    "celeba_suite": ["metrics.quality.classifier=false"],
}
# per study: summary columns and, per job (by its value on the study's first axis), files its run dir must hold
EXPECT = {
    "vae_capacity": (["test/recon", "test/nelbo"], {"": ["samples/epoch_000.png", "reconstructions/epoch_000.png"]}),
    "vae_beta": (["test/kl", "test/nelbo", "test/recon"], {"": ["reconstructions/epoch_000.png"]}),
    "gan_vs_wgan": (["test/cfid", "test/modes", "test/jsd", "test/wasserstein"], {"": ["curves/divergence.png"]}),
    "celeba_suite": (
        ["test/recon"],
        {
            "celeba_suite/vae": ["latent/tsne.png", "reconstructions/epoch_000.png"],
            "celeba_suite/dcgan": ["curves/d_accuracy.png"],
            "celeba_suite/acgan": ["curves/d_accuracy.png", "curves/aux_accuracy.png"],
        },
    ),
    "gan_zoo_64": ([], {"": ["checkpoints/best.json", "latent/traversal.png"]}),
    "vqvae_codebook": (["test/mse", "test/perplexity", "test/codes_used"], {"": ["reconstructions/epoch_000.png"]}),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """GENLAB_DATA_DIR with fake MNIST (600 training images), CIFAR-10, CelebA (with Smiling and Bangs) and a
    flat folder of 64 px images (`images/`)."""
    root = tmp_path_factory.mktemp("study_data")
    write_mnist(root, n_train=600, n_test=100)
    write_cifar10(root)
    write_celeba(root, partition=(16, 4, 4))
    write_image_folder(root / "images", size=64)
    return root


def sweep_params(experiment: str) -> dict[str, list[str]]:
    """The study's grid: {override key: its values as override strings}, in file order ({} for a single run)."""
    cfg = compose_cfg([f"experiment={experiment}"])
    params = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    grid = {}
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        grid[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
    return grid


def data_overrides(experiment: str, data_dir: Path) -> list[str]:
    choice = compose_cfg([f"experiment={experiment}"]).hydra.runtime.choices.data
    return [f"data.root={data_dir / 'images'}"] if choice == "image_folder" else []


def multirun(tmp_path: Path, data_dir: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GENLAB_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "genlab", "-m", *overrides, *FAST, f"hydra.sweep.dir={sweep}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600), sweep


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as f:
        return list(csv.DictReader(f))


STUDIES = [e for e in EXPERIMENTS if sweep_params(e)]
SINGLE_RUNS = [e for e in EXPERIMENTS if e not in STUDIES]


def test_the_named_studies_are_in_the_folder():
    assert {"vae_capacity", "gan_vs_wgan", "vae_beta", "celeba_suite", "gan_zoo_64", "vqvae_codebook"} <= set(STUDIES)
    assert {"dcgan_512", "demo"} <= set(SINGLE_RUNS)


@pytest.mark.parametrize("study", STUDIES)
def test_study_runs_its_fast_form_and_ends_in_a_comparison(tmp_path, data_dir, study):
    grid = sweep_params(study)
    axis, values = next(iter(grid.items()))
    values = list(dict.fromkeys([values[0], values[-1]]))  # the first and the last arm of the first axis
    fixed = [f"{key}={vals[0]}" for key, vals in list(grid.items())[1:]]  # the other axes at their first value
    overrides = [f"{axis}={','.join(values)}", *fixed, *data_overrides(study, data_dir), *CHEAP.get(study, [])]
    proc, sweep = multirun(tmp_path, data_dir, f"experiment={study}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = summary_rows(sweep)
    assert [r["status"] for r in rows] == ["ok"] * len(values), rows
    if len(values) > 1:  # the table compares the arms: one row per value of the study's axis
        assert [r[axis] for r in rows] == values
    columns, files = EXPECT.get(study, ([], {}))
    assert set(columns) <= set(rows[0]), sorted(rows[0])
    for column in columns:
        assert any(r[column] not in ("", "nan") for r in rows), f"{study}: no job has {column}"
    for row in rows:
        for name in files.get("", []) + files.get(row.get(axis, ""), []):
            assert (sweep / row["job"] / name).is_file(), f"{study} job {row['job']} ({row.get(axis)}): no {name}"
    assert (sweep / "summary.md").is_file() and (sweep / "summary.html").is_file()


@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_a_study_builds(study):
    """The whole grid (the fast form above runs two of its jobs): each job's model and data build, sized alike."""
    grid = sweep_params(study)
    root = ["data.root=/nonexistent"] if data_overrides(study, Path("/x")) else []
    jobs = [[f"{k}={v}" for k, v in zip(grid, values, strict=True)] for values in itertools.product(*grid.values())]
    if study == "vae_capacity":
        jobs.append([*jobs[0], "data=cifar10"])  # "and CIFAR-10 when present"
    for job in jobs:
        cfg = compose_cfg([f"experiment={study}", *job, *root])
        model, data = instantiate(cfg.model), instantiate(cfg.data)
        swept = dict(o.split("=", 1) for o in job)
        if "model.latent_dim" in swept:
            assert model.latent_dim == int(swept["model.latent_dim"]), job
        if data.image_size <= 64:  # (512 px: built, not run here)
            assert model.sample(2).shape == (2, data.channels, data.image_size, data.image_size), job


def test_single_run_experiments_run_their_fast_form(tmp_path, data_dir):
    groups: dict[tuple[str, ...], list[str]] = {}  # experiments needing the same extra overrides run as one multirun
    for e in SINGLE_RUNS:
        groups.setdefault((*data_overrides(e, data_dir), *CHEAP.get(e, [])), []).append(e)
    for i, (extra, experiments) in enumerate(groups.items()):
        proc, sweep = multirun(tmp_path / str(i), data_dir, f"experiment={','.join(experiments)}", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = summary_rows(sweep)
        assert [r["status"] for r in rows] == ["ok"] * len(experiments), rows
        for job, experiment in enumerate(experiments):
            config = (sweep / str(job) / ".hydra" / "config.yaml").read_text()
            assert f"experiment={experiment}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
            assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
            if experiment == "dcgan_512":  # the five-block nets at 512 px took their step(s)
                state = torch.load(sweep / str(job) / "checkpoints" / "last.ckpt", weights_only=True)
                assert "image_size: 512" in config and state["genlab_gan_steps"]["g"] >= 2, state["genlab_gan_steps"]


def test_celeba_suite_without_the_files_names_them(tmp_path):
    proc, sweep = multirun(tmp_path, tmp_path / "empty", "experiment=celeba_suite", "variant=celeba_suite/vae")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("genlab: error")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for name in ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt", str(tmp_path / "empty")):
        assert name in errors[0]
    assert not (sweep / "0" / "checkpoints").exists()
