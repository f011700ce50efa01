"""What a run prints: each log line once, no advertisements, each warning once.

Lightning adds console handlers of its own on import (`lightning` always, `lightning.pytorch` and
`lightning.fabric` when the root logger has none yet), so under Hydra's logging every Lightning line came out
twice. `tidy_logging` leaves the printing to the root logger's handlers (Hydra's console and log file).
"""

import logging
import sys
import warnings
from collections.abc import Callable

_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# lines that say nothing about this run: product tips, and a restatement of genlab's own trainer default
_NOISE = ("💡 Tip:", "was configured so validation will run at the end of the training epoch")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _NOISE)


def tidy_logging() -> None:
    """Route Lightning's records through the root logger only, drop its tips, and show each warning once.

    Without root handlers (Hydra's logging turned off) Lightning keeps its own, so its lines still show."""
    if logging.getLogger().handlers:
        for name in _LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    if interactive():  # log lines then print above a live progress bar instead of through it
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
                handler.setStream(_Current("stdout" if handler.stream is sys.stdout else "stderr"))
    if not isinstance(warnings.showwarning, _ShowOnce):
        warnings.showwarning = _ShowOnce(warnings.showwarning)


class _ShowOnce:
    """`warnings.showwarning` that shows each (category, message) once per process. The filters cannot: each
    `catch_warnings` block (in metrics, in Lightning) resets the registries, and the default action, even
    "once", then shows the same warning again."""

    def __init__(self, show: Callable) -> None:
        self.show, self.seen = show, set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        key = (category, str(message))
        if key not in self.seen:
            self.seen.add(key)
            self.show(message, category, filename, lineno, file, line)


def interactive() -> bool:
    """Whether a person watches this process in a terminal (both stdout and stderr are TTYs): not CI, nohup,
    a pipe or a cluster log."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


class _Current:
    """Writes to whatever `sys.stdout` (or `sys.stderr`) is at the time: Rich's live display swaps in a proxy
    that prints above the bar, while a handler holding the original stream would print through it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()
