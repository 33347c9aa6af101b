"""The 28x28 ResNet18 example (issue 8, item 1) on a small budget: its stem, its factory's
missing-checkpoint message, and its config tuned end to end (the trained checkpoint's
numbers come from benchmarks/bench_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from examples.resnet18.model import MEAN, STD, build_resnet18, checkpoint_path, load_resnet18
from inc_flow import load, quantize
from inc_flow.common import DataLoader
from inc_flow.data import FashionMNIST, Normalize
from inc_flow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
needs_data = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="apt-get install dataset-fashion-mnist",
)


def test_stem_keeps_28x28_resolution():
    model = build_resnet18().eval()
    assert (model.conv1.in_channels, model.conv1.stride, model.conv1.kernel_size) == (
        1,
        (1, 1),
        (3, 3),
    )
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert seen["layer1"][-2:] == (28, 28)


def test_missing_checkpoint_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("INC_FLOW_CACHE", str(tmp_path / "empty"))
    assert checkpoint_path() == tmp_path / "empty" / "resnet18_fmnist.pt"
    with pytest.raises(FileNotFoundError, match="python -m examples.resnet18.train"):
        load_resnet18()
    conf = yaml.safe_load((ROOT / "conf/resnet18_static.yaml").read_text())
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"`model.factory`.*examples.resnet18.train"):
        quantize(conf)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights with BatchNorm statistics of real images (a few seconds, where
    training even a few steps costs a minute on 2 cores): realistic activation ranges."""
    torch.manual_seed(0)
    model = build_resnet18()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches below
    data = torch.utils.data.Subset(
        FashionMNIST(train=True, transform=Normalize(mean=[MEAN], std=[STD])), range(128)
    )
    model.train()
    with torch.no_grad():
        for images, _ in DataLoader(data, batch_size=64):
            model(images)
    cache = tmp_path_factory.mktemp("cache")
    torch.save(model.state_dict(), cache / "resnet18_fmnist.pt")
    return cache


@needs_data
def test_config_tunes_resnet18_to_agree_with_fp32_and_the_result_reloads(
    checkpoint, tmp_path, monkeypatch
):
    """The shipped config (factory, Fashion-MNIST loaders, transforms), judged by agreement
    of the logits with fp32 (an untrained net's top-1 would say nothing)."""
    monkeypatch.setenv("INC_FLOW_CACHE", str(checkpoint))
    monkeypatch.chdir(ROOT)
    conf = yaml.safe_load((ROOT / "conf/resnet18_static.yaml").read_text())
    conf["quantization"]["calibration"]["sampling_size"] = 64
    conf["evaluation"]["accuracy"]["iteration"] = 1  # 256 test images
    conf["evaluation"]["performance"].update(warmup=1, iteration=2)
    conf["evaluation"]["accuracy"]["metric"] = {"CosineSimilarity": {}}
    conf["tuning"]["accuracy_criterion"] = {"relative": 0.005}
    conf["tuning"]["exit_policy"]["max_trials"] = 4
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tracking"] = {"enabled": False}

    outcome = quantize(conf)
    result = outcome.result
    assert result.baseline_accuracy == pytest.approx(1.0)
    assert outcome.q_model is not None and result.best.passed
    assert 0.995 <= result.best.accuracy < 1.0
    assert 1 <= result.n_trials <= 4
    plan = outcome.q_model.plan
    assert len(plan.ops) == 21 and len(plan.int8_ops) >= 1  # 20 Conv2d + fc
    outcome.q_model.save(tmp_path / "out")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(load(tmp_path / "out", build_resnet18())(x), outcome.q_model.model(x))
