"""A measuring callback the benchmark adds to genlab runs from the command line; genlab itself is unchanged.

    python -m genlab ... +callbacks.bench_timer._target_=benchmarks.hooks.BenchTimer \
        +callbacks.bench_timer.path=/tmp/timer.json

At the end of fit it writes, per rank (`path` with `.rank<N>` before the suffix on ranks > 0): the wall-clock
time (time.time()) when the first training batch started and when fit ended, the training batches run and the
seconds they took (from each batch's start to its end, plus the fetch between batches of one epoch), the
seconds spent inside `trainer.save_checkpoint` (every checkpoint callback writes through it), and the seconds
spent in each other callback's hooks (the checkpoint writes included in their callback's figure) and in
validation. Its own cost is a few `perf_counter` calls per hook call.
"""

import functools
import json
import time
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as L

from benchmarks.baseline import MARK_EVERY

HOOKS = (
    "on_fit_start",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_train_end",
    "on_fit_end",
    "on_save_checkpoint",
    "on_before_optimizer_step",
    "on_before_backward",
    "on_after_backward",
)


class BenchTimer(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.first_step_time: float | None = None
        self.batches = 0
        # seconds in training batches and between batches of one epoch (fetching): what scales with batches
        self.batch_seconds, self.batch_start, self.last_end = 0.0, 0.0, None
        self.checkpoint = {"seconds": 0.0, "count": 0}
        self.callbacks: dict[str, float] = defaultdict(float)
        self.validation = {"seconds": 0.0, "start": 0.0}
        self.marks: list[tuple[float, float]] = []  # (time.time(), batch_seconds) at every MARK_EVERY-th batch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        save = trainer.save_checkpoint

        @functools.wraps(save)
        def timed_save(*args, **kwargs):
            start = time.perf_counter()
            try:
                return save(*args, **kwargs)
            finally:
                self.checkpoint["seconds"] += time.perf_counter() - start
                self.checkpoint["count"] += 1

        trainer.save_checkpoint = timed_save  # ModelCheckpoint calls trainer.save_checkpoint(...)
        for callback in trainer.callbacks:
            if callback is self:
                continue
            for hook in HOOKS:
                if not _overrides(callback, hook):
                    continue
                setattr(callback, hook, self._timed(type(callback).__name__, getattr(callback, hook)))

    def _timed(self, name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.callbacks[name] += time.perf_counter() - start

        return wrapper

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.first_step_time is None:
            self.first_step_time = time.time()
        if batch_idx > 0 and self.last_end is not None:  # fetching this batch: a per-batch cost
            self.batch_seconds += now - self.last_end
        self.batch_start = now
        if self.batches % MARK_EVERY == 0:
            self.marks.append((time.time(), self.batch_seconds))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_end = time.perf_counter()
        self.batch_seconds += self.last_end - self.batch_start
        self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.last_end = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validation["start"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validation["seconds"] += time.perf_counter() - self.validation["start"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "first_step_time": self.first_step_time,
            "fit_end_time": time.time(),
            "batches": self.batches,
            "batch_seconds": self.batch_seconds,
            "checkpoint_seconds": self.checkpoint["seconds"],
            "checkpoints": self.checkpoint["count"],
            "validation_seconds": self.validation["seconds"],
            "callback_seconds": dict(self.callbacks),
            "marks": self.marks,
        }
        path = self.path
        if trainer.global_rank > 0:
            path = path.with_suffix(f".rank{trainer.global_rank}{path.suffix}")
        path.write_text(json.dumps(record))


def _overrides(callback: L.Callback, hook: str) -> bool:
    """Whether the callback's class (or a base other than Callback) defines `hook`."""
    return getattr(type(callback), hook, None) is not getattr(L.Callback, hook)
