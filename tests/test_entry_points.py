"""Every entry point (`genlab`, `.evaluate`, `.sample`, `.prior`, `.download`) end to end, in subprocesses: a
rejected run removes only what it created, and a sweep runs every job, names the failed ones and exits 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["debug=fast", "callbacks.progress_bar.refresh_rate=0"]
TOO_SMALL = ["model=gan", "data.subset=1"]  # a data error, found inside the job after Hydra made the run dir
TOO_SMALL_SAYS = "the training set has 1 image with data.subset=1"


def entry(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data")}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


def contents(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def someones_folder(folder: Path) -> dict[str, bytes | None]:
    """A folder of someone else's that holds only log files (what the old clean-up took for an unstarted run)."""
    folder.mkdir(parents=True)
    (folder / "their.log").write_text("a log genlab did not write\n")
    (folder / "older.log").write_text("another\n")
    return contents(folder)


# --------------------------------------------------------------- never delete what genlab did not create


@pytest.mark.parametrize(
    "module, args, says",
    [
        ("genlab", [*TOO_SMALL, *FAST, "hydra.run.dir={folder}"], TOO_SMALL_SAYS),
        ("genlab.prior", ["run_dir={folder}"], "run_dir={folder} is not a genlab run directory (no checkpoints/)"),
    ],
)
def test_rejected_run_in_an_existing_folder_leaves_it_as_it_was(tmp_path, module, args, says):
    folder = tmp_path / "theirs"
    before = someones_folder(folder)
    proc = entry(tmp_path, module, *(a.format(folder=folder) for a in args))
    assert proc.returncode == 1 and says.format(folder=folder) in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
    assert folder.is_dir() and contents(folder) == before  # and no log of the rejected run left in it


@pytest.mark.parametrize(
    "module, args",
    [("genlab", [*TOO_SMALL, *FAST, "hydra.run.dir={run}"]), ("genlab.prior", ["run_dir={run}"])],
)
def test_rejected_run_removes_the_run_dir_and_the_parents_it_made(tmp_path, module, args):
    (tmp_path / "outputs").mkdir()
    run = tmp_path / "outputs" / "new" / "day" / "run"
    proc = entry(tmp_path, module, *(a.format(run=run) for a in args))
    assert proc.returncode == 1 and "genlab: error: " in proc.stderr, proc.stderr[-2000:]
    assert list((tmp_path / "outputs").iterdir()) == []


def test_rejected_sweep_job_leaves_an_existing_job_folder_alone(tmp_path):
    sweep = tmp_path / "sweep"
    before = someones_folder(sweep / "0")
    proc = entry(tmp_path, "genlab", "-m", *TOO_SMALL, *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1 and f"genlab: error: job 0: {TOO_SMALL_SAYS}" in proc.stderr, proc.stderr[-2000:]
    assert contents(sweep / "0") == before


# ------------------------------------------------------------------------------- sweeps of every entry point


@pytest.mark.parametrize("module", ["genlab.evaluate", "genlab.sample", "genlab.prior"])
def test_sweep_of_runs_that_do_not_exist_fails_every_job_and_exits_1(tmp_path, module):
    a, b = tmp_path / "a", tmp_path / "b"
    proc = entry(tmp_path, module, "-m", f"run_dir={a},{b}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[:3] for line in lines if line.startswith("genlab: error:")] == [
        ["genlab", " error", " job 0"],
        ["genlab", " error", " job 1"],
    ]
    assert lines[-1] == "genlab: 2 of 2 jobs failed: 0, 1"
    assert "Traceback" not in proc.stderr


def test_download_sweep_runs_the_good_job_and_names_the_bad_one(tmp_path):
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    proc = entry(tmp_path, "genlab.download", "-m", "datasets=[nope],[digits]", "inception=false", sweep)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "ok      dataset digits" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "genlab: 1 of 2 jobs failed: 0"
