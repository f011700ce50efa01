"""The shared-memory transport of CPU DDP (`genlab.utils.local_comm`): the same sums as gloo's all-reduce, the
same copies as its broadcast, chunks, a rank that dies, the opt-out, and nothing left behind."""

import os
import signal
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genlab.utils import local_comm
from genlab.utils.local_comm import PeerGone, connect

SLOT = 256  # bytes: every tensor below goes through in several chunks


def _tensors(rank: int) -> dict:
    g = torch.Generator().manual_seed(rank)
    return {
        "f32": torch.randn(1000, generator=g) * 10 ** torch.randint(-3, 4, (1000,), generator=g),
        "bf16": torch.randn(77, generator=g).bfloat16(),
        "i64": torch.randint(-50, 50, (3, 41), generator=g),
    }


def _ranks(rank: int, world: int, store: str, out: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        if mode == "full":  # /dev/shm without room for the segment (a small container's)
            local_comm._room = lambda directory, nbytes: False
        local = connect(slot_bytes=SLOT)
        result: dict = {"local": local is not None, "made_in": local and local.made_in}
        if mode == "reduce":
            mine = _tensors(rank)
            for name, t in mine.items():
                ours, gloos = t.clone(), t.clone()
                local.all_reduce(ours)
                dist.all_reduce(gloos)
                result[name] = (ours, gloos)
            # a broadcast of several dtypes and shapes, a 0-d tensor among them, after the sums (the sets alternate)
            sent = [_tensors(rank)["f32"][:300].clone(), torch.tensor(rank + 7), _tensors(rank)["bf16"].clone()]
            local.broadcast(sent, src=1)
            result["broadcast"] = sent
        elif mode == "late":  # rank 1 reads the slots 2 ms after each barrier: a slot rewritten too early shows
            if rank == 1:
                barrier = local._barrier
                local._barrier = lambda: (barrier(), time.sleep(0.002))
            wrong = 0
            for i in range(100):
                t = torch.full((64,), float(i * world + rank))
                local.all_reduce(t)
                wrong += int(not torch.all(t == sum(i * world + r for r in range(world))))
            result["wrong"] = wrong
        elif mode == "ddp":
            result |= _ddp_runs(rank, local)
        elif mode == "die":
            if rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                local.all_reduce(torch.ones(10))
            except PeerGone as e:
                result["error"] = str(e)
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        if mode != "die":
            dist.destroy_process_group()


class _Counting(dist.ProcessGroup):
    """gloo's group, counting the calls that reach it."""

    def __init__(self, inner: dist.ProcessGroup) -> None:
        super().__init__(inner.rank(), inner.size())
        self.inner, self.calls = inner, []

    def allreduce(self, tensors, opts):
        self.calls.append("allreduce")
        return self.inner.allreduce(tensors, opts)

    def broadcast(self, tensors, opts):
        self.calls.append("broadcast")
        return self.inner.broadcast(tensors, opts)


def _ddp_runs(rank: int, local) -> dict:
    """The same 6 backwards of a two-player model under DDP with `find_unused_parameters` (each backward uses one
    player, as a GAN's do), on gloo and through `LocalProcessGroup`: the weights, and the calls that reached gloo."""
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from genlab.utils.local_comm import LocalProcessGroup

    out = {}
    for name in ("gloo", "local"):
        torch.manual_seed(0)
        g, d = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)), nn.Linear(4, 1)
        players = nn.ModuleDict({"g": g, "d": d})
        players.forward = lambda x, g=g, d=d: d(g(x))
        wrapped = DistributedDataParallel(players, find_unused_parameters=True)
        gloo = _Counting(wrapped.process_group)
        wrapped._update_process_group(LocalProcessGroup(local, gloo) if name == "local" else gloo)
        sgd = torch.optim.SGD(players.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(rank)
        for i in range(6):
            for p in g.parameters():
                p.requires_grad_(i % 2 == 0)
            for p in d.parameters():
                p.requires_grad_(i % 2 == 1)
            sgd.zero_grad()
            wrapped(torch.randn(5, 4, generator=data)).square().mean().backward()
            sgd.step()
        out[name] = [p.detach().clone() for p in players.parameters()]
        out[f"{name} buffers"] = [b.clone() for b in players.buffers()]
        out[f"{name} gloo calls"] = gloo.calls
    return out


def spawn(tmp_path, world: int, mode: str = "reduce", join: bool = True) -> list[dict]:
    args = (world, str(tmp_path / "store"), str(tmp_path), mode)
    ctx = mp.start_processes(_ranks, args=args, nprocs=world, join=False, start_method="spawn")
    if join:
        ctx.join()
    else:
        ctx.processes[0].join(timeout=120)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world if join else 1)]


