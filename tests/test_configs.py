"""Every config composes, and every model x dataset pair instantiates with sizes flowing from the data."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate

from genlab.tasks.train import resolve_trainer_precision
from genlab.utils.instantiate import instantiate_group

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


def test_the_issue_config_groups_exist():
    assert {"vae", "gan", "wgan", "dcgan", "wgan_gp", "lsgan", "hinge_gan", "acgan", "bigan"} <= set(MODELS)
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder", "dsprites"} <= set(DATASETS)
    assert {"default", "cpu", "gpu", "ddp", "ddp_cpu"} <= set(TRAINERS)
    assert {"csv", "tensorboard", "wandb"} <= set(LOGGERS)
    assert "demo" in EXPERIMENTS


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATASETS)
def test_model_and_data_compose_and_instantiate(make_cfg, model, data):
    required = {"image_folder": ["data.root=/nonexistent"], "generated": ["data.augment.run_dir=/nonexistent"]}
    extra = required.get(data, [])  # their root / run dir is required (???); constructing reads neither
    cfg = make_cfg(f"model={model}", f"data={data}", *extra)
    datamodule = instantiate(cfg.data)  # constructing loads nothing: no files needed
    if cfg.model.get("conditional") and cfg.data.num_classes < 2:
        with pytest.raises(InstantiationException, match="needs labelled data"):
            instantiate(cfg.model)
        return
    net = instantiate(cfg.model)
    size, channels = cfg.data.image_size, cfg.data.channels
    assert (datamodule.image_size, datamodule.channels) == (size, channels)
    x = net.sample(3)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    if hasattr(net, "encode"):
        assert net.encode(torch.rand(3, channels, size, size) * 2 - 1).shape == (3, net.latent_dim)


# trainer config -> (accelerator, strategy, devices) of the Trainer it builds, with 2 (pretended) GPUs visible
TRAINER_BUILDS = {
    "cpu": ("CPUAccelerator", "SingleDeviceStrategy", 1),
    "default": ("CUDAAccelerator", "SingleDeviceStrategy", 1),  # accelerator: auto takes the GPU
    "ddp": ("CUDAAccelerator", "DDPStrategy", 2),
    "ddp_cpu": ("CPUAccelerator", "DDPStrategy", 2),
    "gpu": ("CUDAAccelerator", "SingleDeviceStrategy", 1),
}


def pretend_gpus(monkeypatch, n: int) -> None:
    """Make Lightning see `n` CUDA devices, so that GPU trainer configs build on a CPU machine (nothing runs)."""
    import lightning.fabric.accelerators.cuda as fabric_cuda
    import lightning.pytorch.accelerators.cuda as pl_cuda

    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: n)
    monkeypatch.setattr(pl_cuda, "num_cuda_devices", lambda: n)
    monkeypatch.setattr(pl_cuda.CUDAAccelerator, "is_available", staticmethod(lambda: True))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_config_builds_its_trainer(tmp_path, monkeypatch, trainer):
    from tests.conftest import compose_cfg

    pretend_gpus(monkeypatch, 2)
    cfg = compose_cfg(["logger=[]", f"trainer={trainer}"], output_dir=tmp_path)  # not debug=fast: it forces cpu
    resolve_trainer_precision(cfg)  # precision=auto becomes a value Lightning takes, as in genlab.tasks.train
    built = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.callbacks))
    accelerator, strategy, devices = TRAINER_BUILDS[trainer]
    assert (type(built.accelerator).__name__, type(built.strategy).__name__) == (accelerator, strategy)
    assert built.num_devices == devices and built.default_root_dir == str(tmp_path)
    if strategy == "DDPStrategy":  # G and D step separately: DDP must look for unused parameters
        assert built.strategy._ddp_kwargs.get("find_unused_parameters") is True
    if trainer == "ddp":
        assert built.strategy._layer_sync is not None  # sync_batchnorm


def test_gpu_trainer_offers_bf16_mixed(tmp_path, monkeypatch):
    from tests.conftest import compose_cfg

    pretend_gpus(monkeypatch, 1)
    cfg = compose_cfg(["logger=[]", "trainer=gpu", "trainer.precision=bf16-mixed"], output_dir=tmp_path)
    built = instantiate(cfg.trainer)
    assert built.precision == "bf16-mixed" and type(built.precision_plugin).__name__ == "MixedPrecision"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    if cfg.data._target_.endswith("ImageFolderDataModule"):  # its root is required (???): the user names the folder
        cfg = make_cfg(f"experiment={experiment}", "data.root=/nonexistent")
    instantiate(cfg.model)
    instantiate(cfg.data)


def test_sizes_flow_from_data_to_model(make_cfg):
    cfg = make_cfg("model=vae", "data=cifar10", "data.image_size=24")
    assert cfg.model.encoder.image_size == 24 and cfg.model.encoder.channels == 3
    assert cfg.model.decoder.latent_dim == cfg.model.latent_dim
    assert instantiate(cfg.model).sample(2).shape == (2, 3, 24, 24)


@pytest.mark.parametrize(
    ("model", "objective", "optimizer", "betas"),
    [
        ("wgan_mlp", "Wasserstein", torch.optim.RMSprop, None),
        ("wgan_gp_paper", "WassersteinGP", torch.optim.Adam, (0.0, 0.9)),
    ],
)
def test_wasserstein_configs_follow_their_papers(make_cfg, model, objective, optimizer, betas):
    m = instantiate(make_cfg(f"model={model}").model)
    assert type(m.objective).__name__ == objective and m.schedule.n_critic == 5
    assert m.objective.clip_value == (0.01 if model == "wgan_mlp" else None)
    (opt_g, opt_d), _ = m.configure_optimizers()
    assert isinstance(opt_g, optimizer) and isinstance(opt_d, optimizer)
    assert betas is None or tuple(opt_d.defaults["betas"]) == betas
    if model == "wgan_gp_paper":  # no BatchNorm in the critic (Gulrajani et al. 2017, section 4)
        assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.discriminator.modules())


def test_dcgan_paper_keeps_the_papers_settings_and_dcgan_the_measured_cpu_recipe(make_cfg):
    """model=dcgan_paper (the studies at 64 and 512 px) is Radford et al.'s DCGAN; model=dcgan departs from it
    where docs/quality.md measured a gain on the CPU budget (findings 17 and 19): width 24, the R1 penalty in place of
    D's BatchNorm, Adam 5e-4 with a cosine decay, an EMA of G."""
    from torch.nn.utils.parametrize import is_parametrized

    def convs(net):
        return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]

    paper, recipe = (instantiate(make_cfg(f"model={name}").model) for name in ("dcgan_paper", "dcgan"))
    for m, width, lr in ((paper, 64, 2e-4), (recipe, 24, 5e-4)):
        assert convs(m.generator)[-1].in_channels == width and m.latent_dim == 100
        (opt_g, opt_d), schedulers = m.configure_optimizers()
        assert opt_g.defaults["lr"] == opt_d.defaults["lr"] == lr
        assert tuple(opt_d.defaults["betas"]) == (0.5, 0.999)
        assert convs(m.generator)[0].weight.std().item() < 0.03  # DCGAN initialisation: N(0, 0.02)
    d_batchnorm = [isinstance(x, torch.nn.BatchNorm2d) for x in paper.discriminator.modules()]
    assert sum(d_batchnorm) == 1 and paper.generator_ema is None and not paper.configure_optimizers()[1]
    assert not any(is_parametrized(c) for c in convs(paper.discriminator))
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in recipe.discriminator.modules())
    assert not any(is_parametrized(c) for c in convs(recipe.discriminator))  # R1 in place of D's BatchNorm
    assert (paper.r1_gamma, recipe.r1_gamma, recipe.r1_every) == (0.0, 10.0, 4)
    assert recipe.generator_ema is not None and len(recipe.configure_optimizers()[1]) == 2


