"""What the runs of a study log, as plain dicts keyed by :mod:`inc_flow.record.keys` names: a
plan's params, a trial's metrics, the study's settings and baseline, its result.

No mlflow import: :class:`inc_flow.record.tracking.MlflowTracker` sends these.
"""

from __future__ import annotations

from typing import Any

from inc_flow.record import keys as k
from inc_flow.search.plan import Plan
from inc_flow.search.records import StudyInfo, TrialRecord, TuneResult
from inc_flow.search.speed import FP32


def plan_params(plan: Plan) -> dict[str, str]:
    """The plan as flat params: approach, backend, runtime, observer settings (those most int8 ops
    hold; ``op_observers`` lists the ops holding others), one ``op.<name>`` per op."""
    int8 = [op for op in plan.ops if op.quantized]
    first = _most_common(int8)
    params = {
        k.PARAM_APPROACH: plan.approach,
        k.PARAM_BACKEND: plan.backend,
        k.PARAM_RUNTIME: plan.runtime,
        k.PARAM_BIAS_CORRECTION: plan.bias_correction or "-",
        k.PARAM_FRAMEWORK: plan.framework,
        k.PARAM_ACT_ALGORITHM: first.act_algorithm if first else "-",
        k.PARAM_ACT_SCHEME: first.act_scheme if first else "-",
        k.PARAM_WEIGHT_GRANULARITY: first.weight_granularity if first else "-",
        k.PARAM_WEIGHT_SCHEME: first.weight_scheme if first else "-",
        k.PARAM_OP_OBSERVERS: _op_observers(int8),
        k.PARAM_N_INT8_OPS: str(len(int8)),
        k.PARAM_N_FP32_OPS: str(len(plan.ops) - len(int8)),
    }
    for op in plan.ops:
        params[k.op_param(op.name)] = op.dtype
    return params


def _most_common(int8: list) -> Any:
    """The int8 op holding the observer setting most int8 ops hold (the first on ties)."""
    keys = [op.observer_key for op in int8]
    return max(int8, key=lambda op: keys.count(op.observer_key), default=None)


def _op_observers(int8: list) -> str:
    """The int8 ops whose observers differ from the plan's (most common) ones, or "-"."""
    ref = _most_common(int8).observer_key if int8 else None
    text = "; ".join(
        f"{op.name}={','.join(op.observer_key)}" for op in int8 if op.observer_key != ref
    )
    return (text[: k.MAX_VALUE - 3] + "..." if len(text) > k.MAX_VALUE else text) or "-"


def record_metrics(record: TrialRecord) -> dict[str, float]:
    """The trial's scores as MLflow metrics (absent scores are left out, not zero)."""
    values: dict[str, Any] = {
        k.METRIC_ACCURACY: record.accuracy,
        k.METRIC_RELATIVE_DROP: record.relative_drop,
        k.METRIC_ABSOLUTE_DROP: record.absolute_drop,
        k.METRIC_LATENCY_MS: record.latency_ms,
        k.METRIC_MODEL_SIZE: record.model_size,
        k.METRIC_INT8_OPS: record.int8_ops,
        k.METRIC_FP32_OPS: record.fp32_ops,
        k.METRIC_EVAL_SAMPLES: record.eval_samples,
        k.METRIC_EVAL_SAMPLES_SAVED: record.samples_saved,
        k.METRIC_CALIBRATION_PASSES: record.calibration_passes,
        k.METRIC_TRIAL_WALL_TIME: record.wall_time_s,
        k.METRIC_TIED_OUTPUTS: record.tied_outputs,
        k.METRIC_RANK_SAMPLES: record.rank_samples,
    }
    for key, value in record.perf.items():
        values.setdefault(key, value)
    return {k.safe_key(key): float(v) for key, v in values.items() if v is not None}


def study_params(model: str, info: StudyInfo) -> dict[str, str]:
    """The parent run's params: the study's settings (values cut to MLflow's limit)."""
    s = info.settings
    params = {
        k.PARAM_MODEL: model,
        k.PARAM_APPROACH: s.approach,
        k.PARAM_BACKENDS: ",".join(s.backends),
        k.PARAM_STRATEGY: s.strategy,
        k.PARAM_OBJECTIVE: s.objective,
        k.PARAM_CRITERION: _criterion(s),
        k.PARAM_MAX_TRIALS: str(s.max_trials),
        k.PARAM_TIMEOUT: str(s.timeout),
        k.PARAM_RANDOM_SEED: str(s.random_seed),
        k.PARAM_N_OPS: str(len(info.ops)),
        k.PARAM_STUDY_STORAGE: info.storage,
    }
    return {key: value[: k.MAX_VALUE] for key, value in params.items()}