@pytest.mark.parametrize("world", [2, 3])
def test_sums_equal_gloos_and_broadcast_copies_rank_src(tmp_path, world):
    """Over 2 and 3 processes, in chunks of 256 bytes: float32 sums equal gloo's all-reduce bit for bit with 2
    ranks (a + b in either order) and to rounding with 3 (gloo adds in another order), int64 sums exactly, every
    rank holds the same bits; a broadcast gives every rank rank 1's tensors; nothing is left in /dev/shm."""
    results = spawn(tmp_path, world)
    for result in results:
        assert result["local"] and result["made_in"] == results[0]["made_in"]
        assert not os.path.exists(result["made_in"])
        for name in ("f32", "bf16", "i64"):
            ours, gloos = result[name]
            assert torch.equal(ours, results[0][name][0])  # the same bits on every rank
            if name == "i64" or (world == 2 and name == "f32"):
                assert torch.equal(ours, gloos), name
            else:
                bf16 = name == "bf16"  # two roundings of sums up to about 6: a few bf16 steps (1/64 there)
                tol = {"rtol": 1e-2, "atol": 0.05} if bf16 else {"rtol": 1e-6, "atol": 0.0}
                assert torch.allclose(ours.float(), gloos.float(), **tol), name
        expected = [_tensors(1)["f32"][:300], torch.tensor(8), _tensors(1)["bf16"]]
        assert all(torch.equal(a, b) for a, b in zip(result["broadcast"], expected, strict=True))
    # and the sums are sums: gloo's agree with adding the ranks' tensors here
    total = sum(_tensors(r)["i64"] for r in range(world))
    assert torch.equal(results[0]["i64"][0], total)


def test_ddps_own_calls_go_through_shared_memory_with_gloos_results(tmp_path):
    """DDP with `find_unused_parameters` all-reduces its map of used parameters after every backward, and its
    gradients, and broadcasts rank 0's buffers before every forward. Through `LocalProcessGroup` none of these
    reaches gloo, and 6 steps of a two-player model (one player per backward) end with the same weights and
    BatchNorm statistics, bit for bit, as on gloo, and with the same weights on both ranks."""
    results = spawn(tmp_path, 2, mode="ddp")
    for result in results:
        assert result["gloo gloo calls"].count("allreduce") >= 12  # the test's counter sees gloo's calls
        assert result["local gloo calls"] == []
        for kind in ("local", "local buffers"):
            theirs = result[kind.replace("local", "gloo")]
            assert all(torch.equal(a, b) for a, b in zip(result[kind], theirs, strict=True))
        # the gradients were averaged: both ranks hold the same weights (each keeps its own running statistics)
        assert all(torch.equal(a, b) for a, b in zip(result["local"], results[0]["local"], strict=True))


def test_a_rank_late_to_read_still_gets_the_right_sums(tmp_path):
    """100 all-reduces back to back, rank 1 reading the slots 2 ms after each barrier: every sum is right. The
    calls alternate between two sets of slots, so rank 0 writes its next chunk into the other set, and writes a
    set again only once rank 1 has passed the call in between (with one set, rank 1 reads rank 0's next chunk)."""
    assert [r["wrong"] for r in spawn(tmp_path, 2, mode="late")] == [0, 0]


def test_a_rank_that_dies_stops_the_others_with_an_error(tmp_path):
    """Rank 1 is killed before an all-reduce: rank 0 reads its closed FIFO and raises PeerGone (gloo's peers see
    the connection close) instead of waiting for the 30-minute timeout."""
    (result,) = spawn(tmp_path, 2, mode="die", join=False)
    assert "rank 1 ended while rank 0 waited for it" in result["error"]


def test_no_room_in_dev_shm_keeps_gloo_on_every_rank(tmp_path):
    """Rank 0 finds no room for the segment: every rank gets None (gloo stays), none waits for the others."""
    assert [r["local"] for r in spawn(tmp_path, 2, mode="full")] == [False, False]


def test_opt_out_and_one_process_keep_gloo(tmp_path, monkeypatch):
    """`GENLAB_LOCAL_ALLREDUCE=0` and a group of one get None (gloo stays)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert connect() is None
        monkeypatch.setenv(local_comm.OFF, "0")
        assert connect() is None
    finally:
        dist.destroy_process_group()
