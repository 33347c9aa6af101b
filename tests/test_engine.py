"""The engine adapter: calibrate once, exact early rejection, latency measurement."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from inc_flow.common import DataLoader
from inc_flow.data import DummyDataset
from inc_flow.errors import DataError, MetricError
from inc_flow.metrics import Accuracy, TopK
from inc_flow.quant import latency
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.evaluate import LatencyBenchmark, MetricEvaluator, repeat_batch
from inc_flow.search.plan import default_plan
from inc_flow.search.speed import FP32, TRIAL, Candidate
from tests.toys import TinyNet

pytestmark = pytest.mark.no_mlflow


class Labelled(torch.utils.data.Dataset):
    """Inputs whose label is what a fixed model predicts for the first `agree` samples."""

    def __init__(self, model: nn.Module, n: int, agree: int) -> None:
        torch.manual_seed(0)
        self.x = torch.randn(n, 1, 20, 20)
        with torch.no_grad():
            pred = model(self.x).argmax(1)
        self.y = pred.clone()
        self.y[agree:] = (pred[agree:] + 1) % 10

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


def test_calibration_runs_once_per_observer_setting(tiny):
    calib = DataLoader(DummyDataset([32, 1, 20, 20]), batch_size=8)
    engine = FxEngine(tiny, torch.zeros(1, 1, 20, 20), calib_loader=calib, sampling_size=16)
    plan = default_plan(engine.ops())
    for fallback in ([], ["conv1"], ["fc1", "fc2"], ["conv2"]):
        engine.build(plan.with_fallback(set(fallback)))
    assert engine.calibration_passes == 1
    kl = default_plan(engine.ops(), act_algorithm="kl")
    engine.build(kl)
    engine.build(kl.with_fallback({"fc2"}))
    assert engine.calibration_passes == 2


def test_empty_calibration_loader_is_an_error(tiny):
    engine = FxEngine(tiny, torch.zeros(1, 1, 20, 20), calib_loader=[], sampling_size=16)
    with pytest.raises(DataError, match="no batch"):
        engine.build(default_plan(engine.ops()))


def test_early_rejection_is_exact(tiny):
    data = Labelled(tiny, n=100, agree=50)  # the model is right on the first 50 only
    loader = DataLoader(data, batch_size=10)
    evaluator = MetricEvaluator(dataloader=loader, metric=TopK(k=1))
    full = evaluator(tiny)
    assert (full.value, full.samples, full.total, full.stopped_early) == (0.5, 100, 100, False)
    # 0.5 is reachable: never rejected, even though the running accuracy drops to 0.5
    assert not evaluator(tiny, threshold=0.5).stopped_early
    # 0.95 needs 95 right: after 60 samples (50 right) even all-right would give 0.9
    early = evaluator(tiny, threshold=0.95)
    assert early.stopped_early and early.samples == 60 and early.total == 100


def test_elementwise_accuracy_never_stops_early(tiny):
    class Same(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return torch.zeros(3), torch.ones(3)

    evaluator = MetricEvaluator(dataloader=DataLoader(Same(), batch_size=5), metric=Accuracy())
    outcome = evaluator(lambda x: torch.zeros_like(x), threshold=0.99)
    assert not outcome.stopped_early and outcome.value == 0.0


def test_evaluator_needs_something_to_evaluate():
    with pytest.raises(MetricError, match="eval_func"):
        MetricEvaluator(dataloader=[1])


def test_benchmark_measures_both_batches(tiny):
    bench = LatencyBenchmark(torch.randn(3, 1, 20, 20), batch_size=8, warmup=1, iterations=3)
    assert bench.inputs_1.shape[0] == 1 and bench.inputs_n.shape[0] == 8
    out = bench.measure(tiny)
    assert out["latency_ms_b1"] > 0 and out["latency_ms_b8"] > 0
    assert out["throughput"] == pytest.approx(8 / (out["latency_ms"] / 1000))


def test_repeat_batch_shapes():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(repeat_batch(x, 5)[3:], x[:2])
    a, b = repeat_batch((x, x[:1]), 2)
    assert a.shape == (2, 2) and b.shape == (2, 2)
    assert repeat_batch({"k": x}, 1)["k"].shape == (1, 2)


def test_evaluator_returns_the_tie_count_and_chance_of_a_ranking_metric():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0], [0.0, 0.0, 1.0]])
    data = [(scores[:2], torch.tensor([1, 1])), (scores[2:], torch.tensor([0, 2]))]
    outcome = MetricEvaluator(dataloader=data, metric=TopK(k=1))(lambda x: x)
    # argmax: row 0 -> 0 (miss), row 1 -> 1, row 2 -> 0, row 3 -> 2: three hits of four
    assert (outcome.value, outcome.tied, outcome.chance) == (0.75, 2, pytest.approx(1 / 3))
    by_func = MetricEvaluator(eval_func=lambda m: 0.5)(lambda x: x)
    assert by_func.tied is None and by_func.chance is None


def test_nan_or_inf_eval_inputs_are_named_on_the_first_pass():
    good = torch.zeros(2, 3)
    bad = torch.tensor([[0.0, float("nan"), 1.0], [float("inf"), 0.0, float("nan")]])
    labels = torch.tensor([0, 0])
    evaluator = MetricEvaluator(dataloader=[(good, labels), (bad, labels)], metric=TopK(k=1))
    with pytest.raises(DataError, match=r"batch 1 has non-finite inputs: 2 NaN and 1 inf of 6"):
        evaluator(lambda x: x)
    multi = MetricEvaluator(dataloader=[((good, bad), labels)], metric=Accuracy())
    with pytest.raises(DataError, match="batch 0"):
        multi(lambda x, m: x)
    clean = MetricEvaluator(dataloader=[(good, labels)], metric=TopK(k=1))
    clean(lambda x: x)
    assert clean.inputs_checked  # later passes (the trials) do not check again


def test_side_by_side_times_every_candidate_each_round_on_its_backend(tiny, monkeypatch):
    calib = DataLoader(DummyDataset([16, 1, 20, 20]), batch_size=8)
    engine = FxEngine(tiny, torch.zeros(1, 1, 20, 20), calib_loader=calib, sampling_size=8)
    plan = default_plan(engine.ops())
    x86 = engine.build(plan)
    fbgemm = engine.build(dataclasses.replace(plan, backend="fbgemm"))
    candidates = [
        Candidate("fp32", tiny, FP32),
        Candidate("trial 0", x86, TRIAL, "x86", 0),
        Candidate("trial 1", fbgemm, TRIAL, "fbgemm", 1),
    ]
    seen = []
    real = latency.measure_latency

    def spy(fn, inputs, warmup, iterations, threads):
        seen.append((torch.backends.quantized.engine, inputs[0].shape[0], iterations, threads))
        return real(fn, inputs, warmup, iterations, threads)

    monkeypatch.setattr(latency, "measure_latency", spy)
    torch.backends.quantized.engine = "onednn"
    bench = LatencyBenchmark(torch.randn(3, 1, 20, 20), batch_size=4, warmup=0, iterations=7)
    samples = bench.side_by_side(candidates)
    assert latency.round_plan(7) == (5, 2) and latency.round_plan(2) == (2, 1)
    assert {name: {b: len(v) for b, v in s.items()} for name, s in samples.items()} == {
        c.name: {1: 5, 4: 5} for c in candidates
    }
    assert all(ms > 0 for s in samples.values() for v in s.values() for ms in v)
    # 5 rounds x 3 candidates x 2 batches, 2 timed calls each, 1 thread, each on its backend
    assert len(seen) == 30 and {(n, t) for _, _, n, t in seen} == {(2, 1)}
    engines = [e for e, b, _, _ in seen if b == 1]
    assert engines[1:3] == ["x86", "fbgemm"] and engines[3:5] == ["fbgemm", "x86"]
    assert torch.backends.quantized.engine == "onednn"  # restored


def test_evaluator_threads_are_set_while_evaluating_and_restored():
    before = torch.get_num_threads()
    seen = []
    evaluator = MetricEvaluator(eval_func=lambda m: seen.append(torch.get_num_threads()) or 1.0)
    evaluator(None)
    MetricEvaluator(eval_func=evaluator.eval_func, threads=1)(None)
    assert seen == [before, 1] and torch.get_num_threads() == before
