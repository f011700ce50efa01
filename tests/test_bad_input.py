"""Bad input of every kind: one message naming the bad value and what would be accepted, a non-zero exit,
no run dir left behind and no existing output modified. Most kinds are checked in-process on the same code
path as the CLI (preflight, then the train task); a few end to end to check the exit status and stderr."""

import csv
import gzip
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException

from genlab.data import ImageFileDataset, TorchvisionDataModule
from genlab.errors import GenlabError
from genlab.tasks.train import train
from genlab.utils.preflight import check_writable
from genlab.utils.runner import user_error
from genlab.utils.validate import validate_config
from tests import data_fixtures as fx
from tests.conftest import FAST, compose_cfg
from tests.test_cli import genlab

TINY_VAE = ["model=vae", "model.encoder.hidden_dims=[16]", "model.decoder.hidden_dims=[16]", "data.image_size=8"]


def reject(tmp_path: Path, *overrides: str) -> str:
    """The one-line message genlab stops with for `overrides` (as the CLI shows it); asserts no run dir was made."""
    out = tmp_path / "run"
    with pytest.raises(Exception) as info:
        cfg = compose_cfg([*FAST, *overrides], output_dir=out)
        check_writable(str(out), "hydra.run.dir")
        validate_config(cfg)
        train(cfg)
    shown = user_error(info.value)
    assert shown is not None, f"not reported as a user error: {info.value!r}"
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return str(shown)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A finished tiny VAE run (one short epoch) whose checkpoints the tests misuse."""
    out = tmp_path_factory.mktemp("vae") / "run"
    train(compose_cfg([*FAST, *TINY_VAE, "test=false", "trainer.limit_train_batches=2"], output_dir=out))
    return out


CONFIG_CASES = {
    "wrong type": (
        ["model=vae", "model.latent_dim=abc"],
        "model.latent_dim='abc' is not a number; expected an integer >= 1",
    ),
    "lr zero": (["model=vae", "model.lr=0"], "model.lr=0 is invalid; expected a number > 0"),
    "lr negative": (["model=vae", "model.lr=-1"], "model.lr=-1 is invalid; expected a number > 0"),
    "lr_g zero": (["model=gan", "model.lr_g=0"], "model.lr_g=0 is invalid; expected a number > 0"),
    "lr_d negative": (["model=gan", "model.lr_d=-0.0001"], "model.lr_d=-0.0001 is invalid; expected a number > 0"),
    "latent_dim zero": (["model=vae", "model.latent_dim=0"], "model.latent_dim=0 is invalid; expected an integer >= 1"),
    "n_critic zero": (["model=wgan", "model.n_critic=0"], "model.n_critic=0 is invalid; expected an integer >= 1"),
    "image_size zero": (["data.image_size=0"], "data.image_size=0 is invalid; expected an integer >= 1"),
    "image_size negative": (["data.image_size=-4"], "data.image_size=-4 is invalid; expected an integer >= 1"),
    "eval_batch_size zero": (
        ["data.eval_batch_size=0"],
        "data.eval_batch_size=0 is invalid; expected an integer >= 1 or null",
    ),
    "val_fraction 1.5": (
        ["data.val_fraction=1.5"],
        "data.val_fraction=1.5 is invalid; expected a number with 0 <= value < 1",
    ),
    "val_fraction negative": (
        ["data.val_fraction=-0.1"],
        "data.val_fraction=-0.1 is invalid; expected a number with 0 <= value < 1",
    ),
    "misspelt new key": (
        ["+model.latnt_dim=3"],
        "model.latnt_dim is not an option of genlab.models.GAN; did you mean latent_dim? expected one of: generator, "
        "discriminator, latent_dim, optimizer_g, optimizer_d, lr, lr_g, lr_d, loss, saturating, clip_value, gp_weight, "
        "r1_gamma, r1_every, n_critic, n_gen, reuse_fake, skip_d_every, d_only_every, g_only_every, label_smoothing, "
        "label_flip, instance_noise, instance_noise_steps, grad_clip_g, grad_clip_d, scheduler_g, scheduler_d, "
        "scheduler_interval, "
        "ema_decay, ema_warmup, ema_bn, init, spectral_norm, num_classes, conditional, aux_weight, class_head, "
        "aux_fake, recipe_epochs",
    ),
    "DDP switch not true or false": (  # DDP's options have no annotations: a switch is known by its default
        ["trainer=ddp_cpu", "trainer.strategy.gradient_as_bucket_view=maybe"],
        "trainer.strategy.gradient_as_bucket_view='maybe' has the wrong type; expected true or false",
    ),
    "too small to train": (
        ["model=gan", "data.subset=1"],
        "the training set has 1 image with data.subset=1: too small to train on; expected at least 2 (raise "
        "data.subset)",
    ),
    "batch of one with BatchNorm": (
        ["model=gan", "data.batch_size=1"],
        "data.batch_size=1 is too small for model=gan: its networks use BatchNorm, which needs at least 2 images "
        "per batch; expected data.batch_size >= 2",
    ),
    "subset larger than data": (
        ["data.subset=100000"],
        "data.subset=100000 is larger than the training file (1438 images); expected at most 1438 or null",
    ),
    "required value missing": (
        ["data=image_folder"],
        "data.root has no value; it is required: set it, e.g. data.root=...",
    ),
    "image size the nets cannot build": (
        ["model=dcgan", "data.image_size=7"],
        "data.image_size=7 cannot be built by the conv nets; expected one of: 8, 16, 28, 32, 64, 128, 256, 512",
    ),
    "conditional model on unlabelled data": (
        ["model=acgan", "data=image_folder", "data.root=/nonexistent", "data.image_size=32"],
        "model.conditional=true (e.g. model=acgan) needs labelled data, but data.num_classes=0; use a labelled "
        "dataset (digits, mnist, fashion_mnist, cifar10, celeba with data.attribute=..., or image_folder with "
        "class subfolders)",
    ),
    "max_epochs negative": (
        ["trainer.max_epochs=-5"],
        "trainer.max_epochs=-5 is invalid; expected an integer >= 0, -1 (no limit) or null",
    ),
    "limit_val_batches 1.5": (
        ["trainer.limit_val_batches=1.5"],
        "trainer.limit_val_batches=1.5 is invalid; expected a fraction of the batches in [0.0, 1.0] or a whole "
        "number of batches",
    ),
    "value only Lightning's Trainer checks": (
        ["trainer.val_check_interval=1.5"],
        "trainer config: You have passed invalid value 1.5 for val_check_interval, it has to be in [0.0, 1.0] or "
        "an int.",
    ),
    "gradient penalty on a BatchNorm critic": (
        ["model=dcgan_paper", "model.loss=wasserstein_gp"],
        "model.loss=wasserstein_gp needs a critic without BatchNorm (the gradient penalty is taken per sample; "
        "Gulrajani et al. 2017, sec. 4), but model.discriminator has BatchNorm layers; use "
        "model.discriminator.norm=layer (model=wgan_gp_paper does) or none",
    ),
    "model constructor rejects": (
        ["model.loss=hinge2"],
        "model.loss='hinge2' is not supported; expected one of: 'bce', 'least_squares', 'hinge', 'wasserstein', "
        "'wasserstein_gp'",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_value(tmp_path, case):
    overrides, message = CONFIG_CASES[case]
    assert reject(tmp_path, *overrides) == message


def test_an_option_of_ddp_is_accepted_and_a_misspelt_one_named(tmp_path):
    """DDPStrategy hands its `**kwargs` to torch's DistributedDataParallel: their names are options (not refused
    as unknown), and a misspelt one is refused with the nearest."""
    message = reject(tmp_path, "trainer=ddp_cpu", "+trainer.strategy.bucket_cap_mbb=3")
    assert message.startswith(
        "trainer.strategy.bucket_cap_mbb is not an option of lightning.pytorch.strategies.DDPStrategy; did you mean "
        "bucket_cap_mb? expected one of: accelerator, "
    )
    assert ", static_graph, " in message and ", module," not in message
    validate_config(compose_cfg(["trainer=ddp_cpu", "+trainer.strategy.bucket_cap_mb=3"]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "40",
            "model.recipe_epochs=40 is invalid; expected a mapping from data.dataset to epochs, e.g. {mnist: 40}, or "
            "null (to set this run's length: trainer.max_epochs=40)",
        ),
        ("{mnist: 0}", "model.recipe_epochs.mnist=0 is invalid; expected an integer >= 1"),
    ],
)
def test_a_bad_recipe_length_is_refused_before_the_run_starts(tmp_path, value, message):
    """`model.recipe_epochs` is read where trainer.max_epochs resolves (not under debug=fast, which sets the length):
    through the CLI, one line naming the value, exit 1, no run dir."""
    out = tmp_path / "run"
    proc = genlab(tmp_path, "model=gan", "data=mnist", f"model.recipe_epochs={value}", f"hydra.run.dir={out}")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == f"genlab: error: {message}"
    assert not out.exists()


@pytest.mark.parametrize(
    "error",
    [
        "PeerGone: local all-reduce: rank 1 ended while rank 0 waited for it",
        "RuntimeError: [../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:47804. This is "
        "typically caused by a remote worker crashing. Check the logs of the remote worker before reporting an error.",
    ],
)
def test_a_ddp_rank_that_died_is_reported_as_that_not_as_a_bug_in_genlab(error):
    """Rank 1 killed (out of memory, `kill -9`) while rank 0 waited for it in an all-reduce, through genlab's
    shared memory or gloo: one line saying so and where to look, not "internal error ... a bug in genlab"
    (checked by hand: `kill -9` of rank 1 of a `trainer=ddp_cpu` run printed that before)."""
    from genlab.utils.local_comm import PeerGone

    kind, text = error.split(": ", 1)
    err = PeerGone(text) if kind == "PeerGone" else RuntimeError(text)
    shown = user_error(err)
    assert shown is not None and str(shown).startswith("another process of this DDP run ended while this one")
    assert text.splitlines()[0] in str(shown) and "resume=<run dir>" in str(shown)
    assert user_error(RuntimeError("boom: a bug in a callback")) is None


def test_lightning_misconfiguration_outside_trainer_construction_is_not_blamed_on_the_user():
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    assert user_error(MisconfigurationException("a bug in how genlab calls Lightning")) is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=nope", "Could not find 'model/nope'"),
        ("data=nope", "Could not find 'data/nope'"),
        ("trainer=nope", "Could not find 'trainer/nope'"),
        ("model.latnt_dim=3", "Could not override 'model.latnt_dim'"),
    ],
)
def test_unknown_names_and_misspelt_keys_are_refused_by_hydra(tmp_path, override, message):
    with pytest.raises(HydraException, match=message.replace(".", r"\.")):
        compose_cfg([override])


def test_corrupt_dataset_file(tmp_path):
    fx.write_mnist(tmp_path)
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    message = reject(tmp_path, "data=mnist", f"data.root={tmp_path}", "data.download=false", "data.batch_size=8")
    assert message == (
        f"data file {gz} is corrupt or truncated (Compressed file ended before the end-of-stream marker was "
        f"reached); expected the complete original file: delete it and download it again (data.download=true), "
        f"or copy it again"
    )


def test_dataset_missing_offline_leaves_nothing_in_the_data_dir(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    root = tmp_path / "data"
    root.mkdir()
    dm = TorchvisionDataModule(dataset="mnist", root=str(root), download=True, image_size=28, channels=1)
    with pytest.raises(GenlabError, match=r"^dataset 'mnist' not found in \S+ \(download failed: [^\n]*\)[^\n]*$"):
        dm.setup("fit")
    assert list(root.iterdir()) == []


def test_batch_larger_than_the_data_is_reduced_with_one_warning(tmp_path, caplog):
    train(compose_cfg([*FAST, *TINY_VAE, "data.subset=10", "data.batch_size=64", "test=false"], output_dir=tmp_path))
    warnings = [r.getMessage() for r in caplog.records if "batch_size" in r.getMessage()]
    assert warnings == [
        "data.batch_size=64 is larger than the training set (10 images with data.subset=10): training on batches of 10"
    ]


@pytest.fixture
def folder_with_garbage(tmp_path) -> Path:
    fx.write_image_folder(tmp_path / "images")
    (tmp_path / "images" / "garbage.png").write_bytes(b"this is not a png")
    return tmp_path / "images"


def test_unreadable_image_is_skipped_with_a_count(tmp_path, folder_with_garbage, caplog):
    cfg = compose_cfg(
        [
            *FAST,
            "data=image_folder",
            f"data.root={folder_with_garbage}",
            "data.num_workers=0",
            "data.image_size=8",
            "data.batch_size=8",
            "model=vae",
            "test=false",
        ],
        output_dir=tmp_path / "r",
    )
    train(cfg)
    assert f"Skipped 1 unreadable image(s) under {folder_with_garbage}, e.g. {folder_with_garbage / 'garbage.png'}" in (
        caplog.text
    )


def test_unreadable_image_stops_a_strict_run(tmp_path, folder_with_garbage):
    bad = folder_with_garbage / "garbage.png"
    message = reject(tmp_path, "data=image_folder", f"data.root={folder_with_garbage}", "data.strict=true")
    assert message == (
        f"data.strict=true: cannot read image {bad} (cannot identify image file '{bad}'); expected readable images "
        f"(.png, .jpg, .jpeg, .bmp, .gif, .webp): remove or replace them, or set data.strict=false to skip them"
    )


def test_image_that_fails_to_decode_mid_epoch(tmp_path):
    files = list(fx.write_image_folder(tmp_path, size=16))[:3]
    files[1].write_bytes(files[1].read_bytes()[:60])  # a valid header, truncated pixel data
    labels = torch.full((3,), -1)
    lenient = ImageFileDataset(files, labels, image_size=8, channels=3, crop=None, strict=False)
    assert torch.equal(lenient[1][0], lenient[2][0]) and lenient.skipped == 1  # replaced by the next image
    with pytest.raises(GenlabError, match=f"data.strict=true: cannot read image {files[1]}"):
        ImageFileDataset(files, labels, image_size=8, channels=3, crop=None, strict=True)[1]


def test_truncated_checkpoint(tmp_path, vae_run):
    ckpt = tmp_path / "truncated.ckpt"
    data = (vae_run / "checkpoints" / "last.ckpt").read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    assert reject(tmp_path, *TINY_VAE, f"ckpt_path={ckpt}") == (
        f"ckpt_path={ckpt} is not a valid PyTorch checkpoint (corrupt or truncated file); expected a .ckpt "
        f"written by torch.save, e.g. <run dir>/checkpoints/last.ckpt"
    )


def test_checkpoint_damaged_mid_file(tmp_path, vae_run):
    import zipfile

    ckpt = tmp_path / "damaged.ckpt"
    shutil.copy(vae_run / "checkpoints" / "last.ckpt", ckpt)
    with zipfile.ZipFile(ckpt) as zf:
        biggest = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(ckpt.read_bytes())
    local = biggest.header_offset  # the local header: 30 bytes, then the name and the extra field (alignment)
    start = (
        local
        + 30
        + int.from_bytes(data[local + 26 : local + 28], "little")
        + int.from_bytes(data[local + 28 : local + 30], "little")
    )
    middle = start + biggest.file_size // 2
    data[middle : middle + 8] = bytes(8)  # zeros over a few weights: still a valid zip and pickle
    ckpt.write_bytes(bytes(data))
    assert reject(tmp_path, *TINY_VAE, f"ckpt_path={ckpt}") == (
        f"ckpt_path={ckpt} is corrupt: its weights and optimiser state do not match the digest written with them "
        f"(the file was damaged or modified after saving); use another checkpoint, e.g. best-*.ckpt"
    )


def test_checkpoint_of_another_model(tmp_path, vae_run):
    ckpt = vae_run / "checkpoints" / "last.ckpt"
    message = reject(tmp_path, "model=gan_base", "data.image_size=8", f"ckpt_path={ckpt}")
    assert message == (
        f"ckpt_path={ckpt} does not fit model=gan_base with this config (missing 26 weights such as "
        f"generator.net.0.weight; 10 unexpected weights such as encoder.net.0.weight; fixed_noise has shape (64, 32), "
        f"the model expects (64, 64)); expected a checkpoint written by the same model and config (resume=<run dir> "
        f"reuses the run's own config)"
    )


def test_checkpoint_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope.ckpt"
    assert reject(tmp_path, f"ckpt_path={missing}") == (
        f"ckpt_path={missing} does not exist; expected a .ckpt file written by genlab (e.g. "
        f"<run dir>/checkpoints/last.ckpt)"
    )


def test_ckpt_path_last_without_a_checkpoint(tmp_path):
    assert reject(tmp_path, "ckpt_path=last") == (
        f"ckpt_path=last: {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'} does not exist (the run stopped before "
        f"writing its first checkpoint); expected a run dir holding checkpoints/last.ckpt, or start a new run"
    )


# ------------------------------------------------------------------------------------------- end to end


def one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"genlab: error: {message}"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["model=vae", "model.lr=0"], "model.lr=0 is invalid; expected a number > 0"),  # rejected before Hydra's job
        (["model=gan", "data.subset=1"], CONFIG_CASES["too small to train"][1]),  # rejected inside the job
        (["trainer.max_epochs=-5"], CONFIG_CASES["max_epochs negative"][1]),
    ],
)
def test_cli_rejects_with_one_line_and_leaves_no_run_dir(tmp_path, args, message):
    proc = genlab(tmp_path, *args, "debug=fast", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(proc, message)
    assert not (tmp_path / "run").exists()


def test_cli_sweep_reports_a_bad_job_and_runs_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    proc = genlab(tmp_path, "-m", *TINY_VAE, "model.lr=0,0.001", "debug=fast", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    assert "genlab: error: job 0: model.lr=0 is invalid; expected a number > 0" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "genlab: 1 of 2 jobs failed: 0"
    assert not (sweep / "0").exists() and (sweep / "1" / "metrics.json").is_file()
    # the sweep summary still lists the rejected job, with its error
    rows = [(r["job"], r["status"], r["error"]) for r in csv.DictReader((sweep / "summary.csv").open())]
    assert rows == [("0", "failed", "model.lr=0 is invalid; expected a number > 0"), ("1", "ok", "")]


def test_cli_output_dir_that_cannot_be_written(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = genlab(tmp_path, "debug=fast", f"hydra.run.dir={tmp_path / 'afile' / 'run'}")
    one_line_error(
        proc,
        f"hydra.run.dir={tmp_path / 'afile' / 'run'} cannot be created: {tmp_path / 'afile'} is a file; expected a "
        f"writable directory",
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_cli_output_dir_that_the_system_refuses(tmp_path):
    """/proc takes no new folders, even where its permission bits say it is writable (as root)."""
    proc = genlab(tmp_path, "debug=fast", "hydra.run.dir=/proc/nope")
    if os.access("/proc", os.W_OK | os.X_OK):
        reason = "/proc does not take new folders (No such file or directory)"
        one_line_error(proc, f"hydra.run.dir=/proc/nope cannot be created: {reason}; expected a writable directory")
    else:
        one_line_error(
            proc, "hydra.run.dir=/proc/nope cannot be written: /proc is not writable; expected a writable directory"
        )
    assert not Path("/proc/nope").exists()


def test_cli_resume_of_a_run_dir_that_does_not_exist(tmp_path):
    proc = genlab(tmp_path, f"resume={tmp_path / 'nope'}")
    one_line_error(
        proc, f"resume={tmp_path / 'nope'} does not exist; expected a run directory such as outputs/train/<date>/<time>"
    )


def test_cli_bad_value_on_resume_leaves_the_run_untouched(tmp_path, vae_run):
    before = {p: p.read_bytes() for p in vae_run.rglob("*") if p.is_file()}
    proc = genlab(tmp_path, f"resume={vae_run}", "model.lr=0")
    one_line_error(proc, "model.lr=0 is invalid; expected a number > 0")
    assert {p: p.read_bytes() for p in vae_run.rglob("*") if p.is_file()} == before


def test_cli_programming_error_logs_its_traceback_and_says_where(tmp_path):
    out = tmp_path / "run"
    proc = genlab(tmp_path, "debug=fast", "+callbacks.boom._target_=tests.helpers.Boom", f"hydra.run.dir={out}")
    assert proc.returncode == 1
    assert "genlab: internal error: RuntimeError: boom: a bug in a callback" in proc.stderr
    assert f"the full traceback is in {out / 'train.log'}" in proc.stderr
    log = (out / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "tests/helpers.py" in log


def test_gz_fixture_is_really_truncated(tmp_path):
    fx.write_mnist(tmp_path)
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(EOFError), gzip.open(gz) as f:
        f.read()
