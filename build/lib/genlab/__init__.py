"""genlab: train, compare and evaluate generative image models."""

from genlab.utils.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
