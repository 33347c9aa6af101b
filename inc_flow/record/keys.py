"""Every MLflow name inc_flow writes or reads, defined once: run tags and their values, params,
metrics, artifacts, and the tags and aliases of registered model versions.

Plain strings, no mlflow import. The helpers spell them as ``search_runs`` columns
(:func:`tag`, :func:`param`, :func:`metric`) and filter clauses (:func:`tag_is`), and make
any key MLflow-safe (:func:`safe_key`).
"""

from __future__ import annotations

import re
from typing import Final

# --- run tags ------------------------------------------------------------------------------
TAG_STUDY: Final = "inc_flow.study"
TAG_ROLE: Final = "inc_flow.role"  # ROLE_STUDY (parent) or ROLE_TRIAL (child)
TAG_TRIAL: Final = "inc_flow.trial"  # the trial number
TAG_STATE: Final = "inc_flow.state"  # a vocab.TrialState, STATE_RUNNING or STATE_KILLED
TAG_REASON: Final = "inc_flow.failure_reason"
TAG_PHASE: Final = "inc_flow.phase"
TAG_DUPLICATE_OF: Final = "inc_flow.duplicate_of"
TAG_BEST_TRIAL: Final = "inc_flow.best_trial"
TAG_STOP_REASON: Final = "inc_flow.stop_reason"
TAG_SLOWER_THAN_FP32: Final = "inc_flow.slower_than_fp32"  # median above fp32's (the round)
TAG_FASTER_THAN_FP32: Final = "inc_flow.faster_than_fp32"  # in every round: may be champion
TAG_SLOWER_AT_B1: Final = "inc_flow.slower_than_fp32_b1"  # the round's batch-1 medians
TAG_SPEED_VERDICT: Final = "inc_flow.speed_verdict"  # "fp32 is faster at batch 64: ..."
TAG_REGISTERED_MODEL: Final = "inc_flow.registered_model"
TAG_REGISTERED_VERSION: Final = "inc_flow.registered_version"
TAG_PARENT: Final = "mlflow.parentRunId"  # MLflow's own: nests a child run under its parent
# MLflow's own context tags (as mlflow.start_run sets them), set on inc_flow's runs too
TAG_SOURCE_NAME: Final = "mlflow.source.name"
TAG_SOURCE_TYPE: Final = "mlflow.source.type"
TAG_USER: Final = "mlflow.user"
TAG_GIT_COMMIT: Final = "mlflow.source.git.commit"
TAG_NOTE: Final = "mlflow.note.content"  # the run's description in the UI
# an `mlflow run` project run that is not the study's parent: "<experiment>/<parent run id>"
TAG_RECORDED_IN: Final = "inc_flow.recorded_in"

ROLE_STUDY: Final = "study"
ROLE_TRIAL: Final = "trial"
STATE_RUNNING: Final = "running"  # a trial's run before it finishes
STATE_KILLED: Final = "killed"  # a trial's run a dead process left behind

# MLflow's run statuses, as the rows read them.
STATUS_RUNNING: Final = "RUNNING"
STATUS_FINISHED: Final = "FINISHED"
STATUS_FAILED: Final = "FAILED"
STATUS_KILLED: Final = "KILLED"

# --- params of the parent run: the study's settings ------------------------------------------
PARAM_MODEL: Final = "model"
PARAM_BACKENDS: Final = "backends"
PARAM_STRATEGY: Final = "strategy"
PARAM_OBJECTIVE: Final = "objective"
PARAM_CRITERION: Final = "criterion"
PARAM_MAX_TRIALS: Final = "max_trials"
PARAM_TIMEOUT: Final = "timeout"
PARAM_RANDOM_SEED: Final = "random_seed"
PARAM_N_OPS: Final = "n_ops"
PARAM_STUDY_STORAGE: Final = "study_storage"
PARAM_APPROACH: Final = "approach"  # on the parent and on each trial

# --- params of a trial run: its plan -----------------------------------------------------------
PARAM_BACKEND: Final = "backend"
PARAM_RUNTIME: Final = "runtime"  # torch_fx or openvino
PARAM_BIAS_CORRECTION: Final = "bias_correction"  # openvino: NNCF's fast/off/full; torch: "-"
PARAM_FRAMEWORK: Final = "framework"
PARAM_ACT_ALGORITHM: Final = "act_algorithm"
PARAM_ACT_SCHEME: Final = "act_scheme"
PARAM_WEIGHT_GRANULARITY: Final = "weight_granularity"
PARAM_WEIGHT_SCHEME: Final = "weight_scheme"
# int8 ops whose observers differ from the plan's (those most int8 ops hold), by per-op config:
# "conv1=kl,sym,per_tensor,sym; ..." (act_algorithm, act_scheme, weight granularity, scheme)
PARAM_OP_OBSERVERS: Final = "op_observers"
PARAM_N_INT8_OPS: Final = "n_int8_ops"
PARAM_N_FP32_OPS: Final = "n_fp32_ops"
OP_PREFIX: Final = "op."  # one param per op: op.<op name> = int8 | fp32

