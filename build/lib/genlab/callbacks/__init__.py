from genlab.callbacks.checkpoint import Checkpoint
from genlab.callbacks.guard import DivergenceGuard
from genlab.callbacks.images import Reconstructions, SampleGrid
from genlab.callbacks.state import Interruption, TrainingState

__all__ = ["Checkpoint", "DivergenceGuard", "Interruption", "Reconstructions", "SampleGrid", "TrainingState"]
