"""The adversarial engine: one module owns, for every GAN, the step schedule, manual optimisation,
gradient clipping, per-player LR schedulers, the EMA generator and the `max_steps` rule. A model
supplies its objective (`genlab.models.objectives`) and networks; ACGAN is this class with
`conditional=true`, BiGAN a small subclass (`genlab.models.bigan`).

GAN: Goodfellow et al. 2014 (https://arxiv.org/abs/1406.2661); DCGAN nets: Radford et al. 2016;
ACGAN: Odena et al. 2017 (https://arxiv.org/abs/1610.09585).

Stepping (`genlab.models.schedule.Schedule`): each batch is one D step on that real batch; after every
`n_critic`-th batch come `n_gen` G steps, each on fresh noise (as in Algorithm 1 of both the GAN and
the WGAN papers). With `reuse_fake=true`, the first G step after a D step trains on that D step's generated
batch instead, G's graph kept from its one forward (as the DCGAN paper's code, dcgan.torch, and PyTorch's
examples/dcgan do): one G forward a batch fewer. `trainer.max_steps` counts **generator steps** for this module.
"""

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from genlab.errors import ConfigError, check_choice
from genlab.models.base import GenerativeModule
from genlab.models.objectives import make_objective
from genlab.models.schedule import Schedule
from genlab.nets.common import DiscriminatorHeads


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False, high_closed=False) -> None:
    above = low < value if low_open else low <= value
    below = value <= high if high_closed else value < high
    if not (above and below):
        relation = ("<" if low_open else "<=", "<=" if high_closed else "<")
        raise ConfigError(
            f"model.{name}={value} is out of range; expected {low} {relation[0]} value {relation[1]} {high}"
        )