# --- metrics of a trial run (the parent has each as best_<name> for the best trial) ------------
METRIC_ACCURACY: Final = "accuracy"
METRIC_RELATIVE_DROP: Final = "relative_drop"
METRIC_ABSOLUTE_DROP: Final = "absolute_drop"
METRIC_LATENCY_MS: Final = "latency_ms"
METRIC_LATENCY_MS_B1: Final = "latency_ms_b1"  # one of the trial's perf values
METRIC_MODEL_SIZE: Final = "model_size_bytes"
METRIC_INT8_OPS: Final = "int8_ops"
METRIC_FP32_OPS: Final = "fp32_ops"
METRIC_EVAL_SAMPLES: Final = "eval_samples"
METRIC_EVAL_SAMPLES_SAVED: Final = "eval_samples_saved"  # also the study's total
METRIC_CALIBRATION_PASSES: Final = "calibration_passes"  # also the study's total
METRIC_TRIAL_WALL_TIME: Final = "trial_wall_time_s"
METRIC_TIED_OUTPUTS: Final = "tied_outputs"  # eval samples whose top score is shared
METRIC_RANK_SAMPLES: Final = "rank_samples"  # samples the ranking ran to propose the plan
BEST_PREFIX: Final = "best_"

# --- metrics of the parent run -----------------------------------------------------------------
METRIC_FP32_ACCURACY: Final = "fp32_accuracy"
METRIC_FP32_LATENCY_MS: Final = "fp32_latency_ms"
METRIC_REQUIRED_ACCURACY: Final = "required_accuracy"
METRIC_N_TRIALS: Final = "n_trials"
METRIC_N_PRUNED: Final = "n_pruned"
METRIC_N_ERRORS: Final = "n_errors"
METRIC_N_DUPLICATES: Final = "n_duplicates"
METRIC_TUNING_WALL_TIME: Final = "tuning_wall_time_s"
METRIC_SPEEDUP: Final = "speedup"  # the side-by-side round's median at the objective batch
# The side-by-side round after the search (search.speed): median and spread over the rounds.
METRIC_SPEEDUP_MIN: Final = "speedup_min"
METRIC_SPEEDUP_MAX: Final = "speedup_max"
METRIC_SPEEDUP_B1: Final = "speedup_b1"
METRIC_SPEEDUP_B1_MIN: Final = "speedup_b1_min"
METRIC_SPEEDUP_B1_MAX: Final = "speedup_b1_max"
METRIC_ROUND_LATENCY_MS: Final = "round_latency_ms"  # the chosen plan, objective batch
METRIC_ROUND_LATENCY_MS_B1: Final = "round_latency_ms_b1"
METRIC_ROUND_FP32_LATENCY_MS: Final = "round_fp32_latency_ms"
METRIC_ROUND_FP32_LATENCY_MS_B1: Final = "round_fp32_latency_ms_b1"
METRIC_ROUND_BATCH: Final = "round_batch"  # the objective batch
METRIC_ROUNDS: Final = "rounds"
METRIC_FINALISTS: Final = "finalists"
METRIC_MLFLOW_LOGGING: Final = "mlflow_logging_s"  # the logging time before the time split
# Where the tuning time went (the api logs the first four through MlflowTracker.log_times).
METRIC_TIME_CALIBRATION: Final = "time_calibration_s"
METRIC_TIME_CONVERT: Final = "time_convert_s"
METRIC_TIME_EVALUATION: Final = "time_evaluation_s"
METRIC_TIME_LATENCY: Final = "time_latency_s"
METRIC_TIME_LOGGING: Final = "time_logging_s"

