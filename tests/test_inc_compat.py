"""INC 1.x configs mean what they say (issue 16): per-op observer constraints, default_qconfig,
sampling_size forms, bit/compute_dtype/resume, and INC's own best_configure.yaml loaded."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml

import inc_flow
from examples.lenet.model import LeNet
from inc_flow.assemble import search_space
from inc_flow.config import inc_table
from inc_flow.config.sections import Config
from inc_flow.errors import ConfigError, SaveLoadError
from inc_flow.quant.graph import convert, prepare
from inc_flow.quant.state import plain_state_dict, rebuild
from inc_flow.record import keys as k
from inc_flow.record.values import plan_params
from inc_flow.search.plan import OpPlan, Plan
from inc_flow.search.space import SearchSpace
from tests.toys import TinyNet

pytestmark = pytest.mark.no_mlflow

OPS = [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear")]
STATIC = "post_training_static_quant"


def cfg(**quantization) -> Config:
    return Config.from_dict({"model": {"name": "toy"}, "quantization": quantization})


def all_plans(space: SearchSpace) -> set:
    choices = space.choices()
    combos = itertools.product(*choices.values())
    return {space.plan_from_params(dict(zip(choices, c, strict=True))) for c in combos}


# --- items 1-2: per-op and per-type observers, default_qconfig ------------------------------
def test_op_wise_observers_pin_that_op_only() -> None:
    op_wise = {
        "conv1": {
            "activation": {"algorithm": ["kl"], "scheme": ["sym"]},
            "weight": {"granularity": ["per_tensor"]},
        }
    }
    space = search_space(cfg(op_wise=op_wise), OPS, STATIC)
    assert space.allowed("conv1") == {
        "dtype": ("int8", "fp32"),
        "act_algorithm": ("kl",),
        "act_scheme": ("sym",),
        "weight_granularity": ("per_tensor",),
        "weight_scheme": ("sym",),
    }
    assert space.allowed("fc1")["act_algorithm"] == ("minmax", "kl")  # global, unchanged
    for plan in [space.default_plan(), *space.observer_variants()]:
        conv1 = plan.op("conv1")
        assert (conv1.act_algorithm, conv1.act_scheme, conv1.weight_granularity) == (
            "kl",
            "sym",
            "per_tensor",
        )
    assert space.observer_variants()[0].op("fc1").act_algorithm == "kl"
    assert space.default_plan().op("fc1").act_algorithm == "minmax"
    assert not any(":" in p and not p.startswith("op:") for p in space.choices())  # pinned


def test_optype_wise_constrains_every_op_of_the_type() -> None:
    c = cfg(optype_wise={"Conv2d": {"activation": {"algorithm": ["kl"]}}})
    space = search_space(c, OPS, STATIC)
    plan = space.default_plan()
    assert [op.act_algorithm for op in plan.ops] == ["kl", "kl", "minmax", "minmax"]


def test_a_list_is_that_ops_own_parameter() -> None:
    c = cfg(
        model_wise={"activation": {"algorithm": ["minmax"]}},
        op_wise={
            "fc2": {"activation": {"algorithm": ["kl", "minmax"], "scheme": ["sym", "asym"]}}
        },
    )
    space = search_space(c, OPS, STATIC)
    choices = space.choices()
    assert choices["act_algorithm:fc2"] == ("kl", "minmax")
    assert choices["act_scheme:fc2"] == ("sym", "asym")
    assert "act_algorithm" not in choices  # the global has one value
    plan = space.plan_from_params({"act_algorithm:fc2": "minmax", "act_scheme:fc2": "asym"})
    assert plan.op("fc2").act_algorithm == "minmax" and plan.op("fc1").act_algorithm == "minmax"
    assert space.default_plan().op("fc2").act_algorithm == "kl"  # the list's first value
    for plan in all_plans(space):
        assert space.plan_from_params(space.params_for(plan)) == plan
        assert space.canonical(plan) == plan
        assert plan.op("fc1").act_algorithm == "minmax"  # never outside its constraint


def test_default_qconfig_is_the_default_of_unlisted_ops() -> None:
    fp32 = {"weight": {"dtype": ["fp32"]}, "activation": {"dtype": ["fp32"]}}
    int8 = {"weight": {"dtype": ["int8"]}, "activation": {"dtype": ["uint8"]}}
    c = cfg(op_wise={"default_qconfig": fp32, "conv1": int8, "fc2": int8})
    space = search_space(c, OPS, STATIC)
    assert space.default_plan().int8_ops == ("conv1", "fc2")
    assert space.tunable_ops() == ()
    # optype_wise is more specific than the default
    c = cfg(op_wise={"default_qconfig": fp32}, optype_wise={"Linear": int8})
    assert search_space(c, OPS, STATIC).default_plan().int8_ops == ("fc1", "fc2")


def test_n_plans_counts_per_op_constraints_exactly() -> None:
    spaces = [
        SearchSpace(OPS, op_settings={"conv1": {"act_algorithm": ("kl",)}}),
        SearchSpace(
            OPS,
            {"fc2": ("int8",)},
            op_settings={
                "conv1": {"act_scheme": ("sym", "asym")},
                "fc1": {"act_algorithm": ("kl",)},
            },
            backends=("x86", "onednn"),
        ),
        SearchSpace(
            OPS[:3],
            act_algorithms=("minmax",),
            weight_schemes=("sym", "asym"),
            op_settings={n: {"act_algorithm": ("kl", "minmax")} for n, _ in OPS[:3]},
        ),
    ]
    for space in spaces:
        assert space.n_plans() == len(all_plans(space))


def test_fp32_ops_keep_their_own_observers_in_the_saved_plan() -> None:
    space = SearchSpace(OPS, op_settings={"conv1": {"act_algorithm": ("kl",)}})
    plan = space.canonical(space.default_plan().with_fallback({"conv1"}))
    assert plan.op("conv1").act_algorithm == "kl"
    again = Plan.from_dict(plan.to_dict())
    assert again == plan and again.calibration_key() == plan.calibration_key()
    params = plan_params(space.canonical(space.default_plan()))
    assert params[k.PARAM_OP_OBSERVERS] == "conv1=kl,asym,per_channel,sym"
    assert (
        plan_params(Plan.from_dict(SearchSpace(OPS).default_plan().to_dict()))[
            k.PARAM_OP_OBSERVERS
        ]
        == "-"
    )


def test_an_fp32_first_op_with_other_observers_builds_and_converts() -> None:
    """The global qconfig comes from the first op as int8, whatever its dtype in a trial."""
    torch.manual_seed(0)
    model, x = TinyNet().eval(), torch.randn(4, 1, 20, 20)
    space = SearchSpace(OPS, op_settings={"conv1": {"act_scheme": ("sym",)}})
    plan = space.canonical(space.default_plan().with_fallback({"conv1"}))
    prepared = prepare(model, plan.calibration_plan(), (x,))
    prepared(x)
    q = convert(prepared, plan)
    assert type(q.conv1).__name__ == "Conv2d" and q(x).shape == (4, 10)


# --- items 4-5: sampling_size, bit, compute_dtype, resume ------------------------------------
@pytest.mark.parametrize(
    "value", ["50 100 500", "50, 100, 500", "50,100,500", [50, 100, 500], " 50  100 500 "]
)
def test_sampling_size_forms(value) -> None:
    assert cfg(calibration={"sampling_size": value}).quantization.calibration.sampling_size == (
        50,
        100,
        500,
    )
    assert cfg(calibration={"sampling_size": 300}).quantization.calibration.sampling_size == (300,)


def test_bit_and_compute_dtype_as_inc_writes_them() -> None:
    c = cfg(
        model_wise={"weight": {"bit": 7.0}, "activation": {"compute_dtype": "uint8"}},
        op_wise={
            "conv1": {
                "weight": {"bit": [7.0], "dtype": ["fp32"]},
                "activation": {"dtype": ["fp32"], "compute_dtype": ["None"]},
            }
        },
    )
    assert c.quantization.model_wise.weight.bit == (7.0,)
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    ("space", "path", "words"),
    [
        ({"weight": {"bit": 4}}, "weight.bit", "must be 7.0"),
        ({"activation": {"bit": 7.0}}, "activation.bit", "a weight setting"),
        ({"weight": {"compute_dtype": "uint8"}}, "weight.compute_dtype", "activation setting"),
        ({"activation": {"compute_dtype": "int8"}}, "activation.compute_dtype", "uint8"),
        (
            {"activation": {"compute_dtype": "None", "dtype": "uint8"}},
            "activation.compute_dtype",
            "dtype ['fp32'] only",
        ),
        ({"activation": {"granularity": "per_channel"}}, "activation.granularity", "per tensor"),
    ],
)
def test_bit_compute_dtype_granularity_rejected_by_key(space, path, words) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(model_wise=space)
    assert e.value.path == f"quantization.model_wise.{path}"
    assert words in str(e.value)


def test_workspace_resume_is_rejected_with_the_inc_flow_way() -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_dict(
            {"model": {"name": "x"}, "tuning": {"workspace": {"resume": "./ws/history.snapshot"}}}
        )
    assert e.value.path == "tuning.workspace.resume"
    assert "rerun the same config" in str(e.value)


# --- item 6: INC's own best_configure.yaml -----------------------------------------------------
INC_CONFIGURE = """\
op:
  ? !!python/tuple
  - conv1
  - Conv2d
  : weight:
      dtype: int8
      scheme: sym
      granularity: per_tensor
      algorithm: minmax
      bit: 7.0
    activation:
      dtype: uint8
      scheme: sym
      granularity: per_tensor
      algorithm: kl
      compute_dtype: uint8
      quant_mode: static
  ? !!python/tuple
  - conv2
  - Conv2d
  : weight:
      dtype: fp32
    activation:
      dtype: fp32
  ? !!python/tuple [fc1, Linear]
  : weight: {dtype: int8, scheme: sym, granularity: per_channel, algorithm: minmax, bit: 7.0}
    activation: {dtype: uint8, scheme: asym, granularity: per_tensor, algorithm: minmax,
                 compute_dtype: uint8, quant_mode: static}
  ? !!python/tuple [fc2, Linear]
  : weight: {dtype: int8, scheme: sym, granularity: per_channel, algorithm: minmax, bit: 7.0}
    activation: {dtype: uint8, scheme: asym, granularity: per_tensor, algorithm: minmax,
                 compute_dtype: uint8, quant_mode: static}
