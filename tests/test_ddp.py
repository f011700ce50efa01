"""Data parallel training on CPU processes (gloo), as a user runs it: `python -m genlab ... trainer=ddp_cpu
trainer.devices=2`, and the WGAN-GP critic update under 2 processes equal to the update under 1.

Each 2-process run costs two interpreter starts, so every run checks everything it can: one run dir (and nothing
else) written by rank 0, metrics synced across ranks, the exact number of samples behind the sample-quality
metrics, and different noise on the two ranks.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from genlab.models.objectives import WassersteinGP, gradient_penalty
from genlab.utils import local_comm
from genlab.utils.local_comm import LocalGroup, connect
from genlab.utils.speed import stepped_player_allreduce
from tests.conftest import compose_cfg

REPO = Path(__file__).resolve().parents[1]
N_SAMPLES = 201  # odd: 101 + 100 samples; a count rounded per rank (200, 202) or doubled (402) shows
DDP = [
    "trainer=ddp_cpu",
    "trainer.devices=2",
    "debug=fast",
    "callbacks.progress_bar.refresh_rate=0",
    f"metrics.n_samples={N_SAMPLES}",
]
RECORDERS = ["tests.helpers.RecordNoise", "tests.helpers.RecordMetrics"]
# the end-of-run plots (seconds each, drawn by rank 0 while rank 1 waits): kept in one run of each family
NO_PLOTS = [f"~callbacks.{name}" for name in ("learning_curves", "latent_tsne", "latent_traversal", "codebook_usage")]


def _local_transport() -> str:
    """What 2 CPU ranks on this machine talk through: shared memory, unless /dev/shm (or the temp dir) lacks room
    for the segment of `genlab.utils.local_comm` (a small container's): then gloo, as the run's log says."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    room = local_comm._room(root, 2 * 2 * local_comm.SLOT_LIMIT)  # the segment of 2 ranks: 2 sets x 2 slots
    return "shared memory" if room and hasattr(os, "mkfifo") else "gloo"


LOCAL = _local_transport()


def record(dirpath: str) -> list[str]:
    """Overrides adding the per-rank recorders of tests/helpers.py, writing into `dirpath`."""
    return [f"+callbacks.{c.rsplit('.', 1)[1]}.{k}" for c in RECORDERS for k in (f"_target_={c}", f"dirpath={dirpath}")]


def genlab_ddp(tmp_path: Path, *args: str, env: dict | None = None, returncode: int = 0) -> subprocess.CompletedProcess:
    """`python -m genlab` with 2 CPU processes, started in `tmp_path`: a stray Hydra dir would appear there."""
    env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data"), **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # tests.helpers
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "genlab", *DDP, *args]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == returncode, proc.stderr[-3000:]
    if returncode == 0:
        assert (proc.stdout + proc.stderr).count("Run directory:") == 1  # rank 0 reports the run, once
    return proc


def jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_one_run_dir(tmp_path: Path, out: Path) -> None:
    """Exactly one run dir, `out`, in `tmp_path`, its `.hydra` rank 0's, one log file, no duplicated rows."""
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (out / "train.log").read_text()  # really two processes
    assert [p.parent for p in tmp_path.rglob(".hydra")] == [out]
    assert [p for p in tmp_path.rglob("*") if not p.is_relative_to(out) and p not in out.parents] == []
    # the child process's Hydra config is a different job (train_ddp_process_1): it must not replace rank 0's
    assert "train_ddp_process" not in (out / ".hydra" / "hydra.yaml").read_text()
    assert sorted(p.name for p in out.glob("*.log")) == ["train.log"]
    assert json.loads((out / "status.json").read_text())["status"] == "ok"
    with (out / "metrics.csv").open() as f:
        rows = [tuple(row) for row in csv.reader(f)]
    assert len(rows) == len(set(rows)) > 1  # one logger (rank 0's) wrote them


def check_synced(out: Path, n_evaluations: int) -> list[dict]:
    """Both ranks hold the same val/test values (logged with sync_dist), and the sample-quality values are rank
    0's own computation (a sync that averaged different per-rank values would change them), from exactly
    N_SAMPLES samples. Returns rank 0's records."""
    ranks = [jsonl(out / f"metrics_rank{r}.jsonl") for r in (0, 1)]
    assert ranks[0] == ranks[1] and len(ranks[0]) == n_evaluations
    quality = out / "sample_quality.jsonl"
    if quality.is_file():
        records = jsonl(quality)
        assert [r["split"] for r in records] == [r["split"] for r in ranks[0]]
        for rec, logged in zip(records, ranks[0], strict=True):
            assert rec["protocol"]["classifier"]["n_fake"] == N_SAMPLES
            assert rec["cfid"] == pytest.approx(logged[f"{rec['split']}/cfid"], rel=1e-6)
            assert rec["cis"] == pytest.approx(logged[f"{rec['split']}/cis"], rel=1e-6)
    final = json.loads((out / "metrics.json").read_text())
    tests = [r for r in ranks[0] if r["split"] == "test"]
    for key, value in (tests[-1] if tests else {}).items():
        assert key == "split" or final[key] == pytest.approx(value, rel=1e-6)
    return ranks[0]


