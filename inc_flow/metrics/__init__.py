"""Built-in metrics (INC 1.x names), multi-metric weighting and postprocess.

The public names are importable from here: ``from inc_flow.metrics import TopK, build_metric``.
"""

from inc_flow.metrics.build import (
    METRIC_CLASSES,
    POSTPROCESS_FUNCS,
    MultiMetric,
    apply_postprocess,
    build_metric,
    label_shift,
    update_metric,
    wants_reference,
)
from inc_flow.metrics.classification import F1, Accuracy, TopK
from inc_flow.metrics.regression import MAE, MSE, RMSE, CosineSimilarity, Loss

__all__ = [
    "F1",
    "MAE",
    "METRIC_CLASSES",
    "MSE",
    "POSTPROCESS_FUNCS",
    "RMSE",
    "Accuracy",
    "CosineSimilarity",
    "Loss",
    "MultiMetric",
    "TopK",
    "apply_postprocess",
    "build_metric",
    "label_shift",
    "update_metric",
    "wants_reference",
]
