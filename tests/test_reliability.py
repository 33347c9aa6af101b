"""Bad runtime input: a clear error naming the problem, or a failed trial with its reason
while the study goes on. Toy models, in-process, no MLflow (tests/test_tracking.py checks
that failed trials become FAILED child runs with their reason)."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

from inc_flow import quantize
from inc_flow.errors import ConfigError, DataError, MetricError, QuantizationError, SaveLoadError
from inc_flow.search.progress import LoggingTracker
from inc_flow.search.storage import RECORD_ATTR
from tests.toys import NoOps, SleepyNet, TinyNet, Untraceable

X = torch.randn(8, 1, 20, 20, generator=torch.Generator().manual_seed(0))
LABELS = torch.zeros(8, dtype=torch.long)


def _conf(tmp_path, storage: str | None = ":memory:", max_trials: int = 3, timeout: int = 600):
    return {
        "model": {"name": "tiny"},
        "evaluation": {"performance": {"warmup": 1, "iteration": 2}},
        "tuning": {
            "storage": storage,
            "study_name": "reliability",
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"timeout": timeout, "max_trials": max_trials},
            "accuracy_criterion": {"absolute": 0.5},
        },
    }


def _tune(tmp_path, model=None, conf=None, **kwargs):
    conf = conf or _conf(tmp_path)
    model = TinyNet().eval() if model is None else model
    return quantize(conf, model=model, tracker=LoggingTracker(), **kwargs)


def _is_int8(module: nn.Module) -> bool:
    return "quantized" in type(module).__module__


# --- data -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loader",
    [[], torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 1, 20, 20)))],
    ids=["list", "DataLoader"],
)
def test_an_empty_calibration_loader_is_an_error_before_any_work(tmp_path, loader):
    with pytest.raises(DataError, match="yields no batches"):
        _tune(tmp_path, conf=_conf(tmp_path, storage=None), calib_dataloader=loader)
    assert not (tmp_path / "ws").exists()


def test_a_batch_that_is_not_tensors_is_described(tmp_path):
    with pytest.raises(DataError, match=r"cannot split the batch.*list\[str, str, str\]"):
        _tune(tmp_path, calib_dataloader=[["a", "b", "c"]], eval_func=lambda m: 0.9)


def test_a_batch_the_model_cannot_take_names_the_step_and_the_shape(tmp_path):
    wrong = torch.randn(4, 3, 28, 28)  # three channels: TinyNet takes one
    with pytest.raises(DataError, match=r"timing the fp32 model.*RuntimeError.*3 channels"):
        _tune(tmp_path, calib_dataloader=[wrong], eval_func=lambda m: 0.9)


def test_a_bad_batch_late_in_calibration_is_named_before_the_study(tmp_path):
    # the study fingerprint reads the calibration batches first (tests/test_identity.py)
    with pytest.raises(DataError, match=r"calibration data: batch 1: cannot split the batch"):
        _tune(tmp_path, calib_dataloader=[X, "oops"], eval_func=lambda m: 0.9)
    assert not list(tmp_path.rglob("optuna.db"))


def test_labels_that_do_not_fit_the_outputs_name_both_shapes(tmp_path):
    with pytest.raises(MetricError, match=r"labels of shape \(3,\).*preds of shape \(8, 10\)"):
        _tune(
            tmp_path,
            conf={**_conf(tmp_path), "evaluation": {"accuracy": {"metric": {"topk": 1}}}},
            calib_dataloader=[X],
            eval_dataloader=[(X, torch.zeros(3, dtype=torch.long))],
        )


# --- metrics and eval_func ------------------------------------------------------------------
class NaNMetric:
    """A custom metric (update/reset/result) whose result is NaN."""

    def reset(self) -> None:
        pass

    def update(self, output, label) -> None:
        pass

    def result(self) -> float:
        return float("nan")


def test_a_nan_metric_on_the_fp32_model_is_an_error(tmp_path):
    with pytest.raises(MetricError, match="fp32 model's metric is NaN"):
        _tune(tmp_path, calib_dataloader=[X], eval_dataloader=[(X, LABELS)], metric=NaNMetric())


def test_a_nan_metric_on_int8_models_fails_those_trials(tmp_path):
    def nan_for_int8(model):
        return float("nan") if _is_int8(model.fc1) else 0.9

    result = _tune(tmp_path, calib_dataloader=[X], eval_func=nan_for_int8).result
    states = [(r.state, r.failure_reason) for r in result.records]
    assert states[0] == ("error", "MetricError: the metric returned NaN")


def test_an_eval_func_that_raises_on_fp32_names_the_step_and_the_cause(tmp_path):
    def broken(model):
        raise ValueError("sensor offline")

    with pytest.raises(MetricError, match="evaluating the fp32 model failed: ValueError: sensor"):
        _tune(tmp_path, calib_dataloader=[X], eval_func=broken)


def test_trials_whose_eval_raises_are_failed_and_the_study_goes_on(tmp_path):
    def fc2_int8_crashes(model):
        if _is_int8(model.fc2):
            raise RuntimeError("int8 fc2 not supported here")
        return 0.9

    conf = _conf(tmp_path, storage=None, max_trials=6, timeout=0)
    outcome = _tune(tmp_path, conf=conf, calib_dataloader=[X], eval_func=fc2_int8_crashes)
    records = outcome.result.records
    # default, kl observer and Conv2d fallback keep fc2 int8; the Linear fallback passes
    assert [r.phase for r in records] == ["default", "observer", "op_type", "op_type"]
    assert [r.state for r in records] == ["error", "error", "error", "passed"]
    assert records[0].failure_reason == "RuntimeError: int8 fc2 not supported here"
    assert outcome.q_model is not None and "fc2" in outcome.q_model.plan.fp32_ops
    # Optuna has them as FAIL, each with its record and reason, for the dashboards and resume
    study = optuna.load_study(
        study_name="reliability", storage=f"sqlite:///{tmp_path / 'ws' / 'optuna.db'}"
    )
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert "int8 fc2" in trials[0].user_attrs[RECORD_ATTR]["failure_reason"]


def test_an_interrupted_trial_is_failed_on_the_next_run_and_nothing_is_redone(tmp_path):
    """Ctrl-C in a notebook: the trial stays RUNNING; the next call marks it FAIL."""
    calls = []

    def evaluate(model):
        calls.append(_is_int8(model.fc1))
        if calls == [False, True, True]:  # fp32 baseline, trial 0, then trial 1 is stopped
            raise KeyboardInterrupt
        return 0.9

    conf = _conf(tmp_path, storage=None, max_trials=3)
    model = TinyNet().eval()  # the same weights both times: else the study is refused
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, model, conf=conf, calib_dataloader=[X], eval_func=evaluate)
    result = _tune(tmp_path, model, conf=conf, calib_dataloader=[X], eval_func=evaluate).result
    assert result.stale_trials == (1,)
    assert [r.number for r in result.records] == [0, 2]  # trial 0 kept, 1 failed, 2 is new
    assert len({r.plan for r in result.records}) == 2
    # the second run evaluated trial 2 only: neither the baseline nor trial 0 again
    assert len(calls) == 4


# --- models ---------------------------------------------------------------------------------
def test_a_model_fx_cannot_trace_as_a_whole_is_tuned_by_its_traceable_parts(tmp_path):
    model = Untraceable().eval()
    outcome = _tune(tmp_path, model=model, calib_dataloader=[X], eval_func=lambda m: 0.9)
    assert outcome.q_model is not None
    assert {op.name for op in outcome.q_model.plan.ops} >= {"body.conv1", "head"}


class Leafless(nn.Module):
    """Python control flow on data and no sub-module: nothing for FX to trace."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 400))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return x @ self.weight.t() if x.sum() > 0 else -x @ self.weight.t()


