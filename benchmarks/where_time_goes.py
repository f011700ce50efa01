"""Where a genlab run's time goes, from a py-spy profile in raw (collapsed-stack) format: the share of samples
in each part of a run (the first category whose marker appears in a stack takes the sample).

    py-spy record -r 100 -f raw -o run.txt -- python -m genlab model=wgan_mlp data=mnist ...
    python -m benchmarks.where_time_goes run.txt [before.txt]     # one column per profile
    python -m benchmarks.where_time_goes --batches run.txt         # inside training batches: the functions
                                                                   # whose own code the samples are in
"""

import collections
import sys

CATEGORIES = [
    ("start-up: imports", ["_find_and_load"]),
    ("checkpoint writing", ["save_checkpoint"]),
    ("sample quality (per-epoch evaluation)", ["SampleQuality"]),
    ("pictures, plots, reports", ["callbacks/images.py", "callbacks/pictures.py", "callbacks/latent.py", "plots.py"]),
    ("validation loop (D/G losses on val images)", ["_EvaluationLoop"]),
    ("train: D forward (incl. G forward for fakes)", ["discriminator_loss"]),
    ("train: G forward", ["generator_loss"]),
    ("train: backward", ["manual_backward"]),
    ("train: optimiser step (incl. the divergence guard)", ["LightningOptimizer.step"]),
    ("train: logging", ["log_dict", "log_train", "_LoggerConnector"]),
    ("train: per-batch seeding", ["TrainingState.on_train_batch_start", "on_train_batch_start (genlab/models"]),
    ("train: data", ["_PrefetchDataFetcher", "genlab/data/"]),
    ("train: other hooks and loop", ["_TrainingEpochLoop"]),
    ("setup: data, classifier, references", ["setup", "prepare"]),
]


def shares(path: str) -> tuple[dict[str, float], int]:
    counts, total = collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            total += int(n)
            name = next((c for c, keys in CATEGORIES if any(k in stack for k in keys)), "other")
            counts[name] += int(n)
    return {name: 100 * counts[name] / total for name, _ in [*CATEGORIES, ("other", [])]}, total


def leaves(path: str, top: int = 20) -> tuple[list[tuple[str, float]], int]:
    """The `top` innermost frames of the samples taken inside the training loop's batches, as shares of them
    (py-spy's `--nonblocking` keeps its sampling from slowing these small steps)."""
    counts, total = collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit() or "run_training_batch" not in stack and "_TrainingEpochLoop" not in stack:
                continue
            total += int(n)
            counts[stack.split(";")[-1]] += int(n)
    return [(frame, 100 * n / total) for frame, n in counts.most_common(top)], total


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--batches":
        for path in sys.argv[2:]:
            frames, total = leaves(path)
            print(f"| innermost frame, inside training batches ({total} samples of {path}) | share |\n|---|---|")
            print("\n".join(f"| `{frame}` | {share:.1f}% |" for frame, share in frames))
        return
    columns = [shares(p) for p in sys.argv[1:]]
    print("| part of the run | " + " | ".join(sys.argv[1:]) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in columns[0][0]:
        print(f"| {name} | " + " | ".join(f"{c[0][name]:.1f}%" for c in columns) + " |")
    print("| samples | " + " | ".join(str(c[1]) for c in columns) + " |")


if __name__ == "__main__":
    main()
