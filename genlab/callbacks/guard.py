"""Stop (or skip) on a non-finite loss or gradient, or a loss beyond `max_loss` in magnitude, and never write a
non-finite state to a checkpoint.

Works for automatic and manual optimisation alike: the loss is checked in `on_before_backward` (every
`manual_backward` too) and the gradients of the optimiser about to step in `on_before_optimizer_step`.
The model part named in messages is the top-level child module (generator, discriminator, encoder...).
"""

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.errors import ConfigError, DivergenceError
from genlab.utils.checkpoints import first_nonfinite

log = logging.getLogger(__name__)


class DivergenceGuard(L.Callback):
    """`skip_nonfinite`: drop the gradients of such a step instead of stopping, at most `max_skips` times.
    `max_loss`: a finite loss whose magnitude exceeds it counts as diverged too (null: only non-finite ones)."""

    def __init__(self, skip_nonfinite: bool = False, max_skips: int = 10, max_loss: float | None = 1e10) -> None:
        number = isinstance(max_loss, int | float) and not isinstance(max_loss, bool)
        if max_loss is not None and not (number and max_loss > 0):
            raise ConfigError(f"guard.max_loss={max_loss} is invalid; expected a number > 0, or null for no limit")
        self.skip_nonfinite, self.max_skips, self.max_loss = skip_nonfinite, max_skips, max_loss
        self.skipped = 0
        self._bad_loss: str | None = None
        self._part: dict[int, str] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part = {id(p): name.split(".")[0] for name, p in pl_module.named_parameters()}

    def _where(self, trainer: L.Trainer) -> str:
        batch = trainer.fit_loop.epoch_loop.batch_idx
        return f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch})"

    def _active_parts(self, pl_module: L.LightningModule) -> str:
        parts = {n.split(".")[0]: None for n, p in pl_module.named_parameters() if p.requires_grad}
        every = {n.split(".")[0] for n, _ in pl_module.named_parameters()}
        return "the model" if set(parts) == every else ", ".join(parts)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        limit = math.inf if self.max_loss is None else self.max_loss
        if (loss.detach().abs() <= limit).all():  # one check: NaN and inf fail it too
            return
        value, where = float(loss.detach().abs().max()), self._active_parts(pl_module)  # max: NaN if any is NaN
        self._bad_loss = (
            f"loss {value:.3g} beyond guard.max_loss={self.max_loss:g} in {where}"
            if math.isfinite(value)
            else f"non-finite loss {float(loss.detach().flatten()[0])} in {where}"
        )
        if not self.skip_nonfinite:
            self._fail(trainer, self._bad_loss)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        problem, self._bad_loss = self._bad_loss, None
        if params and not torch.isfinite(torch.stack(torch._foreach_norm([p.grad for p in params]))).all():
            p = next(p for p in params if not torch.isfinite(p.grad).all())
            value = float(p.grad[~torch.isfinite(p.grad)].flatten()[0])
            problem = problem or f"non-finite gradient {value} in {self._part.get(id(p), 'the model')}"
        if problem is None:
            return
        if not self.skip_nonfinite or self.skipped >= self.max_skips:
            limit = f" after skipping {self.skipped} such steps (guard.max_skips={self.max_skips})"
            self._fail(trainer, problem + (limit if self.skip_nonfinite else ""))
        self.skipped += 1
        for p in params:  # the optimiser then leaves these parameters (and their state) untouched
            p.grad = None
        log.warning("Skipped %s: %s (%d/%d)", self._where(trainer), problem, self.skipped, self.max_skips)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        bad = first_nonfinite({"state_dict": checkpoint["state_dict"], "opt": checkpoint.get("optimizer_states")})
        if bad is not None:
            self._fail(trainer, f"non-finite value {bad[1]} in {bad[0]} (checkpoint not written)")

    def _fail(self, trainer: L.Trainer, problem: str) -> None:
        paths = [p for c in trainer.checkpoint_callbacks if (p := c.last_model_path or c.best_model_path)]
        ckpt = next((p for p in paths if Path(p).name.startswith("last")), paths[0] if paths else "")
        kept = f"the last good checkpoint is kept: {ckpt}" if ckpt else "no checkpoint had been written yet"
        raise DivergenceError(
            f"training diverged at {self._where(trainer)}: {problem}; {kept}. Lower the learning rate, or set "
            f"guard.skip_nonfinite=true to skip such steps (at most guard.max_skips)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = state_dict["skipped"]
