"""A Hydra callback that writes the sweep summary when a multirun ends (registered in conf/hydra/default.yaml)."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """After a multirun of one of `tasks`, `summary.csv/.md/.html` in the sweep dir (see genlab.reports.sweep)."""

    def __init__(self, enabled: bool = True, tasks: tuple[str, ...] = ("train",)) -> None:
        self.enabled, self.tasks = enabled, tuple(tasks)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not self.enabled or config.get("task_name") not in self.tasks or not sweep_dir.is_dir():
            return
        from genlab.reports.sweep import write_sweep_summary  # matplotlib: only when a summary is written

        print(f"Sweep summary: {write_sweep_summary(sweep_dir)}")
