"""Training speed: genlab against plain-PyTorch baselines (`benchmarks.baseline`) on the same nets, side by side.

    GENLAB_DATA_DIR=../shared/data python -m benchmarks.train_speed [--models ...] [--epochs 2] [--repeats 2]
        [--limit-batches N] [--no-ddp] [--no-doc]

For each model, each repeat runs both sides as fresh processes, alternating which goes first: the baseline
(`python -m benchmarks.baseline <model>`) and genlab (`python -m genlab ...` with its default callbacks, logging
and per-epoch validation and sample-quality evaluation; `test=false report=false`, as the baseline has no test
phase). Wall time runs from process start to exit; peak RSS is each child's own (`os.wait4`). genlab's start-up
is measured to its first training batch by `benchmarks.hooks.BenchTimer`, added on the command line, which also
times checkpoint writing and each callback. The table goes to stdout and between the bench markers of
docs/benchmarks.md.
"""

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import baseline
from benchmarks.bench_report import DOC, render, write_doc

ROOT = Path(__file__).resolve().parents[1]
# genlab overrides that build exactly the baseline's nets and optimiser (parameter counts asserted equal)
GENLAB_MODEL = {
    "wgan_mlp": ["model=wgan_mlp", "model.latent_dim=100", "model.generator.hidden_dims=[128,256,512,1024]"],
    "dcgan": ["model=dcgan_paper", "model.init=null"],
    "wgan_gp": ["model=wgan_gp_paper"],
    "vae": ["experiment=vae_mnist"],
}
MODELS = ", ".join(GENLAB_MODEL)
TITLES = {
    "wgan_mlp": "MLP WGAN (clip)",
    "dcgan": "DCGAN 28 px",
    "wgan_gp": "WGAN-GP (DCGAN nets)",
    "vae": "MLP VAE (vae_mnist)",
}
BATCH = 64
# training batches per epoch on both sides, so that `make bench` fits in 15 minutes on 2 cores: whole epochs are
# 843 (genlab: 54,000 training images after the validation hold-out) and 938 (baseline: 60,000). The MLP WGAN,
# the headline row, runs whole epochs (40 to 75 s a pair). 400 for the DCGAN and the WGAN-GP fitted on session
# 17's VM (12.3 min in all); on session 18's, about 1.8x slower at these loops, they made it about 21 min
LIMITS = {"vae": 300, "dcgan": 200, "wgan_gp": 200}
EPOCH_BATCHES = {"genlab": 54000 // BATCH, "baseline": -(-60000 // BATCH)}


def parse_limits(values: list[str], models: list[str]) -> dict[str, int]:
    """`["dcgan=150", ...]` or `["200"]` (every model) -> {model: batches}."""
    limits = {}
    for value in values:
        model, _, n = value.rpartition("=")
        if model and model not in GENLAB_MODEL or not n.isdigit() or int(n) < 1:
            sys.exit(f"--limit-batches {value} is invalid; expected N or MODEL=N with N >= 1, MODEL one of {MODELS}")
        limits |= {m: int(n) for m in ([model] if model else models)}
    return limits


def run_child(cmd: list[str], env: dict, timer: Path | None = None) -> dict:
    """Runs `cmd` with stdout discarded; wall time from just before the fork, the child's own peak RSS and CPU."""
    with tempfile.TemporaryFile() as log:
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"benchmark child failed ({proc.returncode}): {' '.join(cmd)}\n{log.read().decode()[-3000:]}")
    record = {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime, "start": start}
    if timer is not None:
        record |= json.loads(timer.read_text())
        record["first_step"] = record.pop("first_step_time") - start
    return record


def baseline_cmd(model: str, args, report: Path) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.baseline", model, "--epochs", str(args.epochs), "--root", args.root]
    return cmd + ["--limit-batches", str(args.limits.get(model, -1)), "--report", str(report)]


def genlab_cmd(model: str, args, run_dir: Path, timer: Path, extra: list[str] = ()) -> list[str]:
    """`extra` may replace trainer.max_epochs / trainer.limit_train_batches (the last value of a key wins)."""
    keys = {o.split("=", 1)[0] for o in extra}
    cmd = [sys.executable, "-m", "genlab", *GENLAB_MODEL[model], "data=mnist", f"data.batch_size={BATCH}"]
    cmd += ["test=false", "report=false", f"hydra.run.dir={run_dir}"]
    cmd += ["+callbacks.bench_timer._target_=benchmarks.hooks.BenchTimer", f"+callbacks.bench_timer.path={timer}"]
    if "trainer.max_epochs" not in keys:
        cmd.append(f"trainer.max_epochs={args.epochs}")
    if model in args.limits and "trainer.limit_train_batches" not in keys:
        cmd.append(f"trainer.limit_train_batches={args.limits[model]}")
    return cmd + list(extra)


def genlab_params(model: str) -> list[tuple[int, ...]]:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import genlab  # noqa: F401  (registers the config resolvers)
    from genlab.utils.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*GENLAB_MODEL[model], "data=mnist"])
    return shapes(instantiate(cfg.model).parameters())


