"""The picture callbacks: each writes its file on a tiny `debug=fast` run (size checked, pixels not constant),
is skipped with one log line for a model without the capability, and the pieces behave as documented."""

import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from genlab import plots
from genlab.callbacks.latent import LatentTraversal, slerp
from genlab.callbacks.pictures import EndOfRun, enlarge, write_gif
from genlab.tasks.train import train
from tests.conftest import FAST, compose_cfg

# digits: 16 px images; make_grid pads 2 px, so a row of n images is 18 n + 2 px before enlarging
GRID_8 = 8 * 18 + 2  # 146 px: x5 reaches 600 px
GRID_10 = 10 * 18 + 2  # 182 px (ACGAN: a row per class, 10 per row): x4
GRID_11 = 11 * 18 + 2  # 200 px (traversal's 11 steps): x3


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run(out: Path, *overrides: str) -> list[str]:
    """Train in-process into `out`; returns the lines logged by the picture callbacks."""
    logger, handler = logging.getLogger("genlab.callbacks.pictures"), Lines()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        train(compose_cfg([*FAST, "test=false", *overrides], output_dir=out))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        GlobalHydra.instance().clear()
    return handler.lines


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("vae")
    return out, _run(out, "model=vae", "logger=[csv,tensorboard]")


@pytest.fixture(scope="module")
def acgan_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("acgan")
    return out, _run(out, "model=acgan", "logger=csv", "callbacks.sample_quality=null")


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("vqvae")
    return out, _run(out, "model=vqvae")  # FAST: no logger


