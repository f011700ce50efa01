"""The tables of `benchmarks.train_speed`: markdown for stdout and for docs/benchmarks.md (between the markers)."""

import statistics
from pathlib import Path

DOC = "docs/benchmarks.md"
BATCH = 64
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# `make bench-epochs`' own part of the page, after make bench's: its tables replace only what is between these
EPOCHS_BEGIN, EPOCHS_END = "<!-- bench-epochs:begin -->", "<!-- bench-epochs:end -->"
EPOCHS_HEAD = "### Whole epochs: `make bench-epochs`"
TEMPLATE = f"""# Benchmarks

`make bench` (about 15 minutes on 2 cores) trains the same nets with genlab and with plain-PyTorch baselines
written the way the popular single-file scripts are (`benchmarks/baseline.py`), side by side, and rewrites the
part of this page between the bench markers; `make bench-quick` runs one alternation. The harness is
`benchmarks/train_speed.py`; `benchmarks/hooks.py` times genlab's first step, checkpoints and callbacks.

{BEGIN}
{END}

## Profile and levers

<!-- profile: where the time goes before and after, and the levers tried (written by hand, kept by the harness) -->
"""


def med(values) -> float:
    return statistics.median(values)


def rate(rec: dict) -> float:
    return rec["batches"] / rec["wall"]


def projected(pair: dict, epochs: int, epoch_batches: dict) -> float:
    """The throughput ratio for whole epochs: each side's time outside its batches (start-up, per-epoch work,
    exit) kept, its time per batch scaled to a whole epoch's batches."""
    time = {
        side: rec["wall"] - rec["batch_seconds"] + epochs * epoch_batches[side] * rec["batch_seconds"] / rec["batches"]
        for side, rec in pair.items()
    }
    return (epoch_batches["genlab"] / time["genlab"]) / (epoch_batches["baseline"] / time["baseline"])


