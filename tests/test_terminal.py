"""What a person sees in the terminal: each line once, no redraws outside a terminal, a start summary, one line
per epoch, a bar that turns off."""

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from genlab.callbacks.progress import EpochLines, RichBar, main_scalars, progress_bar
from genlab.tasks.train import _print_outputs, train
from genlab.utils import console

HYDRA_PREFIX = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ")  # [time][logger][LEVEL] -
LEVEL_PREFIX = re.compile(r"^(DEBUG|INFO|WARNING|ERROR): ")  # Lightning's own console handler
SEPARATOR = re.compile(r"^[\s\-=_+|:.─━│┃┏┓┗┛┡┩┳┻╇┼┬┴└┘┌┐╭╮╰╯═]*$")  # blank lines, rules, table borders


def repeated_lines(output: str) -> list[str]:
    """Messages printed more than once, whichever handler printed them (blank and separator lines aside)."""
    seen: set[str] = set()
    repeated = []
    for line in output.split("\n"):
        message = LEVEL_PREFIX.sub("", HYDRA_PREFIX.sub("", line)).rstrip()
        if SEPARATOR.match(message):
            continue
        if message in seen:
            repeated.append(message)
        seen.add(message)
    return repeated


def test_repeated_lines_sees_through_the_prefixes():
    hydra = "[2026-01-01 10:00:00,001][lightning.fabric][INFO] - "
    output = f"INFO: Seed set to 42\n{hydra}Seed set to 42\n\n\n┏━━┓\n┏━━┓\n"
    assert repeated_lines(output) == ["Seed set to 42"]


def test_a_run_outside_a_terminal_prints_each_line_once_and_one_line_per_epoch(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "GENLAB_DATA_DIR": str(tmp_path / "no_data")}
    args = ["debug=fast", "model=vae", "trainer.max_epochs=2", f"hydra.run.dir={out}"]
    proc = subprocess.run(  # bytes: text mode would turn "\r" into "\n"
        [sys.executable, "-m", "genlab", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=300
    )
    output = proc.stdout.decode()
    assert proc.returncode == 0, output[-3000:]
    assert "\r" not in output  # no bar redraws
    assert repeated_lines(output) == []
    assert "Tip:" not in output
    epochs = re.findall(r"epoch (\d)/1 \| step \d+ \| [\d.]+ s \| train/loss [\d.]+ \| val/loss [\d.]+.*", output)
    assert epochs == ["0", "1"]
    assert len(re.findall(r"model: VAE \(genlab\.models\.vae\), [\d.]+K parameters", output)) == 1
    assert re.search(r"networks: encoder [\d.]+K, decoder [\d.]+K", output)
    assert re.search(r"data: Digits: 16x16 px, 1 channel, 10 classes \| train [\d,]+, val [\d,]+", output)
    assert re.search(r"test(?: split:)? [\d,]+", output)
    assert "device: cpu" in output and f"run dir: {out}" in output
    assert f"Run directory: {out}" in output


@pytest.mark.parametrize("override", ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"])
def test_progress_turns_off_without_lightning_adding_its_own_bar(make_cfg, capfd, caplog, override):
    caplog.set_level(logging.INFO)
    train(make_cfg("model=autoencoder", "test=false", override))
    printed = "".join(capfd.readouterr())
    assert "Epoch 0" not in printed and "\r" not in printed  # Lightning's default bars (Rich, TQDM)
    assert not [r for r in caplog.records if r.name == "genlab.callbacks.progress"]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("stdout", "stderr", "kind"), [(True, True, RichBar), (True, False, EpochLines)])
def test_a_rich_bar_only_when_both_streams_are_a_terminal(monkeypatch, stdout, stderr, kind):
    monkeypatch.setattr(sys, "stdout", _Stream(stdout))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr))
    assert console.interactive() == (stdout and stderr)
    assert type(progress_bar()) is kind
    assert progress_bar(refresh_rate=0).is_disabled


def test_main_scalars_are_the_losses_and_the_checkpoint_metric():
    values = {
        "train/d_loss_step": 9.0,
        "train/d_loss_epoch": 1.0,
        "train/g_loss_epoch": 2.0,
        "train/d_acc_real_epoch": 0.5,
        "train/g_steps_epoch": 6.0,
        "val/d_loss": 3.0,
        "val/cfid": 40.0,
        "val/jsd": 0.1,
    }
    got = main_scalars(values, "val/cfid", validated=True)
    assert got == {"train/d_loss": 1.0, "train/g_loss": 2.0, "val/d_loss": 3.0, "val/cfid": 40.0}
    assert main_scalars(values, "val/cfid", validated=False) == {"train/d_loss": 1.0, "train/g_loss": 2.0}
    # no loss named: the split's first scalars (an autoencoder's mse)
    assert main_scalars({"train/mse_epoch": 0.2, "val/mse": 0.3}, None, True) == {"train/mse": 0.2, "val/mse": 0.3}


def test_tidy_logging_prints_lightning_lines_once_without_tips_and_each_warning_once(monkeypatch):
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    for name in (*console._LIGHTNING_LOGGERS, *console._RANK_ZERO_LOGGERS):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "filters", list(logger.filters))
        monkeypatch.setattr(logger, "propagate", logger.propagate)
    own, printed = logging.StreamHandler(io.StringIO()), io.StringIO()
    monkeypatch.setattr(lightning, "handlers", [own])  # what `import lightning` adds
    monkeypatch.setattr(root, "handlers", [*root.handlers, logging.StreamHandler(printed)])
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))

    console.tidy_logging()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.info("GPU available: False")
    rank_zero.info("💡 Tip: For seamless cloud logging, try installing something")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for _ in range(2):
            warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
            with warnings.catch_warnings():  # resets the registries: the default action would show it again
                pass
    assert printed.getvalue() == "GPU available: False\n"
    assert own.stream.getvalue() == ""
    assert shown == ["deprecated thing"]


@pytest.mark.parametrize("with_report", [True, False])
def test_the_outputs_block_ends_with_the_report_when_there_is_one(tmp_path, caplog, with_report):
    caplog.set_level(logging.INFO)
    if with_report:
        (tmp_path / "report.html").write_text("<html></html>")
    _print_outputs(tmp_path, SimpleNamespace(checkpoint_callback=None))
    last = caplog.records[-1].getMessage().splitlines()[-1]
    assert (last == f"  report: {Path(tmp_path) / 'report.html'}") == with_report