def check_ranks_drew_differently(out: Path, positions: list[list[int]]) -> None:
    """After every training batch the two ranks' noise generators and global RNGs stand in different places, and
    their weights are the same: the gradients were averaged over the ranks (each saw other images and noise)."""
    draws = [jsonl(out / f"noise_rank{r}.jsonl") for r in (0, 1)]
    assert [d[:2] for d in draws[0]] == [d[:2] for d in draws[1]] == positions
    for a, b in zip(*draws, strict=True):
        assert a[2] != b[2] and a[3] != b[3], f"the two ranks drew the same noise at (epoch, batch) {a[:2]}"
        assert a[4] == b[4], f"the two ranks' weights differ after (epoch, batch) {a[:2]}"
    assert len({d[4] for d in draws[0]}) == len(positions)  # and they did train


BATCHES = 6  # debug=fast's training batches per epoch, per rank


def test_gan_under_ddp_and_resumed(tmp_path):
    """A GAN trained 1 epoch under DDP, then resumed to 2 in place: the checks above after each; after the resume
    each rank's noise is still its own. (That each rank draws what it would have drawn uninterrupted is checked
    without DDP, in test_gan_family.py::test_after_loading_a_checkpoint_each_rank_draws_the_noise_of_its_position.)"""
    out = tmp_path / "run"
    genlab_ddp(tmp_path, "model=gan_base", *record(str(out)), "test=false", f"hydra.run.dir={out}")
    check_one_run_dir(tmp_path, out)
    assert f"between the ranks through {LOCAL}" in (out / "train.log").read_text()
    check_synced(out, n_evaluations=1)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_000.png", "progress.gif"]
    assert (out / "report.md").is_file() and (out / "curves" / "losses.png").is_file()

    trust = f"trusted_targets=[{','.join(RECORDERS)}]"  # the test's own classes, in the run's saved overrides
    genlab_ddp(tmp_path, f"resume={out}", "trainer.max_epochs=2", "test=true", trust, *NO_PLOTS)
    check_one_run_dir(tmp_path, out)
    assert [r["split"] for r in check_synced(out, n_evaluations=3)] == ["val", "val", "test"]
    check_ranks_drew_differently(out, [[e, b] for e in (0, 1) for b in range(BATCHES)])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_000.png", "epoch_001.png", "progress.gif"]


@pytest.mark.parametrize("during", ["training", "validation"])
def test_sigterm_to_rank_0_stops_every_rank_at_one_batch_with_a_checkpoint_and_resumes(tmp_path, during):
    """`kill -TERM <rank 0>` under DDP, mid-epoch or during the epoch-end validation: both ranks stop at the same
    point, the checkpoint is written, the job exits 143 with status.json "interrupted" (Lightning's own handling
    exited 0 without either, or deadlocked when its signal handler's broadcast met another collective); the
    resume finishes with the ranks' weights equal after every batch."""
    out = tmp_path / "run"
    when = ["batches=2"] if during == "training" else [f"batches={BATCHES}", "at_validation=true"]
    signal_rank_0 = [f"+callbacks.sig.{k}" for k in ("_target_=tests.helpers.SignalAfter", "rank=0", *when)]
    args = ["model=gan_base", *NO_PLOTS, *record(str(out)), *signal_rank_0, "test=false", "trainer.max_epochs=2"]
    proc = genlab_ddp(tmp_path, *args, f"hydra.run.dir={out}", returncode=128 + signal.SIGTERM)
    assert proc.stderr.count("genlab: interrupted by SIGTERM at step") == 1  # once, though both ranks stopped
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and "resumable checkpoint written" in status["error"]
    stopped = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    draws = [jsonl(out / f"noise_rank{r}.jsonl") for r in (0, 1)]
    assert [d[:2] for d in draws[0]] == [d[:2] for d in draws[1]]
    if during == "training":
        # rank 0 signalled itself after its 2nd batch; every rank stopped before the 4th (the flag goes round
        # before each batch; the 3rd's may or may not see it), not at the epoch's end
        assert [d[:2] for d in draws[0]] in ([[0, 0], [0, 1]], [[0, 0], [0, 1], [0, 2]])
    else:  # at the end of epoch 0, after its validation: no batch of epoch 1
        assert [d[:2] for d in draws[0]] == [[0, b] for b in range(BATCHES)]
    assert stopped["epoch"] == 0 and stopped["global_step"] > 0

    trust = f"trusted_targets=[{','.join(RECORDERS)},tests.helpers.SignalAfter]"
    genlab_ddp(tmp_path, f"resume={out}", "~callbacks.sig", trust)
    assert json.loads((out / "status.json").read_text())["status"] == "ok"
    draws = [jsonl(out / f"noise_rank{r}.jsonl") for r in (0, 1)]
    assert [d[:2] for d in draws[0]][-1] == [1, BATCHES - 1]
    assert all(a[4] == b[4] for a, b in zip(*draws, strict=True))  # the same weights on both ranks throughout


