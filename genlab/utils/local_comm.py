"""Sums and broadcasts through shared memory, for DDP ranks that all run on one machine (CPU DDP, `trainer=ddp_cpu`).

gloo, PyTorch's CPU backend, moves tensors between processes over TCP, loopback included, through threads of its
own that must be woken in each process. Between two processes with one thread each on the 2-core machine of
docs/benchmarks.md (`python -m benchmarks.local_comm`), an all-reduce of 2 MB took 2.44 ms through gloo and 0.27
ms here; after 11 ms of computation, as a DDP all-reduce follows a backward, it added 5.48 ms and 1.07 ms to the
iteration; one of 4 KB took 1.77 ms and 0.03 ms.

How: rank 0 makes a segment with two sets of one slot per rank, and a FIFO for each ordered pair of ranks, in a
private directory (/dev/shm where there is one). Every rank maps the segment and opens its FIFOs, then rank 0
removes the directory: from then on nothing is left behind, even by a crash. A call copies this rank's chunk
into its slot, writes one byte into the FIFO to each other rank, reads one byte from each of theirs (a barrier
that also orders the memory), and sums the slots in rank order: every rank gets the same sum, bit for bit.
Calls alternate between the two sets, so a rank can write a set again only once every other rank has passed
the call in between, that is, has finished reading it. A rank that dies closes its FIFOs: the others read an
end of file and stop with an error instead of waiting (gloo's peers see the connection close).
"""

import logging
import os
import select
import shutil
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

OFF = "GENLAB_LOCAL_ALLREDUCE"  # =0: keep gloo's all-reduce
SEGMENT_LIMIT = 64 << 20  # bytes of shared memory at most (Docker's default /dev/shm is 64 MB in all)
SLOT_LIMIT = 4 << 20  # bytes per slot at most; longer tensors go through in chunks


class PeerGone(RuntimeError):
    """Another rank ended while this one waited for it in an all-reduce."""