def test_architecture_and_objective_are_one_override_apart(make_cfg):
    gp_conv = instantiate(make_cfg("model=wgan_gp", "model/arch=dcgan_small").model)
    gan_dcgan = instantiate(make_cfg("model=gan", "model/arch=dcgan").model)
    assert type(gp_conv.generator).__name__ == "ConvDecoder" and type(gp_conv.objective).__name__ == "WassersteinGP"
    assert type(gan_dcgan.generator).__name__ == "ConvDecoder" and type(gan_dcgan.objective).__name__ == "BCE"


def test_wgan_gp_recipe_is_the_mlp_one_and_the_paper_keeps_its_settings(make_cfg):
    """model=wgan_gp: MLP nets, a critic without normalisation, Adam betas (0.5, 0.9) (docs/quality.md finding 20);
    model=wgan_gp_paper: the DCGAN nets, a layer-norm critic, Adam 1e-4 with betas (0, 0.9), n_critic 5."""
    recipe, paper = (instantiate(make_cfg(f"model={m}").model) for m in ("wgan_gp", "wgan_gp_paper"))
    assert type(recipe.generator).__name__ == "MLPDecoder" and type(paper.generator).__name__ == "ConvDecoder"
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) for m in recipe.discriminator.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in paper.discriminator.modules())
    (opt_g, opt_d), schedulers = recipe.configure_optimizers()
    assert tuple(opt_d.defaults["betas"]) == tuple(opt_g.defaults["betas"]) == (0.5, 0.9) and len(schedulers) == 2
    assert recipe.generator_ema is not None and paper.generator_ema is None
    assert (paper.schedule.n_critic, paper.configure_optimizers()[0][1].defaults["lr"]) == (5, 1e-4)