def shapes(parameters) -> list[tuple[int, ...]]:
    """The sorted shapes of the trainable parameters: equal lists mean equal layer sizes, not just equal totals."""
    return sorted(tuple(p.shape) for p in parameters if p.requires_grad)


def check_params(models: list[str]) -> dict:
    counts = {}
    for model in models:
        ours = genlab_params(model)
        theirs = shapes(p for net in baseline.build(model).values() for p in net.parameters())
        n_ours, n_theirs = (sum(math.prod(s) for s in x) for x in (ours, theirs))
        print(f"parameters {model}: genlab {n_ours:,}  baseline {n_theirs:,}")
        assert ours == theirs, f"{model}: genlab's parameter shapes {ours} differ from the baseline's {theirs}"
        counts[model] = n_ours
    return counts


def one_pair(model: str, args, env: dict, work: Path, r: int) -> dict:
    """Both sides once, baseline first on even repeats."""
    out = {}
    for side in ("baseline", "genlab") if r % 2 == 0 else ("genlab", "baseline"):
        report = work / f"{model}-{side}-{r}.json"
        if side == "baseline":
            out[side] = rec = run_child(baseline_cmd(model, args, report), env)
            summary = json.loads(report.read_text())
            rec |= {"batches": summary["batches"], "first_step": summary["first_step_time"] - rec["start"]}
            rec["batch_seconds"] = summary["end_time"] - summary["first_step_time"]  # its loop does nothing else
        else:
            run_dir = work / f"{model}-genlab-{r}"
            floor = timed(FLOOR_CMD, env, n=1)  # paired: the machine's speed moves by ±15-25% over a bench
            out[side] = run_child(genlab_cmd(model, args, run_dir, report), env, report)
            out[side]["floor"] = floor
            shutil.rmtree(run_dir, ignore_errors=True)
        rec = out[side]
        print(
            f"  [{r + 1}/{args.repeats}] {model:9s} {side:8s} {rec['wall']:7.1f} s  {rec['batches']:5d} batches  "
            f"{rec['batches'] / rec['wall']:6.2f} batch/s  first step {rec['first_step']:5.1f} s  "
            f"RSS {rec['rss_mb']:6.0f} MB  cpu/wall {rec['cpu'] / rec['wall']:.2f}",
            flush=True,
        )
    return out


# the start-up floor: a process's start to the end of `import lightning.pytorch` (see `startup`)
FLOOR_CMD = [sys.executable, "-c", "import lightning.pytorch, os; os._exit(0)"]


def timed(cmd: list[str], env: dict, n: int = 3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(env: dict) -> dict:
    """The `import lightning.pytorch` floor, `genlab --help` time, and whether --help imports torch.

    The floor is a process's start to the end of that import: it ends in `os._exit(0)`, as the time to a first
    step includes no interpreter teardown (which takes 1.2 to 2 s more with torch loaded: genlab.utils.runner's
    `exit_now`; before session 16 the floor included it)."""
    floor = timed(FLOOR_CMD, env)
    help_time = timed([sys.executable, "-m", "genlab", "--help"], env)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "genlab", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    ).stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if line.startswith("import time:")}
    torch = sorted(m for m in modules if m == "torch" or m.startswith("torch."))
    return {"floor": floor, "help": help_time, "help_imports_torch": bool(torch)}


# `benchmarks.levers --defaults` names the models of this benchmark with a throughput target thus
LEVERS_NAME = {"wgan_mlp": "mlp_wgan", "dcgan": "dcgan", "wgan_gp": "wgan_gp"}


def bare_steps(models: list[str], env: dict, out: Path) -> dict[str, float]:
    """{model: ms per batch} of genlab's nets stepping with its default levers and nothing else (no Lightning,
    data, logging or evaluation: `python -m benchmarks.levers --defaults`), for the ceiling of each row."""
    cmd = [sys.executable, "-m", "benchmarks.levers", "--defaults", "--batches", "200", "--json", str(out)]
    run_child(cmd, env)
    times = json.loads(out.read_text())
    return {model: times[LEVERS_NAME[model]] for model in models if model in LEVERS_NAME}


DDP_MODELS = ("wgan_mlp", "dcgan")  # a step of 5 ms (MLP WGAN) and one of 30 ms (DCGAN)


