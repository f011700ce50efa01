"""Test-only callbacks, reachable from configs as `+callbacks.<name>._target_=tests.helpers.<Class>`."""

import hashlib
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as L
import torch


class SignalAfter(L.Callback):
    """Sends `signum` to this process after `batches` training batches: an interruption at an exact point; with
    `at_validation`, during the first validation after them (the epoch-end work, before the epoch's end hooks);
    with `rank`, in that DDP rank only (`kill <pid>` of one process)."""

    def __init__(
        self, batches: int, signum: int = signal.SIGTERM, at_validation: bool = False, rank: int | None = None
    ) -> None:
        self.batches, self.signum, self.at_validation, self.seen = batches, signum, at_validation, 0
        self.rank = rank

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.seen += 1
        if self.seen == self.batches and not self.at_validation and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)

    def on_validation_end(self, trainer: L.Trainer, *args) -> None:
        at = self.at_validation and self.seen == self.batches and not trainer.sanity_checking
        if at and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)


class Boom(L.Callback):
    """A programming error inside training, to check how genlab reports bugs."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise RuntimeError("boom: a bug in a callback")


class PoisonBatches(L.Callback):
    """Writes a NaN into the input images of the given training batches (counted across epochs)."""

    def __init__(self, batches: list[int]) -> None:
        self.batches, self.seen = set(batches), 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.seen in self.batches:
            batch[0][0, 0, 0, 0] = float("nan")
        self.seen += 1


class PoisonWeightsAtEpoch(L.Callback):
    """Sets every weight to NaN just before epoch `epoch`'s validation (and so before its checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            for p in pl_module.parameters():
                p.data.fill_(float("nan"))


def _digest(state: torch.Tensor) -> str:
    return hashlib.sha256(state.numpy().tobytes()).hexdigest()[:16]


class RecordNoise(L.Callback):
    """After each training batch, appends `[epoch, batch_idx, noise, global, weights]` to
    `dirpath/noise_rank<rank>.jsonl`: digests of the state the model's training noise generator (a GAN's z) and
    torch's global RNG (a VAE's reparameterisation noise, WGAN-GP's interpolation coefficients) are left in, i.e. of
    where their streams stood, and of the model's trainable parameters."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        digests = [_digest(pl_module.noise.get_state()), _digest(torch.get_rng_state())]
        params = [p.detach().float().flatten() for p in pl_module.parameters() if p.requires_grad]
        digests.append(_digest(torch.cat(params)))
        with (self.dirpath / f"noise_rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps([trainer.current_epoch, batch_idx, *digests]) + "\n")


class RecordMetrics(L.Callback):
    """At the end of each validation (sanity checks aside) and test, appends this rank's `val/*` or `test/*`
    metrics, as Lightning holds them for callbacks, to `dirpath/metrics_rank<rank>.jsonl`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def _record(self, trainer: L.Trainer, split: str) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{split}/")}
        with (self.dirpath / f"metrics_rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"split": split, **values}) + "\n")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "test")


class KillAtEpoch(L.Callback):
    """SIGKILLs this process as epoch `epoch` starts, in sweep job `job` of a run that did not resume: a sweep killed
    from outside mid-job (its checkpoints up to then written, nothing saved on the way out)."""

    def __init__(self, epoch: int, job: int) -> None:
        self.epoch, self.job = epoch, job

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from hydra.core.hydra_config import HydraConfig

        if trainer.current_epoch == self.epoch and trainer.ckpt_path is None and HydraConfig.get().job.num == self.job:
            os.kill(os.getpid(), signal.SIGKILL)


class NoiseWeightsAtEpoch(L.Callback):
    """Adds N(0, scale^2) noise to every weight just before epoch `epoch`'s validation: a run whose last epoch is
    (much) worse than an earlier one, so its best checkpoint is not its last."""

    def __init__(self, epoch: int, scale: float = 1.0) -> None:
        self.epoch, self.scale = epoch, scale

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            for p in pl_module.parameters():
                p.data.add_(self.scale * torch.randn_like(p))
