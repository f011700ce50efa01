"""Training scalars at a fraction of the cost of `self.log` on every batch.

`LightningModule.log(on_step=True, on_epoch=True)` costs about 0.1 ms per key and call on a CPU (checks and a
running-mean update in Lightning's result collection), paid on every batch although Lightning writes step
values only every `trainer.log_every_n_steps` batches. `TrainLog` keeps the epoch sums itself (one tensor add
per key), and the module hands Lightning `<key>_step` only on the batches it writes, and `<key>_epoch` (the
batch-size-weighted mean, as Lightning computes it) once, on the epoch's last batch: the same keys and values
in metrics.csv, TensorBoard and W&B as before, one `log` call per key and logging interval.
"""

import torch
from torch import Tensor


class TrainLog:
    """Per key, since the epoch began: the batch-size-weighted sum and weight, and the latest value (a key
    logged on some batches only, such as G's loss under n_critic > 1, keeps its own count). Saved in the
    checkpoint, so a resumed epoch's means are those of the uninterrupted one."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, Tensor] = {}

    def add(self, values: dict[str, Tensor | float], batch_size: int) -> None:
        for key, value in values.items():
            value = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
            self.sums[key] = self.sums[key] + value * batch_size if key in self.sums else value * batch_size
            self.counts[key] = self.counts.get(key, 0) + batch_size
            self.last[key] = value

    def pop_means(self) -> dict[str, Tensor]:
        """The epoch means so far, and a fresh start."""
        means = {key: total / self.counts[key] for key, total in self.sums.items()}
        self.sums, self.counts, self.last = {}, {}, {}
        return means

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "last": dict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts, self.last = dict(state["sums"]), dict(state["counts"]), dict(state["last"])
