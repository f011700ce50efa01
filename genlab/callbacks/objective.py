"""An early check of a search's `optimized_metric`, after the first validation instead of at the end of the run."""

import lightning.pytorch as L

from genlab.metrics import keys
from genlab.utils.sweeps import unknown_metric

# every name a metric callback may log later than the first validation (sample quality every k epochs)
LATER = frozenset(f"val/{v}" for k, v in vars(keys).items() if k.isupper() and isinstance(v, str))


class ObjectiveCheck(L.Callback):
    """Stops the run (and its sweep) with one line when, after the first validation, `metric` is neither logged
    nor a metric name that may be logged later."""

    def __init__(self, metric: str | None) -> None:
        self.metric, self.checked = metric, False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checked or trainer.sanity_checking or not self.metric:
            return
        self.checked = True
        logged = {k for k in trainer.callback_metrics if k.startswith("val/")}
        if self.metric not in logged | LATER:
            raise unknown_metric(self.metric, logged)
