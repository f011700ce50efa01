"""Feature extractors: model-range images `[B, C, H, W]` in [-1, 1] -> features `[B, D]` (and class probabilities).

An extractor has a `name`, a `weights_hash` and a `resize` note for the protocol; calling it returns a dict
with `features` and, for classifiers, `probs`.
"""

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor

from genlab.metrics.cache import weights_hash
from genlab.metrics.classifier import Classifier
from genlab.utils.images import model_to_extractor


class Extractor(Protocol):
    name: str
    weights_hash: str
    resize: str

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...


class ClassifierExtractor:
    """The dataset classifier: penultimate features `[B, feature_dim]` and softmax `probs` `[B, K]`."""

    resize = "none (native resolution)"
    # images per forward: a batch of 500 at 28 px held about 80 MB of conv activations at once (the largest
    # transient of a run's per-epoch evaluation); in eval mode the chunks give the same features
    chunk = 100

    def __init__(self, net: Classifier, name: str, weights: str) -> None:
        self.net, self.name, self.weights_hash = net.eval(), name, weights

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        images = images.to(next(self.net.parameters()).device)
        h = torch.cat([self.net.features(part) for part in images.split(self.chunk)])
        return {"features": h.float().cpu(), "probs": torch.softmax(self.net.head(h), 1).float().cpu()}


class InceptionExtractor:
    """InceptionV3 features through torchmetrics' torch-fidelity port (`feature`: 2048 pool features, the FID
    standard, or 64 / 192 / 768); grey images are repeated to RGB."""

    name = "inception-v3-compat"
    resize = "bilinear antialiased to 299 px (torchmetrics)"

    def __init__(self, weights_path: str, feature: str = "2048") -> None:
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(self.name, [feature], feature_extractor_weights_path=weights_path)
        self.name = f"{self.name}-{feature}"
        self.weights_hash = weights_hash(self.net.state_dict())

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": self.features(images).float().cpu()}

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Features `[B, D]` on the images' device: the network moves to where the images are (samples on the
        GPU, cached references read on the CPU); a no-op when it is there already."""
        self.net.to(images.device)
        return self.net(model_to_extractor(images))


def extract(extractor: Extractor, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Run `extractor` over image batches in [-1, 1] and concatenate its outputs."""
    parts: dict[str, list[Tensor]] = {}
    for images in batches:
        for key, value in extractor(images).items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}
