"""``dataset: {custom: {factory, kwargs}}``, the ``CosineSimilarity`` metric, and metrics with
``compare_label: false`` judged against the fp32 model's own outputs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from inc_flow import quantize
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, MetricError
from inc_flow.metrics import MSE, CosineSimilarity, MultiMetric, TopK, build_metric
from inc_flow.quant.evaluate import MetricEvaluator
from tests.helpers import custom_data

FACTORY = "tests.helpers.custom_data:blobs"


def _conf(tmp_path, dataset: dict, metric: dict | None = None, **tuning) -> dict:
    loader = {"batch_size": 16, "dataset": dataset}
    return {
        "model": {"name": "mlp", "input_shape": [8]},
        "quantization": {"approach": "post_training_dynamic_quant"},
        "evaluation": {"accuracy": {"metric": metric or {"topk": 1}, "dataloader": loader}},
        "tuning": {
            "accuracy_criterion": {"relative": 0.01},
            "exit_policy": {"max_trials": 3, **tuning},
            "workspace": {"path": str(tmp_path / "ws")},
        },
        "tracking": {"enabled": False},
    }


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).eval()


def _blob_mlp() -> nn.Module:
    """An MLP that tells the two blobs apart: a baseline well above chance (0.5)."""
    model = _mlp()
    with torch.no_grad():
        model[0].weight[:2] = torch.stack([torch.ones(8), -torch.ones(8)])
        model[0].bias[:2] = 0.0
        model[2].weight.zero_()
        model[2].bias.zero_()
        model[2].weight[1, 0] = model[2].weight[0, 1] = 1.0  # class 1 <- sum(x) > 0
    return model


def test_custom_dataset_is_built_with_its_kwargs_and_tunes(tmp_path):
    custom_data.CALLS.clear()
    dataset = {"custom": {"factory": FACTORY, "kwargs": {"size": 48, "seed": 3}}}
    outcome = quantize(_conf(tmp_path, dataset), model=_mlp())
    assert custom_data.CALLS[0] == {"size": 48, "seed": 3, "transform": None}
    assert outcome.result.best is not None
    assert outcome.result.best.eval_samples == 48


@pytest.mark.parametrize(
    ("custom", "key", "words"),
    [
        ({}, "custom.factory", "is required"),
        ({"factory": "blobs"}, "custom.factory", "package.module:callable"),
        ({"factory": 3}, "custom.factory", "non-empty string"),
        ({"factory": FACTORY, "kwargs": [1, 2]}, "custom.kwargs", "mapping of keyword"),
        ({"factory": FACTORY, "size": 4}, "custom.size", "not a known key"),
    ],
)
def test_bad_custom_dataset_entries_name_their_key(tmp_path, custom, key, words):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(_conf(tmp_path, {"custom": custom}))
    assert f"evaluation.accuracy.dataloader.dataset.{key}" in str(e.value)
    assert words in str(e.value)


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        ("tests.helpers.custom_data:broken", "RuntimeError: the data server is down"),
        ("tests.helpers.no_such_module:blobs", "cannot import module"),
        ("tests.helpers.custom_data:missing", "has no attribute 'missing'"),
        ("tests.helpers.custom_data:not_a_dataset", "must return a map-style dataset"),
    ],
)
def test_custom_factory_failures_stop_before_any_work(tmp_path, factory, words):
    conf = _conf(tmp_path, {"custom": {"factory": factory}})
    with pytest.raises(ConfigError) as e:
        quantize(conf, model=_mlp())
    assert "evaluation.accuracy.dataloader" in str(e.value) and words in str(e.value)
    assert not (tmp_path / "ws").exists()  # no study, no workspace


def test_cosine_similarity_values():
    m = CosineSimilarity(compare_label=True)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    m.update(a, torch.tensor([[2.0, 0.0], [1.0, 0.0]]))  # cos 1 and cos 0
    assert m.result() == pytest.approx(0.5)
    m.update(a[:1], -a[:1])  # cos -1
    assert m.result() == pytest.approx(0.0)
    with pytest.raises(MetricError, match="same shape"):
        m.update(a, a[:, :1])
    with pytest.raises(MetricError, match="before any update"):
        CosineSimilarity().result()
    assert build_metric(("CosineSimilarity", {})).compare_label is False


def test_compare_label_false_uses_fp32_outputs_as_labels():
    torch.manual_seed(0)
    fp32 = _mlp()
    data = [(torch.randn(4, 8), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    evaluator = MetricEvaluator(dataloader=data, metric=CosineSimilarity())
    evaluator.reference = fp32
    assert evaluator(fp32).value == pytest.approx(1.0)
    noisy = _mlp()
    with torch.no_grad():
        noisy[2].weight.add_(0.5 * torch.randn_like(noisy[2].weight))
    value = evaluator(noisy).value
    assert 0.0 < value < 0.999
    # the labels of the batches are zeros: with them, MSE would be the outputs' square
    mse = MetricEvaluator(dataloader=data, metric=MSE(compare_label=False))
    mse.reference = fp32
    assert mse(fp32).value == 0.0


def test_multi_metric_gives_each_metric_its_own_labels():
    model = _mlp()
    x = torch.randn(6, 8)
    labels = model(x).argmax(1)
    multi = MultiMetric({"topk": TopK(1), "MSE": MSE(compare_label=False)})
    evaluator = MetricEvaluator(dataloader=[(x, labels)], metric=multi)
    evaluator.reference = model
    evaluator(model)
    assert multi.results() == {"topk": 1.0, "MSE": 0.0}


def test_compare_label_false_without_a_reference_model_says_so():
    evaluator = MetricEvaluator(
        dataloader=[(torch.randn(2, 8), torch.zeros(2))], metric=MSE(False)
    )
    with pytest.raises(MetricError, match="fp32"):
        evaluator(_mlp())


def test_agreement_target_through_quantize(tmp_path):
    dataset = {"custom": {"factory": FACTORY, "kwargs": {"size": 32}}}
    metric = {"CosineSimilarity": {}}
    outcome = quantize(_conf(tmp_path, dataset, metric), model=_mlp())
    result = outcome.result
    assert result.baseline_accuracy == pytest.approx(1.0)
    assert result.best is not None and 0.99 <= result.best.accuracy <= 1.0 + 1e-9
    assert result.best.accuracy < 1.0  # int8 weights really changed the outputs


def test_the_log_names_the_fp32_fallbacks(tmp_path, caplog):
    conf = _conf(tmp_path, {"custom": {"factory": FACTORY}})
    conf["quantization"]["op_wise"] = {"2": {"activation": {"dtype": ["fp32"]}}}
    with caplog.at_level(logging.INFO, logger="inc_flow"):
        outcome = quantize(conf, model=_blob_mlp())
    assert outcome.q_model.plan.fp32_ops == ("2",)
    assert "fp32 fallbacks (1 of 2 ops): 2" in caplog.text
