"""MobileNetV2 (examples/mobilenetv2, conf/mobilenetv2_static.yaml) on a clean machine.

No checkpoint is needed: a module fixture trains the 28x28 MobileNetV2 for a few dozen steps
on a Fashion-MNIST subset into a temporary ``INC_FLOW_CACHE`` and tunes it with the
example's own config, shrunk (512 eval images, few trials, no MLflow).

A brief training does not leave what makes a long-trained MobileNetV2 fail under per-tensor
int8 weights: depthwise channels whose input is dead (always 0 after ReLU6), so that batch
norm folding gives them weights orders of magnitude above the other channels' (their fp32
output is a constant whatever the weight). The fixture makes one such channel: it kills
channel 0 of the stem and scales the matching depthwise filter of block 1 by 1000. The fp32
model is then what it is with that channel dead; with one scale for the whole tensor, every
other filter of that depthwise conv rounds to zero in int8. Tuning must find that op,
fall it back to fp32 and report it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from examples.mobilenetv2.model import (
    MEAN,
    STD,
    build_mobilenetv2,
    checkpoint_path,
    load_mobilenetv2,
)
from examples.mobilenetv2.train import recalibrate_batchnorm, train_model
from inc_flow import load, quantize
from inc_flow.common import DataLoader
from inc_flow.data import FashionMNIST, Normalize
from inc_flow.errors import ConfigError
from inc_flow.model.output import CONFIGURE_FILE
from inc_flow.quant.graph import list_ops

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist"
)

DEAD_CHANNEL = 0
SENSITIVE = "features.1.conv.0.0"  # block 1's depthwise conv, fed by the stem directly
RELATIVE = 0.15  # the briefly trained model loses a few % in int8 even with the right plan


def plant_dead_channel(model: torch.nn.Module, channel: int = DEAD_CHANNEL) -> None:
    """Kill ``channel`` of the stem (its ReLU6 output is 0 for every input) and scale the
    depthwise filter that reads it by 1000: no effect in fp32, a 1000x outlier per tensor."""
    stem_bn = model.features[0][1]
    depthwise = model.get_submodule(SENSITIVE)
    assert depthwise.groups == depthwise.in_channels  # one filter per input channel
    with torch.no_grad():
        stem_bn.weight[channel] = 0.0
        stem_bn.bias[channel] = -1.0
        depthwise.weight[channel] *= 1000.0


def test_the_adapted_model_takes_one_channel_28x28_at_full_resolution():
    model = build_mobilenetv2().eval()
    stem = model.features[0][0]
    assert (stem.in_channels, stem.out_channels) == (1, 32)
    assert stem.stride == (1, 1) and stem.kernel_size == (3, 3) and stem.padding == (1, 1)
    assert model.classifier[-1].out_features == 10
    with torch.no_grad():
        assert model.features[0](torch.zeros(2, 1, 28, 28)).shape == (2, 32, 28, 28)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    ops = list_ops(model)
    assert [t for _, t in ops].count("Conv2d") == 52 and ops[-1] == ("classifier.1", "Linear")
    assert ops[0] == ("features.0.0", "Conv2d")


def test_a_missing_checkpoint_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setenv("INC_FLOW_CACHE", str(tmp_path / "empty"))
    assert checkpoint_path() == tmp_path / "empty" / "mobilenetv2_fmnist.pt"
    with pytest.raises(FileNotFoundError, match=r"python -m examples\.mobilenetv2\.train"):
        load_mobilenetv2()
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"model\.factory.*examples\.mobilenetv2\.train"):
        quantize(small_conf(tmp_path))


def small_conf(tmp_path: Path) -> dict:
    """conf/mobilenetv2_static.yaml on a small budget, no MLflow."""
    conf = yaml.safe_load((ROOT / "conf" / "mobilenetv2_static.yaml").read_text())
    assert conf["quantization"]["model_wise"]["weight"]["granularity"] == ["per_tensor"]
    conf["quantization"]["calibration"]["sampling_size"] = 128
    conf["evaluation"]["accuracy"]["iteration"] = 2  # 2 x 256 = the first 512 test images
    conf["evaluation"]["performance"].update(warmup=1, iteration=3)
    conf["tuning"]["accuracy_criterion"] = {"relative": RELATIVE}
    conf["tuning"]["exit_policy"] = {"timeout": 0, "max_trials": 6}
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tracking"] = {"enabled": False}
    return conf


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Train briefly (1 thread: the same numbers on any core count), plant the dead
    channel, cache the checkpoint, tune with the example config; (outcome, log lines, dir)."""
    if not FMNIST.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    tmp = tmp_path_factory.mktemp("mobilenetv2")
    threads = torch.get_num_threads()
    handler = _Lines()
    logger = logging.getLogger("inc_flow")
    level = logger.level
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INC_FLOW_CACHE", str(tmp / "cache"))
        mp.chdir(ROOT)
        try:
            normalize = Normalize(mean=[MEAN], std=[STD])
            train_set = FashionMNIST(train=True, transform=normalize)
            subset = torch.utils.data.Subset(train_set, range(1920))
            model, steps, _ = train_model(
                30, 64, 1e9, 1e-3, seed=0, train_set=subset, log_every=0, threads=1
            )
            assert steps == 30
            recalibrate_batchnorm(model, DataLoader(subset, 256))
            plant_dead_channel(model)
            checkpoint_path().parent.mkdir(parents=True)
            torch.save(model.state_dict(), checkpoint_path())
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            outcome = quantize(small_conf(tmp))
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            torch.set_num_threads(threads)
    return outcome, handler.lines, tmp


