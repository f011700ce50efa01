"""Where a genlab run's peak memory comes from: the Python stack each time the resident set reaches a new high.

    GENLAB_DATA_DIR=../shared/data python -m benchmarks.memory [--above MB] -- <genlab overrides>

Runs `python -m genlab <overrides>` in this process with a watcher thread that reads VmRSS every 5 ms and, at
each new high of at least `--above` MB (10 MB steps), prints the main thread's innermost genlab / torchmetrics /
sklearn frames. At the last Python exit handler it prints VmRSS and VmHWM; the process's `ru_maxrss`, which
`make bench` reports, also counts what the C library's exit does after that (torch's CUDA wheel: about 128 MB
for `import torch` alone, docs/benchmarks.md). A high reached inside a C call that holds the GIL is printed when
the call returns.
"""

import argparse
import atexit
import os
import runpy
import sys
import threading
import time
import traceback

KEEP = ("genlab/", "benchmarks/", "torchmetrics/", "sklearn/", "matplotlib/")


def status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in MB."""
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) // 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def watch(main_id: int, above: int) -> None:
    last = above - 10
    while True:
        rss = status()["VmRSS"]
        if rss >= last + 10:
            last = rss
            frames = traceback.extract_stack(sys._current_frames()[main_id])
            where = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in frames]
            where = [w for w in where if w.startswith(KEEP) or "/genlab/" in w][-6:]
            print(f"[memory] {rss} MB at: " + " <- ".join(reversed(where)), file=sys.stderr, flush=True)
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--above", type=int, default=900, help="report new highs from this many MB on")
    parser.add_argument("overrides", nargs="*", help="genlab overrides (after --)")
    args = parser.parse_args()
    atexit.register(lambda: print(f"[memory] at exit: {status()}", file=sys.stderr, flush=True))
    threading.Thread(target=watch, args=(threading.get_ident(), args.above), daemon=True).start()
    sys.argv = ["genlab", *args.overrides]
    runpy.run_module("genlab", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
