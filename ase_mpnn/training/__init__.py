"""Training on labelled structures: samples and their checks, reference-data makers (EMT,
GFN2-xTB), the options (config), the loss, the training loop (trainer, loop), fine-tuning,
the data report (datacheck), error metrics, and publishing built-in models."""

from .config import TrainConfig
from .datacheck import check_data, format_report
from .loop import train
from .metrics import error_metrics, format_metrics
from .samples import DataError, GraphCache, LabelError, Sample, read_samples
from .trainer import TrainingDiverged, TrainingError

__all__ = ["DataError", "GraphCache", "LabelError", "Sample", "TrainConfig", "TrainingDiverged",
           "TrainingError", "check_data", "error_metrics", "format_metrics", "format_report",
           "read_samples", "train"]
