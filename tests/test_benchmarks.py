"""The training-speed benchmark's own parts: the baselines train the nets genlab builds, the timing callback
measures a genlab run, and the docs rewrite keeps the hand-written text."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import baseline
from benchmarks.bench_report import BEGIN, END, EPOCHS_BEGIN, EPOCHS_END, EPOCHS_HEAD, write_doc
from benchmarks.train_speed import GENLAB_MODEL, genlab_params, shapes
from tests.data_fixtures import write_mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", list(GENLAB_MODEL))
def test_baseline_nets_have_the_layer_shapes_of_genlab_nets(model):
    ours = genlab_params(model)
    theirs = shapes(p for net in baseline.build(model).values() for p in net.parameters())
    assert ours == theirs
    assert sum(math.prod(shape) for shape in ours) == baseline.n_params(model)


@pytest.mark.parametrize("model", list(GENLAB_MODEL))
def test_baseline_loop_trains_every_batch_and_reports(tmp_path, model, capsys):
    write_mnist(tmp_path, n_train=200, gz=False)  # 4 batches of 64 per epoch, the last of 8
    report = tmp_path / "report.json"
    argv = [model, "--epochs", "2", "--limit-batches", "3", "--root", str(tmp_path), "--report", str(report)]
    baseline.main(argv)
    summary = json.loads(report.read_text())
    assert summary["batches"] == 6 and summary["params"] == baseline.n_params(model)
    assert summary["first_step_time"] < summary["end_time"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("nan" not in line for line in lines)  # one print per batch


def test_mnist_root_extracts_a_gz_only_root_into_scratch(tmp_path):
    arrays = write_mnist(tmp_path / "data", n_train=10, n_test=4, gz=True)
    root = baseline.mnist_root(str(tmp_path / "data"), str(tmp_path / "scratch"))
    assert root == str(tmp_path / "scratch")
    from torchvision.datasets import MNIST

    dataset = MNIST(root, train=True, download=False)
    assert len(dataset) == 10 and (dataset.data.numpy() == arrays["train_images"]).all()
    assert baseline.mnist_root(root, str(tmp_path / "other")) == root  # already extracted: used as it is


def test_bench_timer_records_first_step_batches_and_checkpoint_time(tmp_path):
    timer, run_dir = tmp_path / "timer.json", tmp_path / "run"
    cmd = [sys.executable, "-m", "genlab", "model=wgan", "debug=fast", "callbacks.progress_bar.refresh_rate=0"]
    cmd += [f"hydra.run.dir={run_dir}", "test=false", "report=false"]
    cmd += ["+callbacks.bench_timer._target_=benchmarks.hooks.BenchTimer", f"+callbacks.bench_timer.path={timer}"]
    env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(timer.read_text())
    assert record["batches"] == 6  # debug=fast: one epoch of 6 batches
    fit = record["fit_end_time"] - record["first_step_time"]
    assert 0 < record["batch_seconds"] < fit and 0 < record["validation_seconds"] < fit
    assert record["checkpoints"] >= 2 and 0 < record["checkpoint_seconds"] < fit  # best and last
    assert record["callback_seconds"]["SampleQuality"] > 0


def test_write_doc_replaces_only_the_text_between_the_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\nhand-written\n\n{BEGIN}\nold table\n{END}\n\n## Profile\nlead's text\n")
    write_doc(doc, "new table\n")
    write_doc(doc, "newer table\n")
    assert doc.read_text() == f"# Title\nhand-written\n\n{BEGIN}\nnewer table\n{END}\n\n## Profile\nlead's text\n"


def test_write_doc_keeps_make_bench_epochs_own_section_apart(tmp_path):
    """make bench-epochs adds its markers after make bench's the first time, then rewrites only its own part."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n{BEGIN}\nbench table\n{END}\n\n## Profile\ntext\n")
    write_doc(doc, "epochs table\n", epochs=True)
    write_doc(doc, "newer epochs table\n", epochs=True)
    write_doc(doc, "newer bench table\n")
    epochs = f"{EPOCHS_HEAD}\n\n{EPOCHS_BEGIN}\nnewer epochs table\n{EPOCHS_END}"
    assert doc.read_text() == f"# Title\n{BEGIN}\nnewer bench table\n{END}\n\n{epochs}\n\n## Profile\ntext\n"


