"""The verdict is the deployed model's: the accuracy the tuner reports equals ``argmax`` over
the saved model's outputs, ties are counted and recorded, degenerate scores are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch import nn

from examples.lenet.model import MEAN, STD, LeNet, load_lenet
from inc_flow import common, load, quantize
from inc_flow.cli import main as cli_main
from inc_flow.data import FashionMNIST, Normalize
from inc_flow.errors import DataError
from inc_flow.record.keys import METRIC_ACCURACY, METRIC_TIED_OUTPUTS, TAG_ROLE

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist"
)


def _argmax_accuracy_and_ties(model: nn.Module, batches) -> tuple[float, int, int]:
    """What a user of the deployed model measures: argmax hits, top ties, samples."""
    hits = tied = n = 0
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            hits += int((out.argmax(dim=1) == y).sum())
            tied += int(((out == out.max(dim=1, keepdim=True).values).sum(dim=1) > 1).sum())
            n += len(y)
    return hits / n, tied, n


def _tie_net() -> nn.Module:
    class TieNet(nn.Module):  # defined in a function: no factory, so no slow model logging
        """Classes 0 and 1 differ by 1e-4 in fp32 (1 wins); int8 makes them equal (0 wins)."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 3)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
                self.fc.bias.copy_(torch.tensor([0.0, 1e-4, 0.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    return TieNet().eval()


def _tie_data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Half (a, 0) labelled 1 (tied with 0 in int8), half (0, a) labelled 2 (clear)."""
    a = 1 + torch.rand(n, generator=torch.Generator().manual_seed(0))
    x, y = torch.zeros(n, 2), torch.full((n,), 2)
    x[: n // 2, 0], y[: n // 2] = a[: n // 2], 1
    x[n // 2 :, 1] = a[n // 2 :]
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def test_planted_int8_ties_are_recorded_and_the_verdict_is_argmax(tmp_path):
    data = _tie_data()
    model = _tie_net()
    conf = {
        "model": {"name": "ties"},
        "quantization": {"approach": "post_training_static_quant"},
        "evaluation": {"accuracy": {"metric": {"topk": 1}}},
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"max_trials": 1},
            # target 0.6: argmax gives 0.5 and misses; sharing ties (0.75) would have passed
            "accuracy_criterion": {"absolute": 0.4},
        },
    }
    calib = [torch.cat([x for x, _ in data])]
    outcome = quantize(conf, model=model, calib_dataloader=calib, eval_dataloader=data)
    result = outcome.result
    assert result.baseline_accuracy == 1.0 and result.best is None
    (trial,) = result.records
    deployed = load(tmp_path / "ws" / "closest_model", _tie_net())
    accuracy, tied, n = _argmax_accuracy_and_ties(deployed, data)
    assert (accuracy, tied, n) == (0.5, 32, 64)  # the planted ties are there
    assert trial.state == "failed" and trial.accuracy == accuracy
    assert trial.tied_outputs == tied and trial.eval_samples == n
    client = MlflowClient()
    exp = client.get_experiment_by_name("ties")
    runs = client.search_runs([exp.experiment_id])
    (child,) = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert child.data.metrics[METRIC_TIED_OUTPUTS] == 32
    assert child.data.metrics[METRIC_ACCURACY] == 0.5
    assert not client.search_registered_models()


@pytest.fixture(scope="module")
def fmnist():
    """The first 1000 Fashion-MNIST test images (250 a batch) and 256 training images."""
    normalize = Normalize(mean=[MEAN], std=[STD])
    train = torch.utils.data.Subset(FashionMNIST(train=True, transform=normalize), range(256))
    test = torch.utils.data.Subset(FashionMNIST(train=False, transform=normalize), range(1000))
    return common.DataLoader(train, batch_size=64), common.DataLoader(test, batch_size=250)


@needs_data
@pytest.mark.parametrize(
    ("approach", "framework"),
    [
        ("post_training_static_quant", "pytorch_fx"),
        ("post_training_static_quant", "pytorch"),
        ("post_training_dynamic_quant", "pytorch_fx"),
    ],
)
def test_the_reported_accuracy_is_what_the_loaded_model_scores(
    tmp_path, fmnist, approach, framework
):
    calib, test = fmnist
    conf = {
        "model": {"name": "lenet", "framework": framework},
        "quantization": {"approach": approach},
        "evaluation": {
            "accuracy": {"metric": {"topk": 1}},
            "performance": {"warmup": 1, "iteration": 2},  # latency is not under test
        },
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"max_trials": 1},
            "accuracy_criterion": {"absolute": 0.5},
        },
        "tracking": {"enabled": False},
    }
    outcome = quantize(conf, model=load_lenet(), calib_dataloader=calib, eval_dataloader=test)
    best = outcome.result.best
    assert best is not None and best.plan.framework == framework
    outcome.q_model.save(tmp_path / "out")
    deployed = load(tmp_path / "out", LeNet())  # architecture only: weights from the files
    accuracy, tied, n = _argmax_accuracy_and_ties(deployed, test)
    assert best.accuracy == accuracy and best.eval_samples == n == 1000
    assert best.tied_outputs == tied
    if approach == "post_training_static_quant":
        assert tied > 0  # int8 outputs: the tie rule is under test, not only the arithmetic


def test_nan_eval_inputs_are_named_before_the_search(tmp_path):
    model = _tie_net()
    data = _tie_data()
    data[1][0][3, 1] = float("nan")
    conf = {
        "model": {"name": "nan"},
        "evaluation": {"accuracy": {"metric": {"topk": 1}}},
        "tuning": {"workspace": {"path": str(tmp_path / "ws")}},
        "tracking": {"enabled": False},
    }
    with pytest.raises(DataError, match="batch 1 has non-finite inputs: 1 NaN and 0 inf"):
        quantize(conf, model=model, calib_dataloader=[data[0][0]], eval_dataloader=data)


def test_cli_tune_rejects_a_baseline_at_chance_and_registers_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("INC_FLOW_TEST_SLEEP_S", "0")
    dummy = {"batch_size": 8, "dataset": {"dummy": {"shape": [16, 1, 20, 20]}}}
    conf = {
        "model": {"name": "chance", "factory": "tests.toys:sleepy_net"},
        "quantization": {"calibration": {"sampling_size": 8, "dataloader": dummy}},
        "evaluation": {
            "accuracy": {
                "metric": {"topk": 1},
                "dataloader": dummy,
                # dummy labels are 0; shifted to 1, a class SleepyNet never predicts
                "postprocess": {"transform": {"LabelShift": -1}},
            },
        },
        "tuning": {"workspace": {"path": str(tmp_path / "ws")}},
        "tracking": {"registered_model_name": "chance-int8"},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli_main(["tune", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the fp32 model's metric is 0.0000 (the baseline), at or below chance 0.1000" in err
    assert not (tmp_path / "out").exists()
    assert not MlflowClient().search_registered_models()
