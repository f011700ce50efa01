"""What the reports read from a run dir: overrides, config choices, status, final and best metrics, pictures.

A run dir is a folder holding `.hydra/config.yaml`. Its files are data: they are parsed as YAML and JSON,
never executed. A run without `status.json` (older runs) counts as `ok` when it wrote `metrics.json`.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from genlab.utils.runner import BEST_RECORD, REJECTED_FILE, STATUS_FILE

# pictures a run may hold, in report order: (title, glob, latest only). In the folders of end-of-run pictures
# (`<name>.png`), the per-epoch copies (`<name>_epoch_XXX.png`) are left out unless there is no final one.
PICTURES = (
    ("Samples", "samples/epoch_*.png", True),
    ("Samples over training", "samples/*.gif", False),
    ("Reconstructions (originals above, reconstructions below)", "reconstructions/epoch_*.png", True),
    ("Learning curves", "curves/*", False),
    ("Latent space", "latent/*", False),
    ("Codebook", "codebook/*", False),
)
IMAGE_SUFFIXES = (".png", ".gif")
EMBED_MAX_BYTES = 500_000  # a larger GIF (many epochs of noisy grids) is linked from the report, not embedded
# the final metrics shown first when present (the terminal leaderboard shows only these)
KEY_METRICS = ("test/cfid", "test/fid", "test/ckid", "test/nelbo", "test/recon", "eval/recon_mse", "eval/nll_iwae")


@dataclass
class Run:
    path: Path
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)  # config group -> option (model: vae, data: digits)
    job: int | None = None  # the job number in a multirun
    status: str = "unknown"  # ok | failed | interrupted | unknown
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # metrics.json's numbers
    best: dict[str, Any] = field(default_factory=dict)  # checkpoints/best.json
    epochs: int | None = None  # trainer.max_epochs: the run's length (a model's recipe may set its own)

    @property
    def final(self) -> dict[str, float]:
        """The reported figures: test split (on the best checkpoint) and `genlab.evaluate`'s."""
        return {k: v for k, v in self.metrics.items() if k.startswith(("test/", "eval/"))}

    @property
    def best_score(self) -> dict[str, float]:
        """`best/<monitor>`: the validation score of the checkpoint `best` means."""
        monitor, score = self.best.get("monitor"), self.best.get("score")
        return {f"best/{monitor}": float(score)} if monitor and isinstance(score, int | float) else {}

    def override_map(self) -> dict[str, str]:
        return dict(_split(o) for o in self.overrides)


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _epochs(config: Any) -> int | None:
    """`trainer.max_epochs` of a saved config: its value, or what `${genlab_epochs:N}` (the trainer's default: the
    model's `recipe_epochs` for the dataset, else N) gives. Nothing else in the file is resolved."""
    if not isinstance(config, dict) or not isinstance(config.get("trainer"), dict):
        return None
    value = config["trainer"].get("max_epochs")
    if isinstance(value, str) and re.fullmatch(r"\$\{genlab_epochs:\d+\}", value):
        parts = {k: config.get(k) if isinstance(config.get(k), dict) else {} for k in ("model", "data")}
        value = OmegaConf.select(
            OmegaConf.create({**parts, "trainer": {"max_epochs": value}}),
            "trainer.max_epochs",
            throw_on_resolution_failure=False,
        )
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_run(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def read_run(path: Path) -> Run:
    """Everything the reports need from the run dir `path`."""
    run = Run(path=path, overrides=[str(o) for o in _yaml(path / ".hydra" / "overrides.yaml") or []])
    hydra = (_yaml(path / ".hydra" / "hydra.yaml") or {}).get("hydra", {})
    run.epochs = _epochs(_yaml(path / ".hydra" / "config.yaml"))
    run.choices = {k: str(v) for k, v in (hydra.get("runtime", {}).get("choices") or {}).items() if "/" not in k}
    num = hydra.get("job", {}).get("num")
    run.job = int(num) if isinstance(num, int) else None
    raw = _json(path / "metrics.json") or {}
    run.metrics = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    run.best = _json(path / "checkpoints" / BEST_RECORD) or {}
    status = _json(path / STATUS_FILE) or {}
    run.status = status.get("status") or ("ok" if (path / "metrics.json").is_file() else "unknown")
    run.error = status.get("error", "")
    return run


def find_runs(root: Path) -> list[Run]:
    """Every run dir under `root` (itself included), in path order; a run's own subfolders are not searched."""
    found, stack = [], [root]
    while stack:
        folder = stack.pop()
        if is_run(folder):
            found.append(read_run(folder))
            continue
        stack.extend(sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True))
    return sorted(found, key=lambda r: str(r.path))


def read_sweep(sweep_dir: Path) -> list[Run]:
    """The jobs of a multirun: its run dirs, and the jobs rejected before they started (`rejected_jobs.jsonl`)."""
    runs = [read_run(p) for p in sweep_dir.iterdir() if p.is_dir() and is_run(p)]
    rejected = sweep_dir / REJECTED_FILE
    records = {}  # job -> its latest rejection (a rerun of the sweep may reject it again, or run it)
    for line in rejected.read_text().splitlines() if rejected.is_file() else []:
        record = json.loads(line)
        records[record["job"]] = record
    for job, record in records.items():
        if any(run.job == job for run in runs):
            continue
        runs.append(Run(path=sweep_dir / str(job), overrides=record.get("overrides", []), job=job))
        runs[-1].status, runs[-1].error = "failed", record.get("error", "")
    return sorted(runs, key=lambda r: (r.job if r.job is not None else 1 << 30, str(r.path)))


def _finals(files: list[Path]) -> list[Path]:
    """`<name>.png` of each picture, or its latest `<name>_epoch_XXX.png` when only per-epoch copies exist."""
    finals = [p for p in files if "_epoch_" not in p.stem]
    latest = {p.stem.split("_epoch_")[0]: p for p in sorted(files) if "_epoch_" in p.stem}  # the last epoch wins
    return sorted([*finals, *(p for name, p in latest.items() if name not in {f.stem for f in finals})])


def pictures(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """(title, files) of the pictures present in `run_dir`, in report order."""
    found = []
    for title, pattern, latest in PICTURES:
        files = sorted(p for p in run_dir.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        files = [p for p in files if p not in linked_only(run_dir)]
        files = files[-1:] if latest else files if pattern.startswith("samples/") else _finals(files)
        if files:
            found.append((title, files))
    return found


def linked_only(run_dir: Path) -> list[Path]:
    """Animations too large to embed in a report (over EMBED_MAX_BYTES): the report links to them instead."""
    return sorted(p for p in run_dir.glob("samples/*.gif") if p.is_file() and p.stat().st_size > EMBED_MAX_BYTES)


def latest_samples(run_dir: Path) -> Path | None:
    files = sorted(run_dir.glob("samples/epoch_*.png"))
    return files[-1] if files else None


def varying(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (a key missing from a run counts as a value), in order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.override_map()))
    maps = [run.override_map() for run in runs]
    return [k for k in keys if len({m.get(k) for m in maps}) > 1]


def metric_columns(runs: list[Run]) -> list[str]:
    """Final and best metric names present in any run: key metrics first, then the rest sorted."""
    names = {k for run in runs for k in (*run.final, *run.best_score)}
    first = [k for k in KEY_METRICS if k in names]
    return first + sorted(names - set(first))