def test_quality_row_trains_evaluates_and_summarises_seeds(tmp_path, monkeypatch, capsys):
    """benchmarks/quality.py: each seed is trained once into <root>/<name>/seed_<S> and evaluated; a second call
    evaluates the existing run again instead of retraining; mean ± std over the seeds; a failing step names its log."""
    from benchmarks import quality

    calls = []

    def fake_call(cmd, stdout, stderr):
        calls.append(cmd)
        run_dir = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith(("hydra.run.dir=", "run_dir="))))
        if "genlab.evaluate" in cmd:
            seed = int(run_dir.name.split("_")[1])
            m = {"eval/cis": 8.0 + seed / 100, "eval/cfid": 4.0, "eval/modes": 10.0, "eval/class_kl": 0.01}
            m["eval/protocol"] = {"checkpoint": str(run_dir / "checkpoints" / "best-epoch001.ckpt"), "n_samples": 10}
            (run_dir / "metrics.json").write_text(json.dumps(m))
        else:
            (run_dir / "checkpoints").mkdir(parents=True)
            (run_dir / "checkpoints" / "best.json").write_text("{}")
        return 0

    monkeypatch.setattr(quality.subprocess, "call", fake_call)
    argv = ["quality", "--name", "r", "--seeds", "1,3", "--root", str(tmp_path), "--log", str(tmp_path / "l.jsonl")]
    monkeypatch.setattr(sys, "argv", [*argv, "model=wgan"])
    quality.main()
    out = capsys.readouterr().out
    assert "cis 8.02 ± 0.01" in out and "cfid 4.00 ± 0.00" in out
    assert sum("genlab.evaluate" not in c for c in calls) == 2 and ["seed=1" in c for c in calls].count(True) == 1
    quality.main()  # the runs exist: evaluated again, not retrained
    assert sum("genlab.evaluate" not in c for c in calls) == 2 and len(calls) == 6
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 4
    monkeypatch.setattr(sys, "argv", [*argv, "--evaluate", "metrics.iwae_k=1000", "model=wgan"])
    quality.main()  # overrides for evaluate reach evaluate only, and the record says so
    assert all("metrics.iwae_k=1000" in c for c in calls[-2:]) and "metrics.iwae_k=1000" not in calls[0]
    last = json.loads((tmp_path / "l.jsonl").read_text().splitlines()[-1])
    assert last["evaluate_overrides"] == ["metrics.iwae_k=1000"]
    monkeypatch.setattr(sys, "argv", [*argv, "model=wgan"])
    monkeypatch.setattr(quality.subprocess, "call", lambda cmd, stdout, stderr: 3)
    with pytest.raises(SystemExit, match=r"exited 3; see .*seed_1.evaluate.log"):
        quality.main()


