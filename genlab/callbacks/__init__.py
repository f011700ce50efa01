from genlab.callbacks.checkpoint import Checkpoint
from genlab.callbacks.config import StoreConfig
from genlab.callbacks.guard import DivergenceGuard
from genlab.callbacks.images import Reconstructions, SampleGrid
from genlab.callbacks.metrics import SampleQuality
from genlab.callbacks.state import Interruption, TrainingState
from genlab.callbacks.summary import RunSummary

__all__ = [
    "Checkpoint",
    "DivergenceGuard",
    "Interruption",
    "Reconstructions",
    "RunSummary",
    "SampleGrid",
    "SampleQuality",
    "StoreConfig",
    "TrainingState",
]