class GAN(GenerativeModule):
    """`generator`: `[B, latent_dim]` (+ labels `[B]`) -> `[B, C, H, W]` in [-1, 1]; `discriminator`: a
    feature trunk `[B, C, H, W]` -> `[B, out_dim]`, to which this class adds the adversarial head (and, when
    `conditional`, ACGAN's auxiliary classifier head with weight `aux_weight`). `lr` is both players' learning
    rate unless `lr_g` / `lr_d` give their own."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int,
        optimizer_g: Callable[..., Optimizer],
        optimizer_d: Callable[..., Optimizer],
        lr: float = 2e-4,
        lr_g: float | None = None,
        lr_d: float | None = None,
        loss: str = "bce",
        saturating: bool = False,
        clip_value: float | None = None,
        gp_weight: float = 10.0,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        n_critic: int = 1,
        n_gen: int = 1,
        reuse_fake: bool = False,
        skip_d_every: int = 0,
        d_only_every: int = 0,
        g_only_every: int = 0,
        label_smoothing: float = 0.0,
        label_flip: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_steps: int = 0,
        grad_clip_g: float | None = None,
        grad_clip_d: float | None = None,
        scheduler_g: Callable[[Optimizer], LRScheduler] | None = None,
        scheduler_d: Callable[[Optimizer], LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        ema_decay: float | None = None,
        ema_warmup: bool = False,
        ema_bn: str = "standing",
        init: str | None = None,
        spectral_norm: bool = False,
        num_classes: int = 0,
        conditional: bool = False,
        aux_weight: float = 1.0,
        class_head: str = "auxiliary",
        aux_fake: bool = True,
        recipe_epochs: dict[str, int] | None = None,
    ) -> None:
        # recipe_epochs: the recipe's length per dataset, e.g. {mnist: 40}; the run reads it (trainer.max_epochs'
        # default, genlab.utils.config.recipe_epochs), the model keeps it in its hparams only
        super().__init__(latent_dim, num_classes=num_classes, conditional=conditional)
        lr_g, lr_d = lr if lr_g is None else lr_g, lr if lr_d is None else lr_d
        for name, rate in (("lr_g", lr_g), ("lr_d", lr_d)):
            if not rate > 0:
                raise ConfigError(f"model.{name}={rate} is invalid; expected a learning rate > 0")
        self.objective = make_objective(loss, saturating, clip_value, gp_weight)
        if loss == "wasserstein_gp" and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()
        ):
            raise ConfigError(
                "model.loss=wasserstein_gp needs a critic without BatchNorm (the gradient penalty is taken per sample; "
                "Gulrajani et al. 2017, sec. 4), but model.discriminator has BatchNorm layers; use "
                "model.discriminator.norm=layer (model=wgan_gp_paper does) or none"
            )
        self.schedule = Schedule(n_critic, n_gen, skip_d_every, d_only_every, g_only_every)
        if not isinstance(reuse_fake, bool):
            raise ConfigError(f"model.reuse_fake={reuse_fake!r} is invalid; expected true or false")
        self.reuse_fake = reuse_fake
        self._kept_fake: tuple[Tensor, Tensor | None] | None = None  # the D step's batch, for G's next step
        if isinstance(r1_gamma, bool) or not (isinstance(r1_gamma, int | float) and r1_gamma >= 0):
            raise ConfigError(f"model.r1_gamma={r1_gamma} is invalid; expected a number >= 0 (0: no R1 penalty)")
        if isinstance(r1_every, bool) or not isinstance(r1_every, int) or r1_every < 1:
            raise ConfigError(f"model.r1_every={r1_every} is invalid; expected an integer >= 1")
        self.r1_gamma, self.r1_every = float(r1_gamma), r1_every
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        _check_range("label_flip", label_flip, 0.0, 1.0, high_closed=True)
        if (label_smoothing or label_flip) and not self.objective.uses_targets:
            raise ConfigError(f"model.label_smoothing / model.label_flip need loss bce or least_squares, not {loss!r}")
        if instance_noise < 0 or (instance_noise > 0 and instance_noise_steps < 1):
            raise ConfigError(
                f"model.instance_noise={instance_noise} with instance_noise_steps={instance_noise_steps} is invalid; "
                f"expected sigma >= 0 and, when sigma > 0, a positive number of G steps to decay over"
            )
        check_choice("model.scheduler_interval", scheduler_interval, ("epoch", "g_step"))
        if ema_decay is not None:
            _check_range("ema_decay", ema_decay, 0.0, 1.0, low_open=True)
        check_choice("model.init", init, (None, "dcgan"))
        if init == "dcgan":
            for net in (generator, discriminator):
                net.apply(dcgan_init)
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = DiscriminatorHeads(discriminator, self.num_classes, class_head)
        if spectral_norm:  # Miyato et al. 2018: every linear and conv layer of D, its heads included
            for module in list(self.discriminator.modules()):
                if isinstance(module, nn.Linear | nn.Conv2d | nn.Embedding):
                    nn.utils.parametrizations.spectral_norm(module)
        self._d_batch_stats = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema_decay else None
        self.optimizer_g, self.optimizer_d, self.lr_g, self.lr_d = optimizer_g, optimizer_d, lr_g, lr_d
        self.scheduler_g, self.scheduler_d, self.scheduler_interval = scheduler_g, scheduler_d, scheduler_interval
        self.grad_clip = {"g": grad_clip_g, "d": grad_clip_d}
        self.label_smoothing, self.label_flip, self.aux_weight = label_smoothing, label_flip, aux_weight
        self.aux_fake = aux_fake
        self.instance_noise, self.instance_noise_steps, self.ema_decay = instance_noise, instance_noise_steps, ema_decay
        check_choice("model.ema_bn", ema_bn, ("standing", "live"))
        self.ema_warmup, self.ema_bn, self._ema_stats_at = ema_warmup, ema_bn, None
        self.monitor = f"val/{self.objective.divergence}" if self.objective.divergence else None
        self.steps = {"batches": 0, "d": 0, "g": 0}  # saved in the checkpoint; drive the schedule
        self._max_g_steps: int | None = None

    # -- generation -------------------------------------------------------------------------------------
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images from the EMA generator when `ema_decay` is set, else from the live one."""
        if self.generator_ema is None:
            return self.generator(z, y)
        self._ema_standing_stats()
        return self.generator_ema(z, y)

    @torch.no_grad()
    def _ema_standing_stats(self, n: int = 4096, batch_size: int = 512) -> None:
        """BatchNorm statistics of the EMA generator's own activations (the live G's running statistics do not fit
        the averaged weights): the mean over `n` samples of fixed noise, recomputed once per G step at most,
        from a generator of its own so that the training noise and the callers' RNG are untouched."""
        norms = [m for m in self.generator_ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if self.ema_bn != "standing" or not norms or self._ema_stats_at == self.steps["g"]:
            return
        noise = torch.Generator().manual_seed(0)
        momenta = [m.momentum for m in norms]
        modes = {m: m.training for m in self.generator_ema.modules()}
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean over the batches below
        self.generator_ema.train()
        try:
            for _ in range(n // batch_size):
                self.generator_ema(self.sample_latent(batch_size, noise), self.sample_labels(batch_size, noise))
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            for m, training in modes.items():
                m.train(training)
        self._ema_stats_at = self.steps["g"]

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """What G's optimiser updates (BiGAN adds its encoder)."""
        return self.generator.parameters()

    # -- the schedule -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._take_over_max_steps()

    def _take_over_max_steps(self) -> None:
        """`trainer.max_steps` counts G steps here, but Lightning counts every optimiser step (D and G).
        Take the budget over and lift Lightning's own limit. The one place that writes loop state: Lightning
        has no public setter on the Trainer; `test_max_steps_counts_generator_steps` breaks if this changes."""
        if self._max_g_steps is None:
            self._max_g_steps = self.trainer.max_steps
            self.trainer.fit_loop.epoch_loop.max_steps = -1

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> int | None:
        super().on_train_batch_start(batch, batch_idx)  # reseeds the training noise
        if self._max_g_steps is not None and 0 <= self._max_g_steps <= self.steps["g"]:
            self.trainer.should_stop = True
            self.flush_train_log()  # the epoch ends here, before its last batch
            return -1  # ends the epoch; should_stop ends the fit
        return None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        opt_g, opt_d = self.optimizers()
        d_step, g_steps = self.schedule.plan(self.steps["batches"], self.current_epoch)
        logs: dict[str, Tensor] = {}
        if d_step and g_steps and self.reuse_fake:  # outside D's toggle, which would turn G's gradients off
            self._kept_fake = self._fake(x.shape[0])
        try:
            if d_step:
                logs |= self._step_player("d", opt_d, self.discriminator_loss, x, y)
                self.objective.after_d_step(self.discriminator)
            for _ in range(g_steps):
                logs |= self._step_player("g", opt_g, self.generator_loss, x, y)
                self._update_ema()
                if self.scheduler_interval == "g_step":
                    self._step_schedulers()
        finally:
            self._kept_fake = None  # G's graph is not kept past its batch
        self.steps["batches"] += 1
        # Per epoch: after the epoch's last batch, where Lightning steps its own schedulers. Not in
        # on_train_epoch_end: callbacks run theirs first, so Interruption's checkpoint would miss this step.
        if self.scheduler_interval == "epoch" and self.trainer.is_last_batch:
            self._step_schedulers()
        logs |= {"g_steps": float(self.steps["g"]), "d_steps": float(self.steps["d"])}
        self.log_train(logs, x.shape[0])

    def _step_player(self, player: str, opt: Optimizer, loss_fn: Callable, x: Tensor, y: Tensor) -> dict:
        with self.toggled_optimizer(opt):
            loss, logs = loss_fn(x, y)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.grad_clip[player]:
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip[player], gradient_clip_algorithm="norm")
            opt.step()
        self.steps[player] += 1
        return {k: v.detach() for k, v in logs.items()}

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        decay = self.ema_decay
        if self.ema_warmup:  # TensorFlow's ExponentialMovingAverage(num_updates): early weights are forgotten
            decay = min(decay, (1 + self.steps["g"]) / (10 + self.steps["g"]))
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(live, 1.0 - decay)  # ema = decay * ema + (1 - decay) * live
        if self.ema_bn == "live":
            for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
                ema.copy_(live)  # BatchNorm statistics follow the live generator

    # -- the objective ----------------------------------------------------------------------------------
    def _fake(self, n: int) -> tuple[Tensor, Tensor | None]:
        noise = self.step_noise()
        y = self.sample_labels(n, noise)
        return self.generator(self.sample_latent(n, noise), y), y

    def _noisy(self, x: Tensor) -> Tensor:
        """Instance noise: N(0, sigma^2) added to D's inputs in training, sigma decaying linearly to 0 over G steps."""
        if not self.instance_noise or not self.training:
            return x
        sigma = self.instance_noise * max(0.0, 1.0 - self.steps["g"] / self.instance_noise_steps)
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    def _targets(self, n: int) -> tuple[Tensor, Tensor]:
        """D's real/fake targets `[n]` in training: one-sided smoothing of the real target, and random flips."""
        smoothing = self.label_smoothing if self.training else 0.0
        real = torch.full((n,), 1.0 - smoothing, device=self.device)
        fake = torch.zeros(n, device=self.device)
        if self.label_flip and self.training:
            flip = torch.rand(n, device=self.device) < self.label_flip
            real, fake = torch.where(flip, fake, real), torch.where(flip, real, fake)
        return real, fake

    def discriminator_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._kept_fake is not None:  # reuse_fake: G's next step trains on this batch
            fake, y_fake = self._kept_fake[0].detach(), self._kept_fake[1]
        else:
            with torch.no_grad():
                fake, y_fake = self._fake(x.shape[0])
        real_in, fake_in = self._noisy(x), self._noisy(fake)
        r1_step = self._r1_step()
        if r1_step:
            real_in = real_in.detach().requires_grad_(True)
        # on an R1 step, two forwards: the penalty's double backward then runs over the real batch only
        (real_out, real_aux), (fake_out, fake_aux) = self._score_both(real_in, fake_in, y, y_fake, joint=not r1_step)
        loss = self.objective.d_loss(real_out, fake_out, *self._targets(x.shape[0]))
        logs = self._diagnostics(real_out, fake_out)
        if r1_step:
            loss = self._add_r1(loss, logs, real_out, real_in)
        critic = lambda v: self.discriminator(v, y=y if y_fake is not None else None)[0]  # noqa: E731
        penalty = self.objective.penalty(critic, real_in, fake_in) if self.training else None
        if penalty is not None:
            loss, logs["gp"] = loss + penalty, penalty
        if real_aux is not None:  # ACGAN: D also classifies real and generated images
            aux = F.cross_entropy(real_aux, y)  # aux_fake: D's head also learns the generated images' labels
            aux = aux + F.cross_entropy(fake_aux, y_fake) if self.aux_fake else aux
            loss, logs["aux_loss"] = loss + self.aux_weight * aux, aux
            logs |= {"aux_acc_real": _accuracy(real_aux, y), "aux_acc_fake": _accuracy(fake_aux, y_fake)}
        logs["d_loss"] = loss
        if not self.training:  # evaluation: G's loss from the same scores (saves a G and a D forward per batch)
            g_loss = self.objective.g_loss(fake_out)
            logs["g_loss"] = (
                g_loss if fake_aux is None else g_loss + self.aux_weight * F.cross_entropy(fake_aux, y_fake)
            )
        return loss, logs

    def _r1_step(self) -> bool:
        """Whether this D step adds the R1 penalty: in training, on every `r1_every`-th D step."""
        return self.training and self.r1_gamma > 0 and self.steps["d"] % self.r1_every == 0

    def _add_r1(self, loss: Tensor, logs: dict[str, Tensor], real_out: Tensor, *real_inputs: Tensor) -> Tensor:
        """`loss` + gamma / 2 * R1, weighted `r1_every` times (lazy regularisation, Karras et al. 2020: the
        penalty is added on every `r1_every`-th D step only); logs R1 as `r1`."""
        logs["r1"] = r1_penalty(real_out, *real_inputs)
        return loss + 0.5 * self.r1_gamma * self.r1_every * logs["r1"]

    def _score_both(
        self, real: Tensor, fake: Tensor, y_real: Tensor, y_fake: Tensor | None, joint: bool = True
    ) -> tuple[tuple[Tensor, Tensor | None], ...]:
        """D on the real and the generated batch (with their labels for a conditional model). Without batch
        statistics in D (no BatchNorm), one forward over both concatenated is the same computation per sample in
        fewer, larger matrix products (`docs/benchmarks.md`); with BatchNorm, or `joint=False`, two forwards (each
        batch keeps its own statistics)."""
        y_real = None if y_fake is None else y_real
        if self._d_batch_stats or not joint:
            return self.discriminator(real, y=y_real), self.discriminator(fake, y=y_fake)
        labels = None if y_fake is None else torch.cat([y_real, y_fake])
        out, aux = self.discriminator(torch.cat([real, fake]), y=labels)
        n = real.shape[0]
        return (out[:n], None if aux is None else aux[:n]), (out[n:], None if aux is None else aux[n:])

    def generator_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kept, self._kept_fake = self._kept_fake, None  # reuse_fake: the D step's batch, for the first G step only
        fake, y_fake = kept if kept is not None else self._fake(x.shape[0])
        fake_out, fake_aux = self.discriminator(self._noisy(fake), y=y_fake)
        loss = self.objective.g_loss(fake_out)
        if fake_aux is not None:
            loss = loss + self.aux_weight * F.cross_entropy(fake_aux, y_fake)
        return loss, {"g_loss": loss}

    def _diagnostics(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """The divergence estimate and, for a classifying D, its accuracy on real and on generated images."""
        logs = {}
        with torch.no_grad():
            estimate = self.objective.estimate(real_out, fake_out)
            if estimate is not None:
                logs[self.objective.divergence] = estimate
            if self.objective.classifies:
                logs["d_acc_real"] = (real_out > self.objective.threshold).float().mean()
                logs["d_acc_fake"] = (fake_out <= self.objective.threshold).float().mean()
        return logs

    # -- evaluation -------------------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], split: str) -> None:
        x, y = batch  # in eval mode: no penalty, instance noise, smoothing or flips; g_loss included
        _, d_logs = self.discriminator_loss(x, y)
        self.log_eval({f"{split}/{k}": v.detach() for k, v in d_logs.items()}, x.shape[0])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> tuple[list[Optimizer], list[LRScheduler]]:
        opt_g = self.optimizer_g(self.generator_parameters(), lr=self.lr_g)
        opt_d = self.optimizer_d(self.discriminator.parameters(), lr=self.lr_d)
        pairs = ((self.scheduler_g, opt_g), (self.scheduler_d, opt_d))
        return [opt_g, opt_d], [factory(opt) for factory, opt in pairs if factory is not None]

    # -- checkpoint -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["genlab_gan_steps"] = dict(self.steps)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._ema_stats_at = None  # the loaded EMA weights get their own statistics before they generate
        super().on_load_checkpoint(checkpoint)
        self.steps = dict(checkpoint.get("genlab_gan_steps", self.steps))


def r1_penalty(real_out: Tensor, *real_inputs: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018, https://arxiv.org/abs/1801.04406, eq. 9 without gamma / 2): E[||grad_x D(x)||^2]
    on real images, the squared norm over all non-batch dimensions. Each of `real_inputs` requires grad and
    `real_out` `[B]` are D's scores of them; with several inputs (BiGAN's real pair (x, E(x))) the norm is that of
    the gradient with respect to all of them together. The graph is kept so that the penalty trains D. A mean over
    the batch, so under DDP the averaged gradients are those of the whole batch's mean (as for the gradient
    penalty)."""
    grads = torch.autograd.grad(real_out.sum(), real_inputs, create_graph=True)
    return sum(g.float().flatten(1).pow(2).sum(1) for g in grads).mean()  # each (B, ...) -> (B,); then ()


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(1) == y).float().mean()


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016, sec. 4: convolution weights ~ N(0, 0.02); BatchNorm scales ~ N(1, 0.02), shifts 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
