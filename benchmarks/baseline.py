"""Plain-PyTorch baselines: training loops written the way the popular single-file scripts are.

    python -m benchmarks.baseline {wgan_mlp,dcgan,vae,wgan_gp} --epochs 2 --root $GENLAB_DATA_DIR

The loops follow eriklindernoren's PyTorch-GAN (wgan.py, dcgan.py, wgan_gp.py) and the pytorch/examples
VAE: torchvision's `MNIST` with `ToTensor()` + `Normalize([0.5], [0.5])` per item, a `DataLoader(batch_size=64,
shuffle=True, num_workers=0)`, one `.item()` print per batch, nothing else. They are never slower than those
scripts: noise comes from `torch.randn` (not numpy), D sees `fake.detach()` (wgan_gp.py back-propagates D's loss
into G on every critic step) and the generated batch of a DCGAN step is reused for D, as dcgan.py does.

The nets are genlab's, written out in plain PyTorch (`benchmarks.train_speed` asserts the parameter counts
match): `genlab.nets.MLPDecoder`/`MLPEncoder` and `ConvDecoder`/`ConvEncoder` at 28 px with width 64.
`--report FILE` writes a JSON summary (batches, the wall-clock time of the first batch); `--limit-batches N`
stops each epoch after N batches.
"""

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LATENT = {"wgan_mlp": 100, "dcgan": 100, "wgan_gp": 100, "vae": 32}


# -- nets ---------------------------------------------------------------------------------------------------
def mlp_generator(latent: int = 100, hidden=(128, 256, 512, 1024)) -> nn.Module:
    """PyTorch-GAN wgan.py's G as genlab builds it: Linear (no bias) -> BatchNorm1d -> LeakyReLU(0.2) per hidden
    layer (the first included), then Linear -> tanh."""
    layers, d_in = [], latent
    for d_out in hidden:
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.LeakyReLU(0.2)]
        d_in = d_out
    layers += [nn.Linear(d_in, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28))]  # (B, 784) -> (B, 1, 28, 28)
    return nn.Sequential(*layers)


def mlp_critic() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1)
    )


def conv_generator(latent: int = 100) -> nn.Module:
    """z -> 128x7x7 -> 64x14x14 -> 1x28x28 (BatchNorm, ReLU, tanh)."""
    return nn.Sequential(
        nn.Linear(latent, 128 * 7 * 7, bias=False),
        nn.Unflatten(1, (128, 7, 7)),  # (B, 6272) -> (B, 128, 7, 7)
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1),
        nn.Tanh(),
    )


def conv_critic(norm: str = "batch") -> nn.Module:
    """1x28x28 -> 64x14x14 -> 128x7x7 -> 1 (LeakyReLU 0.2); `norm` batch (DCGAN) or layer (WGAN-GP)."""
    second = [nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128)]
    if norm == "layer":
        second = [nn.Conv2d(64, 128, 4, 2, 1), nn.GroupNorm(1, 128)]
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        *second,
        nn.LeakyReLU(0.2),
        nn.Flatten(),  # (B, 128, 7, 7) -> (B, 6272)
        nn.Linear(128 * 7 * 7, 1),
    )


class VAE(nn.Module):
    """experiment=vae_mnist: 784-1024-512 (ELU) -> mu, logvar (32); 32-512-1024-784 (ELU) -> logits."""

    def __init__(self, latent: int = 32) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ELU(), nn.Linear(1024, 512), nn.ELU())
        self.mu, self.logvar = nn.Linear(512, latent), nn.Linear(512, latent)
        self.dec = nn.Sequential(nn.Linear(latent, 512), nn.ELU(), nn.Linear(512, 1024), nn.ELU(), nn.Linear(1024, 784))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def build(model: str) -> dict[str, nn.Module]:
    """The trained modules by role; their parameter count is compared with genlab's."""
    if model == "vae":
        return {"vae": VAE(LATENT["vae"])}
    if model == "wgan_mlp":
        return {"generator": mlp_generator(), "discriminator": mlp_critic()}
    return {"generator": conv_generator(), "discriminator": conv_critic("layer" if model == "wgan_gp" else "batch")}


def n_params(model: str) -> int:
    return sum(p.numel() for m in build(model).values() for p in m.parameters())


# -- data ---------------------------------------------------------------------------------------------------
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


SCRATCH = str(Path(__file__).resolve().parents[1] / "outputs" / "bench" / "mnist")


