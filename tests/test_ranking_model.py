"""The default strategy on a real small model (tests/toys.py's TinyNet, FX int8): an observer
change of one op passes, so that op's fp32 fallback is never needed."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from inc_flow.metrics import TopK
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.evaluate import LatencyBenchmark, MetricEvaluator
from inc_flow.search.loop import tune
from inc_flow.search.settings import TuneSettings
from inc_flow.search.space import SearchSpace
from tests.fakes import ListTracker
from tests.toys import SHAPE, TinyNet

pytestmark = pytest.mark.no_mlflow

OUTLIER = 7  # the fc1 unit whose weights are 200x the others (and that fc2 ignores)


def outlier_net() -> TinyNet:
    """A TinyNet whose fc1 has one output row 200x larger than the rest: per-tensor weights
    leave the other rows a handful of int8 levels, per-channel weights are fine. The unit's
    bias keeps it below zero, so after its ReLU it is 0 and fc2's input range stays sane;
    fc2 gives it no weight either."""
    torch.manual_seed(0)
    net = TinyNet().eval()
    with torch.no_grad():
        net.fc1.weight[OUTLIER] *= 200.0
        net.fc1.bias[OUTLIER] = -1e4
        net.fc2.weight[:, OUTLIER] = 0.0
    return net


def test_an_observer_change_on_one_op_passes_without_its_fallback(tmp_path) -> None:
    net = outlier_net()
    torch.manual_seed(1)
    calib = torch.randn(64, *SHAPE)
    x = torch.randn(256, *SHAPE)
    with torch.no_grad():
        y = net(x).argmax(1)  # fp32 is right by construction: baseline 1.0
    evaluator = MetricEvaluator(
        dataloader=DataLoader(TensorDataset(x, y), batch_size=64), metric=TopK(k=1)
    )
    engine = FxEngine(net, calib[:8], calib_loader=[calib], sampling_size=64)
    space = SearchSpace(
        tuple(engine.ops()),
        act_algorithms=("minmax",),
        weight_granularities=("per_tensor", "per_channel"),  # per-tensor first: the default
    )
    bench = LatencyBenchmark(calib[:8], batch_size=8, warmup=1, iterations=2)
    settings = TuneSettings(
        storage=":memory:", relative=0.05, timeout=0, max_trials=8, final_round=False
    )
    tracker = ListTracker()
    result = tune(engine, evaluator, bench, settings, space=space, tracker=tracker)

    default, best = result.records[0], result.best
    assert default.state in ("failed", "pruned") and default.accuracy < 0.9
    assert best is not None and best.phase == "ranked" and best.number == 1
    assert best.plan.fp32_ops == ()  # fc1 stays int8 ...
    grans = {op.name: op.weight_granularity for op in best.plan.ops}
    assert grans == {  # ... with weights of its own granularity
        "conv1": "per_tensor",
        "conv2": "per_tensor",
        "fc1": "per_channel",
        "fc2": "per_tensor",
    }
    assert best.accuracy >= result.required_accuracy and best.eval_samples == 256
    # the fc1 fallback ranked as well as the change, yet was never evaluated
    assert all(r.plan.fp32_ops == () for r in result.records)
    assert best.rank_samples > 0
