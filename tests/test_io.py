"""Output directory: best_configure.yaml + best_model_weights.pt, load(), refusal of bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import yaml
from torch import nn

from inc_flow.errors import SaveLoadError
from inc_flow.model.output import CONFIGURE_FILE, WEIGHTS_FILE, QuantizedModel, load, read_weights
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.search.plan import Plan, default_plan
from inc_flow.vocab import Approach
from tests.toys import TinyNet


def _quantized(
    approach: str = Approach.STATIC.value, backend: str = "x86", fallback=(), **settings
) -> QuantizedModel:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(4, 1, 20, 20)
    ops = list_ops(model, approach)
    plan = default_plan(ops, approach=approach, backend=backend, **settings)
    plan = plan.with_fallback(set(fallback))
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 4, lambda m, b: (m(b), b.shape[0])[1])
    return QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=4)


@pytest.mark.parametrize(
    ("approach", "backend", "fallback", "settings"),
    [
        (Approach.STATIC.value, "x86", (), {}),
        (Approach.STATIC.value, "onednn", ("conv2",), {}),
        (Approach.STATIC.value, "fbgemm", ("fc2",), {}),
        (Approach.DYNAMIC.value, "x86", ("fc1",), {}),
        # the first op fp32 under non-default observers: the file stores it as {dtype: fp32},
        # and load must still prepare with the plan's per-tensor / kl settings
        (Approach.STATIC.value, "x86", ("conv1",), {"weight_granularity": "per_tensor"}),
        (Approach.STATIC.value, "x86", ("conv1",), {"act_algorithm": "kl"}),
    ],
)
def test_save_then_load_gives_identical_outputs(tmp_path, approach, backend, fallback, settings):
    q = _quantized(approach, backend, fallback, **settings)
    q.save(tmp_path)
    assert (tmp_path / CONFIGURE_FILE).is_file() and (tmp_path / WEIGHTS_FILE).is_file()
    torch.manual_seed(0)
    fresh = TinyNet()  # architecture only: every weight comes from the saved state dict
    loaded = load(tmp_path, fresh)
    x = torch.randn(3, 1, 20, 20)
    assert torch.equal(loaded(x), q.model(x))


def test_configure_file_is_plain_yaml_in_incs_layout(tmp_path):
    q = _quantized(fallback=("conv1",))
    q.save(tmp_path)
    text = (tmp_path / CONFIGURE_FILE).read_text()
    assert "!!python" not in text
    data = yaml.safe_load(text)
    assert data["approach"] == "post_training_static_quant"
    assert data["framework"] == "pytorch_fx" and data["backend"] == "x86"
    assert data["calibration_sampling_size"] == 4
    assert data["versions"]["torch"].startswith("2.")
    ops = {op["name"]: op for op in data["op"]}
    assert ops["conv1"]["activation"] == {"dtype": "fp32"}
    assert ops["conv2"]["type"] == "Conv2d"
    assert ops["conv2"]["weight"] == {
        "dtype": "int8",
        "scheme": "sym",
        "granularity": "per_channel",
        "algorithm": "minmax",
    }
    assert ops["conv2"]["activation"]["dtype"] == "uint8"
    assert Plan.from_dict({**data, "ops": data["op"]}) == q.plan


def test_statistics_lines_have_incs_layout():
    lines = _quantized(fallback=("fc2",)).statistics_lines()
    assert "Mixed Precision Statistics" in lines[0]
    assert lines[2].split("|")[1:-1] == [
        "        Op Type         ",
        " Total  ",
        "  INT8 ",
        "  FP32 ",
    ]


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_whose_unpickling_runs_code_are_refused(tmp_path):
    q = _quantized()
    q.save(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / WEIGHTS_FILE, "wb") as f:
        pickle.dump({"fc1.weight": _Evil(str(marker))}, f, protocol=2)
    with pytest.raises(SaveLoadError, match="weights_only=True"):
        load(tmp_path, TinyNet())
    assert not marker.exists()


def test_torch_saved_object_is_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / WEIGHTS_FILE)
    with pytest.raises(SaveLoadError, match="weights_only=True"):
        read_weights(tmp_path / WEIGHTS_FILE)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(SaveLoadError, match="must hold a state dict"):
        read_weights(tmp_path / "list.pt")


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(SaveLoadError, match=CONFIGURE_FILE):
        load(tmp_path, TinyNet())
    (tmp_path / CONFIGURE_FILE).write_text("op: [unclosed\n")
    with pytest.raises(SaveLoadError, match="not valid yaml"):
        load(tmp_path, TinyNet())
    (tmp_path / CONFIGURE_FILE).write_text("a: 1\n")
    with pytest.raises(SaveLoadError, match="no `op` list"):
        load(tmp_path, TinyNet())


def test_weights_for_another_model_are_refused(tmp_path):
    _quantized().save(tmp_path)

    class Other(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.fc2 = nn.Linear(16, 7)

    with pytest.raises(SaveLoadError, match="cannot rebuild"):
        load(tmp_path, Other())