def picture(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image at `path` as an array, after checking its (width, height) and that it is not one flat colour."""
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.size == size, f"{path.name}: {image.size} != {size}"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 1.0, f"{path.name} is a constant picture"
    return pixels


def skips(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if line.startswith(f"{name}: skipped")]


# -- on real runs --------------------------------------------------------------------------------------------
def test_sample_grid_is_enlarged_and_animated(vae_run):
    out, _ = vae_run
    pixels = picture(out / "samples" / "epoch_000.png", (5 * GRID_8, 5 * GRID_8))
    assert (pixels[::5, ::5] == pixels[4::5, 4::5]).all()  # nearest-neighbour: each pixel a 5x5 block
    with Image.open(out / "samples" / "progress.gif") as gif:
        assert gif.size == (5 * GRID_8, 5 * GRID_8) and gif.n_frames == 1
    picture(out / "reconstructions" / "epoch_000.png", (5 * GRID_8, 5 * (2 * 18 + 2)))


def test_conditional_grid_has_a_row_per_class(acgan_run):
    out, _ = acgan_run
    picture(out / "samples" / "epoch_000.png", (4 * GRID_10, 4 * GRID_10))


def test_learning_curves_one_figure_per_family_present(vae_run, acgan_run):
    vae, acgan = vae_run[0] / "curves", acgan_run[0] / "curves"
    assert {p.name for p in vae.glob("*.png")} == {"losses.png", "kl_reconstruction.png", "sample_quality.png"}
    picture(vae / "kl_reconstruction.png", (3 * 420, 320))  # recon, kl, nelbo
    expected = {"losses.png", "d_accuracy.png", "aux_accuracy.png", "divergence.png"}  # no quality: it was off
    assert {p.name for p in acgan.glob("*.png")} == expected
    picture(acgan / "aux_accuracy.png", (3 * 420, 320))


def test_latent_pictures_of_a_vae(vae_run):
    out, lines = vae_run
    picture(out / "latent" / "tsne.png", (800, 700))
    picture(out / "latent" / "traversal.png", (3 * GRID_11, 3 * GRID_8))  # a row for each of 8 dims
    picture(out / "latent" / "interpolation.png", (3 * GRID_11, 3 * (4 * 18 + 2)))  # 4 pairs
    assert skips(lines, "CodebookUsage") == ["CodebookUsage: skipped (VAE has no codebook (codes, codebook_size))"]
    assert not skips(lines, "LatentTSNE") and not skips(lines, "LatentTraversal")


def test_pictures_reach_the_image_loggers(vae_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = vae_run
    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents.*")).parent)).Reload()
    expected = {"samples", "latent/tsne", "latent/traversal", "latent/interpolation", "curves/kl_reconstruction"}
    assert expected <= set(events.Tags()["images"])


def test_models_without_the_capability_are_skipped_with_one_line(acgan_run, vqvae_run):
    acgan, vqvae = acgan_run[1], vqvae_run[1]
    assert skips(acgan, "LatentTSNE") == ["LatentTSNE: skipped (GAN has no encoder (encode))"]  # a conditional GAN
    assert len(skips(acgan, "CodebookUsage")) == 1
    grid = "LatentTraversal: skipped (VQVAE's latent is a grid (8, 8), not a flat vector)"
    assert skips(vqvae, "LatentTraversal") == [grid]
    assert len(skips(vqvae, "LearningCurves")) == 1 and "logger=[csv" in skips(vqvae, "LearningCurves")[0]
    assert not (acgan_run[0] / "latent" / "tsne.png").exists()
    assert not (vqvae_run[0] / "latent" / "traversal.png").exists() and not (vqvae_run[0] / "curves").exists()


def test_vqvae_codebook_usage_and_pooled_tsne(vqvae_run):
    out, lines = vqvae_run
    picture(out / "codebook" / "usage.png", (1000, 400))
    picture(out / "latent" / "tsne.png", (800, 700))
    assert not skips(lines, "CodebookUsage") and not skips(lines, "LatentTSNE")


# -- the pieces ---------------------------------------------------------------------------------------------
def test_enlarge_uses_the_smallest_whole_factor_and_keeps_pixels_sharp():
    image = torch.rand(3, 10, 146)
    big = enlarge(image, 600)
    assert big.shape == (3, 50, 730)
    assert torch.equal(big[:, ::5, ::5], image) and torch.equal(big[:, 4::5, 4::5], image)
    assert enlarge(image, 100) is image  # already wide enough


def test_gif_keeps_frames_in_order_and_caps_their_number(tmp_path):
    frames = []
    for i in range(7):
        frames.append(tmp_path / f"epoch_{i:03d}.png")
        Image.new("L", (8, 8), color=i * 30).save(frames[-1])
    write_gif(frames, tmp_path / "all.gif")
    write_gif(frames, tmp_path / "few.gif", max_frames=3)
    with Image.open(tmp_path / "all.gif") as gif:
        shades = []
        for k in range(gif.n_frames):
            gif.seek(k)
            shades.append(gif.convert("L").getpixel((0, 0)))
    assert shades == [i * 30 for i in range(7)]
    with Image.open(tmp_path / "few.gif") as gif:
        assert gif.n_frames == 3
        gif.seek(2)
        assert gif.convert("L").getpixel((0, 0)) == 180  # the last frame is always kept


def test_slerp_ends_at_both_latents_and_stays_on_the_sphere():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # linear would dip to 2.12 at the middle


@pytest.mark.parametrize("gaussian", [False, True])
def test_traversal_sweeps_one_dimension_per_row(gaussian):
    traversal = LatentTraversal("unused", dims=3, steps=5, span=3.0)
    module = types.SimpleNamespace()
    if gaussian:  # an autoencoder: [-3, 3] standard deviations around the code mean
        module.code_gaussian = lambda: (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.diag(torch.tensor([4.0] * 4)))
    base = torch.tensor([0.5, -0.5, 0.25, 9.0])
    z = traversal._sweep(module, base).view(3, 5, 4)  # (dims, steps, D)
    center, scale = (torch.tensor([1.0, 2.0, 3.0]), 2.0) if gaussian else (torch.zeros(3), 1.0)
    for i in range(3):
        others = [j for j in range(4) if j != i]
        assert torch.equal(z[i][:, others], base[others].expand(5, 3))
        assert torch.allclose(z[i][:, i], center[i] + scale * torch.linspace(-3, 3, 5))


def test_metric_log_is_split_into_families(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/d_loss_step,train/d_loss_epoch,val/d_loss,val/jsd,lr-Adam\n"
        "0,49,0.7,,,,\n0,99,,0.65,0.6,0.1,0.001\n1,199,,0.5,0.55,0.2,0.001\n"
    )
    curves = plots.read_metric_log(csv)
    assert curves["d_loss"] == {
        "train (per step)": [(49.0, 0.7)],
        "train (epoch mean)": [(99.0, 0.65), (199.0, 0.5)],
        "val": [(99.0, 0.6), (199.0, 0.55)],
    }
    written = plots.learning_curves(csv, tmp_path / "absent.jsonl", tmp_path / "curves")
    assert [p.name for p in written] == ["losses.png", "divergence.png"]
    picture(written[0], (420, 320))


def test_scatter_legend_names_every_class():
    points = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 3
    fig = plots.scatter_figure(points, labels, "t", class_names=["zero", "one", "two"])
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["zero", "one", "two"]


def test_costly_pictures_come_at_the_end_unless_a_cadence_is_set():
    class Record(EndOfRun):
        def draw(self, trainer, pl_module, suffix):
            self.drawn.append(suffix)

    for every, expected in ((None, [""]), (2, ["_epoch_001", "_epoch_003", ""])):
        callback = Record("unused", every_n_epochs=every)
        callback.drawn = []
        for epoch in range(5):
            callback.on_train_epoch_end(types.SimpleNamespace(current_epoch=epoch), None)
        callback.on_train_end(types.SimpleNamespace(current_epoch=5), None)
        assert callback.drawn == expected


def test_quality_curves_leave_out_the_record_fields(tmp_path):
    log = tmp_path / "sample_quality.jsonl"
    records = [{"split": "val", "epoch": e, "step": 10 * e, "seed": 1234 + 1000 * e, "cfid": 9.0 - e} for e in (0, 1)]
    log.write_text("\n".join(json.dumps(r) for r in records))
    curves = plots.read_quality_log(log)
    assert sorted(curves) == ["cfid"] and curves["cfid"]["val"] == [(0.0, 9.0), (1.0, 8.0)]


@pytest.mark.parametrize("threads, expected", [(None, "torch"), (1, 1)])
def test_tsne_takes_the_runs_torch_threads_unless_told(tmp_path, monkeypatch, threads, expected):
    """Training is paused while a callback draws, so t-SNE may use the process's share of the cores (2,000
    images on 2 cores: 6.2-6.8 s with 2 threads, 8.6-8.8 s with 1); `threads` caps it."""
    from genlab.callbacks import latent

    used = []
    monkeypatch.setattr(latent, "test_batches", lambda trainer, n: [(torch.randn(30, 1, 4, 4), torch.arange(30) % 3)])
    monkeypatch.setattr(latent, "latent_means", lambda module, x: x.flatten(1))
    monkeypatch.setattr(latent, "embed_2d", lambda f, p, i, s, t: used.append(t) or np.zeros((len(f), 2)))
    monkeypatch.setattr(latent, "publish_png", lambda trainer, path, key: None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    trainer = types.SimpleNamespace(datamodule=None, loggers=[])
    latent.LatentTSNE(str(tmp_path), threads=threads).draw(trainer, types.SimpleNamespace(), "")
    assert used == [7 if expected == "torch" else expected]
