"""The tables of INC 1.x names a config may use, and the parameters each name takes.

Pure data; no torch. ``inc_flow.data`` and ``inc_flow.metrics`` implement exactly the names in
DATASETS, TRANSFORMS, METRICS and POSTPROCESS. Approaches, backends, frameworks, strategies and
objectives are the StrEnums of :mod:`inc_flow.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEVICES = ("cpu",)
LAST_BATCH = ("rollover", "no_rollover")
DTYPES = ("int8", "uint8", "fp32")
SCHEMES = ("sym", "asym")
GRANULARITIES = ("per_channel", "per_tensor")
ACTIVATION_ALGORITHMS = ("minmax", "kl")
WEIGHT_ALGORITHMS = ("minmax",)
TENSOR_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool",
)  # fmt: skip
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
DEFAULT_QCONFIG = "default_qconfig"  # INC's op_wise key for the ops no other entry sets


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter the user must give."""


@dataclass(frozen=True)
class Param:
    """One parameter of a dataset, transform, metric or postprocess.

    Attributes:
        kind: how the value is checked and normalised (see ``check_param``).
        default: the value used when the key is absent, or ``REQUIRED``.
        choices: allowed values for kind ``choice``.
    """

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()


_DUMMY_RANGE = {
    "low": Param("float_or_list", -1.0),
    "high": Param("float_or_list", 1.0),
    "dtype": Param("dtype_or_list", "float32"),
}
DATASETS: dict[str, dict[str, Param]] = {
    # INC meaning: shape[0] is the number of samples; a list of shapes gives several inputs.
    "dummy": {"shape": Param("shape"), **_DUMMY_RANGE, "label": Param("bool", True)},
    "dummy_v2": {
        "input_shape": Param("shape_per_sample"),
        "label_shape": Param("shape_per_sample_or_empty", ()),
        **_DUMMY_RANGE,
        "length": Param("positive_int", 1000),
    },
    "FashionMNIST": {
        "root": Param("dir", "/usr/share/datasets/fashion-mnist"),
        "train": Param("bool", False),
        "download": Param("no_download", False),
    },
    "MNIST": {
        "root": Param("dir", "/usr/share/datasets/mnist"),
        "train": Param("bool", False),
        "download": Param("no_download", False),
    },
    "ImageFolder": {"root": Param("dir")},
    # inc_flow: a dataset from your own code, ``factory(**kwargs[, transform=...])``.
    "custom": {"factory": Param("factory"), "kwargs": Param("mapping", {})},
}
TRANSFORMS: dict[str, dict[str, Param]] = {
    "ToTensor": {},
    "Normalize": {"mean": Param("floats", (0.0,)), "std": Param("nonzero_floats", (1.0,))},
    "Resize": {
        "size": Param("size"),
        "interpolation": Param("choice", "bilinear", INTERPOLATIONS),
    },
    "CenterCrop": {"size": Param("size")},
}
_COMPARE_LABEL = {"compare_label": Param("bool", True)}
METRICS: dict[str, dict[str, Param]] = {
    "topk": {"k": Param("choice", REQUIRED, (1, 5))},
    "Accuracy": {},
    "Loss": {},
    "MSE": _COMPARE_LABEL,
    "RMSE": _COMPARE_LABEL,
    "MAE": _COMPARE_LABEL,
    "F1": {},
    # inc_flow: mean cosine similarity of outputs and labels (agreement with fp32 embeddings).
    "CosineSimilarity": {"compare_label": Param("bool", False)},
}
POSTPROCESS: dict[str, dict[str, Param]] = {"LabelShift": {"label_shift": Param("int")}}
SCALAR_PARAM = {"topk": "k", "LabelShift": "label_shift"}
"""Entries whose yaml value is their single parameter (``topk: 1``, ``LabelShift: -1``)."""

# INC 1.x keys that inc_flow knows but does not implement: rejected with the reason.
INC_UNSUPPORTED: dict[str, dict[str, str]] = {
    "config": {
        k: "is not supported: inc_flow does quantization only"
        for k in ("graph_optimization", "mixed_precision", "pruning", "distillation", "nas")
    }
    | {
        "use_bf16": "is not supported: inc_flow produces int8/fp32 models only",
        "model_conversion": "is not supported (INC's TensorFlow QAT model conversion)",
        "optimization_level": "is not supported (an INC TensorFlow/ONNX option)",
        "train": "is not supported; set `Quantization.q_func` in Python for training",
    },
    "model": {
        "inputs": "is not needed for PyTorch (an INC TensorFlow/ONNX key); remove it",
        "outputs": "is not needed for PyTorch (an INC TensorFlow/ONNX key); remove it",
    },
    "quantization": {
        "train": "is not supported; set `Quantization.q_func` in Python for training",
        "recipes": "is not supported (INC TensorFlow/ONNX graph recipes)",
        "advance": "is not supported (INC bias correction)",
        "optimization_level": "is not supported (an INC TensorFlow/ONNX option)",
    },
    "tuning": {
        "tensorboard": "is not supported; inc_flow records to MLflow (see `tracking`)",
        "diagnosis": "is not supported; inc_flow records every trial to MLflow",
        "multi_objectives": "is not supported; use `strategy.name: multi_objective`",
    },
    "performance": {
        "postprocess": "is not used for performance; put it under `evaluation.accuracy`",
    },
    "dataloader": {"distributed": "is not supported: inc_flow tunes in one process"},
    "configs": {
        "kmp_affinity": (
            "is not supported: OpenMP reads KMP_AFFINITY once, when the process starts; "
            "export KMP_AFFINITY before running inc_flow instead"
        ),
    },
    "strategy": {
        k: "is not supported (an option of INC strategies inc_flow does not have)"
        for k in (
            "sigopt_api_token",
            "sigopt_project_id",
            "sigopt_experiment_name",
            "accuracy_weight",
            "latency_weight",
            "confidence_batches",
            "hawq_v2_loss",
        )
    },  # fmt: skip
    "workspace": {
        "resume": (
            "is not supported: INC's history.snapshot is a pickle, which inc_flow does not read "
            "(reading one runs code from the file). inc_flow resumes by itself: rerun the same "
            "config with the same `tuning.workspace.path` (or `tuning.storage` and "
            "`tuning.study_name`) and the study continues from its stored trials"
        ),
    },
}


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
"""Optuna storage URL schemes (a ``+driver`` suffix is allowed)."""
TRACKING_SCHEMES = ("file", "http", "https", "databricks", "databricks-uc", "uc", "mssql")
"""MLflow tracking URI schemes besides the storage ones."""