def speed_table(runs: dict, info: dict, titles: dict) -> list[str]:
    rows = [
        "| model | parameters (both) | batches per epoch | baseline batch/s | genlab batch/s "
        "| **throughput ratio** (pairs) | projected for whole epochs | baseline img/s (GFLOP/s) | genlab img/s "
        "| baseline RSS MB | genlab RSS MB | **RSS ratio** |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, pairs in runs.items():
        b, g = med(rate(p["baseline"]) for p in pairs), med(rate(p["genlab"]) for p in pairs)
        rb, rg = med(p["baseline"]["rss_mb"] for p in pairs), med(p["genlab"]["rss_mb"] for p in pairs)
        each = ", ".join(f"{rate(p['genlab']) / rate(p['baseline']):.2f}" for p in pairs)
        limit = info["limits"].get(model)
        whole = med(projected(p, info["epochs"], info["epoch_batches"]) for p in pairs)
        rows.append(
            f"| {titles[model]} | {info['params'][model]:,} | {limit or 'all'} | {b:.2f} | {g:.2f} "
            f"| **{g / b:.2f}×** ({each}) | {f'{whole:.2f}×' if limit else '–'} "
            f"| {b * BATCH:.0f} ({b * info['flops'][model] / 1e9:.3g}) | {g * BATCH:.0f} | {rb:.0f} | {rg:.0f} "
            f"| **{rg / rb:.2f}×** |"
        )
    return rows


def cost_table(runs: dict, titles: dict, epochs: int) -> list[str]:
    rows = [
        "| model | genlab wall s | batches (genlab / baseline) | first step s (genlab / baseline) "
        "| genlab s per epoch outside batches | validation share | **checkpoint share** (writes) "
        "| slowest callbacks (s) | cpu/wall (genlab / baseline) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, pairs in runs.items():
        gs, bs = [p["genlab"] for p in pairs], [p["baseline"] for p in pairs]
        wall = med(r["wall"] for r in gs)
        names = gs[0]["callback_seconds"]
        slow = sorted(names, key=lambda n: -med(r["callback_seconds"].get(n, 0.0) for r in gs))[:3]
        slowest = ", ".join(f"{n} {med(r['callback_seconds'].get(n, 0.0) for r in gs):.1f}" for n in slow)
        outside = med((r["fit_end_time"] - r["start"] - r["first_step"] - r["batch_seconds"]) / epochs for r in gs)
        rows.append(
            f"| {titles[model]} | {wall:.1f} | {gs[0]['batches']} / {bs[0]['batches']} "
            f"| {med(r['first_step'] for r in gs):.1f} / {med(r['first_step'] for r in bs):.1f} | {outside:.1f} "
            f"| {100 * med(r['validation_seconds'] / r['wall'] for r in gs):.1f} % "
            f"| **{100 * med(r['checkpoint_seconds'] / r['wall'] for r in gs):.1f} %** ({gs[0]['checkpoints']}) "
            f"| {slowest} | {med(r['cpu'] / r['wall'] for r in gs):.2f} / {med(r['cpu'] / r['wall'] for r in bs):.2f} |"
        )
    return rows


TARGETS = {"wgan_mlp": 2.0, "dcgan": 1.5, "wgan_gp": 1.5}


def ceiling_table(runs: dict, info: dict, titles: dict) -> list[str]:
    """What a run on Lightning could reach at best in these windows: its import (the floor of the start-up
    table) and then genlab's steps at the faster of their bare time and their time inside genlab's runs, with
    nothing else; then with genlab's per-epoch evaluation (validation and sample quality) added. The floor is the
    median of those timed just before the model's genlab runs (an older results.json: the one after the pairs)."""
    if not info.get("bare_ms"):
        return []
    rows = [
        "| model | bare step ms | genlab ms per batch (in the run) | baseline ms per batch | **ceiling**: import floor "
        "+ steps | ceiling + genlab's validation and sample quality | measured | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, bare in info["bare_ms"].items():
        pairs = runs[model]
        gs, bs = [p["genlab"] for p in pairs], [p["baseline"] for p in pairs]
        batches, base_rate = gs[0]["batches"], med(rate(r) for r in bs)
        floor = med(r["floor"] for r in gs) if all("floor" in r for r in gs) else info["startup"]["floor"]
        in_run = med(1e3 * r["batch_seconds"] / r["batches"] for r in gs)
        ideal = floor + batches * min(bare, in_run) / 1e3  # the faster of the two: genlab's own time is possible too
        evaluated = ideal + med(r["validation_seconds"] for r in gs)
        rows.append(
            f"| {titles[model]} | {bare:.2f} | {in_run:.2f} "
            f"| {med(1e3 * r['batch_seconds'] / r['batches'] for r in bs):.2f} "
            f"| **{batches / ideal / base_rate:.2f}×** | {batches / evaluated / base_rate:.2f}× "
            f"| {med(rate(r) for r in gs) / base_rate:.2f}× | {TARGETS[model]:.1f}× |"
        )
    return rows


def startup_lines(info: dict, runs: dict) -> list[str]:
    """The start-up table. Since session 21 each genlab run has its own floor, timed just before it: the target's
    figure is the median over the runs of (first step - that floor). The floor after the pairs stays for
    reference (and is the only one in an older results.json)."""
    s = info["startup"]
    genlab = [p["genlab"] for pairs in runs.values() for p in pairs]
    first = med(g["first_step"] for g in genlab)
    lines = [
        "| start-up | seconds |",
        "|---|---|",
        f"| `python -c 'import lightning.pytorch, os; os._exit(0)'` (the floor: start to the end of the import, "
        f"median of 3 after the pairs) | {s['floor']:.2f} |",
        f"| `python -m genlab ...` start to its first training batch (median of all genlab runs above) | {first:.2f} |",
    ]
    if all("floor" in g for g in genlab):
        beyond = [g["first_step"] - g["floor"] for g in genlab]
        lines += [
            f"| the floor timed just before each genlab run (median) | {med(g['floor'] for g in genlab):.2f} |",
            f"| **beyond the floor**: median over the genlab runs of (first step − the floor just before it); "
            f"range | **{med(beyond):.2f}**; {min(beyond):.2f} to {max(beyond):.2f} |",
        ]
    else:
        lines.append(f"| **beyond the floor** | **{first - s['floor']:.2f}** |")
    return lines + [
        f"| `python -m genlab --help` (median of 3) | {s['help']:.2f} |",
        f"| `--help` imports torch (`-X importtime`) | {'**yes**' if s['help_imports_torch'] else 'no'} |",
    ]


def ddp_lines(ddp: dict, titles: dict) -> list[str]:
    rows = [
        "| genlab | ranks | images | wall s | ms/image (wall) | ms/image (first step to end of fit) |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for model, pair in ddp.items():
        for name, r in pair.items():
            rows.append(
                f"| {titles.get(model, model)}, {name} | {r['ranks']} | {r['images']:,} | {r['wall']:.1f} "
                f"| {1e3 * r['wall'] / r['images']:.3f} | {1e3 * r['fit_s'] / r['images']:.3f} |"
            )
        one, two = pair.values()
        wall = (two["wall"] / two["images"]) / (one["wall"] / one["images"])
        fit = (two["fit_s"] / two["images"]) / (one["fit_s"] / one["images"])
        ratios.append(f"{titles.get(model, model)} **{wall:.2f}×** wall, **{fit:.2f}×** from the first step")
    rows.append(f"\n2 ranks / 1 rank, time per image: {'; '.join(ratios)}")
    return rows


def render(info: dict, runs: dict, titles: dict, argv: list[str]) -> str:
    contended = info["load_start"] > 0.5 * info["cores"] or info["load_end"] > 1.5 * info["cores"]
    limit = (
        f" ({', '.join(f'{m}: {n}' for m, n in info['limits'].items() if m in runs)} training batches per epoch on "
        f"both sides, of {info['epoch_batches']['genlab']} (genlab) and {info['epoch_batches']['baseline']} "
        "(baseline) in a whole epoch)"
        if info["limits"]
        else " (whole epochs)"
    )
    lines = [
        f"Machine: {info['cpu']} ({info['cpu_detail']}), {info['cores']} cores; Python {info['python']}, "
        f"torch {info['torch']} ({info['threads']} threads by default), Lightning {info['lightning']}. "
        f"Load average (1 min) {info['load_start']:.2f} at the start, {info['load_end']:.2f} at the end"
        + (
            ": **measured under contention from other processes; the figures are indicative only**."
            if contended
            else "."
        ),
        "",
        f"Each run: {info['epochs']} epochs of real MNIST{limit}, batch 64, start-up included; "
        f"{info['repeats']} alternations of the two sides, medians (the per-pair ratios in brackets); "
        f"OMP_WAIT_POLICY {info.get('omp_wait_policy', '?')} on both sides. "
        f"Whole benchmark: {info['total_s'] / 60:.1f} min. "
        f"Command: `python -m benchmarks.train_speed {' '.join(argv)}`.",
        "",
        *speed_table(runs, info, titles),
        "",
        "batch/s: training batches (a GAN's batch is one D step, with a G step every n_critic batches) over the "
        "process's whole wall time, start-up included; img/s = 64 batch/s. GFLOP/s: the baseline's matmul and "
        "convolution FLOPs per batch (`benchmarks.baseline.flops_per_batch`) times its batch/s, against the "
        f"machine's FP32 peak of about {info['peak_gflops']:.0f} GFLOP/s ({info['cores']} cores x 32 FLOP/cycle "
        f"x {info['mhz'] / 1000:.2f} GHz). Projected for whole epochs: each side's time outside its batches "
        "(start-up, genlab's per-epoch validation, sample quality and checkpoints, exit) as measured, its time per "
        "batch scaled to whole epochs; a short epoch makes genlab's per-epoch work weigh more than in a real run.",
        "",
        "Where genlab's time goes (measured inside the run by `benchmarks/hooks.py`; callbacks' seconds include the "
        "checkpoint writes they make):",
        "",
        *cost_table(runs, titles, info["epochs"]),
        "",
        *startup_lines(info, runs),
    ]
    ceiling = ceiling_table(runs, info, titles)
    if ceiling:
        lines += [
            "",
            "The ceiling of each target in these windows: a run on Lightning that cost nothing but the import above "
            "(its floor) and then the training steps of genlab's nets with its default levers at the faster of two "
            "times: the bare step, timed alone in this benchmark (`python -m benchmarks.levers --defaults`: no "
            "Lightning, data, logging or evaluation; the median over the alternations), and genlab's own time per "
            "batch in its runs above. As a throughput ratio to the baseline's median; then with the "
            "validation and sample quality of genlab's runs (their median seconds) added. A target above the "
            "ceiling cannot be met in these windows on this machine by any framework built on Lightning:",
            "",
            *ceiling,
        ]
    if info.get("ddp"):
        lines += ["", *ddp_lines(info["ddp"], titles)]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, text: str, epochs: bool = False) -> None:
    """Replaces what is between make bench's markers (`epochs`: make bench-epochs' markers, which are added after
    make bench's part the first time) with `text`; the rest of the page is kept."""
    doc = path.read_text() if path.is_file() else TEMPLATE
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    begin, end = BEGIN, END
    if epochs:
        if EPOCHS_BEGIN not in doc or EPOCHS_END not in doc:
            doc = doc.replace(END, f"{END}\n\n{EPOCHS_HEAD}\n\n{EPOCHS_BEGIN}\n{EPOCHS_END}", 1)
        begin, end = EPOCHS_BEGIN, EPOCHS_END
    head, rest = doc.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{rest.split(end, 1)[1]}")