class LocalGroup:
    """Sums and broadcasts tensors over the ranks of one machine (see the module's docstring). Built by `connect`."""

    def __init__(
        self, rank: int, world: int, segment: torch.Tensor, inbox: dict, outbox: dict, timeout: float, made_in: str
    ) -> None:
        self.rank, self.world, self.timeout = rank, world, timeout
        self.made_in = made_in  # the directory it was made in, removed once every rank had opened it
        self.sets = segment.view(2, world, -1)  # uint8: [set, rank, slot bytes]
        self.inbox, self.outbox = inbox, outbox  # peer rank -> fd
        self.calls = 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` (contiguous) summed over the ranks, in place; every rank gets the same bits."""
        flat = tensor.view(-1)
        step = self.sets.shape[-1] // flat.element_size()
        for start in range(0, flat.numel(), step):
            chunk = flat[start : start + step]
            slots = self._exchange(chunk.view(torch.uint8)).view(chunk.dtype)
            torch.add(slots[0], slots[1], out=chunk)
            for r in range(2, self.world):
                chunk.add_(slots[r])
        return tensor

    def broadcast(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        """Copy rank `src`'s `tensors` (any dtypes and shapes, the same on every rank) into every rank's."""
        views = [t.reshape(-1).view(torch.uint8) for t in tensors]  # 1-d first: a 0-d tensor has no byte view
        flat = torch.cat(views) if self.rank == src else torch.empty(sum(v.numel() for v in views), dtype=torch.uint8)
        step = self.sets.shape[-1]
        for start in range(0, flat.numel(), step):
            chunk = flat[start : start + step]
            slots = self._exchange(chunk if self.rank == src else None, len(chunk))
            if self.rank != src:
                chunk.copy_(slots[src])
        if self.rank != src:
            for view, part in zip(views, flat.split([v.numel() for v in views]), strict=True):
                view.copy_(part)

    def _exchange(self, data: torch.Tensor | None, nbytes: int | None = None) -> torch.Tensor:
        """Put `data` (bytes) in this rank's slot of the next set, wait for every rank to do the same, and return
        that set's slots, `[world, nbytes]`."""
        slots = self.sets[self.calls % 2, :, : len(data) if data is not None else nbytes]
        self.calls += 1
        if data is not None:
            slots[self.rank].copy_(data)
        self._barrier()
        return slots

    def _barrier(self) -> None:
        try:
            for fd in self.outbox.values():
                os.write(fd, b"\0")
        except BrokenPipeError as e:
            raise PeerGone(f"local all-reduce: another rank ended (rank {self.rank} could not reach it)") from e
        for peer, fd in self.inbox.items():
            if not select.select([fd], [], [], self.timeout)[0]:
                raise TimeoutError(f"local all-reduce: rank {peer} did not arrive within {self.timeout:.0f} s")
            if not os.read(fd, 1):
                raise PeerGone(f"local all-reduce: rank {peer} ended while rank {self.rank} waited for it")


class _Done(dist.Work):
    """A collective that finished before its call returned (every `LocalGroup` call does)."""

    def __init__(self, result: list[torch.Tensor]) -> None:
        super().__init__()
        self._future: torch.futures.Future = torch.futures.Future()
        self._future.set_result(result)

    def wait(self, timeout: object = None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True

    def get_future(self) -> torch.futures.Future:
        return self._future


class LocalProcessGroup(dist.ProcessGroup):
    """A process group for DDP's own collectives whose sums and broadcasts of CPU tensors go through a
    `LocalGroup`; every other call goes to `fallback`, the group DDP was built with (gloo).

    Why: with `find_unused_parameters=True` (a GAN steps one player per backward), DDP's reducer all-reduces its
    map of used parameters after every backward and waits for it. Through gloo that small call cost a CPU rank
    14 to 16% of its step (`py-spy record --native --idle` of the MLP WGAN's 2 ranks; docs/benchmarks.md,
    "Session 22"). Installed by `genlab.utils.speed.cpu_ddp_transport` through DDP's `_update_process_group`."""

    def __init__(self, local: LocalGroup, fallback: dist.ProcessGroup) -> None:
        super().__init__(fallback.rank(), fallback.size())
        self.local, self.fallback = local, fallback

    def getBackendName(self) -> str:  # noqa: N802  (c10d's name)
        return "genlab-shm"

    def allreduce(self, tensors: list[torch.Tensor], opts: object) -> dist.Work:
        if opts.reduceOp != dist.ReduceOp.SUM or any(t.device.type != "cpu" or not t.is_contiguous() for t in tensors):
            return self.fallback.allreduce(tensors, opts)
        for tensor in tensors:
            self.local.all_reduce(tensor)
        return _Done(tensors)

    def broadcast(self, tensors: list[torch.Tensor], opts: object) -> dist.Work:
        if any(t.device.type != "cpu" for t in tensors):
            return self.fallback.broadcast(tensors, opts)
        self.local.broadcast(tensors, src=opts.rootRank)
        return _Done(tensors)


def _to_fallback(name: str):  # noqa: ANN202
    def call(self: LocalProcessGroup, *args: object) -> dist.Work:
        return getattr(self.fallback, name)(*args)

    call.__name__ = name
    return call


# c10d's other collectives (DDP makes none of them once built): as the group DDP was built with
for _name in (
    "allgather", "_allgather_base", "allgather_coalesced", "allgather_into_tensor_coalesced", "allreduce_coalesced",
    "alltoall", "alltoall_base", "barrier", "gather", "reduce", "reduce_scatter", "_reduce_scatter_base",
    "reduce_scatter_tensor_coalesced", "scatter", "send", "recv", "recv_anysource", "monitored_barrier",
):  # fmt: skip
    if hasattr(dist.ProcessGroup, _name):
        setattr(LocalProcessGroup, _name, _to_fallback(_name))


def _host() -> tuple:
    boot = Path("/proc/sys/kernel/random/boot_id")
    return socket.gethostname(), boot.read_text().strip() if boot.is_file() else None


def _room(directory: str, nbytes: int) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize >= 2 * nbytes  # and leave as much again to everyone else


def _make(world: int, nbytes: int) -> str | None:
    """Rank 0: the private directory with the segment and the FIFOs, or None (and why, in the log)."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    if not _room(root, nbytes):
        log.info("local all-reduce: not %d MB free in %s; gloo's all-reduce stays", 2 * nbytes >> 20, root)
        return None
    directory = tempfile.mkdtemp(prefix="genlab-ddp-", dir=root)
    try:
        fd = os.open(f"{directory}/segment", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if hasattr(os, "posix_fallocate"):  # reserve the pages now: a full tmpfs fails here, not with SIGBUS
                os.posix_fallocate(fd, 0, nbytes)
            else:
                os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)
        for src in range(world):
            for dst in range(world):
                if src != dst:
                    os.mkfifo(f"{directory}/{src}-{dst}", 0o600)
    except OSError as e:
        log.info("local all-reduce: %s; gloo's all-reduce stays", e)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return directory


def connect(
    group: dist.ProcessGroup | None = None, timeout: float = 1800.0, slot_bytes: int = SLOT_LIMIT
) -> LocalGroup | None:
    """A `LocalGroup` over the ranks of `group` (the default group), or None where they are not all on this
    machine, the platform has no FIFOs, there is no room for the segment, or `GENLAB_LOCAL_ALLREDUCE=0`.
    Collective: every rank of the group calls it, and all get an object or all get None. `timeout`: seconds a
    rank waits for the others in a call (gloo's default); `slot_bytes`: the most one call moves per rank (longer
    tensors go in chunks)."""
    import mmap

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    wanted = os.environ.get(OFF, "1") != "0" and hasattr(os, "mkfifo") and world > 1
    hosts = [None] * world
    dist.all_gather_object(hosts, (wanted, _host()), group=group)
    if not all(w for w, _ in hosts) or len({h for _, h in hosts}) > 1:
        return None
    slot = max(64, min(slot_bytes, SEGMENT_LIMIT // (2 * world)) // 64 * 64)
    nbytes = 2 * world * slot
    made = [_make(world, nbytes) if rank == 0 else None]
    dist.broadcast_object_list(made, src=dist.get_global_rank(group, 0) if group else 0, group=group)
    directory = made[0]
    if directory is None:
        return None
    inbox, outbox, segment = {}, {}, None
    try:
        with open(f"{directory}/segment", "r+b") as f:
            segment = torch.frombuffer(mmap.mmap(f.fileno(), nbytes), dtype=torch.uint8)
        # readers first (a non-blocking open for reading does not wait for a writer), then writers
        peers = [p for p in range(world) if p != rank]
        inbox = {p: os.open(f"{directory}/{p}-{rank}", os.O_RDONLY | os.O_NONBLOCK) for p in peers}
        error = None
    except OSError as e:
        error = e
    opened = [None] * world
    dist.all_gather_object(opened, error is None, group=group)
    if all(opened):
        try:
            outbox = {p: os.open(f"{directory}/{rank}-{p}", os.O_WRONLY | os.O_NONBLOCK) for p in inbox}
        except OSError as e:
            error = e
    for fd in (*inbox.values(), *outbox.values()):
        os.set_blocking(fd, True)
    dist.all_gather_object(opened, error is None, group=group)
    if rank == 0:
        shutil.rmtree(directory, ignore_errors=True)  # every rank holds what it needs open
    if not all(opened):
        for fd in (*inbox.values(), *outbox.values()):
            os.close(fd)
        log.info("local all-reduce: rank %d: %s; gloo's all-reduce stays", rank, error or "another rank failed")
        return None
    log.debug("local all-reduce: %d ranks, %d MB of shared memory", world, nbytes >> 20)
    return LocalGroup(rank, world, segment, inbox, outbox, timeout, directory)
