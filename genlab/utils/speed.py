"""Per-process CPU threads and the optional `torch.compile` of a model's networks (docs/benchmarks.md)."""

import logging
import os

import torch
from torch import nn

from genlab.errors import ConfigError

log = logging.getLogger(__name__)


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


def set_threads(setting: object, local_processes: int) -> None:
    """Apply `thread_count` to this process (torch.set_num_threads)."""
    count = thread_count(setting, local_processes)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
        log.debug("torch threads: %d (%d local processes)", count, local_processes)


def cheap_cuda_probe() -> bool:
    """On a machine with no CUDA device, make `torch.cuda.is_available()` a cached runtime query again.

    Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` (so that probing CUDA never initialises it before a fork);
    torch then loads the NVML library on every call until CUDA is initialised, and every optimiser step calls
    it (`Optimizer._accelerator_graph_capture_health_check`): an RMSprop step on a CPU took 162-201 µs with
    the probe and 44 µs without it (docs/benchmarks.md). With no device there is nothing a fork could inherit,
    so the runtime's own cached count is safe. Returns whether it changed the setting."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or torch.cuda.device_count() > 0:
        return False
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return True


def channels_last(model: nn.Module) -> bool:
    """Convolution weights of `model` in channels-last order, in place, when it has any (then oneDNN's and cuDNN's
    convolutions keep their activations in that order too; values and parameter names are unchanged, and a
    checkpoint's tensors load into either order). Returns whether it changed anything."""
    if not any(isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() == 4 for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def compile_networks(model: nn.Module) -> list[str]:
    """`torch.compile` each network of `model` in place (`nn.Module.compile`: parameter names, and so
    checkpoints, stay as they are); compiling happens at each network's first call. Returns their names."""
    names = []
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            child.compile()
            names.append(name)
    return names