def test_a_model_fx_cannot_trace_at_all_names_the_module_and_why(tmp_path):
    conf = _conf(tmp_path, storage=None)
    with pytest.raises(
        QuantizationError, match=r"(?s)cannot trace.*<root> \(Leafless\).*TraceError"
    ):
        _tune(tmp_path, model=Leafless().eval(), conf=conf, calib_dataloader=[X])
    assert not (tmp_path / "ws").exists()


def test_a_model_without_quantizable_ops_is_named(tmp_path):
    with pytest.raises(QuantizationError, match="model NoOps has no quantizable op"):
        _tune(tmp_path, model=NoOps().eval(), calib_dataloader=[X], eval_func=lambda m: 0.9)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"other.weight": torch.zeros(3)}, r"Missing key\(s\).*Unexpected key\(s\).*other"),
        (
            {**SleepyNet().state_dict(), "fc2.weight": torch.zeros(7, 16)},
            r"size mismatch for fc2\.weight",
        ),
    ],
    ids=["keys", "shapes"],
)
def test_a_weights_file_that_does_not_match_the_model_is_named(tmp_path, state, match):
    torch.save(state, tmp_path / "fp32.pt")
    conf = _conf(tmp_path, storage=None)
    conf["model"] = {
        "name": "sleepy",
        "factory": "tests.toys:SleepyNet",
        "weights": str(tmp_path / "fp32.pt"),
    }
    with pytest.raises(SaveLoadError, match=r"`model\.weights` .* does not match SleepyNet"):
        quantize(conf, calib_dataloader=[X], eval_func=lambda m: 0.9, tracker=LoggingTracker())
    with pytest.raises(SaveLoadError, match=match):
        quantize(conf, calib_dataloader=[X], eval_func=lambda m: 0.9, tracker=LoggingTracker())


# --- storage --------------------------------------------------------------------------------
def test_a_storage_that_cannot_be_opened_names_the_key(tmp_path):
    conf = _conf(tmp_path, storage="postgresql+psycopg2://nobody@127.0.0.1:9/none")
    with pytest.raises(ConfigError, match=r"`tuning\.storage` cannot open the Optuna storage"):
        _tune(tmp_path, conf=conf, calib_dataloader=[X], eval_func=lambda m: 0.9)
