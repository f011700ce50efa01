"""The contract every generative model offers to callbacks, metrics and tasks."""

import logging
from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as L
import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.train_log import TrainLog
from genlab.utils.seeds import derive_seed

log = logging.getLogger(__name__)


class GenerativeModule(L.LightningModule, metaclass=ABCMeta):
    """Base class of every model: `sample(n, y)`, fixed grid inputs, a per-rank noise generator.

    Images are `[B, C, H, W]` floats in [-1, 1]. The latent is `[B, *latent_shape]`: a flat Gaussian
    vector by default (`latent_shape == (latent_dim,)`); models with another prior (a grid of codes)
    override `sample_latent`. Conditional models (`num_classes > 0`) take labels `y` `[B]` in `decode`
    and `sample`. `monitor` / `monitor_mode` name the logged metric that selects the best checkpoint.
    Models with an encoder also define `encode(x) -> [B, latent_dim]` and `reconstruct(x)`.

    ABCMeta makes `decode` a real contract: a subclass without it cannot be instantiated.
    """

    monitor: str | None = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self, latent_dim: int | tuple[int, ...], num_classes: int = 0, num_fixed: int = 64, conditional: bool = False
    ) -> None:
        super().__init__()
        self.latent_shape = tuple(latent_dim) if isinstance(latent_dim, tuple | list) else (latent_dim,)
        if any(not isinstance(d, int) or d < 1 for d in self.latent_shape):
            raise ConfigError(f"model.latent_dim={latent_dim} is invalid; expected a positive integer")
        if conditional and num_classes < 2:
            raise ConfigError(
                f"model.conditional=true (e.g. model=acgan) needs labelled data, but data.num_classes={num_classes}; "
                f"use a labelled dataset (digits, mnist, fashion_mnist, cifar10, celeba with data.attribute=..., "
                f"or image_folder with class subfolders)"
            )
        self.latent_dim = self.latent_shape[0]
        self.num_classes = num_classes if conditional else 0
        # Latent noise of the training steps and of validation/test: two generators, reseeded from (the run's
        # seed, rank, position) where each step or evaluation starts (see `on_train_batch_start`)
        self.noise, self.eval_noise = torch.Generator(), torch.Generator()
        self.noise_seed: int | None = None  # the run's seed, taken in `setup`; saved in the checkpoint
        # Fixed grid inputs, persistent so a resumed run and a copied checkpoint draw the same grids. Conditional
        # models get one row per class, the same noise in every row (for a binary attribute: off/on pairs).
        per_row = 8 if not self.num_classes else max(8, self.num_classes)
        rows = self.num_classes or num_fixed // per_row
        self.grid_nrow = per_row
        z = torch.randn(per_row if self.num_classes else rows * per_row, *self.latent_shape)
        self.register_buffer("fixed_noise", z.repeat(rows, *[1] * len(self.latent_shape)) if self.num_classes else z)
        labels = torch.arange(rows).repeat_interleave(per_row) if self.num_classes else torch.empty(0)
        self.register_buffer("fixed_labels", labels.long())
        self.train_log, self.eval_log = TrainLog(), TrainLog()  # see `log_train` and `log_eval`

    # -- noise ---------------------------------------------------------------------------------------------
    # Training's z comes from `noise`, reseeded at each batch from (seed, rank, epoch, batch index); evaluation's
    # from `eval_noise`, reseeded at each validation/test epoch. So ranks draw different z, a resumed run (every
    # rank) draws what an uninterrupted one would, and validation (its frequency, its number of batches,
    # Lightning's sanity check) never shifts the training stream.
    def setup(self, stage: str) -> None:
        if stage == "fit" or self.noise_seed is None:
            self.noise_seed = torch.initial_seed()  # the run's seed: seed_everything seeds every rank alike
        self.noise.manual_seed(self._position_seed("train"))
        self.eval_noise.manual_seed(self._position_seed("eval"))

    def _position_seed(self, *position: object) -> int:
        return derive_seed(self.noise_seed, "noise", self.global_rank, *position)

    local_group = None  # CPU DDP on one machine: the ranks' shared-memory LocalGroup (`speed.cpu_ddp_transport`)

    def on_fit_start(self) -> None:
        from genlab.utils.speed import cpu_ddp_transport

        transport = cpu_ddp_transport(self)
        if transport is not None and self.global_rank == 0:
            log.info("CPU DDP: gradients, buffers and DDP's own calls go between the ranks through %s", transport)

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> int | None:
        self.noise.manual_seed(self._position_seed("train", self.current_epoch, batch_idx))
        return None

    def on_validation_epoch_start(self) -> None:
        self.eval_noise.manual_seed(self._position_seed("val", self.global_step))
        self.eval_log = TrainLog()

    def on_test_epoch_start(self) -> None:
        self.eval_noise.manual_seed(self._position_seed("test"))
        self.eval_log = TrainLog()

    def step_noise(self) -> torch.Generator:
        """The generator a step draws its latents from: `noise` in training mode, `eval_noise` in eval mode."""
        return self.noise if self.training else self.eval_noise

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["genlab_noise_seed"] = self.noise_seed
        checkpoint["genlab_train_log"] = self.train_log.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("genlab_noise_seed") is not None:
            self.noise_seed = checkpoint["genlab_noise_seed"]
        if checkpoint.get("genlab_train_log") is not None:
            self.train_log.load_state_dict(checkpoint["genlab_train_log"])

    # -- training scalars (genlab.models.train_log) ---------------------------------------------------------
    def log_train(self, values: dict[str, Tensor | float], batch_size: int, prog_bar: bool = False) -> None:
        """`values` as `train/<name>_step` on the batches Lightning writes logs, and `train/<name>_epoch` (the
        epoch mean) on the epoch's last batch: the keys of `log(on_step=True, on_epoch=True)`, cheaply."""
        values = {f"train/{k}": v for k, v in values.items()}
        self.train_log.add(values, batch_size)
        if self.trainer._logger_connector.should_update_logs:  # Lightning's own test, as its callbacks use it
            step = {f"{k}_step": v for k, v in self.train_log.last.items()}  # the latest value of each key
            self.log_dict(step, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size)
        if self.trainer.fit_loop.epoch_loop.batch_idx + 1 >= self.trainer.num_training_batches:
            self.flush_train_log()

    def flush_train_log(self) -> None:
        """Log the epoch means kept so far as `<key>_epoch` (an epoch ended early calls this too)."""
        means = self.train_log.pop_means()
        if means:
            self.log_dict({f"{k}_epoch": v for k, v in means.items()}, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.flush_train_log()  # an epoch stopped before its last batch (a signal, max_steps)

    # -- validation and test scalars -------------------------------------------------------------------------
    def log_eval(self, values: dict[str, Tensor], batch_size: int) -> None:
        """Validation/test scalars (`split/name` keys), logged once at the epoch's end as batch-size-weighted means
        over every rank: `log(on_epoch=True, sync_dist=True)`'s values, without its cost on every batch (Lightning
        moves its result state to the value's device on each call: about 0.7 ms per key and batch on a CPU)."""
        self.eval_log.add(values, batch_size)

    def _flush_eval_log(self) -> None:  # the sums start afresh in on_validation_epoch_start / on_test_epoch_start
        for key, total in self.eval_log.sums.items():
            count = self.eval_log.counts[key]
            # the mean with its weight: Lightning's epoch reduction sums mean * count and count over the ranks
            self.log(key, total / count, on_epoch=True, sync_dist=True, batch_size=count)

    def on_validation_epoch_end(self) -> None:
        self._flush_eval_log()

    def on_test_epoch_end(self) -> None:
        self._flush_eval_log()

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Prior samples `[n, *latent_shape]` on the module's device. Steps pass `step_noise()` (per rank and
        position); `sample` uses the global RNG, so evaluators seed it without touching training's stream."""
        return torch.randn(n, *self.latent_shape, generator=generator).to(self.device)

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor | None:
        """Uniform class labels `[n]` for conditional models, else None."""
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), generator=generator).to(self.device)

    def fixed_inputs(self) -> tuple[Tensor, Tensor | None]:
        """The grid's `(z, y)`: the same every epoch, saved with the checkpoint."""
        return self.fixed_noise, (self.fixed_labels if self.num_classes else None)

    # -- generation ----------------------------------------------------------------------------------------
    @abstractmethod
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents `[B, *latent_shape]` (and labels `[B]`) -> images `[B, C, H, W]` in [-1, 1]."""

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Eval mode (BatchNorm running stats, no dropout) inside the block; afterwards every submodule's own
        mode is restored, so a frozen sub-network stays in eval mode."""
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            yield
        finally:
            for module, training in modes.items():
                module.train(training)

    # latents decoded per forward by `generate`: a batch of 500 through a 28 px conv generator held about 60 MB of
    # activations at once (at 64 px, about 130 MB per layer), the peak of a DCGAN run's evaluation
    generate_chunk = 100

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """`decode` in eval mode, without gradients, `generate_chunk` latents at a time (eval mode: each image
        depends on its own latent only, so the chunks give the images one forward would)."""
        z, y = z.to(self.device), None if y is None else y.to(self.device)
        with self.eval_mode():
            if len(z) <= self.generate_chunk:
                return self.decode(z, y)
            step = self.generate_chunk
            return torch.cat(
                [self.decode(z[i : i + step], None if y is None else y[i : i + step]) for i in range(0, len(z), step)]
            )

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """`n` new images `[n, C, H, W]` in [-1, 1]; conditional models honour `y` (uniform labels if None)."""
        if self.num_classes:
            y = self.sample_labels(n) if y is None else torch.as_tensor(y, dtype=torch.long, device=self.device)
            y = y.expand(n)  # a single label means n of that class
        return self.generate(self.sample_latent(n), y if self.num_classes else None)