def mnist_root(root: str, scratch: str = SCRATCH) -> str:
    """A root where torchvision's MNIST(download=False) finds the extracted idx files. A read-only root holding
    only the .gz files is extracted once into `scratch` (torchvision would extract next to the .gz files)."""
    raw = Path(root) / "MNIST" / "raw"
    if all((raw / name).is_file() for name in IDX):
        return root
    target = Path(scratch) / "MNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name in IDX:
        if not (target / name).is_file():
            with gzip.open(raw / f"{name}.gz", "rb") as src, open(target / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return scratch


def loader(root: str, batch_size: int = 64):
    from torchvision.datasets import MNIST
    from torchvision.transforms import Compose, Normalize, ToTensor

    dataset = MNIST(root, train=True, download=False, transform=Compose([ToTensor(), Normalize([0.5], [0.5])]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)


# -- training loops -----------------------------------------------------------------------------------------
def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand(real.size(0), 1, 1, 1)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = critic(interpolates)
    (grad,) = torch.autograd.grad(out, interpolates, torch.ones_like(out), create_graph=True, retain_graph=True)
    return ((grad.view(grad.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()


def log_batch(epoch: int, epochs: int, i: int, n: int, d_loss: torch.Tensor, g_loss: torch.Tensor) -> None:
    print(f"[Epoch {epoch}/{epochs}] [Batch {i}/{n}] [D loss: {d_loss.item()}] [G loss: {g_loss.item()}]")


# the wall-clock time at the start of every MARK_EVERY-th batch of the run (`marks` in the report; genlab's
# BenchTimer records the same): how the time per batch moves over a run
MARK_EVERY = 100


def train_gan(model: str, data, epochs: int, limit: int, report: dict) -> None:
    nets = build(model)
    generator, discriminator = nets["generator"], nets["discriminator"]
    if model == "wgan_mlp":
        opt_g = torch.optim.RMSprop(generator.parameters(), lr=5e-5)
        opt_d = torch.optim.RMSprop(discriminator.parameters(), lr=5e-5)
    else:
        lr, betas = (1e-4, (0.0, 0.9)) if model == "wgan_gp" else (2e-4, (0.5, 0.999))
        opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    n_critic = 1 if model == "dcgan" else 5
    g_loss = torch.zeros(())
    for epoch in range(epochs):
        for i, (imgs, _) in enumerate(data):
            if i == limit:
                break
            report.setdefault("first_step_time", time.time())
            if report["batches"] % MARK_EVERY == 0:
                report.setdefault("marks", []).append(time.time())
            z = torch.randn(imgs.size(0), LATENT[model])
            if model == "dcgan":  # dcgan.py: G first, its batch reused (detached) for D
                opt_g.zero_grad()
                fake = generator(z)
                g_loss = F.binary_cross_entropy_with_logits(
                    d_fake := discriminator(fake).view(-1), torch.ones_like(d_fake)
                )
                g_loss.backward()
                opt_g.step()
                opt_d.zero_grad()
                d_real, d_fake = discriminator(imgs).view(-1), discriminator(fake.detach()).view(-1)
                d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                d_loss = d_loss + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                d_loss.backward()
                opt_d.step()
                log_batch(epoch, epochs, i, len(data), d_loss, g_loss)
                report["batches"] += 1
                continue
            opt_d.zero_grad()
            fake = generator(z).detach()
            d_loss = -torch.mean(discriminator(imgs)) + torch.mean(discriminator(fake))
            if model == "wgan_gp":
                d_loss = d_loss + 10.0 * gradient_penalty(discriminator, imgs, fake)
            d_loss.backward()
            opt_d.step()
            if model == "wgan_mlp":
                for p in discriminator.parameters():
                    p.data.clamp_(-0.01, 0.01)
            if i % n_critic == 0:
                opt_g.zero_grad()
                g_loss = -torch.mean(discriminator(generator(z)))
                g_loss.backward()
                opt_g.step()
            log_batch(epoch, epochs, i, len(data), d_loss, g_loss)
            report["batches"] += 1


def train_vae(data, epochs: int, limit: int, report: dict) -> None:
    """pytorch/examples vae: BCE summed per image (averaged over the batch, as genlab's ELBO) + KL, Adam 1e-3,
    here with experiment=vae_mnist's cosine schedule over the epochs."""
    model = build("vae")["vae"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for epoch in range(epochs):
        train_loss = 0.0
        for i, (imgs, _) in enumerate(data):
            if i == limit:
                break
            report.setdefault("first_step_time", time.time())
            if report["batches"] % MARK_EVERY == 0:
                report.setdefault("marks", []).append(time.time())
            optimizer.zero_grad()
            logits, mu, logvar = model(imgs)
            target = (imgs.view(imgs.size(0), -1) + 1) / 2  # [-1, 1] -> [0, 1]
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (bce + kld) / imgs.size(0)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            print(f"Train Epoch: {epoch} [{i}/{len(data)}] Loss: {train_loss / (i + 1):.6f}")
            report["batches"] += 1
        scheduler.step()


def flops_per_batch(model: str, batch_size: int = 64) -> float:
    """Floating-point operations of one training batch (forward and backward, averaged over n_critic batches),
    counted with torch's FLOP formulas (matmuls and convolutions) on random images: with batches/s, what the
    baseline's loop achieves. (FlopCounterMode's module hooks refuse WGAN-GP's autograd.grad.)"""
    import contextlib
    import io

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket in flop_registry:
                self.flops += flop_registry[func._overloadpacket](*args, **(kwargs or {}), out_val=out)
            return out

    images = torch.rand(batch_size, 1, 28, 28) * 2 - 1
    data = [(images, torch.zeros(batch_size, dtype=torch.long))] * 5
    report = {"batches": 0}
    with Count() as count, contextlib.redirect_stdout(io.StringIO()):
        train_vae(data, 1, -1, report) if model == "vae" else train_gan(model, data, 1, -1, report)
    return count.flops / report["batches"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(LATENT))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--root", default="data", help="holds MNIST/raw (the .gz files are enough)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit-batches", type=int, default=-1, help="batches per epoch (-1: all)")
    parser.add_argument("--report", help="write a JSON summary here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    report = {"model": args.model, "batches": 0, "batch_size": args.batch_size, "params": n_params(args.model)}
    data = loader(mnist_root(args.root), args.batch_size)
    if args.model == "vae":
        train_vae(data, args.epochs, args.limit_batches, report)
    else:
        train_gan(args.model, data, args.epochs, args.limit_batches, report)
    report["end_time"] = time.time()
    if args.report:
        Path(args.report).write_text(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
