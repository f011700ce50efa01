from genlab.callbacks.checkpoint import Checkpoint
from genlab.callbacks.images import Reconstructions, SampleGrid

__all__ = ["Checkpoint", "Reconstructions", "SampleGrid"]
