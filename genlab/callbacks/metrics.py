"""Sample-quality metrics during training: every k epochs on n samples, and once more at test."""

import json
import logging
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import Tensor

from genlab.metrics.evaluator import QualityMetrics
from genlab.utils.speed import release_free_memory

log = logging.getLogger(__name__)


def rank_share(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """(count, offset) of this rank's part of `n` samples; the counts over all ranks sum to exactly `n`."""
    base, extra = divmod(n, world_size)
    return base + (rank < extra), rank * base + min(rank, extra)


def gather_rows(pl_module: L.LightningModule, rows: Tensor, max_rows: int) -> Tensor:
    """Concatenate each rank's `rows` `[n_r, ...]` (n_r <= max_rows) on every rank, without padding rows."""
    padded = rows.new_zeros(max_rows, *rows.shape[1:])
    padded[: len(rows)] = rows
    gathered = pl_module.all_gather(padded.to(pl_module.device))  # (world, max_rows, ...)
    counts = pl_module.all_gather(torch.tensor(len(rows), device=pl_module.device))  # (world,)
    return torch.cat([gathered[r, : int(c)] for r, c in enumerate(counts)]).cpu()


class SampleQuality(L.Callback):
    """Logs `val/<key>` every `every_n_epochs` epochs and at the end of training (by `max_epochs` or
    `max_steps`), and `test/<key>` at test, from `n_samples` generated images in total across ranks, under
    no_grad in the model's eval mode (`model.sample`).

    `val/*` compare the samples with the validation images (held out of the training file, or the official
    validation split), `test/*` with the test split: the checkpoint is chosen on one and reported on the other.
    Without validation images (`data.val_fraction=0`) there are no `val/*` metrics. A model whose samples are
    not meaningful yet (`can_sample` False, e.g. a VQ-VAE without a prior) is not scored.

    With `select_best` (auto: models with a `discriminator`), the best checkpoint is chosen by the headline
    quality metric (`val/cfid` on labelled data, `val/fid` with Inception weights): see `Checkpoint`.
    KID uses `kid_subsets` subsets here (evaluate: 100). Each evaluation is also appended, with its protocol
    (which reference, how many images), to `record_path` (JSON lines).
    """

    def __init__(
        self,
        metrics: QualityMetrics,
        every_n_epochs: int = 1,
        n_samples: int = 1000,
        select_best: bool | str = "auto",
        record_path: str | None = None,
        seed: int = 1234,
        kid_subsets: int = 10,
    ) -> None:
        if every_n_epochs < 1 or n_samples < 2:
            raise ValueError(f"every_n_epochs={every_n_epochs} and n_samples={n_samples} must be >= 1 and >= 2")
        self.metrics, self.every_n_epochs, self.n_samples = metrics, every_n_epochs, n_samples
        self.select_best, self.seed, self.kid_subsets = select_best, seed, kid_subsets
        self.record_path = Path(record_path) if record_path else None
        self._ready = False
        self._last_epoch = -1
        self._said_cannot_sample = False

    def prepare(self, trainer: L.Trainer) -> None:
        """Classifier and reference features: built by rank 0 first (they are cached on disk), then the others."""
        if self._ready or trainer.datamodule is None:
            return
        if trainer.is_global_zero:
            self.metrics.setup(trainer.datamodule)
        trainer.strategy.barrier("sample_quality_setup")
        self.metrics.setup(trainer.datamodule)
        self._ready = True

    def monitor_for(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """The metric that should choose the best checkpoint of `pl_module`, or None to keep the model's."""
        selects = self.select_best is True or (self.select_best == "auto" and hasattr(pl_module, "discriminator"))
        if not selects:
            return None
        self.prepare(trainer)
        return f"val/{self.metrics.monitor}" if self.metrics.monitor else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.prepare(trainer)

    def _due(self, trainer: L.Trainer) -> bool:
        """Every `every_n_epochs` epochs, and at the last epoch of the fit, once per epoch."""
        epoch = trainer.current_epoch
        return self._last_epoch != epoch and ((epoch + 1) % self.every_n_epochs == 0 or last_epoch_of_fit(trainer))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._due(trainer):
            self._evaluate(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):  # no validation loop ran this epoch (or the fit stopped by max_steps mid-epoch)
            self._evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate(trainer, pl_module, "test")

    def _scorable(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> bool:
        if not self.metrics.extractors or not self.metrics.has_reference(split):
            return False
        if getattr(pl_module, "can_sample", True):
            return True
        if not self._said_cannot_sample and trainer.is_global_zero:
            self._said_cannot_sample = True
            log.info(
                f"{type(pl_module).__name__}.can_sample is False (e.g. a VQ-VAE without a prior decodes uniform "
                f"random codes): its samples are not scored, no val/* or test/* sample-quality metrics"
            )
        return False

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        if split == "val":
            self._last_epoch = trainer.current_epoch
        if not self._scorable(trainer, pl_module, split):
            return
        world, rank = trainer.world_size, trainer.global_rank
        count, offset = rank_share(self.n_samples, world, rank)
        cuda = [pl_module.device] if pl_module.device.type == "cuda" else []
        # fixed noise per epoch (at test: the seed alone, as genlab.evaluate uses it); training's RNG is untouched
        seed = self.seed + rank + (1000 * trainer.current_epoch if split == "val" else 0)
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            fake = self.metrics.features(pl_module, count, offset)
        if world > 1:
            max_rows = rank_share(self.n_samples, world, 0)[0]
            fake = {name: {k: gather_rows(pl_module, v, max_rows) for k, v in f.items()} for name, f in fake.items()}
        values, protocols = self.metrics.compute(fake, split, kid_subsets=self.kid_subsets)
        del fake
        release_free_memory()  # the evaluation's temporaries (KID's kernels, conv activations): not training's
        # every rank computes the same values from the same gathered features, so the sync (a mean of equal numbers)
        # changes nothing; it keeps Lightning from warning (tests/test_ddp.py: logged values = rank 0's record)
        pl_module.log_dict({f"{split}/{k}": v for k, v in values.items()}, sync_dist=True)
        if trainer.is_global_zero and self.record_path is not None:
            record = {
                "split": split,
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "seed": seed,
                **values,
            }
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            with self.record_path.open("a") as f:
                f.write(json.dumps({**record, "protocol": protocols}) + "\n")


def last_epoch_of_fit(trainer: L.Trainer) -> bool:
    """Whether the fit ends after this epoch: `max_epochs` reached, `max_steps` reached, or a stop requested
    (`should_stop`: how a GAN ends at its budget of generator steps, or early stopping). `max_epochs=-1`
    (train by steps) never ends by epochs."""
    by_epochs = (trainer.max_epochs or 0) > 0 and trainer.current_epoch + 1 >= trainer.max_epochs
    by_steps = (trainer.max_steps or 0) > 0 and trainer.global_step >= trainer.max_steps
    return by_epochs or by_steps or bool(trainer.should_stop)
