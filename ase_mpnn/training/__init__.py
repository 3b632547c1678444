"""Training on labelled structures: samples and their checks, reference-data makers (EMT,
GFN2-xTB), the options (config), the loss, the training loop (trainer, loop), error
metrics, and publishing built-in models."""

from .config import TrainConfig
from .loop import train
from .metrics import error_metrics, format_metrics
from .samples import DataError, GraphCache, Sample, read_samples

__all__ = ["DataError", "GraphCache", "Sample", "TrainConfig", "error_metrics",
           "format_metrics", "read_samples", "train"]
