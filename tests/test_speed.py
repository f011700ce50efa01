"""The engine's speed work keeps the maths and the records: cheap training logs give Lightning's own values,
the joint D forward gives the two-forward loss and gradients, seeding and threads, and `compile`."""

import csv
import math
import subprocess
import sys
from unittest import mock

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from genlab.callbacks.state import seed_all
from genlab.data import DigitsDataModule
from genlab.errors import ConfigError
from genlab.models.train_log import TrainLog
from genlab.utils import speed
from tests.test_models import make_trainer, tiny_gan


class _Reference(type(tiny_gan())):
    """Also logs every training scalar the way Lightning does it itself (`ref/...`, on_step and on_epoch)."""

    def log_train(self, values, batch_size, prog_bar=False):
        super().log_train(values, batch_size, prog_bar)
        ref = {f"ref/{k}": v.detach() if torch.is_tensor(v) else float(v) for k, v in values.items()}
        self.log_dict(ref, on_step=True, on_epoch=True, batch_size=batch_size)


def test_training_logs_equal_lightnings_own_step_and_epoch_values(tmp_path):
    model = tiny_gan()
    model.__class__ = _Reference
    model.schedule = type(model.schedule)(n_critic=3)  # g_loss on every third batch only: its own count
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=7, limit_val_batches=0, log_every_n_steps=2)
    trainer.loggers = [logger]
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, channels=1, batch_size=32))
    logger.finalize("success")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    compared = 0
    for row in rows:
        for key, value in row.items():
            if key.startswith("train/") and value:
                ref = row[key.replace("train/", "ref/", 1)]
                assert ref, f"{key} logged at step {row['step']} where Lightning logged nothing"
                assert float(value) == pytest.approx(float(ref), rel=1e-6, abs=1e-7), (key, row["step"])
                compared += 1
        for key, value in row.items():
            if key.startswith("ref/") and value:
                assert row[key.replace("ref/", "train/", 1)], f"{key} at step {row['step']} missing from train/"
    epoch_keys = {k for r in rows for k, v in r.items() if v and k.startswith("train/") and k.endswith("_epoch")}
    assert {"train/d_loss_epoch", "train/g_loss_epoch"} <= epoch_keys
    assert compared > 20


class _EvalReference(type(tiny_gan())):
    """Also logs every validation/test scalar per batch the way Lightning does it itself (`ref/...`)."""

    def log_eval(self, values, batch_size):
        super().log_eval(values, batch_size)
        ref = {f"ref/{k}": v for k, v in values.items()}
        self.log_dict(ref, on_epoch=True, sync_dist=True, batch_size=batch_size)


def test_evaluation_logs_equal_lightnings_own_epoch_values(tmp_path):
    model = tiny_gan()
    model.__class__ = _EvalReference
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, num_sanity_val_steps=0)
    trainer.loggers = [logger]
    data = DigitsDataModule(image_size=8, channels=1, batch_size=48, eval_batch_size=48)  # the last one is smaller
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data)
    logger.finalize("success")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    compared = {}
    for row in rows:
        for key, value in row.items():
            if key.split("/")[0] in ("val", "test") and key.split("/")[1] in ("d_loss", "g_loss") and value:
                assert float(value) == pytest.approx(float(row["ref/" + key]), rel=1e-6), (key, row["step"])
                compared[key] = compared.get(key, 0) + 1
    assert compared == {"val/d_loss": 2, "val/g_loss": 2, "test/d_loss": 1, "test/g_loss": 1}


def test_evaluation_batches_are_four_training_batches_unless_set():
    data = DigitsDataModule(image_size=8, channels=1, batch_size=16)
    data.setup("fit")
    data.setup("test")
    assert data.train_dataloader().batch_size == 16
    assert data.val_dataloader().batch_size == data.test_dataloader().batch_size == 64
    assert DigitsDataModule(image_size=8, channels=1, batch_size=16, eval_batch_size=5).eval_batch_size == 5


