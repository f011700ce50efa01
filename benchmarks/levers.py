"""The speed levers of issue [7 of 10], each measured alone on a training step with genlab's nets (no Lightning,
no data loading: the step itself), so that what each gives is visible without the rest of a run around it.

    python -m benchmarks.levers [--batches 200] [--models mlp_wgan dcgan dcgan_default wgan_gp]
    python -m benchmarks.levers --defaults [--json out.json]   # genlab's default variant of each row of make bench

MLP WGAN (batch 64, n_critic 5, RMSprop, clipping): two D forwards vs one on real and fake concatenated (its
critic has no BatchNorm), loop vs foreach optimiser and clipping, fp32 vs bf16 autocast, eager vs torch.compile.
DCGAN 28 px (batch 64, Adam): contiguous vs channels-last, fp32 vs bf16 autocast, a fresh G batch for G's step vs
the D step's batch reused (as the reference DCGAN scripts do), channels-last with one memory order through the
backward (genlab's nets since session 16) vs the plain-order map at G's projection and D's flatten (before), fused
vs foreach Adam. The default `model=dcgan` recipe's nets (width 24, no norm in D, batch 128): the same two changes.
WGAN-GP (`model=wgan_gp_paper`: DCGAN nets of width 64, layer norm in the critic, n_critic 5, Adam 1e-4 (0, 0.9),
genlab's `gradient_penalty`): channels-last with bf16 autocast, the critic's forward on real and fake joint or not.
`--defaults` times only genlab's default variant of each model of `make bench` (bf16 where the CPU computes it
natively, as `trainer.precision=auto` decides): the bare step that `benchmarks.train_speed` puts under its
ceiling on each row.
Prints ms per batch (median of 3 timed windows after a warm-up) and the ratio to the first variant.
"""

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from genlab.models.objectives import gradient_penalty
from genlab.nets import ConvDecoder, ConvEncoder, DiscriminatorHeads, MLPDecoder, MLPEncoder
from genlab.utils.speed import native_bf16

BATCH = 64


@contextlib.contextmanager
def frozen(net: nn.Module):
    """`net`'s parameters without gradients for the block: D during G's step, as Lightning's `toggle_optimizer`
    leaves it in genlab (the backward then computes no weight gradients for D, only those of its inputs)."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def wasserstein_g_step(g: nn.Module, d: nn.Module, opt: torch.optim.Optimizer, bf16: bool) -> None:
    """G's step of a WGAN (after every 5th critic step): minimise -D(G(z)) on fresh noise, D frozen."""
    with frozen(d), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        g_loss = -d(g(torch.randn(BATCH, 100)))[0].float().mean()
        opt.zero_grad(set_to_none=True)
        g_loss.backward()
    opt.step()


def mlp_wgan(variant: set[str]):
    torch.manual_seed(0)
    g = MLPDecoder(100, 1, 28, hidden_dims=[128, 256, 512, 1024], activation="leaky_relu", batch_norm=True)
    d = DiscriminatorHeads(MLPEncoder(1, 28, hidden_dims=[512, 256], activation="leaky_relu"))
    foreach = "foreach" in variant
    og = torch.optim.RMSprop(g.parameters(), lr=5e-5, foreach=foreach)
    od = torch.optim.RMSprop(d.parameters(), lr=5e-5, foreach=foreach)
    x = torch.rand(BATCH, 1, 28, 28) * 2 - 1
    params = list(d.parameters())
    if "compile" in variant:
        g.compile()
        d.compile()
    bf16 = "bf16" in variant

    def step(i: int) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                fake = g(torch.randn(BATCH, 100))
            if "joint" in variant:
                out = d(torch.cat([x, fake]))[0]
                real_out, fake_out = out[:BATCH], out[BATCH:]
            else:
                real_out, fake_out = d(x)[0], d(fake)[0]
            loss = fake_out.float().mean() - real_out.float().mean()
        od.zero_grad(set_to_none=True)
        loss.backward()
        od.step()
        with torch.no_grad():
            if foreach:
                torch._foreach_clamp_min_(params, -0.01)
                torch._foreach_clamp_max_(params, 0.01)
            else:
                for p in params:
                    p.clamp_(-0.01, 0.01)
        if i % 5 == 4:
            wasserstein_g_step(g, d, og, bf16)

    return step


