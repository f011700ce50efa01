"""Run reports, the sweep summary, the leaderboard and W&B's offline files, from a real 2-job multirun on digits
(`debug=fast`) whose second job diverges inside training (lr=1e30): one ok job, one failed."""

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genlab.reports.collect import pictures
from genlab.reports.run import write_run_report
from genlab.reports.sweep import write_sweep_summary
from tests.test_cli import FAST, genlab
from tests.wandb_records import summarize

DIVERGES = "training diverged at step 1"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reports")
    sweep = tmp / "sweep"
    env = {"HOME": str(tmp), "WANDB_MODE": "", "WANDB_DIR": "", "WANDB_SILENT": "true"}
    overrides = ["model=vae", "model.lr=1e-3,1e30", "logger=[csv,wandb]", *FAST, f"hydra.sweep.dir={sweep}"]
    proc = genlab(tmp, "-m", *overrides, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the second job failed, the sweep went on
    assert f"Sweep summary: {sweep / 'summary.html'}" in proc.stdout, proc.stdout[-2000:]
    return sweep


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def embedded_pictures(page: Path) -> list[Image.Image]:
    """Every <img> of the page, decoded from its data URI (fails on a link or a broken image)."""
    parser = Images()
    parser.feed(page.read_text())
    images = []
    for src in parser.srcs:
        head, _, data = src.partition(",")
        assert head in ("data:image/png;base64", "data:image/gif;base64"), head[:80]
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        images.append(image)
    return images


def not_blank(image: Image.Image) -> bool:
    return np.asarray(image.convert("L")).std() > 1


def test_every_job_leaves_its_status(sweep):
    assert json.loads((sweep / "0" / "status.json").read_text()) == {"status": "ok", "error": ""}
    failed = json.loads((sweep / "1" / "status.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith(DIVERGES) and "\n" not in failed["error"]


def test_sweep_summary_has_one_row_per_job_with_status_and_metrics(sweep):
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"], r["model.lr"]) for r in rows] == [("0", "ok", "0.001"), ("1", "failed", "1e+30")]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert float(rows[0]["test/nelbo"]) == pytest.approx(metrics["test/nelbo"])
    best = json.loads((sweep / "0" / "checkpoints" / "best.json").read_text())
    assert float(rows[0]["best/val/nelbo"]) == pytest.approx(best["score"])
    assert rows[1]["error"].startswith(DIVERGES) and rows[1]["test/nelbo"] == ""
    markdown = (sweep / "summary.md").read_text()
    assert "| 1 | failed | 1e+30 |" in markdown and "model.lr=1e-3,1e30" in markdown


def test_sweep_summary_plots_the_metrics_against_the_swept_value_and_shows_the_samples(sweep):
    plot, samples = sweep / "summary_plots" / "model.lr.png", sweep / "summary_plots" / "samples.png"
    for path in (plot, samples):
        with Image.open(path) as image:
            assert image.width >= 300 and not_blank(image)
    pictures = embedded_pictures(sweep / "summary.html")
    assert len(pictures) == 2 and all(not_blank(p) for p in pictures)


def test_run_report_embeds_every_picture_of_the_run(sweep):
    run = sweep / "0"
    expected = [f for _, files in pictures(run) for f in files]
    assert {f.parent.name for f in expected} >= {"samples", "reconstructions"}
    embedded = embedded_pictures(run / "report.html")
    assert sorted(p.size for p in embedded) == sorted(Image.open(p).size for p in expected)
    assert all(not_blank(p) for p in embedded)
    page = (run / "report.html").read_text()
    assert 'src="samples/' not in page and "<link" not in page and "<script" not in page
    markdown = (run / "report.md").read_text()
    assert "python -m genlab model=vae model.lr=0.001" in markdown
    assert "`best` is `checkpoints/best-epoch000.ckpt`: val/nelbo" in markdown
    assert str(run / "checkpoints" / "last.ckpt") in markdown and "<summary>Resolved config</summary>" in markdown
    assert "![epoch_000](reconstructions/epoch_000.png)" in markdown


def noise_picture(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_run_report_shows_the_latest_grid_and_the_final_end_of_run_pictures(sweep, tmp_path):
    run = tmp_path / "run"
    # the run's own end-of-run pictures are left out: the ones below, of known sizes, stand in for them
    skip = shutil.ignore_patterns("*.ckpt", "wandb", "curves", "latent", "codebook", "*.gif")
    shutil.copytree(sweep / "0", run, ignore=skip)
    sizes = {  # picture -> (size, whether the report shows it)
        "samples/epoch_001.png": ((31, 31), True),  # the latest grid, not epoch_000
        "samples/progress.gif": ((32, 32), True),
        "curves/losses.png": ((33, 33), True),
        "latent/tsne.png": ((34, 34), True),
        "latent/tsne_epoch_000.png": ((35, 35), False),  # a per-epoch copy of a picture drawn at the end
        "latent/traversal_epoch_002.png": ((36, 36), True),  # only per-epoch copies: the latest
        "latent/traversal_epoch_001.png": ((37, 37), False),
        "codebook/usage.png": ((38, 38), True),
    }
    for name, (size, _) in sizes.items():
        noise_picture(run / name, size)
    shown = {size for size, show in sizes.values() if show} | {Image.open(run / "reconstructions/epoch_000.png").size}
    assert {p.size for p in embedded_pictures(write_run_report(run))} == shown


def test_report_cli_rewrites_a_run_report_and_a_sweep_summary(sweep, tmp_path):
    (sweep / "0" / "report.html").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "genlab.report", f"run_dir={sweep / '0'}", f"hydra.run.dir={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"genlab.report: {sweep / '0' / 'report.html'}" in proc.stdout
    assert len(embedded_pictures(sweep / "0" / "report.html")) >= 2
    assert write_sweep_summary(sweep) == sweep / "summary.html"


def test_leaderboard_lists_every_run_under_a_folder(sweep, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "genlab.report", str(sweep), f"hydra.run.dir={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert lines[header].split()[:4] == ["run", "model", "data", "status"] and "test/nelbo" in lines[header]
    assert [line.split()[:4] for line in lines[header + 2 : header + 4]] == [
        ["0", "vae", "digits", "ok"],
        ["1", "vae", "digits", "failed"],
    ]
    page = (sweep / "leaderboard.html").read_text()
    assert page.count("<tr>") + page.count("<tr class=failed>") == 3 and 'class="sortable"' in page
    assert "addEventListener('click'" in page


def test_wandb_runs_are_grouped_by_sweep_named_by_overrides_and_a_failed_one_marked(sweep):
    runs = [summarize(next((sweep / job / "wandb").glob("offline-run-*/run-*.wandb"))) for job in ("0", "1")]
    assert runs[0]["group"] == runs[1]["group"] == f"train-{sweep.parent.name}-sweep"
    assert "model.lr=0.001" in runs[0]["name"] and "model.lr=1e+30" in runs[1]["name"]
    assert [r["exit_code"] for r in runs] == [0, 1]
    assert {"val/nelbo", "train/loss_epoch", "test/nelbo", "samples/_type", "reconstructions/_type"} <= runs[0][
        "history"
    ]
    media = list((sweep / "0" / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))
    assert len(media) == 1 and not_blank(Image.open(media[0]))


def fake_run(folder: Path, overrides: list[str], metrics: dict, config: str = "model: {}\n") -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(config)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "status.json").write_text('{"status": "ok", "error": ""}')


def test_sweep_over_seeds_gives_mean_and_std_per_setting(tmp_path):
    values = {("2", "1"): 10.0, ("2", "2"): 14.0, ("8", "1"): 5.0, ("8", "2"): 5.0}
    for i, ((dim, seed), nelbo) in enumerate(values.items()):
        fake_run(tmp_path / str(i), ["model=vae", f"model.latent_dim={dim}", f"seed={seed}"], {"test/nelbo": nelbo})
    write_sweep_summary(tmp_path)
    markdown = (tmp_path / "summary.md").read_text()
    assert "| model.latent_dim | n seeds | test/nelbo |" in markdown
    assert "| 2 | 2 | 12 ± 2 |" in markdown and "| 8 | 2 | 5 ± 0 |" in markdown
    assert (tmp_path / "summary_plots" / "model.latent_dim.png").is_file()
    assert not (tmp_path / "summary_plots" / "seed.png").exists()


def test_sweep_table_shows_each_jobs_epochs_when_model_recipes_set_different_lengths(tmp_path):
    """`-m model=gan,wgan data=mnist`: gan's recipe states 40 epochs on MNIST, wgan runs the trainer's 20; the
    saved config holds `${genlab_epochs:20}`, which the table resolves (nothing else in the file)."""
    trainer = "trainer: {max_epochs: '${genlab_epochs:20}'}\ndata: {dataset: mnist}\n"
    for i, (model, recipe) in enumerate([("gan", "{mnist: 40}"), ("wgan", "null")]):
        config = f"model: {{recipe_epochs: {recipe}}}\n{trainer}"
        fake_run(tmp_path / str(i), [f"model={model}", "data=mnist"], {"test/cis": 8.0}, config)
    write_sweep_summary(tmp_path)
    assert "| job | status | model | epochs | test/cis |" in (tmp_path / "summary.md").read_text()
    rows = (tmp_path / "summary.md").read_text().splitlines()
    assert any("| gan | 40 |" in r for r in rows) and any("| wgan | 20 |" in r for r in rows)
    same = tmp_path / "same"
    for i, model in enumerate(["gan", "wgan"]):
        fake_run(same / str(i), [f"model={model}"], {"test/cis": 8.0}, "trainer: {max_epochs: 20}\n")
    write_sweep_summary(same)
    assert "| job | status | model | test/cis |" in (same / "summary.md").read_text()


def test_report_of_a_run_without_pictures_or_metrics_still_renders(tmp_path):
    fake_run(tmp_path, ["model=gan"], {})
    page = write_run_report(tmp_path)
    assert "best` means `last.ckpt" in (tmp_path / "report.md").read_text()
    assert embedded_pictures(page) == []


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
BROWSER = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def open_in_browser(report: Path, tmp_path: Path) -> tuple[int, int, str]:
    """(images loaded with naturalWidth > 0, images, the t-SNE legend's text) of `report` as headless Chromium
    renders it: a probe appended to a copy writes them into the DOM, which `--dump-dom` prints."""
    probe = (
        "<script>window.addEventListener('load', () => { const all = [...document.images];"
        " const ok = all.filter(i => i.complete && i.naturalWidth > 0).length;"
        " const legend = [...document.querySelectorAll('.legend-entry')].map(e => e.textContent.trim()).join('|');"
        " const d = document.createElement('div'); d.id = 'probe';"
        " d.textContent = ok + '/' + all.length + ' ' + legend;"
        " document.body.appendChild(d); });</script>"
    )
    page = tmp_path / "report.html"
    page.write_text(report.read_text().replace("</body>", probe + "</body>"))
    args = [*BROWSER, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom"]
    proc = subprocess.run([CHROMIUM, *args, page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<div id="probe">(\d+)/(\d+) ?([^<]*)</div>', proc.stdout)
    assert found, proc.stderr[-2000:]
    return int(found.group(1)), int(found.group(2)), found.group(3)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium)")
def test_report_html_loads_every_image_in_a_real_browser(sweep, tmp_path):
    """Every picture of a run's report.html loads in a real browser, and the t-SNE legend names every class.
    Also checks the report at $GENLAB_REPORT_HTML when set (e.g. a real-MNIST VAE run's report)."""
    import os

    reports = [sweep / "0" / "report.html"] + [Path(p) for p in [os.environ.get("GENLAB_REPORT_HTML")] if p]
    for i, report in enumerate(reports):
        (tmp_path / str(i)).mkdir()
        loaded, total, legend = open_in_browser(report, tmp_path / str(i))
        assert total >= 4 and loaded == total, (report, loaded, total)
        assert legend.split("|") == [f"\u25cf {c}" for c in range(10)], (report, legend)  # digits: classes 0-9