def test_evaluation_values_do_not_depend_on_the_evaluation_batch(tmp_path):
    """Eval-mode nets (BatchNorm on its running statistics) score each image on its own: the epoch values of a
    deterministic model are the same whatever the evaluation batch."""
    from functools import partial

    from genlab.models import Autoencoder
    from genlab.nets import MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    model = Autoencoder(
        MLPEncoder(1, 8, [32], out_dim=4),
        MLPDecoder(4, 1, 8, [32], batch_norm=True),
        partial(torch.optim.Adam),
        latent_dim=4,
    )
    decoder_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    decoder_bn.running_mean.uniform_(-1, 1)  # not the identity, so that a batch's own statistics would differ
    values = []
    for eval_batch_size in (None, 7):
        data = DigitsDataModule(image_size=8, channels=1, batch_size=16, eval_batch_size=eval_batch_size)
        trainer = make_trainer(tmp_path)
        values.append(trainer.validate(model, datamodule=data, verbose=False)[0])
        assert trainer.num_val_batches[0] == (3 if eval_batch_size is None else 21)
    assert values[0].keys() == values[1].keys() and values[0]
    for key in values[0]:
        assert values[0][key] == pytest.approx(values[1][key], rel=1e-5), key


def test_train_log_means_per_key_and_resume_state():
    log = TrainLog()
    log.add({"a": torch.tensor(1.0), "b": 5.0}, batch_size=2)
    log.add({"a": torch.tensor(4.0)}, batch_size=1)
    restored = TrainLog()
    restored.load_state_dict(log.state_dict())
    assert float(restored.last["a"]) == 4.0
    means = restored.pop_means()
    assert float(means["a"]) == pytest.approx((1 * 2 + 4 * 1) / 3) and float(means["b"]) == 5.0
    assert restored.pop_means() == {}


@pytest.mark.parametrize("loss", ["wasserstein", "bce"])
def test_joint_discriminator_forward_gives_the_two_forward_loss_and_gradients(loss):
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    grads, losses = [], []
    for joint in (True, False):
        torch.manual_seed(0)
        model = tiny_gan(loss=loss)
        model.noise.manual_seed(1)
        assert not model._d_batch_stats  # the tiny D has no BatchNorm: the joint forward applies
        model._d_batch_stats = not joint
        value, _ = model.discriminator_loss(x, None)
        value.backward()
        losses.append(value.detach())
        grads.append([p.grad.clone() for p in model.discriminator.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_discriminator_with_batch_norm_scores_each_batch_on_its_own():
    from genlab.nets import MLPEncoder

    model = tiny_gan()
    model2 = type(model)(
        generator=model.generator,
        discriminator=MLPEncoder(1, 8, hidden_dims=[32], activation="leaky_relu", norm="batch"),
        latent_dim=8,
        optimizer_g=torch.optim.SGD,
        optimizer_d=torch.optim.SGD,
    )
    assert model2._d_batch_stats
    calls = []
    model2.discriminator.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model2.discriminator_loss(torch.rand(16, 1, 8, 8) * 2 - 1, None)
    assert calls == [16, 16]


def test_evaluation_g_loss_is_the_generator_loss_on_the_same_noise():
    model = tiny_gan(loss="wasserstein").eval()
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    model.eval_noise.manual_seed(3)
    _, logs = model.discriminator_loss(x, None)
    model.eval_noise.manual_seed(3)
    g_loss, _ = model.generator_loss(x, None)
    torch.testing.assert_close(logs["g_loss"], g_loss)


def test_cpu_seeding_leaves_cuda_alone_and_seeds_torch():
    with mock.patch("torch.cuda.manual_seed_all", side_effect=AssertionError("CUDA seeded on a CPU run")):
        seed_all(123)
        a = torch.rand(3)
        seed_all(123)
        assert torch.equal(a, torch.rand(3))
    assert torch.initial_seed() == 123


def test_thread_count(monkeypatch):
    from genlab.utils import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert speed.thread_count("auto", 1) == 2
    assert speed.thread_count("auto", 2) == 1  # two CPU-DDP ranks on 2 cores: one thread each
    assert speed.thread_count("auto", 4) == 1
    assert speed.thread_count(3, 2) == 3 and speed.thread_count(None, 2) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert speed.thread_count("auto", 2) is None  # the user's OMP_NUM_THREADS wins
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match=r"threads=.* expected auto, a positive integer or null"):
            speed.thread_count(bad, 1)


def test_compile_keeps_parameter_names():
    model = tiny_gan()
    before = list(model.state_dict())
    assert speed.compile_networks(model) == ["generator", "discriminator"]
    assert list(model.state_dict()) == before  # checkpoints load into an uncompiled model and back


# 3600 s: no write before the end, the cadence counting from the start of training
@pytest.mark.parametrize(("min_interval_s", "max_steps", "saves"), [(3600, -1, 1), (0, -1, 4), (3600, 9, 1)])
def test_last_checkpoint_cadence_keeps_the_final_state(tmp_path, min_interval_s, max_steps, saves):
    from genlab.callbacks import LastCheckpoint

    written = []

    class Counting(LastCheckpoint):
        def _save_checkpoint(self, trainer, filepath):
            super()._save_checkpoint(trainer, filepath)
            written.append(trainer.global_step)

    last = Counting(dirpath=tmp_path / "ckpt", filename="last", min_interval_s=min_interval_s)
    model = tiny_gan()
    trainer = make_trainer(tmp_path, max_epochs=4, max_steps=max_steps, limit_train_batches=4, limit_val_batches=0)
    trainer.callbacks.append(last)
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, channels=1, batch_size=32))
    assert len(written) == saves, written
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == trainer.global_step == written[-1]  # the end of the fit is always written