@pytest.mark.parametrize("model", ["wgan_gp", "dcgan_paper", "vae", "vqvae"])
def test_model_trains_under_ddp(tmp_path, model):
    """A fresh run in the default run dir (under paths.log_dir): the child process makes no second one. The
    VQ-VAE's ranks talk through gloo (`GENLAB_LOCAL_ALLREDUCE=0`), the others' through shared memory.
    `dcgan_paper` keeps G's graph from the D step for G's step (`reuse_fake`)."""
    here = "${hydra:runtime.output_dir}"
    plots = [] if model == "vae" else list(NO_PLOTS)
    if model == "vqvae":  # without a prior it is not scored: no need for the dataset classifier
        plots.append("~callbacks.sample_quality")
    transport = "gloo" if model == "vqvae" else LOCAL
    env = {"GENLAB_LOCAL_ALLREDUCE": "0" if transport == "gloo" else "1"}
    genlab_ddp(tmp_path, f"model={model}", *record(here), f"paths.log_dir={tmp_path / 'outputs'}", *plots, env=env)
    (out,) = (tmp_path / "outputs" / "train").glob("*/*")
    check_one_run_dir(tmp_path, out)
    assert f"between the ranks through {transport}" in (out / "train.log").read_text()
    evaluations = check_synced(out, n_evaluations=2)
    check_ranks_drew_differently(out, [[0, b] for b in range(BATCHES)])
    headline = {"wgan_gp": "wasserstein", "dcgan_paper": "jsd", "vae": "nelbo", "vqvae": "perplexity"}[model]
    assert {f"val/{headline}", f"test/{headline}"} <= {k for e in evaluations for k in e}
    assert (out / "samples" / "epoch_000.png").is_file() and (out / "report.md").is_file()
    assert (out / "latent" / "tsne.png").is_file() == (model == "vae")
    assert (out / "reconstructions" / "epoch_000.png").is_file() == (model in ("vae", "vqvae"))
    assert (out / "sample_quality.jsonl").is_file() == (model != "vqvae")


# ------------------------------------------------------------------ the gradient penalty: 2 processes = 1 process

HALF = 8  # images per rank; 2 * HALF in the one-process batch
# float32 sums in another order (two half-batch means averaged vs one mean): agreement to ~1e-7 is expected
TOL = {"rtol": 1e-5, "atol": 1e-6}


class FixedAlphaGP(WassersteinGP):
    """WGAN-GP whose interpolation coefficients are given; `per_rank_sum` sums the penalty over the samples
    instead of averaging them (a wrong reduction that DDP's gradient averaging does not undo)."""

    def __init__(self, alpha: Tensor, per_rank_sum: bool = False) -> None:
        super().__init__(gp_weight=10.0)
        self.alpha, self.per_rank_sum = alpha, per_rank_sum

    def penalty(self, critic, real, fake):
        penalty = gradient_penalty(critic, real, fake, self.alpha)
        return self.gp_weight * penalty * (len(real) if self.per_rank_sum else 1)


class CriticLoss(nn.Module):
    """The GAN's critic loss as DDP's forward, so DDP averages the gradients of the backward that follows."""

    def __init__(self, gan: nn.Module) -> None:
        super().__init__()
        self.gan = gan

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.gan.discriminator_loss(x, y)[0]


