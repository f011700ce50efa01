"""The sweep's pictures (matplotlib, Agg): each metric against a swept parameter, and the jobs' samples side by side."""

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from genlab.reports.collect import Run, latest_samples  # noqa: E402


def as_number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def numeric_params(runs: list[Run], keys: list[str]) -> list[str]:
    """The swept keys whose every value is a number (`seed` aside: it is averaged over, not plotted against)."""
    maps = [run.override_map() for run in runs]
    return [k for k in keys if k != "seed" and all(as_number(m.get(k)) is not None for m in maps)]


def _series(runs: list[Run], param: str, metric: str, others: list[str]) -> dict[str, dict[float, list[float]]]:
    """label (the other swept values) -> x -> the metric's values (one per seed)."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        value = {**run.final, **run.best_score}.get(metric)
        if run.status != "ok" or value is None or not math.isfinite(value):
            continue
        overrides = run.override_map()
        label = ", ".join(f"{k}={overrides.get(k)}" for k in others) or metric
        series[label][float(overrides[param])].append(value)
    return series


def plot_metrics_against(runs: list[Run], param: str, metrics: list[str], others: list[str], path: Path) -> bool:
    """One panel per metric: its value against `param`, one line per combination of the `others` swept keys;
    mean and standard deviation over seeds as error bars. False (no file) when no job has any of the metrics."""
    panels = [(m, s) for m in metrics if (s := _series(runs, param, m, [k for k in others if k != "seed"]))]
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    xs_all = [x for _, s in panels for points in s.values() for x in points]
    log_x = min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100
    for ax, (metric, series) in zip(axes.flat, panels, strict=False):
        for label, points in series.items():
            xs = sorted(points)
            mean = [float(np.mean(points[x])) for x in xs]
            std = [float(np.std(points[x])) for x in xs]
            ax.errorbar(
                xs, mean, yerr=std if max(len(points[x]) for x in xs) > 1 else None, marker="o", capsize=3, label=label
            )
        ax.set(xlabel=param, title=metric)
        ax.set_xscale("log" if log_x else "linear")
        ticks = sorted({x for points in series.values() for x in points})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def samples_side_by_side(runs: list[Run], labels: list[str], path: Path) -> bool:
    """One picture: each job's latest sample grid, titled with its swept values. False when no job has a grid."""
    found = [(label, grid) for run, label in zip(runs, labels, strict=True) if (grid := latest_samples(run.path))]
    if not found:
        return False
    cols = min(4, len(found))
    rows = math.ceil(len(found) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, grid) in zip(axes.flat, found, strict=False):
        with Image.open(grid) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        ax.set_title(label, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
