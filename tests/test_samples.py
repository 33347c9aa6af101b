"""``MetricEvaluator.probe`` (quant/samples.py): a model beside fp32, sample by sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from inc_flow.errors import MetricError
from inc_flow.metrics import Accuracy as Acc
from inc_flow.metrics import TopK
from inc_flow.metrics.regression import MSE
from inc_flow.quant.evaluate import MetricEvaluator
from inc_flow.quant.samples import counts_top1
from inc_flow.search.ports import HasProbe

pytestmark = pytest.mark.no_mlflow


class Scores(nn.Module):
    """Returns its input as class scores, with ``shift`` added to class 0 of some samples."""

    def __init__(self, shift: float = 0.0, rows: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.shift, self.rows = shift, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, :, 0].clone()
        idx = [i for i in range(x.shape[0]) if int(x[i, 0, 1]) in self.rows]
        out[idx, 0] += self.shift
        return out


def data(n: int = 40) -> torch.Tensor:
    """Sample i: scores [i % 4 is highest], a tie between 1 and 2 on sample 5, its index."""
    x = torch.zeros(n, 4, 2)
    for i in range(n):
        x[i, :, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4]).roll(i % 4 - 3)
        x[i, 0, 1] = i
    x[5, :, 0] = torch.tensor([0.0, 0.9, 0.9, 0.0])
    return x


def test_probe_compares_classes_ties_and_margins_and_reuses_recorded_outputs() -> None:
    x = data()
    loader = DataLoader(TensorDataset(x, torch.arange(40) % 4), batch_size=16)
    evaluator = MetricEvaluator(dataloader=loader, metric=TopK(k=1))
    assert isinstance(evaluator, HasProbe)
    fp32, int8 = Scores(), Scores(shift=1.0, rows=(3, 17, 30))
    evaluator.evaluate(fp32)
    evaluator.evaluate(int8)
    full = evaluator.probe(int8, fp32, None)
    assert full.cost == 0 and full.indices == tuple(range(40))  # both recorded: nothing run
    wrong = [i for i, ok in enumerate(full.agrees()) if not ok]
    assert wrong == [3, 5, 17, 30]  # three moved to class 0, one tie
    assert full.tied[5] and full.ref_margins[0] == pytest.approx(0.1)
    part = evaluator.probe(int8, fp32, (3, 17, 20))
    assert part.indices == (3, 17, 20) and part.cost == 0  # picked from the recorded outputs
    assert part.agrees() == [False, False, True]
    other = Scores(shift=1.0, rows=(3,))
    assert evaluator.probe(other, fp32, None).cost == 40  # never evaluated: run once


def test_without_class_scores_only_output_errors_count() -> None:
    x = data(8)
    loader = DataLoader(TensorDataset(x, torch.zeros(8, 4)), batch_size=4)
    evaluator = MetricEvaluator(dataloader=loader, metric=MSE())
    probe = evaluator.probe(Scores(shift=2.0, rows=(6,)), Scores(), None)
    assert not probe.classes and probe.errors[6] > 1 and probe.errors[0] == 0


def test_an_eval_func_probes_the_calibration_data_or_says_it_cannot() -> None:
    calib = [data(12)]
    evaluator = MetricEvaluator(eval_func=lambda m: 0.5, probe_loader=calib, probe_limit=8)
    probe = evaluator.probe(Scores(shift=1.0, rows=(1,)), Scores(), None)
    assert probe.indices == tuple(range(12)) and probe.cost == 24  # the whole first batch
    assert [i for i, ok in enumerate(probe.agrees()) if not ok] == [1, 5]
    blind = MetricEvaluator(eval_func=lambda m: 0.5)
    with pytest.raises(MetricError, match="no probe data"):
        blind.probe(Scores(), Scores(), None)


def test_on_calibration_data_a_probe_reads_on_until_enough_disagreements() -> None:
    loader = DataLoader(TensorDataset(data(), torch.zeros(40)), batch_size=8)
    fp32, int8 = Scores(), Scores(shift=1.0, rows=(3, 17, 30))  # wrong: 3, 5 (a tie), 17, 30

    def evaluator(most: int) -> MetricEvaluator:
        return MetricEvaluator(
            eval_func=lambda m: 0.5,
            probe_loader=loader,
            probe_limit=8,
            probe_disagreements=3,
            probe_most=most,
        )

    full = evaluator(40)
    probe = full.probe(int8, fp32, None)
    # batch 0 has two disagreements, batch 1 none, batch 2 the third: three batches read
    assert probe.indices == tuple(range(24)) and probe.cost == 2 * 24
    assert [i for i, ok in enumerate(probe.agrees()) if not ok] == [3, 5, 17]
    # fp32's outputs were kept: only the new model runs where fp32 already did
    other = full.probe(Scores(shift=1.0, rows=(3,)), fp32, None)  # two disagreements only
    assert other.indices == tuple(range(40)) and other.cost == 40 + 16
    picked = full.probe(int8, fp32, (17, 30))  # a selection past probe_limit: fp32 kept
    assert picked.agrees() == [False, False] and picked.cost == 2
    capped = evaluator(16).probe(int8, fp32, None)
    assert capped.indices == tuple(range(16))  # probe_most stops it short of the third


def test_with_a_top1_metric_the_probe_carries_labels_and_scores_by_them() -> None:
    x = data()
    labels = torch.arange(40) % 4  # fp32 (Scores()) is right on all but the tie at 5
    labels[[3, 17]] = 0  # ... and wrong on 3 and 17, where a shift to class 0 is right
    loader = DataLoader(TensorDataset(x, labels), batch_size=16)
    evaluator = MetricEvaluator(dataloader=loader, metric=TopK(k=1))
    fp32 = Scores()
    fixes = Scores(shift=1.0, rows=(3, 17))  # moves 3 and 17 away from fp32, to their label
    keeps = Scores(shift=0.01, rows=(3, 17))  # too small to move them: stays with fp32
    a, b = evaluator.probe(fixes, fp32, None), evaluator.probe(keeps, fp32, None)
    assert a.labels == tuple(labels.tolist()) and a.labels == b.labels
    assert sum(a.agrees()) == 37 and sum(b.agrees()) == 39  # by agreement, `keeps` wins
    assert a.hits() == 39 and b.hits() == 37  # the labels say `fixes` is right (5 ties)
    assert a.score() > b.score()
    part = evaluator.probe(fixes, fp32, (3, 5, 17))  # a selection keeps its labels
    assert part.labels == (0, labels[5].item(), 0) and part.hits() == 2


@pytest.mark.parametrize(
    ("metric", "labels", "why"),
    [
        (TopK(k=2), torch.arange(40) % 4, "top-2: hits on top-1 are not what it counts"),
        (TopK(k=1), torch.nn.functional.one_hot(torch.arange(40) % 4, 4), "one-hot"),
        (TopK(k=1), (torch.arange(40) % 4).float(), "float labels"),
        (TopK(k=1), torch.arange(40) % 4 + 4, "classes past the scores' width"),
    ],
)
def test_labels_the_ranking_cannot_read_leave_it_on_agreement(metric, labels, why) -> None:
    loader = DataLoader(TensorDataset(data(), labels), batch_size=16)
    evaluator = MetricEvaluator(dataloader=loader, metric=metric)
    probe = evaluator.probe(Scores(shift=1.0, rows=(3,)), Scores(), None)
    assert probe.labels == (), why
    assert probe.score() == sum(probe.agrees()) == 38  # sample 3 moved, sample 5 ties


def test_an_eval_func_ranks_by_agreement_even_when_the_calibration_data_has_labels() -> None:
    loader = DataLoader(TensorDataset(data(), torch.zeros(40, dtype=torch.long)), batch_size=8)
    evaluator = MetricEvaluator(eval_func=lambda m: 0.5, probe_loader=loader, probe_limit=40)
    probe = evaluator.probe(Scores(shift=1.0, rows=(3,)), Scores(), None)
    assert probe.labels == () and probe.score() == 38  # the eval_func's metric is unknown


def test_only_inc_flows_top1_metrics_count_hits() -> None:
    class Accuracy:  # a user's metric of the same name: its meaning is unknown
        tied = 0

    assert counts_top1(TopK(k=1)) and counts_top1(Acc())
    assert not counts_top1(TopK(k=5)) and not counts_top1(Accuracy())
    assert not counts_top1(MSE())
