"""Shared fixtures: configs composed with Hydra's compose API and shrunk to a fast CPU run in tmp_path."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import genlab  # noqa: F401  (registers resolvers)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
FAST = ["debug=fast", "logger=[]", "callbacks.progress_bar.refresh_rate=0"]


def compose_cfg(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The train config with `overrides`, Hydra's runtime set up so `${hydra:...}` resolves."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """One cache dir per test session (the digits classifier and reference features are trained/computed once)."""
    old = os.environ.get("GENLAB_CACHE_DIR")
    os.environ["GENLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("GENLAB_CACHE_DIR")
    else:
        os.environ["GENLAB_CACHE_DIR"] = old


@pytest.fixture
def make_cfg(tmp_path: Path):
    """`make_cfg(*overrides)`: a fast CPU config writing into tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        return compose_cfg([*FAST, *overrides], output_dir=tmp_path)

    yield _make
    GlobalHydra.instance().clear()
