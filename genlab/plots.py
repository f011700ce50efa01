"""Matplotlib figures written as PNG files: learning curves from a run's metric logs, 2-D latent scatters, and
codebook usage. Pure functions of files and arrays, shared by the picture callbacks and the report code.

Uses matplotlib's Agg backend (no display needed). Every function writes one PNG and returns its path.
"""

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

# One figure per family, one panel per base name (`split/` and `_step`/`_epoch` removed), one line per series.
FAMILIES: dict[str, tuple[str, ...]] = {
    "losses": ("loss", "d_loss", "g_loss", "gp"),
    "kl_reconstruction": ("recon", "kl", "nelbo", "mse"),
    "d_accuracy": ("d_acc_real", "d_acc_fake"),
    "aux_accuracy": ("aux_acc_real", "aux_acc_fake", "aux_loss"),
    "divergence": ("jsd", "wasserstein"),
    "codebook": ("codebook", "commitment", "perplexity", "codes_used"),
}
QUALITY_FAMILY = "sample_quality"
DPI = 100

# A series: the (step, value) points of one logged key, e.g. "val" or "train (epoch)" of `d_loss`.
Series = dict[str, list[tuple[float, float]]]


def read_metric_log(path: Path) -> dict[str, Series]:
    """Lightning's `metrics.csv` -> {base name: {series label: [(step, value), ...]}}; empty cells skipped."""
    curves: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or "nan")
            for key, cell in row.items():
                if key in ("epoch", "step") or not cell or "/" not in key:
                    continue
                base, label = _split_key(key)
                curves[base][label].append((step, float(cell)))
    return curves


def _split_key(key: str) -> tuple[str, str]:
    """`train/d_loss_epoch` -> (`d_loss`, `train (epoch mean)`); `val/kl` -> (`kl`, `val`)."""
    split, name = key.split("/", 1)
    for suffix, kind in (("_epoch", "epoch mean"), ("_step", "per step")):
        if name.endswith(suffix):
            return name[: -len(suffix)], f"{split} ({kind})"
    return name, split


def read_quality_log(path: Path) -> dict[str, Series]:
    """`sample_quality.jsonl` (one evaluation a line: split, epoch, step, metrics, protocol) -> curves against
    the epoch (its `step` counts optimiser steps, which differs from metrics.csv's batch steps for GANs)."""
    curves: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for key, value in record.items():
            if key not in ("epoch", "step", "seed") and isinstance(value, int | float) and not isinstance(value, bool):
                curves[key][record.get("split", "?")].append((float(record.get("epoch", math.nan)), float(value)))
    return curves


def learning_curves(metrics_csv: Path | None, quality_jsonl: Path | None, out_dir: Path) -> list[Path]:
    """`out_dir/<family>.png` for each family of `FAMILIES` present in `metrics_csv`, and
    `out_dir/sample_quality.png` from `quality_jsonl`; missing files and absent families are skipped."""
    written = []
    logged = read_metric_log(metrics_csv) if metrics_csv and Path(metrics_csv).is_file() else {}
    for family, names in FAMILIES.items():
        panels = {name: logged[name] for name in names if name in logged}
        if panels:
            written.append(plot_panels(panels, Path(out_dir) / f"{family}.png", family.replace("_", " ")))
    quality = read_quality_log(quality_jsonl) if quality_jsonl and Path(quality_jsonl).is_file() else {}
    if quality:
        written.append(plot_panels(quality, Path(out_dir) / f"{QUALITY_FAMILY}.png", "sample quality", "epoch"))
    return written


def plot_panels(panels: dict[str, Series], path: Path, title: str, xlabel: str = "step", columns: int = 4) -> Path:
    """One panel per name (at most `columns` a row), one line per series against `xlabel`; few points marked."""
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels.items(), strict=False):
        for label, points in sorted(series.items()):
            steps, values = zip(*sorted(points), strict=True)
            thin = label.endswith("(per step)")
            marker = "o" if len(points) < 30 and not thin else None
            style = {"alpha": 0.45, "linewidth": 1.0} if thin else {"linewidth": 1.6}
            ax.plot(steps, values, label=label, marker=marker, **style)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save(fig, path)


def latent_scatter(points: np.ndarray, labels: np.ndarray | None, path: Path, title: str, class_names=None) -> Path:
    """Points `[N, 2]` coloured by integer label `[N]` (-1 or None: unlabelled), a legend naming every class
    (`class_names[c]`, else the number), written to `path`."""
    return save(scatter_figure(points, labels, title, class_names), path)


def legend_entries(labels: np.ndarray | None, class_names=None) -> list[tuple[int, str, str]]:
    """(class, name, colour as #rrggbb) of every class present in `labels` `[N]` (-1: unlabelled), in the order
    and colours of the scatter's legend."""
    if labels is None or (labels < 0).all():
        return []
    classes = sorted(int(c) for c in np.unique(labels[labels >= 0]))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    named = class_names is not None
    return [
        (c, class_names[c] if named and c < len(class_names) else str(c), mcolors.to_hex(cmap(i % cmap.N)))
        for i, c in enumerate(classes)
    ]


def scatter_figure(points: np.ndarray, labels: np.ndarray | None, title: str, class_names=None) -> "plt.Figure":
    """The figure of `latent_scatter`, not yet saved."""
    fig, ax = plt.subplots(figsize=(8, 7))
    entries = legend_entries(labels, class_names)
    if not entries:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    for c, name, colour in entries:
        keep = labels == c
        ax.scatter(points[keep, 0], points[keep, 1], s=6, alpha=0.75, color=colour, label=name)
    if entries:
        ax.legend(title="class", markerscale=3, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def codebook_usage(counts: Sequence[float], path: Path, title: str = "codebook usage") -> Path:
    """A bar per code `k` (how often it was chosen), most used first; the title gives codes used and perplexity."""
    counts = np.asarray(counts, dtype=float)
    used, total = int((counts > 0).sum()), counts.sum()
    p = counts[counts > 0] / max(total, 1.0)
    perplexity = float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0
    order = np.argsort(-counts, kind="stable")
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(np.arange(len(counts)), counts[order] / max(total, 1.0), width=1.0, color="tab:blue")
    ax.set_xlabel("codes, most used first")
    ax.set_ylabel("share of positions")
    ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_title(f"{title}: {used} of {len(counts)} codes used, perplexity {perplexity:.1f}")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def save(fig: "plt.Figure", path: Path) -> Path:
    """Write `fig` as a PNG at `path` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
