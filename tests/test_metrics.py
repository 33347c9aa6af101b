"""Built-in metrics, multi-metric weighting and postprocess (inc_flow.metrics)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inc_flow.errors import MetricError
from inc_flow.metrics import (
    F1,
    MAE,
    MSE,
    RMSE,
    Accuracy,
    Loss,
    MultiMetric,
    TopK,
    apply_postprocess,
    build_metric,
)
from inc_flow.metrics.build import chance_level, tied_outputs

pytestmark = pytest.mark.no_mlflow

LOGITS = torch.tensor(
    [
        [0.1, 0.5, 0.2, 0.0, 0.0, 0.0, 0.0],  # ranking 1, 2, 0, ...
        [0.9, 0.0, 0.8, 0.7, 0.6, 0.5, 0.0],  # ranking 0, 2, 3, 4, 5, ...
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 6, 5, 4, 3, 2, 1, 0
        [0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.9],  # ranking 6, 0, 1, 2, ...
    ]
)
LABELS = torch.tensor([1, 5, 0, 2])  # top-1 hits: row 0; top-5 hits: rows 0, 1, 3


def spec(name, **params):
    return SimpleNamespace(name=name, params=params)


def test_topk_1_and_5():
    top1, top5 = TopK(k=1), TopK(k=5)
    for metric in (top1, top5):
        metric.update(LOGITS[:2], LABELS[:2])
        metric.update(LOGITS[2:], LABELS[2:])
    assert (top1.correct, top1.count, top1.result()) == (1, 4, 0.25)
    assert (top5.correct, top5.count, top5.result()) == (3, 4, 0.75)


def test_topk_accepts_one_hot_lists_and_single_samples():
    metric = TopK()
    metric.update(LOGITS.numpy(), torch.nn.functional.one_hot(LABELS, 7))
    metric.update([0.1, 0.9], 1)  # one sample: scores [C] and an int label
    metric.update(LOGITS[:1], [[1]])  # labels as a column
    assert (metric.correct, metric.count) == (3, 6)


def test_topk_k_larger_than_classes_counts_everything():
    metric = TopK(k=5)
    metric.update(torch.zeros(2, 3), torch.tensor([0, 2]))
    assert metric.result() == 1.0


def test_topk_errors_and_reset():
    metric = TopK()
    with pytest.raises(MetricError, match="before any update"):
        metric.result()
    with pytest.raises(MetricError, match="do not fit"):
        metric.update(LOGITS, torch.tensor([1, 2]))
    with pytest.raises(MetricError, match="k"):
        TopK(k=0)
    metric.update(LOGITS, LABELS)
    metric.reset()
    assert (metric.correct, metric.count) == (0, 0)


def test_accuracy_multiclass_binary_multilabel():
    acc = Accuracy()
    acc.update(LOGITS, LABELS)
    assert (acc.correct, acc.count) == (1, 4)
    acc.reset()
    acc.update(torch.tensor([1, 0, 1]), [1, 1, 1])  # binary, equal shapes
    assert acc.result() == pytest.approx(2 / 3)
    acc.reset()
    acc.update(np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]]))  # multilabel
    assert (acc.correct, acc.count) == (3, 4)
    acc.reset()
    acc.update(LOGITS, LABELS.unsqueeze(1))  # class indices as a column
    assert acc.result() == 0.25
    with pytest.raises(MetricError, match="do not fit"):
        acc.update(torch.zeros(2, 3), torch.zeros(3))


def test_accuracy_segmentation_style():
    preds = torch.zeros(1, 3, 2, 2)
    preds[0, 2] = 1.0  # every pixel predicts class 2
    acc = Accuracy()
    acc.update(preds, torch.tensor([[[2, 2], [0, 1]]]))
    assert (acc.correct, acc.count) == (2, 4)


def test_loss_is_the_mean_of_preds_per_sample():
    loss = Loss()
    loss.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]))
    loss.update(torch.tensor([6.0]), None)
    assert loss.result() == pytest.approx(12.0 / 4)
    assert Loss.higher_is_better is False


def test_mse_rmse_mae_by_hand():
    preds = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 4.0]])  # errors 0, 2, 3, 0
    mse, rmse, mae = MSE(), RMSE(compare_label=False), MAE()
    for metric in (mse, rmse, mae):
        metric.update(preds, labels)
    assert mse.result() == pytest.approx(13 / 4)
    assert rmse.result() == pytest.approx(math.sqrt(13 / 4))
    assert mae.result() == pytest.approx(5 / 4)
    assert rmse.compare_label is False and mse.compare_label is True


def test_mse_multiple_outputs_and_column_labels():
    mse = MSE()
    mse.update(
        [torch.tensor([1.0]), torch.tensor([0.0, 0.0])], [torch.tensor([0.0]), torch.zeros(2)]
    )
    assert mse.result() == pytest.approx(1 / 3)
    mse.reset()
    mse.update(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 0.0]))
    assert mse.result() == pytest.approx(2.0)
    with pytest.raises(MetricError, match="same shape"):
        mse.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(MetricError, match="compare_label"):
        MSE(compare_label="no")


def test_nan_result_is_returned_not_raised():
    mse = MSE()
    mse.update(torch.tensor([float("nan")]), torch.tensor([1.0]))
    assert math.isnan(mse.result())


def test_f1_binary_is_class_1():
    f1 = F1()
    f1.update(torch.tensor([1, 1, 0, 0, 1]), torch.tensor([1, 0, 1, 0, 1]))
    # tp=2, fp=1, fn=1 -> 2*2 / (2*2 + 1 + 1)
    assert f1.result() == pytest.approx(4 / 6)


def test_f1_multiclass_is_macro_over_seen_classes():
    f1 = F1()
    scores = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2]), 3).float()
    f1.update(scores[:2], torch.tensor([0, 1]))
    f1.update(scores[2:], torch.tensor([2, 1]))
    # class 0: 1.0; class 1: tp=1, fn=1 -> 2/3; class 2: tp=1, fp=1 -> 2/3
    assert f1.result() == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    f1.reset()
    with pytest.raises(MetricError):
        f1.result()


def test_build_metric_from_specs():
    assert isinstance(build_metric(spec("topk", k=5)), TopK)
    assert build_metric(spec("topk", k=5)).k == 5
    assert isinstance(build_metric(("MAE", {"compare_label": False})), MAE)
    with pytest.raises(MetricError, match="unknown metric `mAP`"):
        build_metric(spec("mAP"))
    with pytest.raises(MetricError, match="topk"):
        build_metric(spec("topk", kk=1))


def _multi(weight=None, higher_is_better=None):
    return SimpleNamespace(
        metrics=(spec("topk", k=1), spec("MSE", compare_label=True)),
        weight=weight,
        higher_is_better=higher_is_better,
    )


def test_multi_metric_weighted_sum():
    metric = build_metric(_multi(weight={"topk": 0.5, "MSE": 0.25}))
    preds = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # one-hot: top-1 = 0.5; MSE = 2/4
    metric.update(preds, labels)
    assert metric.results() == {"topk": 0.5, "MSE": 0.5}
    assert metric.result() == pytest.approx(0.5 * 0.5 + 0.25 * 0.5)
    assert metric.higher_is_better == {"topk": True, "MSE": False}
    metric.reset()
    with pytest.raises(MetricError):
        metric.result()


def test_multi_metric_unweighted_and_list_forms():
    metric = build_metric(_multi(higher_is_better=[True, True]))
    assert metric.weight is None and metric.higher_is_better == {"topk": True, "MSE": True}
    metric.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    assert metric.result() == pytest.approx((1.0 + 0.0) / 2)
    weighted = MultiMetric({"a": TopK(), "b": TopK(k=2)}, weight=[0.3, 0.7])
    assert weighted.weight == {"a": 0.3, "b": 0.7}


def test_multi_metric_errors():
    with pytest.raises(MetricError, match="weight"):
        build_metric(_multi(weight={"topk": 1.0}))
    with pytest.raises(MetricError, match="2 values"):
        build_metric(_multi(weight=[1.0]))
    with pytest.raises(MetricError, match="twice"):
        build_metric(SimpleNamespace(metrics=(spec("F1"), spec("F1")), weight=None))
    with pytest.raises(MetricError, match="at least one"):
        MultiMetric({})


def test_label_shift_postprocess():
    out = torch.zeros(2, 3)
    o, label = apply_postprocess([("LabelShift", {"label_shift": 1})], out, torch.tensor([1, 2]))
    assert o is out and label.tolist() == [0, 1]
    _, label = apply_postprocess([spec("LabelShift", label_shift=-1)], out, [0, 1])
    assert label.tolist() == [1, 2]
    assert apply_postprocess([("LabelShift", {"label_shift": 1})], out, 3)[1] == 2
    assert apply_postprocess((), out, None) == (out, None)
    with pytest.raises(MetricError, match="unknown postprocess"):
        apply_postprocess([("Squeeze", {})], out, None)
    with pytest.raises(MetricError, match="label_shift"):
        apply_postprocess([("LabelShift", {"label_shift": 0.5})], out, 1)


TIES = torch.tensor(
    [
        [0.0, 1.0, 1.0, 0.0],  # classes 1 and 2 tie at the top: argmax takes 1
        [0.0, 1.0, 1.0, 0.0],
        [3.0, 1.0, 1.0, 0.0],  # 1 and 2 tie at the 2nd place: a stable sort takes 1
        [3.0, 1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 5.0],  # 0, 1, 2 tie at the 2nd place: 0
    ]
)
TIE_LABELS = torch.tensor([1, 2, 1, 2, 1])


def _by_stable_sort(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """Hits of the deployed ranking, written independently of the metric."""
    hits = 0
    for row, label in zip(scores.tolist(), labels.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda c: -row[c])  # Python's sort is stable
        hits += label in order[:k]
    return hits


def test_topk_ranks_like_argmax_and_a_stable_sort_and_counts_ties():
    top1, top2 = TopK(1), TopK(2)
    for metric in (top1, top2):
        metric.update(TIES[:3], TIE_LABELS[:3])
        metric.update(TIES[3:], TIE_LABELS[3:])
    # top-1 is argmax: rows 0 (label 1 = first max) hit; row 1 (label 2, also max) misses
    assert top1.correct == int((TIES.argmax(1) == TIE_LABELS).sum()) == 1
    assert top1.correct == _by_stable_sort(TIES, TIE_LABELS, 1)
    # top-2: rows 0, 1 (both tied classes fit) and 2 (label 1 comes first of the tie) hit
    assert top2.correct == _by_stable_sort(TIES, TIE_LABELS, 2) == 3
    assert isinstance(top1.correct, int) and top2.result() == 3 / 5
    assert top1.tied == top2.tied == 2  # only rows 0 and 1 tie at the top
    assert (top1.classes, top1.chance, top2.chance) == (4, 0.25, 0.5)
    hard = torch.tensor([[1.0, 1.0, 1.0]])  # every class ties: argmax says 0
    for label, hit in ((0, 1), (1, 0), (2, 0)):
        metric = TopK(1)
        metric.update(hard, torch.tensor([label]))
        assert (metric.correct, metric.tied) == (hit, 1)


def test_topk_on_random_logits_equals_argmax_and_sort_exactly():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, (200, 10), generator=g).float()  # int8-like: many ties
    labels = torch.randint(0, 10, (200,), generator=g)
    top1, top5 = TopK(1), TopK(5)
    top1.update(scores, labels)
    top5.update(scores, labels)
    assert top1.correct == int((scores.argmax(1) == labels).sum())
    assert top5.correct == _by_stable_sort(scores, labels, 5)
    shared = (scores == scores.max(1, keepdim=True).values).sum(1) > 1
    assert top1.tied == top5.tied == int(shared.sum()) > 0


def test_accuracy_and_f1_take_the_first_maximal_index_and_count_ties():
    acc, f1 = Accuracy(), F1()
    assert acc.tied is None and acc.chance is None and f1.tied is None
    acc.update(TIES, TIE_LABELS)
    f1.update(TIES, TIE_LABELS)
    assert acc.correct == int((TIES.argmax(1) == TIE_LABELS).sum())
    assert (acc.tied, f1.tied, acc.chance) == (2, 2, 0.25)
    acc.reset()
    acc.update(torch.tensor([1, 0]), [1, 1])  # class indices: nothing ranked
    assert acc.tied is None and acc.chance is None


def test_tie_counts_and_chance_of_multi_metrics():
    multi = MultiMetric({"top1": TopK(1), "top2": TopK(2)}, weight=[0.5, 0.5])
    multi.update(TIES, TIE_LABELS)
    assert tied_outputs(multi) == 2
    assert chance_level(multi) == pytest.approx(0.5 * 0.25 + 0.5 * 0.5)
    with_mse = MultiMetric({"top1": TopK(1), "MSE": MSE()})
    assert chance_level(with_mse) is None
    assert tied_outputs(MSE()) is None and chance_level(MSE()) is None


def test_topk_names_a_label_that_is_no_class():
    with pytest.raises(MetricError, match="label 7 is not a class index"):
        TopK(1).update(TIES, torch.tensor([1, 2, 7, 0, 0]))
