from genlab.callbacks.checkpoint import Checkpoint, LastCheckpoint
from genlab.callbacks.config import StoreConfig
from genlab.callbacks.guard import DivergenceGuard
from genlab.callbacks.images import Reconstructions, SampleGrid
from genlab.callbacks.latent import CodebookUsage, LatentTraversal, LatentTSNE
from genlab.callbacks.metrics import SampleQuality
from genlab.callbacks.pictures import LearningCurves
from genlab.callbacks.state import Interruption, TrainingState
from genlab.callbacks.summary import RunSummary

__all__ = [
    "Checkpoint",
    "LastCheckpoint",
    "CodebookUsage",
    "DivergenceGuard",
    "Interruption",
    "LatentTSNE",
    "LatentTraversal",
    "LearningCurves",
    "Reconstructions",
    "RunSummary",
    "SampleGrid",
    "SampleQuality",
    "StoreConfig",
    "TrainingState",
]
