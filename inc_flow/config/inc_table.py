"""The INC 1.x compatibility table: every key of INC 1.x's PyTorch yaml schema, what it means
in INC, and what inc_flow does with it.

INC's keys and meanings are listed here (from INC 1.x's ``conf/config.py`` schema); whether
inc_flow accepts a key is NOT: :func:`behaviour` reads it from the config dataclasses (a field
is accepted) and from :data:`inc_flow.config.names.INC_UNSUPPORTED` (a rejected key and its
message), so the table follows the code. README.md holds the printed table;
tests/test_inc_compat.py checks that it equals :func:`markdown`. Print it with
``python -m inc_flow.config.inc_table``. No torch.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from inc_flow.config.instances import INTER_THREADS, KMP_BLOCKTIME, InstanceConfig
from inc_flow.config.names import INC_UNSUPPORTED
from inc_flow.config.sections import Config, DataloaderConfig
from inc_flow.config.spaces import BIT_REASON, TensorSpace

# Where a path starts: "" is the whole config; the others are sections INC repeats.
ROOTS: dict[str, type] = {
    "": Config,
    "dataloader": DataloaderConfig,
    "configs": InstanceConfig,
    "tensor": TensorSpace,
}
SHOWN = {
    "": "",
    "dataloader": "…dataloader.",
    "configs": "…configs.",
    "tensor": "…_wise.<t>.",
}
"""How a key under a repeated section is shown (``<t>``: weight or activation)."""
LISTS = "lists ok; single values only in `model_wise`"
PER_OP = "per op: one value pins it, a list is that op's own search choice"

# (root, key path, INC 1.x meaning, inc_flow note for accepted keys)
INC_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("", "version", "config format version (1.0)", ""),
    ("", "device", "cpu or gpu", "cpu only"),
    ("", "model.name", "model name", "also the default MLflow experiment"),
    ("", "model.framework", "pytorch, pytorch_fx, pytorch_ipex, ...", "pytorch_fx, pytorch"),
    ("", "model.inputs", "input tensor names (TensorFlow/ONNX)", ""),
    ("", "model.outputs", "output tensor names (TensorFlow/ONNX)", ""),
    ("", "quantization.approach", "static, dynamic, auto PTQ or QAT", ""),
    ("", "quantization.calibration.sampling_size", "calibration sample counts to try",
     "int, list, \"50, 100\" or \"50 100\"; the first is used"),
    ("", "quantization.calibration.dataloader", "calibration data", ""),
    ("", "quantization.model_wise", "weight/activation choices for every op",
     "the global search choices"),
    ("", "quantization.optype_wise", "weight/activation choices per op type", PER_OP),
    ("", "quantization.op_wise", "weight/activation choices per op name (or regex); FX: "
     "`default_qconfig` for the ops not listed",
     f"{PER_OP}; `default_qconfig` is the default of the ops no other entry sets"),
    ("", "quantization.train", "QAT training loop", ""),
    ("", "quantization.advance", "bias correction", ""),
    ("", "quantization.recipes", "graph recipes (TensorFlow/ONNX)", ""),
    ("", "quantization.optimization_level", "TensorFlow/ONNX graph optimization", ""),
    ("tensor", "dtype", "int8, uint8, fp32, bf16, fp16",
     "int8/uint8: int8; fp32: fallback; bf16/fp16 rejected"),
    ("tensor", "scheme", "sym or asym (asym_float: Embedding weights)", LISTS),
    ("tensor", "granularity", "per_channel or per_tensor", "activations per_tensor"),
    ("tensor", "algorithm", "weights: minmax; activations: minmax, kl", LISTS),
    ("tensor", "bit", "weights: bit width, written as 7.0; unused by INC's PyTorch adaptor",
     f"weights only; {BIT_REASON}"),
    ("tensor", "compute_dtype", "activations: dtype an op computes in (uint8, None...)",
     "activations only: uint8 for int8 ops, None with dtype [fp32]"),
    ("", "evaluation.accuracy.metric", "the accuracy metric", ""),
    ("", "evaluation.accuracy.multi_metrics", "several metrics and weights", ""),
    ("", "evaluation.accuracy.dataloader", "evaluation data", ""),
    ("", "evaluation.accuracy.postprocess", "output transforms before the metric", ""),
    ("", "evaluation.accuracy.iteration", "batches to evaluate (-1: all)", ""),
    ("", "evaluation.accuracy.configs", "instances and threads while evaluating",
     "threads; see `configs` below"),
    ("", "evaluation.performance.warmup", "warmup iterations", ""),
    ("", "evaluation.performance.iteration", "measured iterations (-1: all)", ""),
    ("", "evaluation.performance.dataloader", "benchmark data", ""),
    ("", "evaluation.performance.postprocess", "output transforms", ""),
    ("", "evaluation.performance.configs", "instances and threads while benchmarking",
     "the latency threads; see `configs` below"),
    ("configs", "cores_per_instance", "cores of each benchmark instance",
     "the thread count, unless intra_num_of_threads"),
    ("configs", "num_of_instance", "benchmark processes", "must be 1 (one process)"),
    ("configs", "intra_num_of_threads", "intra-op threads", ""),
    ("configs", "inter_num_of_threads", "inter-op threads", f"rejected when set: {INTER_THREADS}"),
    ("configs", "kmp_blocktime", "OpenMP KMP_BLOCKTIME", f"rejected when set: {KMP_BLOCKTIME}"),
    ("configs", "kmp_affinity", "OpenMP KMP_AFFINITY", ""),
    ("dataloader", "batch_size", "batch size", ""),
    ("dataloader", "last_batch", "rollover or discard", "discard = no_rollover"),
    ("dataloader", "shuffle", "shuffle the data", ""),
    ("dataloader", "dataset", "a built-in dataset", "see Datasets"),
    ("dataloader", "transform", "preprocessing", "see Transforms"),
    ("dataloader", "filter", "LabelBalance filter", "rejected when set"),
    ("dataloader", "distributed", "Horovod data sharding", ""),
    ("", "tuning.strategy.name", "basic, bayesian, exhaustive, mse, random, sigopt, tpe...",
     "an Optuna sampler each; names INC has that inc_flow lacks are rejected"),
    ("", "tuning.strategy.sigopt_api_token", "SigOpt strategy", ""),
    ("", "tuning.strategy.sigopt_project_id", "SigOpt strategy", ""),
    ("", "tuning.strategy.sigopt_experiment_name", "SigOpt strategy", ""),
    ("", "tuning.strategy.accuracy_weight", "multi-objective weight", ""),
    ("", "tuning.strategy.latency_weight", "multi-objective weight", ""),
    ("", "tuning.accuracy_criterion.relative", "allowed relative loss", ""),
    ("", "tuning.accuracy_criterion.absolute", "allowed absolute loss", ""),
    ("", "tuning.accuracy_criterion.higher_is_better", "metric direction", ""),
    ("", "tuning.objective", "performance, modelsize, footprint", "footprint scored as size"),
    ("", "tuning.multi_objectives", "several objectives", ""),
    ("", "tuning.exit_policy.timeout", "seconds (0: stop at the first pass)", ""),
    ("", "tuning.exit_policy.max_trials", "trial limit", ""),
    ("", "tuning.exit_policy.performance_only", "no accuracy checks", ""),
    ("", "tuning.random_seed", "seed", ""),
    ("", "tuning.tensorboard", "dump tensors for TensorBoard", ""),
    ("", "tuning.workspace.path", "where tuning writes", ""),
    ("", "tuning.workspace.resume", "history.snapshot to resume from", ""),
    ("", "tuning.diagnosis", "tensor dumps for diagnosis", ""),
    ("", "use_bf16", "allow bf16 ops", ""),
    ("", "graph_optimization", "fp32/bf16 graph conversion", ""),
    ("", "mixed_precision", "bf16 mixed precision", ""),
    ("", "model_conversion", "QAT model conversion (TensorFlow)", ""),
    ("", "pruning", "pruning", ""),
    ("", "distillation", "knowledge distillation", ""),
    ("", "nas", "neural architecture search", ""),
)  # fmt: skip


def _field_class(cls: type, name: str) -> tuple[bool, type | None]:
    """(cls has field ``name``, the section class it holds or None)."""
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name == name:
            check = f.metadata.get("check")
            return True, getattr(check, "keywords", {}).get("cls")
    return False, None


def behaviour(root: str, path: str) -> str:
    """What inc_flow does with the key: "accepted", or "rejected: <reason>" as its error says,
    or "unknown" (a key the schema does not have: a bug this module's test reports)."""
    cls: Any = ROOTS[root]
    parts = path.split(".")
    for i, part in enumerate(parts):
        known, sub = _field_class(cls, part)
        if not known:
            reason = INC_UNSUPPORTED.get(cls._SECTION, {}).get(part)
            return f"rejected: {reason}" if reason and i == len(parts) - 1 else "unknown"
        if i < len(parts) - 1:
            if sub is None:
                return "unknown"
            cls = sub
    return "accepted"


def rows() -> list[tuple[str, str, str]]:
    """(key, INC meaning, inc_flow behaviour) for every INC key."""
    out = []
    for root, path, meaning, note in INC_KEYS:
        key = SHOWN[root] + path
        verdict = behaviour(root, path)
        if verdict == "accepted" and note.startswith("rejected"):  # the key, not its value
            verdict = note
        elif verdict == "accepted":
            verdict = f"accepted: {note}" if note else "accepted"
        out.append((f"`{key}`", meaning, verdict))
    return out


def markdown() -> str:
    """The table as README.md holds it."""
    lines = ["| INC 1.x key | INC meaning | inc_flow |", "|---|---|---|"]
    for key, meaning, verdict in rows():
        lines.append(f"| {key} | {meaning} | {verdict.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
