"""The EMA generator's BatchNorm statistics, live G's against its own (docs/quality.md, finding 1).

    GENLAB_DATA_DIR=../shared/data python -m benchmarks.ema_bn <run dir> [n samples, default 2000]

Loads the run's last.ckpt and scores `n` samples against the test split twice: with `ema_bn=live` (the
statistics saved in the checkpoint, copied from the live generator by runs trained before `ema_bn` existed, or
with `model.ema_bn=live`) and with `ema_bn=standing` (recomputed from the EMA generator's own outputs).
"""

import os
import sys
from pathlib import Path

import torch

from genlab.metrics import QualityMetrics
from genlab.runs import open_run


def main() -> None:
    run_dir, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    run = open_run(run_dir, ckpt="last")
    model = run.model
    cache = os.environ.get("GENLAB_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache"))
    quality = QualityMetrics(cache, inception=False)
    quality.setup(run.datamodule(), splits=("test",))
    saved = {k: v.clone() for k, v in model.generator_ema.state_dict().items()}
    for mode in ("live", "standing"):
        model.generator_ema.load_state_dict(saved)  # the checkpoint's statistics
        model.ema_bn, model._ema_stats_at = mode, None
        torch.manual_seed(1)
        metrics, _ = quality.compute(quality.features(model, n), "test")
        print(f"ema_bn={mode}: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in ("cfid", "cis", "modes", "class_kl")))


if __name__ == "__main__":
    main()