def _plain_order_at_the_ends(g: ConvDecoder, d: DiscriminatorHeads) -> None:
    """The nets as they were before session 16: G's projected map in the plain order, D's features flattened by
    `nn.Flatten` (its gradient in the plain order), so the norm's and activation's backward there mixed orders."""
    net = d.trunk.net
    net[next(i for i, m in enumerate(net) if isinstance(m, nn.Flatten))] = nn.Flatten()
    g.forward = lambda z, y=None: g.net(g.project(g.cond(z, y)).view(z.shape[0], *g.shape))


def dcgan(variant: set[str], width: int = 64, d_norm: str = "batch", batch: int = BATCH):
    torch.manual_seed(0)
    g = ConvDecoder(1, 28, latent_dim=100, width=width)
    d = DiscriminatorHeads(ConvEncoder(1, 28, width=width, norm=d_norm))
    if "plain_ends" in variant:
        _plain_order_at_the_ends(g, d)
    fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
    g, d = g.to(memory_format=fmt), d.to(memory_format=fmt)
    adam = {"foreach": True} if "foreach_adam" in variant else {"fused": True}
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999), **adam)
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999), **adam)
    x = (torch.rand(batch, 1, 28, 28) * 2 - 1).contiguous(memory_format=fmt)
    bce = nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    bf16 = "bf16" in variant

    reuse = "reuse" in variant

    def step(i: int) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            with torch.set_grad_enabled(reuse):  # reuse: G's graph is kept for its own step
                fake = g(torch.randn(batch, 100))
            loss = bce(d(x)[0].float(), ones) + bce(d(fake.detach())[0].float(), zeros)
        od.zero_grad(set_to_none=True)
        loss.backward()
        od.step()
        with frozen(d):  # as genlab's G step: no weight gradients for D
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                g_loss = bce(d(fake if reuse else g(torch.randn(batch, 100)))[0].float(), ones)
            og.zero_grad(set_to_none=True)
            g_loss.backward()
        og.step()

    return step


def wgan_gp(variant: set[str]):
    """`model=wgan_gp_paper`'s step: 5 critic steps (interpolates' gradient penalty, weight 10) per G step."""
    torch.manual_seed(0)
    g = ConvDecoder(1, 28, latent_dim=100, width=64)
    d = DiscriminatorHeads(ConvEncoder(1, 28, width=64, norm="layer"))
    fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
    g, d = g.to(memory_format=fmt), d.to(memory_format=fmt)
    og = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9), fused=True)
    od = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.0, 0.9), fused=True)
    x = (torch.rand(BATCH, 1, 28, 28) * 2 - 1).contiguous(memory_format=fmt)
    bf16, joint = "bf16" in variant, "joint" in variant

    def step(i: int) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                fake = g(torch.randn(BATCH, 100))
            if joint:
                out = d(torch.cat([x, fake]))[0].float()
                real_out, fake_out = out[:BATCH], out[BATCH:]
            else:
                real_out, fake_out = d(x)[0].float(), d(fake)[0].float()
            loss = fake_out.mean() - real_out.mean() + 10.0 * gradient_penalty(lambda v: d(v)[0].float(), x, fake)
        od.zero_grad(set_to_none=True)
        loss.backward()
        od.step()
        if i % 5 == 4:
            wasserstein_g_step(g, d, og, bf16)

    return step


