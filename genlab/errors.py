"""User-facing errors: the entry points print their message (no traceback) and exit non-zero."""


class GenlabError(Exception):
    """Base class for errors caused by the user's input (config, data, checkpoints)."""


class ConfigError(GenlabError, ValueError):
    """A config value is not one that genlab accepts."""


class SweepError(ConfigError):
    """A config error every job of a sweep would meet: it stops the whole sweep, not only its job."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


def genlab_cause(err: BaseException) -> "GenlabError | None":
    """The GenlabError that `err` was raised from, if any: e.g. a genlab resolver's ConfigError, which OmegaConf
    re-raises as an InterpolationResolutionError (the original is then on the exception's context chain)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, GenlabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def check_choice(name: str, value: object, choices: "list | tuple | dict") -> None:
    """Raise a ConfigError naming `value` and the accepted `choices` unless value is one of them."""
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}={value!r} is not supported; expected one of: {accepted}")


class DatasetCorruptError(GenlabError):
    """A dataset file is on disk but cannot be read (truncated, corrupt, not an image)."""


class CheckpointError(GenlabError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not fit the configured model."""


class DivergenceError(GenlabError):
    """Training produced a non-finite loss, gradient or state."""


class PeerProcessLost(GenlabError):
    """Another process of a DDP run ended (killed, out of memory, its own error) while this one waited for it."""


class TrainingInterrupted(GenlabError):
    """SIGTERM or SIGINT stopped training after a resumable checkpoint was written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
