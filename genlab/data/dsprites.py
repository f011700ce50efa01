"""dSprites (Matthey et al. 2017): 737,280 binary 64x64 shapes with six generative factors as labels.

https://github.com/deepmind/dsprites-dataset
"""

import logging
import urllib.request
from pathlib import Path

import numpy as np
import torch

from genlab.data.base import GenDataModule, ImageTensorDataset, convert_channels, resize_uint8, seeded_split
from genlab.errors import ConfigError, DatasetNotFoundError, check_choice

log = logging.getLogger(__name__)

URL = "https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
FACTORS = {"color": 1, "shape": 3, "scale": 6, "orientation": 40, "posX": 32, "posY": 32}
KEYS = ("imgs", "latents_classes")


class DSpritesDataModule(GenDataModule):
    """`factor` picks one latent factor as the class label; `factor: null` gives all six as `[B, 6]` labels.

    The file has no official split: `test_fraction` of it (seed 0) is held out.
    """

    def __init__(
        self, path: str, factor: str | None = "shape", download: bool = True, test_fraction: float = 0.1, **kwargs
    ) -> None:
        if factor is not None:
            check_choice("data.factor", factor, FACTORS)
        expected = FACTORS[factor] if factor else 0
        num_classes = kwargs.pop("num_classes", expected)
        if num_classes != expected:
            raise ConfigError(
                f"data.num_classes={num_classes} does not match data.factor={factor!r}; expected {expected}"
            )
        super().__init__(num_classes=num_classes, **kwargs)
        self.path, self.factor, self.download = Path(path).expanduser(), factor, download
        self.test_fraction = test_fraction
        self._all: ImageTensorDataset | None = None

    def prepare_data(self) -> None:
        if self.path.exists():
            return
        if not self.download:
            raise self._not_found("download is disabled")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            log.info("Downloading dSprites to %s", self.path)
            urllib.request.urlretrieve(URL, self.path.with_suffix(".part"))
            self.path.with_suffix(".part").rename(self.path)
        except Exception as err:
            raise self._not_found(f"download failed: {err}") from err

    def _not_found(self, reason: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"dataset 'dsprites' not found at {self.path} ({reason}). Expected the official .npz with keys "
            f"{', '.join(KEYS)}. Provide it by setting data.path (or GENLAB_DATA_DIR, which holds dsprites/), "
            f"or run online with data.download=true."
        )

    def read(self, split: str) -> ImageTensorDataset:
        if self._all is None:
            self.prepare_data()
            with np.load(self.path) as npz:
                missing = [k for k in KEYS if k not in npz.files]
                if missing:
                    raise DatasetNotFoundError(f"{self.path} is not a dSprites file: keys {missing} are missing")
                images = torch.from_numpy(npz["imgs"]).mul_(255).unsqueeze(1)  # (N, 1, 64, 64), {0, 255}
                factors = torch.from_numpy(npz["latents_classes"].astype(np.int64))  # (N, 6)
            labels = factors[:, list(FACTORS).index(self.factor)] if self.factor else factors
            images = convert_channels(resize_uint8(images, self.image_size), self.channels)
            self._all = ImageTensorDataset(images, labels)
        train_idx, test_idx = seeded_split(len(self._all), self.test_fraction, seed=0)
        return self._all.select(train_idx if split == "train" else test_idx)