def baseline_metrics(info: StudyInfo) -> dict[str, float]:
    """The parent run's fp32 baseline and the accuracy a trial needs (when known)."""
    metrics = {k.METRIC_FP32_LATENCY_MS: info.baseline_latency_ms}
    if info.baseline_accuracy is not None:
        metrics[k.METRIC_FP32_ACCURACY] = info.baseline_accuracy
    if info.required_accuracy is not None:
        metrics[k.METRIC_REQUIRED_ACCURACY] = info.required_accuracy
    return {key: float(v) for key, v in metrics.items()}


def result_metrics(result: TuneResult) -> dict[str, float]:
    """The parent run's summary: counts, totals, and the best trial's scores as ``best_*``."""
    metrics: dict[str, Any] = {
        k.METRIC_N_TRIALS: result.n_trials,
        k.METRIC_N_PRUNED: result.n_pruned,
        k.METRIC_N_ERRORS: result.n_errors,
        k.METRIC_N_DUPLICATES: result.n_duplicates,
        k.METRIC_CALIBRATION_PASSES: result.calibration_passes,
        k.METRIC_EVAL_SAMPLES_SAVED: result.eval_samples_saved,
        k.METRIC_TUNING_WALL_TIME: result.wall_time_s,
    }
    if result.best is not None:
        metrics.update({k.best(key): v for key, v in record_metrics(result.best).items()})
        metrics[k.METRIC_SPEEDUP] = result.speedup
    metrics.update(round_metrics(result))
    return {key: float(v) for key, v in metrics.items() if v is not None}


def round_metrics(result: TuneResult) -> dict[str, float]:
    """The side-by-side round on the parent run: speed-up (median, min, max) at the objective
    batch and at batch 1, the chosen plan's and fp32's median latencies."""
    speed = result.speed
    if speed is None:
        return {}
    n, chosen = speed.batch, speed.chosen
    up, up1 = speed.speedup[n], speed.speedup[1]
    return {
        k.METRIC_SPEEDUP_MIN: up.low,
        k.METRIC_SPEEDUP_MAX: up.high,
        k.METRIC_SPEEDUP_B1: up1.median,
        k.METRIC_SPEEDUP_B1_MIN: up1.low,
        k.METRIC_SPEEDUP_B1_MAX: up1.high,
        k.METRIC_ROUND_LATENCY_MS: speed.latency_of(chosen).median,
        k.METRIC_ROUND_LATENCY_MS_B1: speed.latency_of(chosen, 1).median,
        k.METRIC_ROUND_FP32_LATENCY_MS: speed.latency_of(FP32).median,
        k.METRIC_ROUND_FP32_LATENCY_MS_B1: speed.latency_of(FP32, 1).median,
        k.METRIC_ROUND_BATCH: float(n),
        k.METRIC_ROUNDS: float(speed.rounds),
        k.METRIC_FINALISTS: float(len(speed.finalists)),
    }


def result_tags(result: TuneResult) -> dict[str, str]:
    """The parent run's outcome tags: best trial (when any), stop reason, and the speed
    verdict (faster than fp32 in enough rounds, slower by median, slower at batch 1)."""
    tags = {}
    if result.best is not None:
        tags[k.TAG_BEST_TRIAL] = str(result.best.number)
        tags[k.TAG_FASTER_THAN_FP32] = str(result.faster_than_fp32)
        tags[k.TAG_SPEED_VERDICT] = result.verdict[: k.MAX_VALUE]
    if result.speed is not None:
        tags[k.TAG_SLOWER_AT_B1] = str(result.speed.slower_at_b1)
    tags[k.TAG_STOP_REASON] = result.stop_reason
    tags[k.TAG_SLOWER_THAN_FP32] = str(result.slower_than_fp32)
    return tags


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts with the first row's keys) as columns, for ``log_table``."""
    names = list(rows[0])
    return {name: [row.get(name) for row in rows] for name in names}


def _criterion(settings: Any) -> str:
    if settings.absolute is not None:
        return f"absolute {settings.absolute}"
    rel = settings.relative if settings.relative is not None else 0.01
    return f"relative {rel}"


__all__ = [
    "baseline_metrics",
    "columns",
    "plan_params",
    "record_metrics",
    "result_metrics",
    "result_tags",
    "round_metrics",
    "study_params",
]