calib_iteration: 1
calib_sampling_size: 8
approach: post_training_static_quant
framework: pytorch_fx
reduce_range: true
bf16_ops_list: []
fx_sub_module_list: []
"""
INC_PLAN = Plan(
    ops=(
        OpPlan(
            "conv1",
            "Conv2d",
            act_algorithm="kl",
            act_scheme="sym",
            weight_granularity="per_tensor",
        ),
        OpPlan("conv2", "Conv2d", dtype="fp32"),
        OpPlan("fc1", "Linear"),
        OpPlan("fc2", "Linear"),
    ),
    backend="fbgemm",
)


@pytest.fixture(scope="module")
def inc_dir(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """An INC-layout output directory: the configure written by hand, the int8 weights of the
    same plan saved as INC does (``torch.save(model.state_dict())``)."""
    torch.manual_seed(0)
    d, x = tmp_path_factory.mktemp("inc"), torch.randn(8, 1, 20, 20)
    prepared = prepare(TinyNet().eval(), INC_PLAN.calibration_plan(), (x,))
    prepared(x)
    q = convert(prepared, INC_PLAN)
    torch.save(plain_state_dict(q.state_dict()), d / "best_model_weights.pt")
    (d / "best_configure.yaml").write_text(INC_CONFIGURE)
    return d, x


def test_load_reads_inc_best_configure(inc_dir) -> None:
    d, x = inc_dir
    loaded = inc_flow.load(d, TinyNet())
    state = torch.load(d / "best_model_weights.pt", weights_only=True)
    own = rebuild(TinyNet().eval(), INC_PLAN, state, (x,))
    assert torch.equal(loaded(x), own(x))
    assert "quantized" not in type(loaded.conv2).__module__  # fp32 in the file
    assert "quantized" in type(loaded.fc1).__module__


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (("calib_iteration: 1", "calib_iteration: !!python/object/apply:os.system [echo]"),
         "!!python/object/apply:os.system"),
        (("framework: pytorch_fx", "framework: pytorch"), "`framework`"),
        (("bf16_ops_list: []", "bf16_ops_list: [[fc1, Linear]]"), "`bf16_ops_list`"),
        (("fx_sub_module_list: []", "fx_sub_module_list: [encoder]"), "`fx_sub_module_list`"),
        (("bit: 7.0}\n    activation: {dtype: uint8, scheme: asym, granularity: per_tensor, "
          "algorithm: minmax,\n                 compute_dtype: uint8, quant_mode: static}\n"
          "calib", "bit: 4.0}\n    activation: {dtype: uint8}\ncalib"), "weight.bit"),
    ],
)  # fmt: skip
def test_load_names_what_it_cannot_map(inc_dir, tmp_path, edit, words) -> None:
    d, _ = inc_dir
    text = INC_CONFIGURE.replace(*edit)
    assert text != INC_CONFIGURE
    (tmp_path / "best_configure.yaml").write_text(text)
    (tmp_path / "best_model_weights.pt").write_bytes((d / "best_model_weights.pt").read_bytes())
    with pytest.raises(SaveLoadError) as e:
        inc_flow.load(tmp_path, TinyNet())
    assert words in str(e.value) and "best_configure.yaml" in str(e.value)


# --- the README's INC compatibility table -----------------------------------------------------
def test_every_inc_key_is_accepted_or_rejected_with_a_reason() -> None:
    verdicts = {row[0]: row[2] for row in inc_table.rows()}
    assert not [key for key, v in verdicts.items() if v == "unknown"]
    assert verdicts["`tuning.workspace.resume`"].startswith("rejected: is not supported")
    assert verdicts["`…_wise.<t>.bit`"].startswith("accepted")
    assert verdicts["`…configs.kmp_affinity`"].startswith("rejected")


def test_readme_table_is_the_generated_one() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start, end = "<!-- inc-table:start -->\n", "<!-- inc-table:end -->"
    assert start in readme and end in readme
    copy = readme.split(start, 1)[1].split(end, 1)[0]
    assert copy == inc_table.markdown(), "run `python -m inc_flow.config.inc_table` into README"


def test_inc_example_configs_pass() -> None:
    """Keys of INC's torchvision example configs (configs, sampling_size forms, model_wise)."""
    c = Config.from_dict(
        {
            "model": {"name": "imagenet", "framework": "pytorch_fx"},
            "quantization": {
                "calibration": {"sampling_size": "50 100 500"},
                "model_wise": {"weight": {"bit": 7.0}, "activation": {"algorithm": "minmax"}},
            },
            "evaluation": {
                "accuracy": {"configs": {"cores_per_instance": 4, "num_of_instance": 1}},
                "performance": {
                    "configs": {"cores_per_instance": 4, "intra_num_of_threads": 2},
                    "warmup": 5,
                    "iteration": 10,
                },
            },
        }
    )
    assert c.evaluation.performance.configs.threads == 2


