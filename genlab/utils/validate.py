"""Config checks that need neither data nor files: value ranges of well-known keys, and every `_target_`
node's keys and simple types against the target's signature. The first problem raises a ConfigError that
names the key, the value and what would be accepted."""

import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import ConfigError
from genlab.utils.threads import thread_count

GROUPS = ("model", "data", "trainer", "callbacks", "logger", "guard")


def _int(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# leaf key (anywhere under GROUPS) -> (accepts(value), what is accepted)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "latent_dim": _int(1),
    "image_size": _int(1),
    "batch_size": _int(1),
    "eval_batch_size": ((lambda v: v is None or (_is_int(v) and v >= 1)), "an integer >= 1 or null"),
    "n_critic": _int(1),
    "num_workers": _int(0),
    "max_skips": _int(0),
    "subset": ((lambda v: v is None or (_is_int(v) and v >= 1)), "a positive number of images or null"),
    "val_fraction": ((lambda v: _is_number(v) and 0 <= v < 1), "a number with 0 <= value < 1"),
    "test_fraction": ((lambda v: _is_number(v) and 0 < v < 1), "a number with 0 < value < 1"),
    "beta": ((lambda v: _is_number(v) and v >= 0), "a number >= 0"),
    "clip_value": ((lambda v: v is None or (_is_number(v) and v > 0)), "a positive number or null"),
    "hidden_dims": (
        (lambda v: isinstance(v, list) and all(_is_int(d) and d >= 1 for d in v)),
        "a list of integers >= 1",
    ),
}
_BATCHES = (
    (lambda v: v is None or (_is_number(v) and (0 <= v <= 1 or (v > 1 and v % 1 == 0)))),
    "a fraction of the batches in [0.0, 1.0] or a whole number of batches",
)
# full key -> rule: Lightning's Trainer arguments, refused here before a run dir exists rather than by the Trainer
PATH_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "trainer.max_epochs": ((lambda v: v is None or (_is_int(v) and v >= -1)), "an integer >= 0, -1 (no limit) or null"),
    "trainer.max_steps": ((lambda v: _is_int(v) and v >= -1), "an integer >= 0 or -1 (no limit)"),
    "trainer.min_epochs": ((lambda v: v is None or (_is_int(v) and v >= 0)), "an integer >= 0 or null"),
    "trainer.min_steps": ((lambda v: v is None or (_is_int(v) and v >= 0)), "an integer >= 0 or null"),
    "trainer.check_val_every_n_epoch": ((lambda v: v is None or (_is_int(v) and v >= 1)), "an integer >= 1 or null"),
    "trainer.num_sanity_val_steps": ((lambda v: _is_int(v) and v >= -1), "an integer >= 0 or -1 (all batches)"),
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.limit_train_batches": _BATCHES,
    "trainer.limit_val_batches": _BATCHES,
    "trainer.limit_test_batches": _BATCHES,
}
LR = re.compile(r"^lr(_\w+)?$")  # lr, lr_g, lr_d, lr_e, ...
LR_RULE = ((lambda v: _is_number(v) and v > 0), "a number > 0")


def validate_config(cfg: DictConfig, signatures: bool = True) -> None:
    """Raise a ConfigError for the first bad value under `GROUPS` (breadth first: `model.lr` before nets).
    `signatures=False` checks the values alone, without importing any target (nor torch): the training entry
    point's check before `import lightning`."""
    missing = [k for g in GROUPS if isinstance(cfg.get(g), DictConfig) for k in _missing(cfg[g], g)]
    if missing:
        raise ConfigError(f"{missing[0]} has no value; it is required: set it, e.g. {missing[0]}=...")
    if cfg.get("seed") is not None and not _is_int(cfg.seed):
        raise ConfigError(f"seed={cfg.seed!r} is invalid; expected an integer or null")
    thread_count(cfg.get("threads"), 1)  # raises on a bad value
    for key in ("compile", "channels_last"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg[key]!r} is invalid; expected true or false")
    queue = [(group, cfg[group]) for group in GROUPS if isinstance(cfg.get(group), DictConfig)]
    while queue:
        path, node = queue.pop(0)
        for key in node:
            value = node._get_node(key)
            full = f"{path}.{key}"
            if isinstance(value, DictConfig):
                queue.append((full, value))
                continue
            rule = PATH_RULES.get(full) or (LR_RULE if LR.match(str(key)) else RULES.get(str(key)))
            if rule is not None:
                _check(full, _plain(node, key), *rule)
        if signatures and "_target_" in node:
            _check_signature(path, node)


