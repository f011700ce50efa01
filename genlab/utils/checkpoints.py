"""Loading checkpoints safely: `weights_only=True` unless the user opts in, a digest of the weights and
optimiser state written with every checkpoint and checked on load, and a clear error for a checkpoint that
does not fit the configured model."""

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import CheckpointError

log = logging.getLogger(__name__)
DIGEST_KEY = "genlab_digest"  # blake2b of `state_dict` and `optimizer_states`, written by TrainingState


def tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) for every tensor in nested dicts/lists, in a stable order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from tensors(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}.{i}")


def digest(checkpoint: dict) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key, t in tensors({"state_dict": checkpoint.get("state_dict"), "opt": checkpoint.get("optimizer_states")}):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # its buffer, not a copy
    return h.hexdigest()


def first_nonfinite(obj: Any) -> tuple[str, float] | None:
    """The first floating-point tensor entry that is nan or inf, as (key, value), or None."""
    for key, t in tensors(obj):
        if t.is_floating_point() and t.numel() and not torch.isfinite(t).all():
            return key, float(t[~torch.isfinite(t)].flatten()[0])
    return None


def read(path: str | Path, key: str = "ckpt_path", allow_unsafe: bool = False) -> Any:
    """The one `torch.load` of genlab: a file of tensors and plain containers, read on the CPU with
    `weights_only=True`; pickled code is refused unless `allow_unsafe` (then loaded with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{key}={path} does not exist; expected a .ckpt file written by genlab "
            f"(e.g. <run dir>/checkpoints/last.ckpt)"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{key}={path} is not a valid PyTorch checkpoint (corrupt or truncated file); expected a .ckpt "
            f"written by torch.save, e.g. <run dir>/checkpoints/last.ckpt"
        )
    for weights_only in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only)
        except pickle.UnpicklingError as err:
            found = [line for line in str(err).splitlines() if "GLOBAL" in line]  # a class or function, not data
            if not weights_only or not found:  # the pickle itself is damaged
                raise _corrupt(path, key, " ".join(str(err).split()[-4:])) from err
            if not allow_unsafe:
                reason = found[0].split(" was not")[0].split(" whose module")[0].strip().rstrip(".")
                raise CheckpointError(
                    f"{key}={path} holds pickled Python objects that are not plain weights ({reason}); loading them "
                    f"can run arbitrary code, so genlab refuses. If you trust its source, rerun with "
                    f"allow_unsafe_checkpoint=true"
                ) from err
            log.warning("allow_unsafe_checkpoint=true: loading %s with weights_only=False (it may run code)", path)
        except Exception as err:
            raise _corrupt(path, key, " ".join(str(err).split())[:200]) from err
    raise AssertionError("unreachable")


def load_checkpoint(path: str | Path, key: str = "ckpt_path", allow_unsafe: bool = False) -> dict:
    """A genlab/Lightning checkpoint, read safely (`read`), with its digest and finite values checked."""
    checkpoint = read(path, key, allow_unsafe)
    _check_contents(Path(path), key, checkpoint)
    return checkpoint


def _corrupt(path: Path, key: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{key}={path} is not a valid PyTorch checkpoint (corrupt or truncated file: {reason}); expected a .ckpt "
        f"written by torch.save, e.g. <run dir>/checkpoints/last.ckpt"
    )


def _check_contents(path: Path, key: str, checkpoint: Any) -> None:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{key}={path} is not a Lightning checkpoint (no state_dict); expected a genlab .ckpt")
    if DIGEST_KEY in checkpoint and checkpoint[DIGEST_KEY] != digest(checkpoint):
        raise CheckpointError(
            f"{key}={path} is corrupt: its weights and optimiser state do not match the digest written with them "
            f"(the file was damaged or modified after saving); use another checkpoint, e.g. best-*.ckpt"
        )
    bad = first_nonfinite({"state_dict": checkpoint["state_dict"], "opt": checkpoint.get("optimizer_states")})
    if bad is not None:
        raise CheckpointError(
            f"{key}={path} holds a non-finite value ({bad[0]} = {bad[1]}); expected a checkpoint of a run "
            f"that had not diverged"
        )


def check_fits(path: str | Path, checkpoint: dict, model: nn.Module, model_name: str, key: str = "ckpt_path") -> None:
    """Raise a CheckpointError if the checkpoint's weights do not have the model's names and shapes."""
    saved, expected = checkpoint["state_dict"], model.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [k for k in expected if k in saved and tuple(saved[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    details = []
    if missing:
        details.append(f"missing {len(missing)} weights such as {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected weights such as {unexpected[0]}")
    if shapes:
        k = shapes[0]
        details.append(f"{k} has shape {tuple(saved[k].shape)}, the model expects {tuple(expected[k].shape)}")
    raise CheckpointError(
        f"{key}={path} does not fit model={model_name} with this config ({'; '.join(details)}); expected a "
        f"checkpoint written by the same model and config (resume=<run dir> reuses the run's own config)"
    )
