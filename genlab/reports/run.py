"""The run report: `report.md` and a self-contained `report.html` (images embedded) in a run dir."""

import json
from pathlib import Path

from genlab.reports import html as h
from genlab.reports.collect import Run, linked_only, pictures, read_run


def command(run: Run) -> str:
    return " ".join(["python -m genlab", *run.overrides])


def _metric_rows(run: Run) -> list[tuple[str, list[tuple[str, float]]]]:
    """(title, [(name, value)]) groups: final (test/eval), last validation, last training epoch."""
    weights = "the best checkpoint" if run.best else "the final weights (no best checkpoint was recorded)"
    groups = [
        (f"Final: test split, on {weights}; genlab.evaluate's eval/*", ("test/", "eval/")),
        ("Validation, last epoch", ("val/",)),
        ("Training, last epoch", ("train/",)),
    ]
    out = []
    for title, prefixes in groups:
        rows = [(k, v) for k, v in sorted(run.metrics.items()) if k.startswith(prefixes) and _shown(k, run.metrics)]
        if rows:
            out.append((title, rows))
    return out


def _shown(key: str, metrics: dict) -> bool:
    """Per-step values and the bare twin of an `_epoch` value are left out (the epoch's value is shown)."""
    return not key.endswith("_step") and f"{key}_epoch" not in metrics


def _best_line(run: Run) -> str:
    if not run.best:
        return "No best checkpoint was recorded (no evaluation selected one): `best` means `last.ckpt`."
    b = run.best
    score = f"{b.get('monitor')} = {h.fmt(b.get('score'))} at epoch {b.get('epoch')}"
    return f"`best` is `checkpoints/{b.get('checkpoint')}`: {score}"


def protocol(run_dir: Path) -> dict:
    """How the figures were measured: the last test record of sample_quality.jsonl and evaluate's protocol."""
    found: dict = {}
    records = run_dir / "sample_quality.jsonl"
    for line in records.read_text().splitlines() if records.is_file() else []:
        record = json.loads(line)
        if record.get("split") == "test":
            found["sample quality (test)"] = record.get("protocol", {})
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        evaluated = json.loads(metrics.read_text()).get("eval/protocol")
        if evaluated:
            found["genlab.evaluate"] = evaluated
    return found


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.ckpt"))


def config_text(run_dir: Path) -> tuple[str, str]:
    """(title, YAML) of the run's config: resolved (the CSV logger's hparams.yaml) when present, else as composed."""
    resolved = run_dir / "hparams.yaml"
    if resolved.is_file():
        return "Resolved config", resolved.read_text()
    return "Config as composed (.hydra/config.yaml)", (run_dir / ".hydra" / "config.yaml").read_text()


def _title(run: Run) -> str:
    model, data = run.choices.get("model", "?"), run.choices.get("data", "?")
    return f"genlab run: {model} on {data} ({run.path.name})"


def render_md(run: Run) -> str:
    parts = [f"# {_title(run)}", f"Run dir: `{run.path}`  \nStatus: **{run.status}** {run.error}".rstrip()]
    parts += ["## Command", f"```\n{command(run)}\n```", "## Metrics", _best_line(run)]
    for title, rows in _metric_rows(run):
        parts += [f"### {title}", h.md_table(["metric", "value"], rows)]
    proto = protocol(run.path)
    if proto:
        parts.append(f"<details><summary>Protocol</summary>\n\n```json\n{json.dumps(proto, indent=2)}\n```\n</details>")
    for title, files in pictures(run.path):
        parts += [f"## {title}", "\n".join(f"![{f.stem}]({f.relative_to(run.path).as_posix()})" for f in files)]
    for gif in linked_only(run.path):
        parts.append(
            f"Samples over training: [{gif.relative_to(run.path).as_posix()}]({gif.relative_to(run.path).as_posix()})"
        )
    parts += ["## Checkpoints", "\n".join(f"- `{p}`" for p in checkpoints(run.path)) or "none"]
    title, config = config_text(run.path)
    parts.append(f"## Config\n<details><summary>{title}</summary>\n\n```yaml\n{config}```\n</details>")
    return "\n\n".join(parts) + "\n"


def render_html(run: Run) -> str:
    status = f"<b>{h.esc(run.status)}</b> {h.esc(run.error)}"
    parts = [f"<p>Run dir: <code>{h.esc(run.path)}</code><br>Status: {status}</p>"]
    parts += [
        "<h2>Command</h2>",
        h.pre(command(run)),
        "<h2>Metrics</h2>",
        f"<p>{h.esc(_best_line(run).replace('`', ''))}</p>",
    ]
    for title, rows in _metric_rows(run):
        parts += [f"<h3>{h.esc(title)}</h3>", h.table(["metric", "value"], rows)]
    proto = protocol(run.path)
    if proto:
        parts.append(h.details("Protocol", h.pre(json.dumps(proto, indent=2))))
    for title, files in pictures(run.path):
        parts += [f"<h2>{h.esc(title)}</h2>", "".join(h.figure(f, f.relative_to(run.path).as_posix()) for f in files)]
    for gif in linked_only(run.path):  # too large to embed: a link, relative to the run dir
        rel, mb = gif.relative_to(run.path).as_posix(), gif.stat().st_size / 1e6
        parts.append(
            f'<p>Samples over training: <a href="{h.esc(rel)}">{h.esc(rel)}</a> ({mb:.1f} MB, not embedded)</p>'
        )
    parts += [
        "<h2>Checkpoints</h2>",
        "<ul>" + "".join(f"<li><code>{h.esc(p)}</code></li>" for p in checkpoints(run.path)),
    ]
    title, config = config_text(run.path)
    parts += ["</ul><h2>Config</h2>", h.details(title, h.pre(config))]
    return h.page(_title(run), "\n".join(parts))


def write_run_report(run_dir: Path) -> Path:
    """Write `report.md` and `report.html` into `run_dir`; returns the HTML's path."""
    run = read_run(Path(run_dir))
    (run.path / "report.md").write_text(render_md(run))
    out = run.path / "report.html"
    out.write_text(render_html(run))
    return out