VARIANTS = {
    "mlp_wgan": [
        ("plain: two D forwards, loop optimiser and clipping", set()),
        ("+ joint D forward (genlab default)", {"joint"}),
        ("+ joint + foreach optimiser and clipping (genlab default)", {"joint", "foreach"}),
        ("+ joint + foreach + bf16 autocast (trainer.precision=bf16-mixed)", {"joint", "foreach", "bf16"}),
        ("+ joint + foreach + torch.compile (compile=true)", {"joint", "foreach", "compile"}),
    ],
    "dcgan": [
        ("plain (fused Adam)", set()),
        ("+ channels-last", {"channels_last"}),
        ("+ bf16 autocast (trainer.precision=bf16-mixed)", {"bf16"}),
        ("+ channels-last + bf16 autocast", {"channels_last", "bf16"}),
        (
            "+ channels-last + bf16 + G's step reuses the D step's batch (model=dcgan_paper's reuse_fake)",
            {"channels_last", "bf16", "reuse"},
        ),
        (
            "+ channels-last + bf16, plain-order map at G's projection and D's flatten (before session 16)",
            {"channels_last", "bf16", "plain_ends"},
        ),
        ("+ channels-last + bf16, foreach Adam (before session 16)", {"channels_last", "bf16", "foreach_adam"}),
    ],
    "dcgan_default": [
        ("channels-last + bf16 (genlab's default)", {"channels_last", "bf16"}),
        (
            "channels-last + bf16, plain-order map at G's projection and D's flatten (before session 16)",
            {"channels_last", "bf16", "plain_ends"},
        ),
        ("channels-last + bf16, foreach Adam (before session 16)", {"channels_last", "bf16", "foreach_adam"}),
    ],
    "wgan_gp": [
        (
            "channels-last + bf16, the critic on real and fake joint (genlab's default)",
            {"channels_last", "bf16", "joint"},
        ),
        ("channels-last + bf16, two critic forwards", {"channels_last", "bf16"}),
    ],
}
# genlab's default variant of each model that `make bench` trains (bf16 only where the CPU has it natively)
DEFAULTS = {
    "mlp_wgan": {"joint", "foreach", "bf16"},
    "dcgan": {"channels_last", "bf16", "reuse"},  # model=dcgan_paper sets reuse_fake (session 21)
    "wgan_gp": {"channels_last", "bf16", "joint"},
}


def dcgan_default(variant: set[str]):
    """The nets of the default `model=dcgan` recipe (width 24, no norm in D) at its batch of 128; R1, EMA and
    the cosine schedule left out."""
    return dcgan(variant, width=24, d_norm="none", batch=128)


BUILD = {"mlp_wgan": mlp_wgan, "dcgan": dcgan, "dcgan_default": dcgan_default, "wgan_gp": wgan_gp}


def batches_for(model: str, batches: int) -> int:
    """`batches` for the MLP step (a few ms), a tenth (at least 10) for the conv nets' (tens of ms)."""
    return batches if model == "mlp_wgan" else max(10, batches // 10)


def defaults(batches: int) -> dict[str, float]:
    """{model: ms per batch} of genlab's default variant of each model of `DEFAULTS` on this machine."""
    bf16 = native_bf16("cpu")
    return {
        model: measure(BUILD[model](variant if bf16 else variant - {"bf16"}), batches_for(model, batches))[1]
        for model, variant in DEFAULTS.items()
    }


def measure(step, batches: int) -> tuple[float, float]:
    """(first-call seconds: compilation where it applies, median ms per batch over 3 windows)."""
    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    for i in range(1, 10):
        step(i)
    windows = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(batches):
            step(i)
        windows.append(1000 * (time.perf_counter() - start) / batches)
    return first, statistics.median(windows)


def profile(step, steps: int = 20, rows: int = 15) -> str:
    """torch.profiler's table of the operators of `steps` steps after a warm-up, by self time, per input shape."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as record

    for i in range(10):
        step(i)
    with record(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(steps):
            step(i)
    averages = prof.key_averages(group_by_input_shape=True)
    return averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="batches per timed window (3 windows)")
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead of timing: torch.profiler's operators of variant N (0: the first) of each model, 20 steps",
    )
    parser.add_argument("--defaults", action="store_true", help="only genlab's default variant of each bench model")
    parser.add_argument("--json", type=Path, help="with --defaults: also write {model: ms per batch} here")
    args = parser.parse_args()
    if args.json and not args.defaults:
        parser.error(f"--json {args.json} needs --defaults (the other modes print a table only)")
    if args.json and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: the folder {args.json.parent} does not exist; expected an existing folder")
    if args.defaults:
        times = defaults(args.batches)
        print(", ".join(f"{model} {ms:.2f} ms" for model, ms in times.items()))
        if args.json:
            args.json.write_text(json.dumps(times))
        return
    if args.profile is not None:
        for model in args.models:
            name, variant = VARIANTS[model][args.profile]
            print(f"{model}: {name}\n{profile(BUILD[model](variant))}")
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} (dcgan_default: 128)")
    print("| model | variant | ms per batch | vs plain | first call s |\n|---|---|---|---|---|")
    for model in args.models:
        plain = None
        for name, variant in VARIANTS[model]:
            first, ms = measure(BUILD[model](variant), batches_for(model, args.batches))
            plain = plain or ms
            print(f"| {model} | {name} | {ms:.2f} | {plain / ms:.2f}x | {first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