def test_memory_probe_reports_highs_with_their_stack_and_the_exit(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "benchmarks.memory", "--above", "100", "--", "debug=fast", "model=gan_base"]
    cmd += ["data=digits", "test=false", f"hydra.run.dir={out}", "logger=[]"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[memory]")]
    assert any("genlab/" in line for line in lines[:-1]), lines  # a high inside genlab, with its frames
    assert lines[-1].startswith("[memory] at exit: {'VmHWM'") and (out / "checkpoints" / "last.ckpt").is_file()


def test_where_time_goes_splits_a_profile_and_lists_the_frames_inside_training_batches(tmp_path):
    from benchmarks.where_time_goes import leaves, shares

    batch = "main;fit;_TrainingEpochLoop.advance;run_training_batch"
    raw = tmp_path / "run.txt"
    raw.write_text(
        f"main;_find_and_load;x 30\n{batch};manual_backward;_engine_run_backward (graph.py:1) 50\n"
        f"{batch};discriminator_loss;Linear.forward (linear.py:1) 15\nmain;fit;save_checkpoint;w 5\n"
    )
    parts, total = shares(str(raw))
    assert total == 100 and parts["start-up: imports"] == 30 and parts["train: backward"] == 50
    frames, inside = leaves(str(raw))
    assert inside == 65
    assert frames == [
        ("_engine_run_backward (graph.py:1)", 100 * 50 / 65),
        ("Linear.forward (linear.py:1)", 100 * 15 / 65),
    ]


def _run(batches: int, batch_s: float, wall: float, validation: float = 0.0) -> dict:
    return {"batches": batches, "batch_seconds": batch_s, "wall": wall, "validation_seconds": validation}


def test_ceiling_is_the_import_floor_plus_the_bare_steps_against_the_baseline():
    """floor 5 s + 1,000 bare steps of 10 ms = 15 s for 1,000 batches (66.7 batch/s); the baseline's 1,000 batches
    in 25 s (40 batch/s): a ceiling of 1.67x, and 1.33x with genlab's 3.75 s of evaluation added. A bare step
    slower than genlab's own (12 ms) gives way to it: 5 + 12 = 17 s, 1.47x."""
    from benchmarks.bench_report import ceiling_table

    pair = {"genlab": _run(1000, 12.0, 20.0, validation=3.75), "baseline": _run(1000, 22.0, 25.0)}
    info = {"bare_ms": {"wgan_mlp": 10.0}, "startup": {"floor": 5.0}}
    rows = ceiling_table({"wgan_mlp": [pair, pair]}, info, {"wgan_mlp": "MLP WGAN"})
    assert rows[2] == "| MLP WGAN | 10.00 | 12.00 | 22.00 | **1.67×** | 1.33× | 1.25× | 2.0× |"
    info["bare_ms"]["wgan_mlp"] = 14.0  # slower alone than inside genlab's run (12 ms): the run's time counts
    rows = ceiling_table({"wgan_mlp": [pair, pair]}, info, {"wgan_mlp": "MLP WGAN"})
    assert rows[2] == "| MLP WGAN | 14.00 | 12.00 | 22.00 | **1.47×** | 1.20× | 1.25× | 2.0× |"
    assert ceiling_table({}, {"bare_ms": {}}, {}) == []  # no row with a throughput target in the run
    paired = {side: dict(run, floor=4.0) for side, run in pair.items()}  # each run's own floor wins: 4 + 12 = 16 s
    rows = ceiling_table({"wgan_mlp": [paired, paired]}, info, {"wgan_mlp": "MLP WGAN"})
    assert rows[2] == "| MLP WGAN | 14.00 | 12.00 | 22.00 | **1.56×** | 1.27× | 1.25× | 2.0× |"


def test_startup_beyond_the_floor_pairs_each_run_with_the_floor_timed_before_it():
    """Runs at 6.0, 7.0 and 9.0 s with floors of 5.0, 5.5 and 7.0 s: 1.0, 1.5 and 2.0 beyond, median 1.5. Against
    the one floor after the pairs (4.0 s) the median first step (7.0 s) would be 3.0 beyond."""
    from benchmarks.bench_report import startup_lines

    runs = {"m": [{"genlab": {"first_step": t, "floor": f}} for t, f in ((6.0, 5.0), (7.0, 5.5), (9.0, 7.0))]}
    info = {"startup": {"floor": 4.0, "help": 1.0, "help_imports_torch": False}}
    text = "\n".join(startup_lines(info, runs))
    assert "| **1.50**; 1.00 to 2.00 |" in text and "| 5.50 |" in text
    for run in runs["m"]:
        del run["genlab"]["floor"]  # an older results.json: the floor after the pairs
    assert "| **beyond the floor** | **3.00** |" in "\n".join(startup_lines(info, runs))


def test_levers_wgan_gp_step_trains_both_players_and_defaults_follow_native_bf16(monkeypatch):
    import torch

    from benchmarks import levers

    params = []
    real_build = levers.wgan_gp

    def spy(variant):
        step = real_build(variant)
        nets = [c.cell_contents for c in step.__closure__ if isinstance(c.cell_contents, torch.nn.Module)]
        params.append([torch.cat([p.detach().flatten() for p in net.parameters()]) for net in nets])
        params.append(nets)
        return step

    step = spy({"channels_last", "joint"})
    for i in range(5):  # 5 critic steps, then G's
        step(i)
    before, nets = params
    after = [torch.cat([p.detach().flatten() for p in net.parameters()]) for net in nets]
    assert len(nets) == 2 and all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # G and D

    seen = []
    monkeypatch.setattr(levers, "native_bf16", lambda device: False)
    monkeypatch.setattr(levers, "measure", lambda step, batches: (0.0, float(batches)))
    for model in levers.DEFAULTS:
        monkeypatch.setitem(levers.BUILD, model, lambda variant, m=model: seen.append((m, variant)))
    assert levers.defaults(200) == {"mlp_wgan": 200.0, "dcgan": 20.0, "wgan_gp": 20.0}
    assert seen and all("bf16" not in variant for _, variant in seen)


def test_levers_g_step_computes_no_weight_gradients_for_d():
    """As Lightning's toggle_optimizer in genlab: D is frozen in G's step, and trainable again after it."""
    import torch

    from benchmarks import levers

    class Critic(torch.nn.Linear):  # returns a tuple, as genlab's DiscriminatorHeads
        def forward(self, x):
            return (super().forward(x),)

    g, d = torch.nn.Linear(100, 784), Critic(784, 1)
    before = g.weight.detach().clone()
    levers.wasserstein_g_step(g, d, torch.optim.SGD(g.parameters(), lr=0.1), bf16=False)
    assert all(p.grad is None and p.requires_grad for p in d.parameters())
    assert g.weight.grad is not None and not torch.equal(g.weight, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--json", "t.json"], "needs --defaults"), (["--defaults", "--json", "no_dir/t.json"], "does not exist")],
)
def test_levers_refuses_a_json_path_it_cannot_use(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.levers", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and message in proc.stderr
