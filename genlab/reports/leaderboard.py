"""The leaderboard: every run under a folder in one table, printed and written as a sortable `leaderboard.html`."""

import shutil
from pathlib import Path

from genlab.reports import html as h
from genlab.reports.collect import KEY_METRICS, Run, find_runs, metric_columns

# overrides that say how a run was made rather than what it is: left out of the "overrides" column
_PLUMBING = ("hydra.", "callbacks.progress_bar", "paths.", "logger", "trusted_targets", "allow_unsafe_checkpoint")


def key_overrides(run: Run) -> str:
    """The run's overrides that define it (model and data have their own columns)."""
    keep = [o for o in run.overrides if not o.lstrip("+~").startswith(("model=", "data=", *_PLUMBING))]
    return " ".join(keep)


def table(root: Path, runs: list[Run], metrics: list[str]) -> tuple[list[str], list[list[object]]]:
    headers = ["run", "model", "data", "status", "overrides", *metrics]
    rows = []
    for run in runs:
        scores = {**run.final, **run.best_score}
        where = run.path.relative_to(root).as_posix() if run.path != root else run.path.name
        model, data = run.choices.get("model", ""), run.choices.get("data", "")
        rows.append([where, model, data, run.status, key_overrides(run), *(scores.get(m) for m in metrics)])
    return headers, rows


def terminal_text(headers: list[str], rows: list[list[object]], width: int) -> str:
    """A plain fixed-width table; long cells are cut so that each row fits in `width` where it can."""
    cells = [[h.fmt(v) for v in row] for row in [headers, *rows]]
    widths = [min(max(len(r[i]) for r in cells), 40) for i in range(len(headers))]
    over = sum(widths) + 2 * len(widths) - width
    if over > 0 and len(widths) > 4:  # shrink the overrides column first
        widths[4] = max(widths[4] - over, 12)
    lines = []
    for n, row in enumerate(cells):
        fitted = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(c.ljust(w) for c, w in zip(fitted, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_leaderboard(root: Path, output: Path | None = None) -> tuple[Path, str]:
    """Find every run under `root`; write the HTML table (default `<root>/leaderboard.html`) and return its path
    and the terminal table (key metrics only)."""
    root = Path(root)
    runs = find_runs(root)
    metrics = metric_columns(runs)
    headers, rows = table(root, runs, metrics)
    out = output or root / "leaderboard.html"
    failed = {i for i, r in enumerate(runs) if r.status != "ok"}
    body = f"<p>{len(runs)} runs under <code>{h.esc(root)}</code>; click a header to sort.</p>"
    body += h.table(headers, rows, sortable=True, failed=failed)
    out.write_text(h.page(f"genlab leaderboard: {root.name or root}", body, script=h.SORT_JS))
    short = [m for m in metrics if m in KEY_METRICS or m.startswith("best/")][:5]
    short_headers, short_rows = table(root, runs, short)
    width = shutil.get_terminal_size((160, 24)).columns
    return out, terminal_text(short_headers, short_rows, width)
