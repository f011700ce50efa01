"""Metrics: features -> statistics -> number, as small functions; caching and orchestration wrap them.

`QualityMetrics` (classifier and Inception sample quality), `reconstruction_metrics`, `vae_likelihood`.
Result keys are constants in `genlab.metrics.keys`.
"""

from genlab.metrics import keys
from genlab.metrics.evaluator import QualityMetrics
from genlab.metrics.likelihood import iwae_log_px, likelihood_table, vae_likelihood
from genlab.metrics.reconstruction import reconstruction_metrics

__all__ = ["QualityMetrics", "iwae_log_px", "keys", "likelihood_table", "reconstruction_metrics", "vae_likelihood"]
