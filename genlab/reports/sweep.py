"""The sweep summary: `summary.csv`, `summary.md`, `summary.html` and plots in a multirun's sweep dir.

One row per job (its swept values, status, final and best metrics); for every swept numeric parameter, each
metric against it; mean ± std over seeds when `seed` is swept; each job's latest samples side by side.
"""

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from genlab.reports import html as h
from genlab.reports.collect import Run, metric_columns, read_sweep, varying
from genlab.reports.plots import numeric_params, plot_metrics_against, samples_side_by_side

PLOTS = "summary_plots"  # <sweep dir>/summary_plots/<param>.png, samples.png


@dataclass
class Summary:
    runs: list[Run]
    swept: list[str]  # override keys that differ between jobs
    metrics: list[str]  # metric columns
    plots: list[Path]  # metric-against-parameter plots
    samples: Path | None  # the jobs' samples side by side

    def label(self, run: Run) -> str:
        values = run.override_map()
        return ", ".join(f"{k}={values.get(k, '-')}" for k in self.swept) or f"job {run.job}"

    @property
    def lengths_differ(self) -> bool:
        """Whether jobs ran different lengths without sweeping it (`-m model=gan,wgan`: a model's recipe may
        state its own length, `model.recipe_epochs`): the table then shows each job's epochs."""
        known = {r.epochs for r in self.runs if r.epochs is not None}
        return len(known) > 1 and "trainer.max_epochs" not in self.swept

    def headers(self) -> list[str]:
        return ["job", "status", *self.swept, *(["epochs"] if self.lengths_differ else []), *self.metrics, "error"]

    def rows(self) -> list[list[object]]:
        rows = []
        for run in self.runs:
            values, scores = run.override_map(), {**run.final, **run.best_score}
            swept = [values.get(k, "") for k in self.swept]
            length = [run.epochs] if self.lengths_differ else []
            rows.append([run.job, run.status, *swept, *length, *(scores.get(m) for m in self.metrics), run.error])
        return rows


def _seed_groups(summary: Summary) -> tuple[list[str], list[list[object]]]:
    """Mean ± std (n) of each metric over the ok jobs that differ only in `seed`."""
    others = [k for k in summary.swept if k != "seed"]
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in summary.runs:
        if run.status == "ok":
            groups[tuple(run.override_map().get(k, "") for k in others)].append(run)
    rows = []
    for key, runs in groups.items():
        cells: list[object] = [*key, len(runs)]
        for metric in summary.metrics:
            values = [
                v for r in runs if (v := {**r.final, **r.best_score}.get(metric)) is not None and math.isfinite(v)
            ]
            cells.append(f"{np.mean(values):.5g} ± {np.std(values):.2g}" if values else "")
        rows.append(cells)
    return [*others, "n seeds", *summary.metrics], rows


def summarize(sweep_dir: Path) -> Summary:
    """Read the sweep's jobs and draw its plots under `<sweep_dir>/summary_plots/`."""
    runs = read_sweep(sweep_dir)
    summary = Summary(runs, varying(runs), metric_columns(runs), [], None)
    folder = sweep_dir / PLOTS
    folder.mkdir(exist_ok=True)
    for param in numeric_params(runs, summary.swept):
        path = folder / f"{param.replace('/', '_')}.png"
        others = [k for k in summary.swept if k != param]
        if plot_metrics_against(runs, param, summary.metrics, others, path):
            summary.plots.append(path)
    ok = [r for r in runs if r.status == "ok"]
    if samples_side_by_side(ok, [summary.label(r) for r in ok], folder / "samples.png"):
        summary.samples = folder / "samples.png"
    return summary


def _command(sweep_dir: Path) -> str:
    saved = sweep_dir / "multirun.yaml"
    task = (
        (yaml.safe_load(saved.read_text()) or {}).get("hydra", {}).get("overrides", {}).get("task", [])
        if saved.is_file()
        else []
    )
    return " ".join(["python -m genlab -m", *map(str, task)])


def _counts(summary: Summary) -> str:
    failed = sum(r.status != "ok" for r in summary.runs)
    return f"{len(summary.runs)} jobs, {len(summary.runs) - failed} ok, {failed} failed or unfinished"


def render_md(sweep_dir: Path, summary: Summary) -> str:
    parts = [f"# Sweep {sweep_dir.name}", f"`{_command(sweep_dir)}`  \n{_counts(summary)}"]
    parts.append(h.md_table(summary.headers(), summary.rows()))
    if "seed" in summary.swept:
        parts += ["## Mean ± std over seeds", h.md_table(*_seed_groups(summary))]
    for path in summary.plots:
        parts += [f"## Metrics against {path.stem}", f"![{path.stem}]({path.relative_to(sweep_dir).as_posix()})"]
    if summary.samples:
        parts += ["## Samples of each job", f"![samples]({summary.samples.relative_to(sweep_dir).as_posix()})"]
    return "\n\n".join(parts) + "\n"


def render_html(sweep_dir: Path, summary: Summary) -> str:
    failed = {i for i, r in enumerate(summary.runs) if r.status != "ok"}
    parts = [f"<p>{h.esc(_counts(summary))}</p>", h.pre(_command(sweep_dir))]
    parts.append(h.table(summary.headers(), summary.rows(), sortable=True, failed=failed))
    if "seed" in summary.swept:
        parts += ["<h2>Mean ± std over seeds</h2>", h.table(*_seed_groups(summary))]
    for path in summary.plots:
        parts += [f"<h2>Metrics against {h.esc(path.stem)}</h2>", h.figure(path, path.name)]
    if summary.samples:
        parts += ["<h2>Samples of each job</h2>", h.figure(summary.samples, "latest sample grid of each job")]
    return h.page(f"Sweep {sweep_dir.name}", "\n".join(parts), script=h.SORT_JS)


def write_sweep_summary(sweep_dir: Path) -> Path:
    """Write summary.csv, summary.md, summary.html (and summary_plots/) into `sweep_dir`; returns the HTML's path."""
    sweep_dir = Path(sweep_dir)
    summary = summarize(sweep_dir)
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*summary.headers(), "overrides"])
        for run, row in zip(summary.runs, summary.rows(), strict=True):
            writer.writerow(
                [*(h.fmt(v) if not isinstance(v, float) else repr(v) for v in row), " ".join(run.overrides)]
            )
    (sweep_dir / "summary.md").write_text(render_md(sweep_dir, summary))
    out = sweep_dir / "summary.html"
    out.write_text(render_html(sweep_dir, summary))
    return out
