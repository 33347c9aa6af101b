"""The LSTM waveform classifier (examples/lstm): its synthetic data, its committed checkpoint,
and dynamic PTQ of nn.LSTM + nn.Linear through ``conf/lstm_dynamic.yaml``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from examples.lstm.data import CLASSES, SEQ_LEN, waveforms
from examples.lstm.model import CHECKPOINT, LSTMClassifier, load_lstm
from inc_flow import load, quantize

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.ao.nn.quantized.dynamic import LSTM as DynamicLSTM
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

# torch's FX lowering of nn.LSTM (ao/nn/quantized/reference/modules/rnn.py) copies tensors
# with torch.tensor(tensor); harmless, and not inc_flow's.
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")

ROOT = Path(__file__).resolve().parents[1]
EVAL_SIZE = 600  # test waveforms used for accuracy here (the config uses 2,000)


def lstm_conf(tmp_path: Path, **op_wise) -> dict:
    """conf/lstm_dynamic.yaml on a smaller test set, stopping at the first passing plan."""
    conf = yaml.safe_load((ROOT / "conf" / "lstm_dynamic.yaml").read_text())
    dataset = conf["evaluation"]["accuracy"]["dataloader"]["dataset"]["custom"]
    dataset["kwargs"]["size"] = EVAL_SIZE
    conf["evaluation"]["performance"].update(warmup=1, iteration=3)
    conf["tuning"]["exit_policy"].update(timeout=0, max_trials=1)
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tracking"] = {"enabled": False}
    if op_wise:
        conf["quantization"]["op_wise"] = op_wise
    return conf


@pytest.fixture(scope="module")
def test_set():
    return waveforms("test", EVAL_SIZE)


def accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return (model(data.inputs).argmax(1) == data.labels).float().mean().item()


def test_waveforms_are_deterministic_balanced_and_split_apart():
    a, b = waveforms("train", 60), waveforms("train", 60)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    x, y = a[7]
    assert x.shape == (SEQ_LEN, 1) and x.dtype == torch.float32 and y == 7 % len(CLASSES)
    assert torch.equal(waveforms("train", 200).inputs[:60], a.inputs)  # prefix-stable
    assert torch.bincount(a.labels).tolist() == [60 // len(CLASSES)] * len(CLASSES)
    for other in (waveforms("test", 60), waveforms("calib", 60), waveforms("train", 60, seed=1)):
        assert torch.equal(other.labels, a.labels)
        assert not torch.isclose(other.inputs, a.inputs).any(dim=(1, 2)).any()
    with pytest.raises(ValueError, match="split"):
        waveforms("valid", 10)


def test_committed_checkpoint_is_small_and_accurate(test_set):
    assert CHECKPOINT.stat().st_size < 300_000
    model = load_lstm()
    assert isinstance(model.lstm, nn.LSTM) and model.lstm.num_layers == 2
    assert accuracy(model, test_set) > 0.85  # 0.9045 on the config's 2,000 waveforms


def test_dynamic_ptq_quantizes_lstm_and_linear_within_target(tmp_path, monkeypatch, test_set):
    monkeypatch.chdir(ROOT)
    outcome = quantize(lstm_conf(tmp_path))
    q = outcome.q_model
    assert q is not None and outcome.result.best.passed
    assert outcome.result.calibration_passes == 0  # dynamic: no calibration data needed
    assert [op.name for op in q.plan.ops] == ["lstm", "fc"]
    assert isinstance(q.model.lstm, DynamicLSTM) and isinstance(q.model.fc, DynamicLinear)
    fp32, int8 = accuracy(load_lstm(), test_set), accuracy(q.model, test_set)
    assert outcome.result.baseline_accuracy == pytest.approx(fp32)
    assert int8 >= fp32 * (1 - 0.01)
    stats = q.statistics.set_index("Op Type")
    assert stats.loc["LSTM", "INT8"] == 1 and stats.loc["Linear", "INT8"] == 1


def test_int8_lstm_saves_and_loads_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    q = quantize(lstm_conf(tmp_path)).q_model
    q.save(tmp_path / "out")
    loaded = load(tmp_path / "out", LSTMClassifier())  # weights come from the saved file
    assert isinstance(loaded.lstm, DynamicLSTM)
    x = torch.randn(5, SEQ_LEN, 1)
    assert torch.equal(loaded(x), q.model(x))


def test_plan_keeping_lstm_fp32_leaves_a_plain_lstm_and_reloads_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    outcome = quantize(lstm_conf(tmp_path, lstm={"weight": {"dtype": ["fp32"]}}))
    q = outcome.q_model
    assert q is not None and q.plan.op("lstm").dtype == "fp32"
    assert type(q.model.lstm) is nn.LSTM and isinstance(q.model.fc, DynamicLinear)
    assert torch.equal(q.model.lstm.weight_hh_l1, load_lstm().lstm.weight_hh_l1)
    q.save(tmp_path / "out")
    loaded = load(tmp_path / "out", LSTMClassifier())
    assert type(loaded.lstm) is nn.LSTM and isinstance(loaded.fc, DynamicLinear)
    x = torch.randn(5, SEQ_LEN, 1)
    assert torch.equal(loaded(x), q.model(x))