def ddp(args, env: dict, work: Path, runs: dict) -> dict:
    """genlab on 1 process vs `trainer=ddp_cpu trainer.devices=2`, the same images in total, per image: for the
    models of `DDP_MODELS` that run in this benchmark. The 1-rank figures are the medians of the pairs' genlab
    runs (`runs`), which are that run already. Returns {model: {"1 rank": run, "2 ranks (ddp_cpu)": run}}."""
    out = {}
    for model in (m for m in DDP_MODELS if m in args.models):
        ones = [pair["genlab"] for pair in runs[model]]
        one = {
            "ranks": 1,
            "images": ones[0]["batches"] * BATCH,
            "wall": statistics.median(r["wall"] for r in ones),
            "fit_s": statistics.median(r["fit_end_time"] - r["start"] - r["first_step"] for r in ones),
        }
        two = ["trainer=ddp_cpu", "trainer.devices=2"]
        if model in args.limits:  # each rank runs limit_train_batches: half as many, the same images in all
            two.append(f"trainer.limit_train_batches={args.limits[model] // 2}")
        timer, run_dir = work / f"ddp-{model}.json", work / f"ddp-{model}"
        rec = run_child(genlab_cmd(model, args, run_dir, timer, two), env, timer)
        images = rec["batches"] * BATCH * 2  # rank 0's batches; the sampler shards the data: each rank runs as many
        rec |= {"ranks": 2, "images": images, "fit_s": rec["fit_end_time"] - rec["start"] - rec["first_step"]}
        out[model] = {f"1 rank (median of the {len(ones)} genlab runs above)": one, "2 ranks (ddp_cpu)": rec}
        for name, r in out[model].items():
            print(
                f"  ddp {model} {name}: {r['wall']:.1f} s, {r['images']} images, {1e3 * r['wall'] / r['images']:.2f} "
                f"ms/image, {1e3 * r['fit_s'] / r['images']:.3f} from the first step",
                flush=True,
            )
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


def machine() -> dict:
    import lightning
    import torch

    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = "+".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX2"
    mhz = float(fields.get("cpu MHz", "nan"))
    cores = len(os.sched_getaffinity(0))
    return {
        "cpu": fields.get("model name", platform.processor() or "?"),
        "cpu_detail": f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {simd}",
        "mhz": mhz,
        "peak_gflops": cores * 32 * mhz / 1000,  # two 256-bit FMA pipes: 16 FP32 FMAs per cycle (AVX2 / Zen 4)
        "cores": cores,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_start": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(GENLAB_MODEL), choices=list(GENLAB_MODEL))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two sides")
    parser.add_argument(
        "--limit-batches",
        nargs="*",
        default=[f"{m}={n}" for m, n in LIMITS.items()],
        metavar="MODEL=N",
        help=f"training batches per epoch on both sides, per model (default: {LIMITS}); none given: whole epochs",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["passive", "active", "default"],
        default=os.environ.get("OMP_WAIT_POLICY", "default").lower(),
        help="OMP_WAIT_POLICY of both sides' processes (default: unset, libgomp's own policy, as users run; passive "
        "for cores shared with other processes, where spin-waiting OpenMP threads made the baseline up to 10x "
        "slower, at the price of slower small parallel ops such as BatchNorm on both sides)",
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the 1- vs 2-rank CPU DDP comparison")
    parser.add_argument("--no-doc", action="store_true", help=f"print only; do not rewrite {DOC}")
    parser.add_argument(
        "--section",
        choices=["bench", "epochs"],
        default="bench",
        help=f"the part of {DOC} to rewrite: make bench's (default) or make bench-epochs' (whole epochs)",
    )
    args = parser.parse_args()
    args.limits = parse_limits(args.limit_batches, args.models)
    data_dir = os.environ.get("GENLAB_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "MNIST" / "raw").is_dir():
        sys.exit(f"GENLAB_DATA_DIR={data_dir!r} holds no MNIST/raw; set it to the folder holding MNIST (real data)")
    args.root = str(Path(baseline.mnist_root(data_dir)).resolve())
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    info = machine() | {"epochs": args.epochs, "repeats": args.repeats, "limits": args.limits}
    info["omp_wait_policy"] = env.get("OMP_WAIT_POLICY", "unset (libgomp default)")
    info["epoch_batches"] = EPOCH_BATCHES
    info["flops"] = {model: baseline.flops_per_batch(model) for model in args.models}
    info["params"] = check_params(args.models)
    work = Path(tempfile.mkdtemp(prefix="genlab-bench-", dir=ROOT / "outputs" / "bench"))
    start = time.time()
    # fills the shared cache (dataset classifier, reference features) so that no timed run trains it
    prep = run_child(genlab_cmd(args.models[0], args, work / "prep", work / "prep.json", _prep()), env)
    print(f"cache warm-up run: {prep['wall']:.1f} s (not timed)", flush=True)
    runs = {model: [] for model in args.models}
    bare = []
    for r in range(args.repeats):
        for model in args.models:
            runs[model].append(one_pair(model, args, env, work, r))
        bare.append(bare_steps(args.models, env, work / f"bare-{r}.json"))
    info["bare_ms"] = {model: statistics.median(b[model] for b in bare) for model in bare[0]}
    info["startup"] = startup(env)
    info["ddp"] = None if args.no_ddp else ddp(args, env, work, runs)
    info["total_s"], info["load_end"] = time.time() - start, os.getloadavg()[0]
    (work / "results.json").write_text(json.dumps({"info": info, "runs": runs}, indent=1))
    text = render(info, runs, TITLES, sys.argv[1:])
    print(text)
    if not args.no_doc:
        write_doc(ROOT / DOC, text, epochs=args.section == "epochs")
        print(f"wrote {DOC} (raw results: {work / 'results.json'})")


def _prep() -> list[str]:
    return ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2"]


if __name__ == "__main__":
    main()
