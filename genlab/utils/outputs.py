"""What this process created under its output root, so that a rejected run removes that and nothing else.

Hydra creates a run's (or a sweep job's) output dir, and its missing parents, before the task runs. The
preflight callback calls `note_root` just before: it records which folders of the path did not exist yet and,
for a folder that did, the names already in it. When a job starts (its log file is opened with its first
record), `note_job` records what its output dir already holds. `created` answers from these records only; a
path they cannot vouch for (nothing noted) counts as someone else's.
"""

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Before:
    root: Path  # hydra.run.dir (a run) or hydra.sweep.dir (a sweep), absolute as Hydra makes it
    first_missing: Path | None  # the topmost folder of `root`'s path that did not exist; None: root existed
    names: frozenset[str]  # what `root` held when it existed


_before: Before | None = None
_job: tuple[Path, frozenset[str]] | None = None  # a job's output dir and the names in it when the job started


def note_root(path: str | Path) -> None:
    """Record, before Hydra creates anything, what exists of the output root `path`."""
    global _before
    root = Path(os.path.abspath(path))  # as Hydra's run_job computes hydra.runtime.output_dir
    missing = [p for p in (root, *root.parents) if not os.path.lexists(p)]
    names = frozenset(entry.name for entry in os.scandir(root)) if root.is_dir() else frozenset()
    _before = Before(root, missing[-1] if missing else None, names)


def note_job(output_dir: str | Path) -> None:
    """Record, when a job starts, what its output dir (made by Hydra by then) already holds."""
    global _job
    folder = Path(os.path.abspath(output_dir))
    _job = (folder, frozenset(entry.name for entry in os.scandir(folder)) if folder.is_dir() else frozenset())


def created(path: Path) -> bool:
    """Whether `path` (the root, or a file or folder inside it) is known not to have existed before this run."""
    path = Path(os.path.abspath(path))
    if _job is not None and path.parent == _job[0] and path.name not in _job[1]:
        return True
    if _before is None:
        return False
    if _before.first_missing is not None:
        return path == _before.root or path.is_relative_to(_before.root)
    if path == _before.root or not path.is_relative_to(_before.root):
        return False
    return path.relative_to(_before.root).parts[0] not in _before.names


def created_top(output_dir: Path) -> Path | None:
    """The topmost folder of `output_dir`'s path that this process created, or None if output_dir existed.

    A sweep job's folder goes up to its first folder inside the sweep dir, never the sweep dir itself (it holds
    the other jobs and multirun.yaml)."""
    if _before is None or not created(output_dir):
        return None
    output_dir = Path(os.path.abspath(output_dir))
    if output_dir == _before.root:
        return _before.first_missing
    return _before.root / output_dir.relative_to(_before.root).parts[0]
