"""Locating the InceptionV3 weights: the configured path, the cache dir, or a download; skipped (said once) if none."""

import logging
import os
from pathlib import Path

from genlab.errors import ConfigError
from genlab.metrics.features import InceptionExtractor

log = logging.getLogger(__name__)

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
ENV_VAR = "GENLAB_INCEPTION_WEIGHTS"
_skip_said: set[str] = set()


def cached_weights_path(cache_dir: str | Path) -> Path:
    """Where `python -m genlab.download` puts the weights, and where they are looked for by default."""
    return Path(cache_dir) / "inception" / WEIGHTS_URL.rsplit("/", 1)[1]


def download_weights(cache_dir: str | Path) -> Path:
    """Fetch the weights into the cache dir (raises on network errors)."""
    import torch

    target = cached_weights_path(cache_dir)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(target), progress=False)
    return target


def find_weights(weights: str | None, cache_dir: str | Path, download: bool) -> tuple[Path | None, str]:
    """(path, how it was found) or (None, why not). `weights` (or $GENLAB_INCEPTION_WEIGHTS) wins when set."""
    weights = weights or os.environ.get(ENV_VAR)
    if weights:
        if not Path(weights).expanduser().is_file():
            raise ConfigError(
                f"metrics.inception_weights={weights} does not exist; expected the torch-fidelity InceptionV3 "
                f"weights file ({WEIGHTS_URL.rsplit('/', 1)[1]}), e.g. from `python -m genlab.download`"
            )
        return Path(weights).expanduser(), "configured"
    cached = cached_weights_path(cache_dir)
    if cached.is_file():
        return cached, "cache"
    if not download:
        return None, f"no weights at {cached} and metrics.inception_download=false"
    try:
        return download_weights(cache_dir), "downloaded"
    except OSError as err:  # URLError and socket errors are OSErrors
        return None, f"could not download them ({err.__class__.__name__}: {err})"


def load_inception(
    weights: str | None, cache_dir: str | Path, download: bool, feature: str = "2048"
) -> InceptionExtractor | None:
    """The Inception extractor, or None after saying once (per reason) why Inception FID/KID are skipped."""
    path, how = find_weights(weights, cache_dir, download)
    if path is None:
        if how not in _skip_said:
            _skip_said.add(how)
            log.warning(
                "Inception FID/KID skipped: no InceptionV3 weights (%s). Set metrics.inception_weights or $%s to "
                "the weights file, or run `python -m genlab.download` where there is internet.",
                how,
                ENV_VAR,
            )
        return None
    return InceptionExtractor(str(path), feature)