def _missing(node: DictConfig, path: str) -> list[str]:
    """Keys left at `???`, without resolving any interpolation."""
    found = []
    for key in node:
        if OmegaConf.is_missing(node, key):
            found.append(f"{path}.{key}")
        elif isinstance(node._get_node(key), DictConfig):
            found += _missing(node._get_node(key), f"{path}.{key}")
    return found


def _plain(node: DictConfig, key: Any) -> Any:
    value = node[key]
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value


def _check(key: str, value: Any, accepts: Callable[[Any], bool], what: str) -> None:
    if accepts(value):
        return
    if isinstance(value, str):
        raise ConfigError(f"{key}={value!r} is not a number; expected {what}")
    raise ConfigError(f"{key}={value!r} is invalid; expected {what}")


# classes whose `**kwargs` go to another callable rather than up their bases: (module, class) -> its path
FORWARDED_KWARGS = {
    ("lightning.pytorch.strategies.ddp", "DDPStrategy"): "torch.nn.parallel.DistributedDataParallel",
}


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """Named parameters of a callable, following `**kwargs` up a class's bases (or to where `FORWARDED_KWARGS`
    says they go); and whether any are left open."""
    params: dict[str, inspect.Parameter] = {}
    classes = [c for c in target.__mro__ if c is not object] if inspect.isclass(target) else [target]
    for owner in classes:
        forwarded = FORWARDED_KWARGS.get((getattr(owner, "__module__", ""), getattr(owner, "__qualname__", "")))
        if forwarded is not None:
            own, _ = _parameters(owner.__init__)
            more, open_ended = _parameters(get_object(forwarded))
            return {k: v for k, v in {**own, **more}.items() if k != "module"}, open_ended
    for owner in classes:
        fn = owner.__init__ if inspect.isclass(owner) else owner
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return params, True
        for name, p in sig.parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self":
                params.setdefault(name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, False
        if inspect.isclass(owner) and "__init__" not in owner.__dict__:
            continue
    return params, True


def _check_signature(path: str, node: DictConfig) -> None:
    """Unknown keys (a misspelt `+key=...`) and values whose simple type (int, float, bool, str) is wrong."""
    try:
        target = get_object(node._target_)
    except Exception as err:
        raise ConfigError(f"{path}._target_={node._target_!r} cannot be imported ({err})") from err
    params, open_ended = _parameters(target)
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    for key in node:
        if str(key).startswith("_"):
            continue
        if key not in params:
            if open_ended:
                continue
            close = difflib.get_close_matches(str(key), params, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"{path}.{key} is not an option of {node._target_}; {hint}expected one of: {', '.join(params)}"
            )
        if isinstance(node._get_node(key), DictConfig | ListConfig):
            continue
        try:
            value = node[key]
        except Exception:  # e.g. ${hydra:...} before Hydra has set up the job: nothing to check yet
            continue
        # an unannotated switch (most of DDP's options): true or false, as its default is
        switch = bool if isinstance(params[key].default, bool) else None
        _check_type(f"{path}.{key}", value, hints.get(str(key), switch))


SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_type(key: str, value: Any, hint: Any) -> None:
    if hint is None:
        return
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in args:
        return
    simple = [a for a in args if a in SIMPLE]
    if not simple or len(simple) != len([a for a in args if a is not type(None)]):
        return  # not a plain scalar type: leave it to the target
    ok = any(
        (a is float and _is_number(value))
        or (a is int and _is_int(value))
        or (a not in (int, float) and isinstance(value, a))
        for a in simple
    )
    if not ok:
        what = " or ".join(SIMPLE[a] for a in simple)
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {what}")


def check_values(cfg: DictConfig) -> None:
    """The training entry point's `precheck` (genlab.utils.runner.run_task): `validate_config` without targets."""
    validate_config(cfg, signatures=False)