def critic_update(
    model_cfg: dict,
    state: dict,
    batch: dict,
    part: slice,
    per_rank_sum: bool,
    ddp: bool,
    hook: bool = False,
    local: LocalGroup | None = None,
) -> dict:
    """One critic update of GAN.discriminator_loss (Wasserstein loss + penalty) and Adam, as in training, on
    `part` of the batch with its fixed z and alpha: D's gradients and its weights after the step. `hook`: G
    toggled off after DDP wraps the model (as Lightning's `toggled_optimizer` does) and genlab's comm hook that
    all-reduces only the parameters in use (`genlab.utils.speed.stepped_player_allreduce`), through `local` (a
    `genlab.utils.local_comm.LocalGroup`: shared memory) when given, else gloo."""
    gan = instantiate(model_cfg)
    gan.load_state_dict(state)
    gan.train()
    z, alpha = batch["z"][part], batch["alpha"][part]
    gan.sample_latent = lambda n, generator=None: z  # the fixed z of these images
    gan.objective = FixedAlphaGP(alpha, per_rank_sum)
    module = CriticLoss(gan)
    forward = DistributedDataParallel(module, find_unused_parameters=True) if ddp else module  # as trainer=ddp_cpu
    if hook:
        forward.register_comm_hook(local, stepped_player_allreduce)
        gan.generator.requires_grad_(False)
    _, opt_d = gan.configure_optimizers()[0]
    opt_d.zero_grad(set_to_none=True)
    forward(batch["x"][part], batch["y"][part]).backward()
    grads = [p.grad.clone() for p in gan.discriminator.parameters()]
    opt_d.step()
    return {"grads": grads, "weights": [p.detach().clone() for p in gan.discriminator.parameters()]}


def _rank_main(rank: int, world: int, store: str, model_cfg: dict, state: dict, batch: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        part = slice(rank * HALF, (rank + 1) * HALF)
        results = {k: critic_update(model_cfg, state, batch, part, k == "sum", ddp=True) for k in ("mean", "sum")}
        results["hook"] = critic_update(model_cfg, state, batch, part, False, ddp=True, hook=True)
        results["local"] = critic_update(model_cfg, state, batch, part, False, ddp=True, hook=True, local=connect())
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_wgan_gp_critic_update_under_two_processes_equals_one_process(tmp_path):
    """Fixed weights, batch, z and alpha: the critic's gradients (averaged by DDP over 2 gloo processes of 8
    images each) and its weights after the Adam step equal those of one process on all 16 images, to
    rtol 1e-5 / atol 1e-6. The penalty is a mean per rank, so the average of equal halves is the full mean; the
    same update with the penalty summed per rank differs (the comparison can fail). Gradients are compared as
    well as weights because Adam's first step hardly depends on the gradient's scale."""
    # G without BatchNorm: BatchNorm normalises each rank's share of the batch under CPU DDP (SyncBatchNorm needs
    # GPUs), so with it the same z gives other fake images on 8 than on 16; the critic has no BatchNorm anyway
    cfg = compose_cfg(["model=wgan_gp", "data=digits", "model.generator.batch_norm=false"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    state = instantiate(model_cfg).state_dict()
    n, size = 2 * HALF, cfg.data.image_size
    batch = {
        "x": torch.rand(n, cfg.data.channels, size, size) * 2 - 1,
        "y": torch.randint(10, (n,)),
        "z": torch.randn(n, cfg.model.latent_dim),
        "alpha": torch.rand(n),
    }
    one = {k: critic_update(model_cfg, state, batch, slice(0, n), k == "sum", ddp=False) for k in ("mean", "sum")}
    args = (2, str(tmp_path / "store"), model_cfg, state, batch, str(tmp_path))
    mp.spawn(_rank_main, args=args, nprocs=2, join=True)
    two = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    def close(a: list[Tensor], b: list[Tensor], where: list[Tensor] | None = None) -> bool:
        where = where or [torch.ones_like(x, dtype=torch.bool) for x in a]
        return all(torch.allclose(x[m], y[m], **TOL) for x, y, m in zip(a, b, where, strict=True))

    # weights where the gradient is at least 100x Adam's eps (1e-8): below it Adam's first step, lr * g / (|g| + eps),
    # turns float summation noise in a near-zero gradient into a step of up to lr (measured with the MLP critic: a
    # bias gradient of 1.9e-9 on two ranks and 7.5e-9 on one moved that weight by 5.4e-4 at lr 2e-3)
    steered = [g.abs() >= 1e-6 for g in one["mean"]["grads"]]
    assert sum(m.sum() for m in steered) > 0.9 * sum(m.numel() for m in steered)
    for what, where in (("grads", None), ("weights", steered)):
        for way in ("mean", "hook", "local"):  # DDP's own all-reduce; genlab's hook with G toggled off, gloo or shm
            assert close(two[0][way][what], one["mean"][what], where), (way, what)
            assert close(two[1][way][what], two[0][way][what]), (way, what)  # the ranks agree
    assert not close(two[0]["sum"]["grads"], one["sum"]["grads"])
    before = [p for k, p in state.items() if k.startswith("discriminator.")]
    assert not close(one["mean"]["weights"], before)  # the step did move the critic
