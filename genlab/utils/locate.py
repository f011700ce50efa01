"""Where a run's checkpoint is: `find_checkpoint` needs no torch, so that the entry points check `run_dir=` and
`ckpt_path=` before their heavy imports (`genlab.utils.runner.run_task`'s `precheck`): a mistyped folder is one
line in well under a second, not after seconds of `import lightning`. `genlab.runs` re-exports both functions."""

import json
import logging
from pathlib import Path

from genlab.errors import CheckpointError, GenlabError
from genlab.utils.runner import BEST_RECORD

log = logging.getLogger("genlab.runs")


def find_checkpoint(
    run_dir: str | Path | None = None, ckpt: str = "best", ckpt_path: str | None = None, *, quiet: bool = False
) -> Path:
    """`ckpt_path` if given; else in `<run_dir>/checkpoints/`: `best` (the file the checkpoint callback recorded in
    best.json; `last.ckpt`, with one log line unless `quiet`, when none was recorded), `last`, or a file name or
    path."""
    if ckpt_path:
        path, key = Path(str(ckpt_path)).expanduser(), f"ckpt_path={ckpt_path}"
    elif run_dir:
        folder = Path(run_dir).expanduser() / "checkpoints"
        key = f"run_dir={run_dir} ckpt={ckpt}"
        if not folder.is_dir():
            what = "does not exist" if not folder.parent.exists() else "is not a genlab run directory (no checkpoints/)"
            raise CheckpointError(
                f"run_dir={run_dir} {what}; expected a run directory such as outputs/train/<date>/<time>"
            )
        if ckpt == "best":
            path = recorded_best(folder, quiet=quiet)
        elif ckpt == "last":
            path = folder / "last.ckpt"
        else:
            given = Path(str(ckpt)).expanduser()
            path = given if given.is_absolute() or given.exists() else folder / given
    else:
        raise GenlabError(
            "neither run_dir nor ckpt_path is set; expected run_dir=<a run directory> or ckpt_path=<file.ckpt>"
        )
    if not path.is_file():
        raise CheckpointError(
            f"{key}: no checkpoint at {path}; expected ckpt=best|last|<file> inside run_dir=<a genlab run dir> "
            f"(checkpoints/last.ckpt, checkpoints/best-*.ckpt) or ckpt_path=<file.ckpt>"
        )
    return path


def recorded_best(folder: Path, quiet: bool = False) -> Path:
    """The checkpoint named in `folder/best.json`, else `folder/last.ckpt` (said in one log line unless `quiet`)."""
    record = folder / BEST_RECORD
    if record.is_file():
        try:
            name = json.loads(record.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{record} is not a valid best-checkpoint record ({err}); expected JSON with a `checkpoint` file name "
                f"(written by genlab's checkpoint callback); use ckpt=last or ckpt=<file>"
            ) from err
        if not isinstance(name, str) or Path(name).name != name:  # a name inside this folder, nothing else
            raise CheckpointError(f"{record} names {name!r}; expected a checkpoint file name in {folder}")
        return folder / name
    if not quiet:
        log.warning("No best checkpoint was recorded in %s (no evaluation selected one): using last.ckpt", folder)
    return folder / "last.ckpt"


def run_options(cfg) -> dict:
    """`open_run`'s arguments from an entry point's config (run_dir, ckpt_path, ckpt, prior, trust settings)."""
    return {
        "run_dir": cfg.get("run_dir"),
        "ckpt_path": cfg.get("ckpt_path"),
        "ckpt": cfg.get("ckpt") or "best",
        "prior": cfg.get("use_prior"),
        "allow_unsafe": bool(cfg.get("allow_unsafe_checkpoint", False)),
        "trusted": list(cfg.get("trusted_targets") or []),
    }


def check_run_options(cfg) -> None:
    """The `precheck` of the entry points that open a run (evaluate, sample, prior): `run_dir=` / `ckpt_path=`
    name a checkpoint that exists (the same errors `genlab.runs.open_run` raises), checked before torch loads."""
    options = run_options(cfg)
    if not options["run_dir"] and "ckpt_path" not in cfg:  # genlab.prior: a run directory is its only input
        raise GenlabError(
            "run_dir is not set; expected run_dir=<a genlab run directory>, e.g. outputs/train/<date>/<time>"
        )
    find_checkpoint(options["run_dir"], options["ckpt"], options["ckpt_path"], quiet=True)