@needs_data
def test_all_int8_per_tensor_misses_the_target(tuned):
    outcome, _, _ = tuned
    result = outcome.result
    first = result.records[0]
    assert first.phase == "default" and not first.plan.fp32_ops
    assert {op.weight_granularity for op in first.plan.ops} == {"per_tensor"}
    assert first.state in ("failed", "pruned")
    assert first.accuracy < result.required_accuracy
    # the planted outlier, not noise: all-int8 falls far below what fp32 reaches
    assert first.accuracy < 0.6 * result.baseline_accuracy
    assert result.baseline_accuracy > 0.3  # the brief training did learn something


@needs_data
def test_tuning_falls_back_the_sensitive_op_and_names_it(tuned):
    outcome, lines, _ = tuned
    result, q = outcome.result, outcome.q_model
    assert q is not None and result.best is not None and result.best.passed
    best = result.best
    assert best.accuracy >= result.required_accuracy
    assert best.plan.fp32_ops == (SENSITIVE,)  # the most sensitive op, found by itself
    assert best.phase == "ranked"  # the default strategy ranked it first
    assert q.plan == best.plan and q.plan.fp32_ops == (SENSITIVE,)
    assert {q.plan.op(n).weight_granularity for n in q.plan.int8_ops} == {"per_tensor"}
    assert all(r.state != "passed" for r in result.records if r.number < best.number)
    stats = q.statistics.set_index("Op Type")
    assert int(stats["FP32"].sum()) == 1 and best.fp32_ops == 1
    assert (int(stats.loc["Conv2d", "INT8"]), int(stats.loc["Conv2d", "FP32"])) == (51, 1)
    assert (int(stats.loc["Linear", "INT8"]), int(stats.loc["Linear", "FP32"])) == (1, 0)
    assert any("FP32" in line for line in q.statistics_lines())
    passed = [ln for ln in lines if f"[trial {best.number} |" in ln and "] started" not in ln]
    assert passed and "passed" in passed[0] and f"fp32=[{SENSITIVE}]" in passed[0]


@needs_data
def test_saved_model_reloads_with_identical_outputs(tuned):
    outcome, _, tmp = tuned
    q = outcome.q_model
    out = q.save(tmp / "out")
    saved = yaml.safe_load((out / CONFIGURE_FILE).read_text())
    ops = {op["name"]: op for op in saved["op"]}
    assert ops[SENSITIVE]["activation"] == {"dtype": "fp32"}
    assert ops["features.0.0"]["weight"]["granularity"] == "per_tensor"
    loaded = load(out, build_mobilenetv2())  # architecture only: weights from the state dict
    normalize = Normalize(mean=[MEAN], std=[STD])
    images = torch.stack([FashionMNIST(train=False, transform=normalize)[i][0] for i in range(8)])
    with torch.no_grad():
        assert torch.equal(loaded(images), q.model(images))
