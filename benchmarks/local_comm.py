"""All-reduce between 2 CPU processes on this machine: gloo's (TCP loopback) against genlab's shared-memory
`LocalGroup` (`genlab.utils.local_comm`), alone and after a step's worth of computation, one thread each.

    python -m benchmarks.local_comm [--calls 200]

"after compute": each call follows 4 matrix products of 512 x 512 (about 12 ms on one core), as a DDP
all-reduce follows a backward; the column gives the time a call adds to that iteration (the other process's
lateness included), against the same loop without any all-reduce.
"""

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genlab.utils.local_comm import connect

SIZES = {"4 KB": 1 << 10, "2 MB": 1 << 19, "8 MB": 1 << 21}  # float32 elements


def _loop(reduce, tensor: torch.Tensor | None, work: int, calls: int) -> float:  # noqa: ANN001
    a = torch.randn(512, 512)
    for _ in range(2):  # the second pass is timed
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            for _ in range(work):
                a @ a
            if tensor is not None:
                reduce(tensor)
    return (time.perf_counter() - start) / calls


def _rank(rank: int, store: str, calls: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    local = connect()
    ways = {"gloo": dist.all_reduce, "shared memory": local.all_reduce}
    compute = _loop(None, None, 4, calls)
    rows = {}
    for size, n in SIZES.items():
        tensor = torch.ones(n)
        for way, reduce in ways.items():
            alone = _loop(reduce, tensor, 0, calls)
            after = _loop(reduce, tensor, 4, calls) - compute
            rows[(size, way)] = (alone, after)
    if rank == 0:
        torch.save({"rows": rows, "compute": compute}, out)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls of each kind (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.pt")
        mp.spawn(_rank, args=(os.path.join(tmp, "store"), args.calls, out), nprocs=2)
        result = torch.load(out, weights_only=False)
    print(f"2 processes, 1 thread each; the compute alone: {1e3 * result['compute']:.2f} ms per iteration")
    print("| tensor | transport | ms per all-reduce, alone | ms added after compute |")
    print("|---|---|---|---|")
    for (size, way), (alone, after) in result["rows"].items():
        print(f"| {size} | {way} | {1e3 * alone:.2f} | {1e3 * after:.2f} |")


if __name__ == "__main__":
    main()
