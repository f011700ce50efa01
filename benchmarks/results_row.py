"""One docs/results.md row from an evaluated run dir (after `python -m genlab.evaluate run_dir=...`).

    python -m benchmarks.results_row <run dir> [<run dir> ...]

Training time is read from the run's log (first to last timestamp: fit and test, without Python start-up).
"""

import json
import re
import sys
from datetime import datetime
from pathlib import Path

import yaml

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
HEADER = (
    "| model | command overrides | train time | cFID | cIS | modes | class-KL | precision / recall "
    "| −ELBO / IWAE (nats) | test MSE |\n|---|---|---|---|---|---|---|---|---|---|"
)


def train_seconds(run_dir: Path) -> float | None:
    logs = sorted(run_dir.glob("*.log"))
    stamps = [m.group(1) for log in logs for line in log.read_text().splitlines() if (m := STAMP.match(line))]
    if len(stamps) < 2:
        return None
    parse = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1])]
    return (parse[1] - parse[0]).total_seconds()


def row(run_dir: Path) -> str:
    m = json.loads((run_dir / "metrics.json").read_text())
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith(("model=", "experiment="))), "?")
    seconds = train_seconds(run_dir)

    def get(key: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(m[f"eval/{key}"]) if f"eval/{key}" in m else "–"

    n = m["eval/protocol"]["n_samples"]
    return (
        f"| {model} | `{' '.join(overrides)}` | {f'{seconds / 60:.1f} min' if seconds else '?'} | {get('cfid')} "
        f"| {get('cis')} | {get('modes', '{:.0f}')}/10 | {get('class_kl', '{:.3f}')} "
        f"| {get('precision')} / {get('recall')} | {get('nelbo', '{:.1f}')} / {get('iwae_nll', '{:.1f}')} "
        f"| {get('recon_mse', '{:.4f}')} |  <!-- {n} samples -->"
    )


if __name__ == "__main__":
    print(HEADER)
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