def test_cuda_probe_is_made_cheap_only_without_a_device(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    with mock.patch.object(torch.cuda, "device_count", return_value=1):
        assert not speed.cheap_cuda_probe()  # a GPU machine keeps Lightning's fork-safe probe
    assert speed.os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    with mock.patch.object(torch.cuda, "device_count", return_value=0):
        assert speed.cheap_cuda_probe()
    assert speed.os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"
    assert not torch.cuda.is_available() or torch.cuda.device_count() > 0


def test_channels_last_converts_convolution_weights_only_and_keeps_the_maths():
    torch.manual_seed(0)
    model = tiny_gan()
    assert not speed.channels_last(model)  # MLP nets: nothing to convert
    nn = torch.nn
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    x = torch.rand(3, 1, 8, 8)
    before = conv(x)
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    assert speed.channels_last(conv)
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(v, state[k]) for k, v in conv.state_dict().items())  # same values, another order
    torch.testing.assert_close(conv(x), before)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_channels_last_conv_nets_keep_one_order_backward_with_the_plain_values(norm):
    """G's projected map is put channels-last and D's flattened features hand their gradient back channels-last,
    so no elementwise backward mixes the two orders; values, gradients and WGAN-GP's double backward stay those
    of the plain order."""
    from genlab.nets import ConvDecoder, ConvEncoder
    from genlab.nets.conv import is_channels_last

    torch.manual_seed(0)
    g, d = ConvDecoder(1, 28, latent_dim=8, width=8), ConvEncoder(1, 28, width=8, norm=norm, out_dim=1)
    z, real = torch.randn(4, 8), torch.rand(4, 1, 28, 28)

    def run():
        fake = g(z)
        x = (0.5 * real + 0.5 * fake.detach()).requires_grad_()
        (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)  # the gradient penalty's
        loss = d(fake).mean() + (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
        g.zero_grad(), d.zero_grad()
        loss.backward()
        return fake, [p.grad.clone() for p in [*g.parameters(), *d.parameters()]]

    fake, grads = run()
    assert speed.channels_last(g) and speed.channels_last(d)
    fake_cl, grads_cl = run()
    seen = []
    hooks = [m.register_full_backward_hook(lambda m, gi, go: seen.append(go[0])) for m in [*g.net, *d.net]]
    d(g(z)).mean().backward()  # (the double backward adds LeakyReLU's zero second derivative in the plain order)
    for h in hooks:
        h.remove()
    assert is_channels_last(fake_cl) or fake_cl.shape[1] == 1
    maps = [t for t in seen if t is not None and t.dim() == 4 and t.shape[1] > 1]
    assert len(maps) == len(seen) - 4  # all but the gradients of the image (one channel), D's flat features and score
    assert all(is_channels_last(t) for t in maps), "a gradient of a 4-d map came back in the plain order"
    torch.testing.assert_close(fake_cl, fake)
    for a, b in zip(grads_cl, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_channels_last_must_be_a_bool():
    from genlab.utils.validate import validate_config
    from tests.conftest import compose_cfg

    with pytest.raises(ConfigError, match="channels_last='yes' is invalid; expected true or false"):
        validate_config(compose_cfg(["channels_last=yes"]))


@pytest.mark.parametrize(
    ("accelerator", "cuda", "cpu_bf16", "gpu_bf16", "expected"),
    [
        ("cpu", False, True, False, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),
        ("auto", False, True, False, "bf16-mixed"),
        ("auto", False, False, False, "32-true"),
        ("cpu", True, False, True, "32-true"),  # a GPU in the machine does not decide a CPU run
        ("auto", True, True, False, "32-true"),  # auto picks the GPU; a V100 has no native bf16
        ("auto", True, False, True, "bf16-mixed"),
        ("gpu", True, False, True, "bf16-mixed"),
        ("mps", False, True, True, "32-true"),
    ],
)
def test_precision_auto_is_bf16_only_where_the_device_computes_it_natively(
    monkeypatch, accelerator, cuda, cpu_bf16, gpu_bf16, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    precision, why = speed.resolve_precision("auto", accelerator)
    assert precision == expected, why
    assert why.startswith("auto")
    assert speed.resolve_precision("32-true", accelerator) == ("32-true", "as configured")  # explicit values stay


@pytest.mark.parametrize("bad", ["bf17", "fp16", True, 8, None])
def test_precision_that_lightning_would_refuse_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"trainer.precision=.* is invalid; expected one of: auto, 32-true, bf16"):
        speed.resolve_precision(bad, "cpu")


def test_precision_auto_is_resolved_before_the_run_records_its_config(tmp_path, monkeypatch):
    """The run's config.yaml and its checkpoint say what ran (bf16-mixed or 32-true), never `auto`."""
    from genlab.tasks.train import train
    from tests.conftest import compose_cfg

    monkeypatch.setattr(speed, "native_bf16", lambda device: True)
    train(compose_cfg(["data=digits", "debug=fast", "trainer.precision=auto"], output_dir=tmp_path))
    assert "precision: bf16-mixed" in (tmp_path / ".hydra" / "config.yaml").read_text()
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("last*.ckpt")), weights_only=False)
    assert ckpt["genlab_config"]["trainer"]["precision"] == "bf16-mixed"