# --- artifacts ------------------------------------------------------------------------------
ARTIFACT_CONFIG: Final = "config.yaml"  # parent: the config
ARTIFACT_BEST_CONFIGURE: Final = "best_configure.yaml"  # parent: the best model's configure
ARTIFACT_STATISTICS: Final = "mixed_precision_statistics.txt"  # parent
ARTIFACT_REPORT: Final = "report.html"  # parent: the study's HTML report
ARTIFACT_PLOTS: Final = "plots"  # parent: folder of the PLOT_* files
PLOT_HISTORY: Final = "optimization_history.png"
PLOT_ACCURACY_LATENCY: Final = "accuracy_vs_latency.png"
PLOT_IMPORTANCES: Final = "param_importances.png"
ARTIFACT_OP_STATISTICS: Final = "op_statistics.json"  # trial: Mixed Precision Statistics
ARTIFACT_PLAN: Final = "plan.yaml"  # trial: its plan
# datasets (MLflow inputs of the parent and trial runs; digests from inc_flow.fingerprint)
DATASET_CONTEXT: Final = "mlflow.data.context"  # an input tag: what the data was used for
DATASET_CALIBRATION: Final = "calibration"
DATASET_EVAL: Final = "eval"
DATASET_DIGEST_CHARS: Final = 16  # of the fingerprint's sha256 (MLflow keeps 36 at most)

# --- registered model versions ---------------------------------------------------------------
ALIAS_CHAMPION: Final = "champion"
ALIAS_CHALLENGER: Final = "challenger"
VERSION_ACCURACY: Final = "accuracy"
VERSION_DROP: Final = "drop"  # the relative drop
VERSION_SPEEDUP: Final = "speedup"
VERSION_LATENCY_MS: Final = "latency_ms"
VERSION_BACKEND: Final = "backend"
VERSION_RUNTIME: Final = "runtime"  # torch_fx or openvino (what runs the model)
VERSION_APPROACH: Final = "approach"
VERSION_STUDY: Final = "study"
VERSION_RUN_ID: Final = "run_id"  # the study's parent run
VERSION_EVAL_DATA: Final = "eval_data"
VERSION_CRITERION: Final = "criterion"
VERSION_MEETS_TARGET: Final = "meets_target"
VERSION_ALIAS_REASON: Final = "alias_reason"
# sha256 of the plan and the int8 weights (registry.content_digest); also a tag of the logged
# model. A version with the same digest is never registered twice.
VERSION_DIGEST: Final = "content_digest"
VERSION_SPEED_VERDICT: Final = "speed_verdict"  # the side-by-side round's verdict vs fp32
# a logged model's tag: the process logging it (host:pid), so that a PENDING model its dead
# process left behind can be told from one a live process is still uploading
MODEL_OWNER: Final = "inc_flow.owner"
# a logged model's and its registry version's tag: the logged model's total bytes (code, data,
# examples, MLmodel), measured after logging (inc_flow.model.shipping.logged_size)
MODEL_SIZE_BYTES: Final = "model_size_bytes"

# --- limits and helpers --------------------------------------------------------------------
MAX_KEY: Final = 250
MAX_VALUE: Final = 6000
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def safe_key(key: str) -> str:
    """An MLflow-safe key: ``[ ] #`` and other characters MLflow rejects become ``_``; long
    keys are cut to 250 characters keeping their end (where op names differ)."""
    key = _UNSAFE.sub("_", key)
    return key if len(key) <= MAX_KEY else key[:40] + "~" + key[-(MAX_KEY - 41) :]


def op_param(op_name: str) -> str:
    """The param holding one op's dtype: ``op.<name>``, made safe."""
    return safe_key(OP_PREFIX + op_name)


def best(metric_name: str) -> str:
    """The parent-run metric of the best trial's ``metric_name``."""
    return BEST_PREFIX + metric_name


def tag(name: str) -> str:
    """The ``search_runs`` column of tag ``name`` (``tags.inc_flow.study``)."""
    return f"tags.{name}"


def param(name: str) -> str:
    """The ``search_runs`` column of param ``name`` (``params.backend``)."""
    return f"params.{name}"


def metric(name: str) -> str:
    """The ``search_runs`` column of metric ``name`` (``metrics.accuracy``)."""
    return f"metrics.{name}"


def quoted(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter: in single quotes, or in double
    quotes when it holds a single one (MLflow's parser has no escape; the config rejects names
    it cannot quote: :func:`inc_flow.config.naming.filter_problem`)."""
    if "'" in value and '"' in value or "\\" in value:
        raise ValueError(f"{value!r} cannot be quoted in an MLflow search filter")
    return f'"{value}"' if "'" in value else f"'{value}'"


def tag_is(name: str, value: str) -> str:
    """A ``search_runs`` filter clause: tag ``name`` equals ``value``."""
    return f"tags.`{name}` = {quoted(value)}"
