"""Small HTML and Markdown builders for the reports: self-contained pages (inline CSS, images as data URIs)."""

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fdecea}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd;margin:.3em 0}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
code{background:#f3f3f3;padding:0 .2em}
"""

# Sort a table by clicking a header (numbers numerically, blanks last); used by the leaderboard only.
SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
  th.dataset.asc = asc ? '1' : '0';
  const key = r => { const t = r.cells[i].textContent.trim(), n = parseFloat(t);
    return t === '' ? null : (isNaN(n) || !/^[-+.\\d]/.test(t) ? t : n); };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def fmt(value: object) -> str:
    """A table cell: floats to 5 significant digits, None as blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def data_uri(path: Path) -> str:
    """The file as a `data:` URI (PNG, GIF or JPEG), for a page with no external assets."""
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure(path: Path, caption: str) -> str:
    """An embedded picture; a JSON file beside it with a `legend` (the t-SNE's classes) adds it as text."""
    legend = _legend(path.with_suffix(".json"))
    return (
        f'<figure><img src="{data_uri(path)}" alt="{esc(caption)}"><figcaption>{esc(caption)}{legend}</figcaption>'
        "</figure>"
    )


def _legend(path: Path) -> str:
    try:
        entries = json.loads(path.read_text())["legend"] if path.is_file() else []
    except (ValueError, KeyError, TypeError):
        return ""
    chips = "".join(
        f'<span class="legend-entry"><span style="color:{esc(e["colour"])}">&#9679;</span> {esc(e["name"])}</span> '
        for e in entries
    )
    return f'<div class="legend">legend: {chips}</div>' if chips else ""


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>\n{body}\n</details>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], sortable: bool = False, failed=()) -> str:
    """An HTML table; rows whose index is in `failed` are highlighted."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{esc(fmt(v))}</td>' if isinstance(v, int | float) else f"<td>{esc(fmt(v))}</td>"
            for v in row
        )
        lines.append(f"<tr{' class=failed' if i in failed else ''}>{cells}</tr>")
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines) + "\n</tbody></table>"


def page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n{js}\n</body></html>\n"
    )


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
