"""Intra-op threads per training process, decided without importing torch (config validation runs before it
loads; `genlab.utils.speed.set_threads` applies the count)."""

import os

from genlab.errors import ConfigError


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM or container limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_count(setting: object, local_processes: int) -> int | None:
    """Intra-op threads for each of `local_processes` training processes on this machine: `auto` gives
    usable cores ÷ processes (at least 1), so two CPU-DDP ranks on 2 cores get one each instead of fighting
    over four; an integer is taken as it is; None (or `auto` with OMP_NUM_THREADS set) leaves torch's choice."""
    if setting is None or (setting == "auto" and os.environ.get("OMP_NUM_THREADS")):
        return None
    if setting == "auto":
        return max(1, usable_cores() // max(1, local_processes))
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError(f"threads={setting!r} is invalid; expected auto, a positive integer or null")
