"""What a checkpoint needs beyond Lightning's own state for an exact resume, and SIGTERM/SIGINT handling.

`TrainingState` reseeds every RNG (torch incl. CUDA, numpy, random) at each training batch from
(seed, rank, epoch, batch index), and at each validation/test epoch from (seed, rank, step). Randomness in
a step then depends only on where training is, not on what ran before (sanity checks, validation,
callbacks, a restart), so a resumed run continues bit-exactly. It also saves the RNG states themselves,
the W&B run id, and a digest of the weights and optimiser state (checked on load).

`Interruption` turns SIGTERM/SIGINT during fit into: finish the current batch, write
`checkpoints/last.ckpt`, stop with `TrainingInterrupted` (exit status 128 + signal). A second Ctrl-C
stops at once. Under DDP every rank must stop at the same batch and take part in the save: a SIGTERM only
notes itself, and before each training batch every rank learns whether rank 0 got one (the broadcast Lightning
makes there anyway); if so all save and stop there. Lightning's own handler is replaced for the fit: it runs a
collective inside the signal handler, which deadlocked when the signal landed in another collective (CPU DDP,
Lightning 2.6), and each rank then stopped at its own batch with a `SystemExit` (exit status 0).
"""

import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from genlab.errors import TrainingInterrupted
from genlab.utils.checkpoints import DIGEST_KEY, digest
from genlab.utils.seeds import derive_seed

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch.cuda.is_initialized() or torch.backends.mps.is_available():
        torch.manual_seed(seed)  # all devices, CUDA included
    else:
        # A CPU run: torch.manual_seed would also queue a CUDA seed for later, formatting a stack trace on each
        # call (about 0.3 ms per training batch on a CUDA build without a GPU); CUDA, if used later, is seeded
        # when it is first initialised by Lightning's own seeding.
        torch.default_generator.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state as tensors and plain Python values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": (int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], *state["numpy_gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState(L.Callback):
    """Per-step seeding, RNG states, W&B run id and the checkpoint digest (see the module docstring)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed if seed is not None else derive_seed(os.urandom(16))
        self.wandb_run_id: str | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        seed_all(derive_seed(self.seed, "train", trainer.global_rank, trainer.current_epoch, batch_idx))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derive_seed(self.seed, "val", trainer.global_rank, trainer.global_step))

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derive_seed(self.seed, "test", trainer.global_rank))

    def state_dict(self) -> dict:
        run_id = self.wandb_run_id
        for logger in self._trainer.loggers if self._trainer else []:
            if isinstance(logger, WandbLogger):
                run_id = logger.version
        return {"seed": self.seed, "rng": rng_state(), "wandb_run_id": run_id}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed, self.wandb_run_id = state_dict["seed"], state_dict.get("wandb_run_id")
        set_rng_state(state_dict["rng"])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[DIGEST_KEY] = digest(checkpoint)


class Interruption(L.Callback):
    """On SIGTERM/SIGINT during fit: write `dirpath/filename` after the current batch and stop (see above)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.signum: int | None = None
        self._ddp_signal = False  # this rank got SIGTERM (under DDP every rank acts on rank 0's)
        self._ddp = False  # SIGTERM taken over from Lightning for this DDP fit
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signum = signum
        log.warning("Received %s: stopping after this batch with a checkpoint", signal.Signals(signum).name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            self._take_over_ddp_sigterm(trainer, pl_module)
            return
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            return
        log.info("Training started; SIGTERM or SIGINT saves a resumable checkpoint to %s", self.path)

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.signum is not None:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ddp:  # a SIGTERM during the epoch's validation: every rank is here, after it
            self._agree(trainer, pl_module)
        elif self.signum is not None:
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        self._ddp = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        self._ddp = False

    # -- DDP ----------------------------------------------------------------------------------------------
    def _take_over_ddp_sigterm(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop.epoch_loop
        if not hasattr(type(loop), "_broadcast_sigterm_tensor"):  # private in Lightning (>= 2.5): keep its handling
            return
        try:
            self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._note_ddp_sigterm)}
        except ValueError:  # not the main thread: leave signals alone
            return
        loop._broadcast_sigterm_tensor = lambda: self._agree(trainer, pl_module)
        self._ddp = True
        if trainer.is_global_zero:
            log.info("Training started; SIGTERM saves a resumable checkpoint to %s (every rank stops)", self.path)

    def _note_ddp_sigterm(self, signum: int, frame: Any) -> None:
        if not self._ddp_signal:
            log.warning("Received SIGTERM: every rank stops before the next batch, with a checkpoint")
        self._ddp_signal = True

    def _agree(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Before each training batch and at each epoch's end, on every rank: rank 0's flag; if it is set, all
        save and stop here."""
        local = getattr(pl_module, "local_group", None)  # CPU DDP on one machine: shared memory
        flag = torch.tensor([int(self._ddp_signal)], dtype=torch.int32, device="cpu" if local else pl_module.device)
        if local is not None:
            local.broadcast([flag], src=0)
        else:
            torch.distributed.broadcast(flag, src=0)
        if flag.item():
            self.signum = signal.SIGTERM
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        signum, self.signum = self.signum, None
        self._restore()
        trainer.save_checkpoint(self.path)
        raise self._interrupted(trainer, signum)

    def _interrupted(self, trainer: L.Trainer, signum: int) -> TrainingInterrupted:
        name = signal.Signals(signum).name
        run_dir = self.path.parent.parent
        return TrainingInterrupted(
            f"interrupted by {name} at step {trainer.global_step} (epoch {trainer.current_epoch}); resumable "
            f"checkpoint written to {self.path}. Resume with: python -m genlab resume={run_dir}",
            signum,
        )