def test_scores_and_likelihood_terms_leave_autocast_in_float32():
    """Under bf16 autocast the nets compute in bfloat16, but D's scores and the VAE's logits and posterior come
    out in float32, so that the losses (means and differences of scores, the ELBO's sum of 784 terms) and
    what is logged keep their digits."""
    from tests.test_models import tiny_vae

    torch.manual_seed(0)
    gan, vae, x = tiny_gan(), tiny_vae(), torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.autocast("cpu", torch.bfloat16):
        assert gan.generator(torch.randn(4, gan.latent_dim)).dtype == torch.bfloat16  # autocast is on
        score, _ = gan.discriminator(x)
        logits, mu, logvar = vae(x)
        terms = vae.loss_terms(x)
    assert score.dtype == logits.dtype == mu.dtype == logvar.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in terms.values())


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("autoencoder", []),  # its code statistics and sample bank are float32 buffers
        ("vqvae", ["model.ema=true"]),  # EMA codebook sums and dead-code restarts write float32 buffers
        ("conv_vae", []),
        # the gradient penalty's double backward
        ("wgan_gp", ["model.generator.hidden_dims=[32]", "model.discriminator.hidden_dims=[32]", "model.latent_dim=4"]),
        ("acgan", []),
        ("bigan", []),  # its default MLP nets
        ("bigan", ["model/arch=bigan_dcgan", "model.generator.width=4", "model.latent_dim=4"]),
    ],
)
def test_every_model_family_trains_under_bf16_autocast(tmp_path, model, extra):
    """`trainer.precision=auto` is bf16-mixed on a CPU with native bfloat16: every family must train under it
    (whatever this machine's CPU), keep float32 weights and finite losses."""
    from genlab.tasks.train import train
    from tests.conftest import compose_cfg
    from tests.test_resume import FAST, TINY

    overrides = [*FAST, f"model={model}", *TINY, *extra, "trainer.precision=bf16-mixed", "test=false"]
    metrics = train(compose_cfg(overrides, output_dir=tmp_path))
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(speed._malloc_trim() is None, reason="no malloc_trim in this C library (not glibc)")
def test_release_free_memory_hands_the_heaps_free_pages_back():
    """Freed heap blocks below a live one stay mapped until `malloc_trim`: what a per-epoch evaluation leaves
    behind (docs/benchmarks.md: a VAE run's peak 1,133 -> 1,089 MB)."""
    blocks = [bytearray(100_000) for _ in range(1000)]  # 100 MB of heap blocks (each under glibc's mmap threshold)
    pin = bytearray(100_000)  # allocated after them: the heap's top stays in use, so free() cannot shrink it
    del blocks
    before = _rss_mb()
    assert speed.release_free_memory()
    assert before - _rss_mb() > 50
    del pin