def test_gan_base_holds_the_engines_own_defaults_and_gan_its_recipe(make_cfg):
    """conf/model/gan_base.yaml, which every GAN config starts from (README's options table), sets each engine
    option to the GAN constructor's default; model=gan is the measured BCE recipe on top (docs/quality.md)."""
    import inspect

    from genlab.models import GAN

    base = make_cfg("model=gan_base").model
    defaults = {k: p.default for k, p in inspect.signature(GAN).parameters.items() if p.default is not p.empty}
    assert set(defaults) <= set(base) and base.lr_g == base.lr_d == base.lr  # None in the signature: lr's value
    own = {k: v for k, v in defaults.items() if k not in ("lr_g", "lr_d")}
    assert {k: base[k] for k in own} == own
    recipe = instantiate(make_cfg("model=gan").model)
    (opt_g, opt_d), schedulers = recipe.configure_optimizers()
    assert opt_g.defaults["lr"] == opt_d.defaults["lr"] == 1e-3 and recipe.schedule.n_gen == 1
    assert recipe.ema_decay == 0.999 and recipe.ema_warmup and len(schedulers) == 2
    assert (recipe.r1_gamma, recipe.r1_every) == (1.0, 4)


def test_a_recipe_states_its_length_per_dataset_and_the_command_line_wins(tmp_path):
    """`model.recipe_epochs.<data.dataset>` sets trainer.max_epochs (and so a cosine decay's T_max) on that dataset
    only: other datasets keep the trainer's 20 epochs, and trainer.max_epochs=N wins over both."""
    from tests.conftest import compose_cfg

    def length(*overrides: str) -> tuple[int, int]:
        cfg = compose_cfg(["model=lsgan", "model.recipe_epochs={mnist: 7, fashion_mnist: 5}", *overrides], tmp_path)
        return cfg.trainer.max_epochs, cfg.model.scheduler_g.T_max

    assert length("data=mnist") == (7, 7)
    assert length("data=fashion_mnist") == (5, 5)
    assert length("data=digits") == length("data=cifar10") == (20, 20)
    assert length("data=mnist", "trainer.max_epochs=3") == (3, 3)
    assert compose_cfg(["model=gan_base", "data=mnist"], tmp_path).trainer.max_epochs == 20


@pytest.mark.parametrize(("model", "epochs"), [("gan", 40), ("hinge_gan", 40), ("wgan_gp", 40), ("wgan", 20)])
def test_the_recipes_measured_longer_on_mnist_run_longer_there_only(tmp_path, model, epochs):
    """docs/quality.md finding 21: these recipes were measured at their own length on MNIST; on any other dataset
    (digits, Fashion-MNIST) they run the trainer's 20 epochs."""
    from tests.conftest import compose_cfg

    assert compose_cfg([f"model={model}", "data=mnist"], tmp_path).trainer.max_epochs == epochs
    for data in ("digits", "fashion_mnist"):
        assert compose_cfg([f"model={model}", f"data={data}"], tmp_path).trainer.max_epochs == 20


def test_gan_has_separate_lrs_and_betas(make_cfg):
    cfg = make_cfg("model=gan", "model.lr_d=1e-4", "model.optimizer_g.betas=[0.0,0.9]")
    (opt_g, opt_d), _ = instantiate(cfg.model).configure_optimizers()
    assert opt_g.defaults["lr"] == 1e-3 and opt_d.defaults["lr"] == 1e-4
    assert tuple(opt_g.defaults["betas"]) == (0.0, 0.9) and tuple(opt_d.defaults["betas"]) == (0.5, 0.999)


def test_unknown_choice_is_rejected_with_the_valid_options(make_cfg):
    with pytest.raises(ConfigCompositionException, match="Available options") as err:
        make_cfg("model=nope")
    assert "vae" in str(err.value) and "wgan" in str(err.value)


def test_run_dirs_follow_task_name_and_time(make_cfg):
    cfg = make_cfg("task_name=abc")
    assert cfg.hydra.run.dir.startswith(cfg.paths.log_dir + "/abc/")
    assert "/abc/multirun/" in cfg.hydra.sweep.dir


def test_data_dir_comes_from_the_environment(monkeypatch, make_cfg):
    monkeypatch.setenv("GENLAB_DATA_DIR", "/some/where")
    assert make_cfg("data=mnist").data.root == "/some/where"
    monkeypatch.delenv("GENLAB_DATA_DIR")
    assert make_cfg("data=mnist").data.root == str(Path(__file__).resolve().parents[1] / "data")
