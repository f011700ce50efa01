"""One row of the quality table (issue [8 of 10]): train a recipe, evaluate the checkpoint genlab selects.

    GENLAB_DATA_DIR=../shared/data python -m benchmarks.quality --name headline --seeds 42,43 -- model=wgan data=mnist

For each seed: `python -m genlab <overrides> seed=S` (wall time measured around the whole process, start-up
included), then `python -m genlab.evaluate run_dir=<run> ckpt=best` (10,000 samples against the test split).
Prints one line per seed and, over the seeds, mean ± std of each figure; appends one JSON record per seed to
`--log` (default outputs/quality/runs.jsonl) so that a search can be written up from it (docs/quality.md).
Runs go to `outputs/quality/<name>/seed_<S>`; an existing run dir is evaluated again, not retrained
(`--retrain` trains it anew in a fresh folder).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIGURES = ("cis", "cfid", "modes", "class_kl", "class_agreement", "recon_accuracy", "nelbo", "iwae_nll")
FORMAT = {"modes": "{:.0f}", "class_kl": "{:.3f}", "class_agreement": "{:.3f}", "recon_accuracy": "{:.3f}"}


def run(cmd: list[str], log: Path) -> float:
    """Runs `cmd` with its output in `log`; the wall time in seconds. Stops on failure, naming the log."""
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(cmd)} exited {code}; see {log}")
    return time.perf_counter() - start


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    run_dir = Path(args.root) / args.name / f"seed_{seed}"
    if args.retrain and run_dir.exists():
        run_dir = run_dir.with_name(f"{run_dir.name}_{time.strftime('%Y%m%d-%H%M%S')}")
    record: dict = {"name": args.name, "seed": seed, "overrides": args.overrides, "run_dir": str(run_dir)}
    if args.evaluate:
        record["evaluate_overrides"] = args.evaluate
    if not (run_dir / "checkpoints" / "best.json").is_file() and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        train = [sys.executable, "-m", "genlab", *args.overrides, f"seed={seed}", f"hydra.run.dir={run_dir}"]
        record["train_s"] = run(train, run_dir.parent / f"seed_{seed}.train.log")
    evaluate = [sys.executable, "-m", "genlab.evaluate", f"run_dir={run_dir}", f"ckpt={args.ckpt}"]
    if args.n_samples:
        evaluate.append(f"n_samples={args.n_samples}")
    evaluate += args.evaluate
    record["evaluate_s"] = run(evaluate, run_dir.parent / f"seed_{seed}.evaluate.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record.update({k: metrics[f"eval/{k}"] for k in FIGURES if f"eval/{k}" in metrics})
    record["checkpoint"] = metrics["eval/protocol"]["checkpoint"]
    record["n_samples"] = metrics["eval/protocol"]["n_samples"]
    return record


def line(record: dict) -> str:
    figures = "  ".join(f"{k} {FORMAT.get(k, '{:.2f}').format(record[k])}" for k in FIGURES if k in record)
    wall = f"{record['train_s'] / 60:.1f} min" if "train_s" in record else "trained before"
    return f"seed {record['seed']}: {wall}  {figures}  ({Path(record['checkpoint']).name})"


def summary(records: list[dict]) -> str:
    parts = []
    for k in ("train_s", *FIGURES):
        values = [r[k] for r in records if k in r]
        if not values:
            continue
        scale, fmt = (1 / 60, "{:.1f}") if k == "train_s" else (1, FORMAT.get(k, "{:.2f}"))
        mean = statistics.fmean(values) * scale
        std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
        name = "wall min" if k == "train_s" else k
        parts.append(f"{name} {fmt.format(mean)} ± {fmt.format(std)}")
    return f"mean ± std over {len(records)} seed(s): " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the recipe's name: outputs/quality/<name>/seed_<S>")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds (default 42)")
    parser.add_argument("--ckpt", default="best", help="the checkpoint evaluated: best (genlab's choice) or last")
    parser.add_argument("--n-samples", type=int, default=None, help="evaluate's samples (default 10,000)")
    parser.add_argument(
        "--evaluate",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="an override for genlab.evaluate, repeatable (e.g. --evaluate metrics.iwae_k=1000)",
    )
    parser.add_argument("--root", default="outputs/quality")
    parser.add_argument("--log", default="outputs/quality/runs.jsonl")
    parser.add_argument("--retrain", action="store_true", help="train again even if the run dir exists")
    parser.add_argument("overrides", nargs="*", help="genlab overrides (after --)")
    args = parser.parse_args()
    if "GENLAB_DATA_DIR" not in os.environ and any("mnist" in o for o in args.overrides):
        print("note: GENLAB_DATA_DIR is unset: MNIST is read from (or downloaded to) ./data", file=sys.stderr)
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        record = one_seed(args, seed)
        records.append(record)
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{args.name} {line(record)}", flush=True)
    print(f"{args.name} {summary(records)}")


if __name__ == "__main__":
    main()