def test_a_finished_job_releases_its_cyclic_garbage():
    """A trainer, its model, data and callbacks refer to one another: only the cycle collector frees them. Done
    after each job (`genlab.utils.runner.run_task`), the next job of an in-process sweep, or the process's exit,
    starts from an idle interpreter's memory (a 2-epoch MLP WGAN run: 874 MB resident at exit, 951 MB before)."""
    import gc
    import weakref

    from genlab.utils import runner

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other, a.data = b, a, torch.zeros(1000)
    alive = weakref.ref(a.data)
    del a, b
    gc.disable()
    try:
        assert alive() is not None  # a cycle: reference counting alone does not free it
        runner._release_job_memory()
        assert alive() is None
    finally:
        gc.enable()


def test_generate_in_chunks_gives_the_images_of_one_forward():
    """`generate` decodes `generate_chunk` latents at a time (the evaluation's 500-sample batches held ~60 MB of
    conv activations at 28 px); in eval mode each image depends on its own latent only."""
    torch.manual_seed(0)
    gan = tiny_gan()  # BatchNorm in G: one forward in training mode would mix the batch
    gan.generator.train()(torch.randn(64, 8))  # running statistics that are not the identity
    z = torch.randn(250, 8)
    sizes, decode = [], gan.decode
    gan.decode = lambda z, y=None: sizes.append(len(z)) or decode(z, y)
    chunked = gan.generate(z)
    assert sizes == [100, 100, 50]
    with torch.no_grad():
        whole = gan.generator.eval()(z)
    assert chunked.shape == (250, 1, 8, 8) and torch.allclose(chunked, whole, atol=1e-5)
    assert not torch.allclose(chunked[:100], chunked[100:200])


def test_exit_now_ends_a_torch_process_with_its_code_after_what_shutdown_does(tmp_path):
    """`exit_now` skips only the teardown of the interpreter: non-daemon threads finish, atexit handlers run,
    a log file handler and stdout are flushed, and the status is the one given."""
    script = f"""
import atexit, logging, pathlib, sys, threading, time
import torch
from genlab.utils.runner import exit_now
tmp = pathlib.Path({str(tmp_path)!r})
handler = logging.FileHandler(tmp / "run.log")
logging.getLogger("probe").addHandler(handler)
logging.getLogger("probe").warning("logged")
atexit.register(lambda: (tmp / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (tmp / "thread").write_text("done"))).start()
sys.stdout.write("unflushed output")
exit_now(3)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "unflushed output"
    assert (tmp_path / "run.log").read_text() == "logged\n"
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_exit_now_without_torch_is_sys_exit(monkeypatch):
    from genlab.utils import runner

    monkeypatch.delitem(sys.modules, "torch")
    with pytest.raises(SystemExit) as exit_info:
        runner.exit_now(2)
    assert exit_info.value.code == 2


def test_exit_now_under_a_profiler_is_sys_exit():
    """`python -m cProfile -m genlab ...` writes its profile after the program returns: no quick exit then."""
    from genlab.utils import runner

    assert "torch" in sys.modules
    sys.setprofile(lambda *args: None)
    try:
        with pytest.raises(SystemExit) as exit_info:
            runner.exit_now(4)
    finally:
        sys.setprofile(None)
    assert exit_info.value.code == 4
