"""Per-process CPU threads, `trainer.precision=auto`, channels-last and the optional `torch.compile` of a model's
networks (docs/benchmarks.md)."""

import functools
import logging
import os

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.utils.threads import thread_count, usable_cores  # noqa: F401  (part of this module's API)

log = logging.getLogger(__name__)


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


# Lightning's precision values (lightning.fabric.plugins.precision.precision._PRECISION_INPUT), and genlab's `auto`
PRECISIONS = (
    "auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
    "transformer-engine-float16", "32", "bf16", "16", "64", 32, 16, 64,
)  # fmt: skip


def native_bf16(device: str) -> bool:
    """Whether `device` ("cpu" or "cuda") computes bfloat16 natively: a CUDA GPU of compute capability 8.0 or
    newer (it initialises CUDA in this process), or a CPU with AVX512-BF16 or AMX (without them oneDNN emulates
    bfloat16 and it is slower than float32)."""
    if device == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no emulation flag and reports native support only
            return torch.cuda.is_bf16_supported()
        except (RuntimeError, AssertionError):  # no usable GPU: Lightning says so when it builds the trainer
            return False
    if device != "cpu":
        return False
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe is not None and probe() for probe in probes)


def resolve_precision(setting: object, accelerator: object) -> tuple[object, str]:
    """`trainer.precision` as Lightning takes it, and why: `auto` is bf16-mixed (autocast, float32 weights) on a
    device that computes bfloat16 natively and 32-true elsewhere; any other accepted value is kept as it is.
    The device is the one `trainer.accelerator` picks: cpu, or cuda for gpu/cuda (or auto with a CUDA GPU);
    any other accelerator (mps, tpu) gets 32-true."""
    if setting not in PRECISIONS or isinstance(setting, bool):
        raise ConfigError(
            f"trainer.precision={setting!r} is invalid; expected one of: {', '.join(map(str, PRECISIONS[:8]))} "
            f"(or Lightning's aliases 32, bf16, 16, 64)"
        )
    if setting != "auto":
        return setting, "as configured"
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        device = "cuda"
    elif accelerator in ("cpu", "auto"):
        device = "cpu"
    else:
        return "32-true", f"auto: accelerator {accelerator}"
    name = "CPU" if device == "cpu" else "GPU"
    if native_bf16(device):
        return "bf16-mixed", f"auto: this {name} computes bfloat16 natively"
    return "32-true", f"auto: this {name} has no native bfloat16"


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


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's `malloc_trim`): after a per-epoch evaluation or a
    picture, whose multi-MB temporaries glibc otherwise keeps mapped for reuse (its mmap threshold rises to the
    size of freed blocks). A few ms; a no-op returning False where the C library has no `malloc_trim`."""
    trim = _malloc_trim()
    return bool(trim and trim(0))


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def stepped_player_allreduce(state, bucket):  # noqa: ANN001, ANN201  (DDP's comm hook signature)
    """A DDP comm hook that averages only the gradients of parameters that require grad when the bucket is ready.

    A GAN steps one player per backward (Lightning's `toggled_optimizer` turns the other's `requires_grad` off),
    so each backward leaves the other player unused; DDP's default hook still all-reduces every bucket, zeros of
    the unused player included (the MLP WGAN: 8 MB of G's and D's gradients after every D step, 2 MB of them
    D's). Here each bucket all-reduces the one span of its buffer that holds the parameters in use (divided by
    the world size first, as DDP's `allreduce_hook` does), or nothing when it has none: the other player's
    gradients are not used by this step and DDP does not write a globally unused parameter's gradient back.
    Other models have every parameter in use, and the hook all-reduces whole buckets, as DDP's own does.

    `state`: a `genlab.utils.local_comm.LocalGroup` (the ranks share a machine: the sum goes through shared
    memory, at once), or a process group, or None (the default group; gloo's all-reduce)."""
    import torch.distributed as dist

    from genlab.utils.local_comm import LocalGroup

    buffer = bucket.buffer()
    spans = [
        (g.storage_offset() - buffer.storage_offset(), g.numel())
        for p, g in zip(bucket.parameters(), bucket.gradients(), strict=True)
        if p.requires_grad
    ]
    if spans:
        start, end = min(s for s, _ in spans), max(s + n for s, n in spans)
        if isinstance(state, LocalGroup):
            state.all_reduce(buffer[start:end].div_(state.world))
        else:
            group = state if state is not None else dist.group.WORLD
            span = buffer[start:end].div_(dist.get_world_size(group))
            return dist.all_reduce(span, group=group, async_op=True).get_future().then(lambda _: buffer)
    done: torch.futures.Future = torch.futures.Future()
    done.set_result(buffer)
    return done


def buffers_from_rank_0(state, named_buffers: dict) -> None:  # noqa: ANN001  (DDP's buffer hook signature)
    """A DDP buffer hook: rank 0's buffers (BatchNorm's running statistics) to every rank before each training
    forward, as DDP's own broadcast does, through a `LocalGroup` (`state`)."""
    state.broadcast(list(named_buffers.values()), src=0)


def cpu_ddp_transport(module: nn.Module) -> str | None:
    """Under CPU DDP, what crosses between the ranks at every batch goes through shared memory where they all
    run on this machine (`local_comm.connect`), through gloo elsewhere. Collective: every rank calls it (from
    `on_fit_start`). Returns the transport, or None where it changed nothing (no DDP, or DDP on GPUs: NCCL is
    cheap next to a GPU step; not measured here).

    - the gradients: `stepped_player_allreduce`, on either transport;
    - the buffers (DDP broadcasts rank 0's before each training forward): `buffers_from_rank_0`;
    - DDP's own calls, such as its all-reduce of the map of used parameters after every backward
      (`find_unused_parameters`): `local_comm.LocalProcessGroup`;
    - `module.local_group` is set (None elsewhere): `genlab.callbacks.Interruption` broadcasts rank 0's SIGTERM
      flag through it before every training batch."""
    from torch.nn.parallel import DistributedDataParallel

    trainer = getattr(module, "_trainer", None)
    wrapped = getattr(getattr(trainer, "strategy", None), "model", None)
    if not isinstance(wrapped, DistributedDataParallel) or module.device.type != "cpu":
        return None
    from genlab.utils.local_comm import connect

    local = module.local_group = connect(wrapped.process_group)
    wrapped.register_comm_hook(local, stepped_player_allreduce)
    if local is None:
        return "gloo"
    if hasattr(wrapped, "_register_buffer_comm_hook"):  # private in torch (since 1.12); DDP's broadcast stays without
        from torch.nn.parallel.distributed import _BufferCommHookLocation

        wrapped._register_buffer_comm_hook(local, buffers_from_rank_0, _BufferCommHookLocation.PRE_FORWARD)
    if hasattr(wrapped, "_update_process_group"):  # private in torch (since 2.6); gloo carries the rest without
        from genlab.utils.local_comm import LocalProcessGroup

        wrapped._update_process_group(LocalProcessGroup(local, wrapped.process_group))
    return "shared memory"
