"""The words inc_flow's config, search, record and registry share, defined once.

Each is a ``StrEnum``: members compare equal to their yaml/MLflow spelling (``Backend.X86 ==
"x86"``), so configs, Optuna params and MLflow tags keep plain strings while code names them.
"""

from __future__ import annotations

from enum import StrEnum


class Approach(StrEnum):
    """INC 1.x ``quantization.approach`` values."""

    STATIC = "post_training_static_quant"
    DYNAMIC = "post_training_dynamic_quant"
    QAT = "quant_aware_training"
    AUTO = "post_training_auto_quant"  # static, falling back to dynamic (INC's meaning)


class Backend(StrEnum):
    """torch's int8 kernel libraries (``torch.backends.quantized.engine``)."""

    X86 = "x86"
    ONEDNN = "onednn"
    FBGEMM = "fbgemm"


class Runtime(StrEnum):
    """Where a plan's model runs (``quantization.runtime``): torch (FX or eager int8, the
    INC path) or OpenVINO (the plan built with NNCF, run by OpenVINO; the ``[openvino]`` extra)."""

    TORCH_FX = "torch_fx"
    OPENVINO = "openvino"


class Framework(StrEnum):
    """INC 1.x ``model.framework`` values for PyTorch: FX graph mode, or eager mode."""

    FX = "pytorch_fx"
    EAGER = "pytorch"


class Strategy(StrEnum):
    """``tuning.strategy.name``: INC's names, each mapped to an Optuna sampler. ``basic`` ranks
    plans on the samples all-int8 gets wrong and confirms them (``search.ranking``); ``inc``
    walks INC's basic order (observer, op types, single ops, accumulated fallbacks)."""

    BASIC = "basic"
    INC = "inc"
    TPE = "tpe"
    RANDOM = "random"
    EXHAUSTIVE = "exhaustive"
    BAYESIAN = "bayesian"
    MULTI_OBJECTIVE = "multi_objective"


class Objective(StrEnum):
    """``tuning.objective``. INC's ``footprint`` (peak memory) is scored as model size."""

    PERFORMANCE = "performance"
    ACCURACY = "accuracy"
    MODELSIZE = "modelsize"
    FOOTPRINT = "footprint"


class TrialState(StrEnum):
    """What one trial came to (the ``state`` of a trial record and its MLflow run's tag)."""

    PASSED = "passed"  # fully evaluated and met the accuracy criterion
    FAILED = "failed"  # fully evaluated and missed it
    PRUNED = "pruned"  # stopped early: it could no longer meet it
    ERROR = "error"  # the plan could not be built or scored
    DUPLICATE = "duplicate"  # the sampler proposed a plan already tried


class Role(StrEnum):
    """What one process does in a study (``inc-flow tune``, ``--worker``, ``finalize``)."""

    TUNE = "tune"
    WORKER = "worker"
    FINALIZE = "finalize"


def names(vocab: type[StrEnum]) -> tuple[str, ...]:
    """The plain spellings of ``vocab``, in definition order (for messages and choices)."""
    return tuple(member.value for member in vocab)