# --- end to end: the config reaches the saved model -----------------------------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs Fashion-MNIST"
)
def test_op_wise_observers_reach_the_saved_configure(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    conf = yaml.safe_load((ROOT / "conf" / "lenet_static.yaml").read_text())
    conf["model"]["weights"] = str(ROOT / "examples/lenet/lenet_fmnist.pt")
    conf["quantization"]["calibration"]["sampling_size"] = "64 128"
    conf["quantization"]["op_wise"] = {
        "conv1": {
            "activation": {"algorithm": ["kl"], "scheme": ["sym"]},
            "weight": {"granularity": ["per_tensor"], "bit": 7.0},
        }
    }
    conf["quantization"]["optype_wise"] = {"Linear": {"weight": {"scheme": ["asym"]}}}
    conf["evaluation"]["accuracy"]["iteration"] = 1
    conf["evaluation"]["performance"]["iteration"] = 2
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tuning"]["exit_policy"].update(max_trials=1, performance_only=True)
    conf["tracking"] = {"enabled": False}
    q = inc_flow.quantize(conf).q_model
    assert q is not None
    q.save(tmp_path / "out")
    saved = yaml.safe_load((tmp_path / "out" / "best_configure.yaml").read_text())
    ops = {op["name"]: op for op in saved["op"]}
    assert ops["conv1"]["activation"]["algorithm"] == "kl"
    assert ops["conv1"]["activation"]["scheme"] == "sym"
    assert ops["conv1"]["weight"]["granularity"] == "per_tensor"
    assert ops["conv2"]["activation"]["algorithm"] == "minmax"  # the global default
    assert ops["fc1"]["weight"]["scheme"] == ops["fc2"]["weight"]["scheme"] == "asym"
    assert ops["conv2"]["weight"]["scheme"] == "sym"
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(inc_flow.load(tmp_path / "out", LeNet())(x), q.model(x))
