"""A non-editable install (`pip install .`, i.e. a wheel) gives a working `python -m genlab`: the configs ship
as package data and nothing is looked up next to the source tree."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_install_trains_from_its_packaged_configs(tmp_path):
    wheel_dir, site, work, src = tmp_path / "wheel", tmp_path / "site", tmp_path / "work", tmp_path / "src"
    work.mkdir()
    # build from a copy: setuptools writes build/ next to the sources, which must stay clean
    top = {"build", "outputs", "data", "tests", "docs", "benchmarks", "genlab.egg-info"}

    def skip(folder: str, names: list[str]) -> set[str]:
        here = {n for n in names if n.startswith(".") or n == "__pycache__"}
        return here | (top & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, ignore=skip, symlinks=True)  # genlab/conf stays the symlink to ../conf
    assert (src / "genlab" / "conf").is_symlink()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(src)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheel_dir.glob("genlab-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    assert (site / "genlab" / "conf" / "train.yaml").is_file()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "GENLAB_DATA_DIR": str(tmp_path / "data")}
    run = [sys.executable, "-m", "genlab", "debug=fast", "logger=[]", "callbacks.progress_bar.refresh_rate=0"]
    proc = subprocess.run(
        [*run, f"hydra.run.dir={work / 'run'}"], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = [sys.executable, "-c", "import genlab; print(genlab.__file__)"]
    assert str(site) in subprocess.run(probe, cwd=work, env=env, capture_output=True, text=True).stdout
    assert (work / "run" / "checkpoints" / "last.ckpt").is_file()


def test_the_configs_are_found_from_a_checkout_with_or_without_the_genlab_conf_symlink(tmp_path):
    """The entry points' config folder: the top-level conf/ through genlab/conf, or conf/ itself when a checkout
    could not make the symlink (e.g. on Windows, git writes a small text file instead)."""
    from genlab.utils.config import config_dir

    assert Path(config_dir()).resolve() == (ROOT / "conf").resolve()
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "genlab", repo / "genlab", ignore=shutil.ignore_patterns("__pycache__", "conf"))
    (repo / "genlab" / "conf").write_text("../conf")
    (repo / "conf").mkdir()
    (repo / "conf" / "train.yaml").write_text("seed: 1\n")
    probe = [sys.executable, "-c", "from genlab.utils.config import config_dir; print(config_dir())"]
    out = subprocess.run(probe, cwd=tmp_path, env={"PYTHONPATH": str(repo)}, capture_output=True, text=True)
    assert out.stdout.strip() == str(repo / "conf"), out.stderr[-2000:]
