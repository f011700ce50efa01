from genlab.callbacks.checkpoint import Checkpoint
from genlab.callbacks.config import StoreConfig
from genlab.callbacks.images import Reconstructions, SampleGrid
from genlab.callbacks.metrics import SampleQuality

__all__ = ["Checkpoint", "Reconstructions", "SampleGrid", "SampleQuality", "StoreConfig"]
