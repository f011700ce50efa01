"""The download task: fetch datasets and the Inception weights ahead of time, for nodes without internet."""

import logging

from hydra import compose
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig

from genlab.errors import GenlabError
from genlab.metrics.inception import cached_weights_path, download_weights

log = logging.getLogger(__name__)


def _location(datamodule) -> str:
    for attr in ("path", "folder", "root"):
        if hasattr(datamodule, attr):
            return str(getattr(datamodule, attr))
    return "bundled with its package"


def fetch_dataset(name: str) -> str:
    """Download dataset `name` (a conf/data option) into its configured place; returns where it is."""
    try:
        data_cfg = compose(config_name="train", overrides=[f"data={name}"]).data
    except HydraException as err:
        raise GenlabError(f"unknown dataset {name!r} ({str(err).splitlines()[0]})") from err
    if "download" in data_cfg:
        data_cfg.download = True
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    return _location(datamodule)


def fetch_inception(cache_dir: str) -> str:
    target = cached_weights_path(cache_dir)
    if target.is_file():
        return f"{target} (already there)"
    try:
        return str(download_weights(cache_dir))
    except OSError as err:
        raise GenlabError(f"could not download the InceptionV3 weights to {target} ({err})") from err


def download(cfg: DictConfig) -> dict[str, str]:
    """Each of `datasets` and (with `inception`) the weights: prints what was fetched and where, and what failed."""
    items = {f"dataset {name}": (fetch_dataset, name) for name in cfg.datasets}
    if cfg.inception:
        items["inception weights"] = (fetch_inception, cfg.paths.cache_dir)
    done, failed = {}, {}
    for label, (fetch, arg) in items.items():
        try:
            done[label] = fetch(arg)
            print(f"  ok      {label}: {done[label]}")
        except GenlabError as err:
            failed[label] = str(err)
            print(f"  FAILED  {label}: {err}")
    if failed:
        raise GenlabError(f"{len(failed)} of {len(items)} downloads failed: {', '.join(failed)} (see above)")
    return done
