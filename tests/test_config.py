"""Config: INC 1.x yaml accepted with INC's meaning; everything else rejected by key path."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inc_flow.config.sections import (
    AccuracyCriterion,
    Config,
    DataloaderConfig,
    ExitPolicy,
    ModelConfig,
    TuningConfig,
)
from inc_flow.config.spaces import OpSpace, TensorSpace
from inc_flow.config.specs import DatasetSpec, MetricSpec, MultiMetricSpec, TransformSpec
from inc_flow.errors import ConfigError

pytestmark = pytest.mark.no_mlflow

ROOT = Path(__file__).resolve().parents[1]
MISSING_DIR = "/nonexistent/inc_flow/data"


def cfg(**sections) -> dict:
    """A minimal valid config plus the given top-level sections."""
    return {"model": {"name": "toy"}, **sections}


def dummy_loader(**extra) -> dict:
    return {"batch_size": 2, "dataset": {"dummy": {"shape": [4, 1, 8, 8]}}, **extra}


def loader_with(dataset: dict | None = None, **extra) -> dict:
    """An accuracy section whose dataloader has the given dataset and extra keys."""
    loader = {"dataset": dataset or {"dummy": {"shape": [4, 3]}}, **extra}
    return {"accuracy": {"dataloader": loader}}


def op_wise(**ops) -> dict:
    return {"op_wise": ops}


# --- accepted ------------------------------------------------------------------------------
def test_minimal_config_has_inc_defaults():
    c = Config.from_dict({"model": {"name": "x"}})
    assert c.version == 1.0 and c.device == "cpu"
    assert c.model == ModelConfig(name="x", framework="pytorch_fx")
    q = c.quantization
    assert q.approach == "post_training_static_quant" and q.backend == ("x86",)
    assert q.calibration.sampling_size == (100,) and q.calibration.dataloader is None
    assert q.model_wise == OpSpace() and q.optype_wise == {} and q.op_wise == {}
    assert c.evaluation.accuracy is None and c.evaluation.performance is None
    t = c.tuning
    assert t.strategy.name == "basic" and t.objective == "performance"
    assert t.accuracy_criterion == AccuracyCriterion(relative=0.01, higher_is_better=True)
    assert (t.exit_policy.timeout, t.exit_policy.max_trials) == (0.0, 100)
    assert t.exit_policy.performance_only is False
    assert t.random_seed == 1978 and t.workspace.path == "./nc_workspace"
    assert t.storage is None and t.study_name is None
    assert c.tracking.enabled is True and c.tracking.uri is None
    assert c.experiment_name == "x"


@pytest.mark.parametrize(
    ("sections", "get", "expected"),
    [
        ({"quantization": {"calibration": {"sampling_size": "100, 200"}}},
         lambda c: c.quantization.calibration.sampling_size, (100, 200)),
        ({"quantization": {"calibration": {"sampling_size": 50}}},
         lambda c: c.quantization.calibration.sampling_size, (50,)),
        ({"quantization": {"calibration": {"sampling_size": [10, 20]}}},
         lambda c: c.quantization.calibration.sampling_size, (10, 20)),
        ({"tuning": {"accuracy_criterion": {"relative": "1%"}}},
         lambda c: c.tuning.accuracy_criterion.relative, 0.01),
        ({"tuning": {"accuracy_criterion": {"relative": "1e-2"}}},  # YAML 1.1 reads a string
         lambda c: c.tuning.accuracy_criterion.relative, 0.01),
        ({"tuning": {"accuracy_criterion": {"relative": 0}}},
         lambda c: c.tuning.accuracy_criterion.relative, 0.0),
        ({"tuning": {"accuracy_criterion": {"absolute": 1}}},
         lambda c: (c.tuning.accuracy_criterion.relative, c.tuning.accuracy_criterion.absolute),
         (None, 1.0)),
        ({"tuning": {"accuracy_criterion": {"absolute": "0.5%", "higher_is_better": False}}},
         lambda c: c.tuning.accuracy_criterion, AccuracyCriterion(absolute=0.005,
                                                                  higher_is_better=False)),
        ({"quantization": {"backend": ["x86", "onednn", "x86"]}},
         lambda c: c.quantization.backend, ("x86", "onednn")),
        ({"quantization": {"backend": "fbgemm"}}, lambda c: c.quantization.backend, ("fbgemm",)),
        ({"quantization": {"approach": "post_training_auto_quant"}},
         lambda c: c.quantization.approach, "post_training_auto_quant"),
        ({"quantization": {"model_wise": {"activation": {"algorithm": "minmax, kl"}}}},
         lambda c: c.quantization.model_wise.activation.algorithm, ("minmax", "kl")),
        ({"quantization": {"calibration": {"dataloader": dummy_loader(last_batch="discard")}}},
         lambda c: c.quantization.calibration.dataloader.last_batch, "no_rollover"),
        ({"tuning": {"exit_policy": {"timeout": 10}}},
         lambda c: c.tuning.exit_policy.timeout, 10.0),
        ({"tuning": {"storage": "sqlite:///s.db", "study_name": "s"}},
         lambda c: (c.tuning.storage, c.tuning.study_name), ("sqlite:///s.db", "s")),
        ({"version": "1.0"}, lambda c: c.version, 1.0),
        ({"version": 1}, lambda c: c.version, 1.0),
        ({"tracking": {"experiment": "exp", "registered_model_name": "lenet-int8"}},
         lambda c: c.experiment_name, "exp"),
        ({"evaluation": {"accuracy": {"metric": {"Accuracy": None}}}},
         lambda c: c.evaluation.accuracy.metric, MetricSpec("Accuracy", {})),
        ({"evaluation": {"accuracy": {"metric": {"MSE": {}}}}},
         lambda c: c.evaluation.accuracy.metric.params, {"compare_label": True}),
        ({"evaluation": {"accuracy": {"metric": {"topk": 5}}}},
         lambda c: c.evaluation.accuracy.metric, MetricSpec("topk", {"k": 5})),
        ({"evaluation": {"accuracy": {"postprocess": {"transform": {"LabelShift": -1}}}}},
         lambda c: c.evaluation.accuracy.postprocess[0].params, {"label_shift": -1}),
        ({"evaluation": {"performance": {"dataloader": dummy_loader()}}},
         lambda c: c.evaluation.performance.dataloader.dataset.params["low"], -1.0),
        ({"evaluation": {"accuracy": {}}}, lambda c: c.evaluation.accuracy.iteration, -1),
        ({"quantization": None, "tuning": None}, lambda c: c.tuning.random_seed, 1978),
        # INC's measurement configs, in one process: the thread count applies
        ({"evaluation": {"performance": {"configs": {"cores_per_instance": 4}}}},
         lambda c: c.evaluation.performance.configs.threads, 4),
        ({"evaluation": {"performance": {"configs": {
            "cores_per_instance": 4, "num_of_instance": 1, "intra_num_of_threads": 2,
            "inter_num_of_threads": None, "kmp_blocktime": None}}}},
         lambda c: c.evaluation.performance.configs.threads, 2),
        ({"evaluation": {"accuracy": {"configs": {"intra_num_of_threads": 2}}}},
         lambda c: c.evaluation.accuracy.configs.threads, 2),
        ({"evaluation": {"accuracy": {"configs": {}}}},
         lambda c: c.evaluation.accuracy.configs.threads, None),
        ({}, lambda c: c.tuning.finalists, 3),
        ({"tuning": {"finalists": 1}}, lambda c: c.tuning.finalists, 1),
    ],
)  # fmt: skip
def test_accepted(sections, get, expected):
    c = Config.from_dict(cfg(**sections))
    assert get(c) == expected
    assert Config.from_dict(c.to_dict()) == c


def test_model_keys(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    model = {
        "name": "lenet",
        "framework": "pytorch",
        "factory": "examples.lenet.model:LeNet",
        "weights": str(weights),
        "input_shape": "1, 28, 28",
    }
    c = Config.from_dict({"model": model})
    assert c.model.input_shape == (1, 28, 28) and c.model.framework == "pytorch"
    assert c.model.weights == str(weights)


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    model = {"name": "x", "weights": "w.pt"}
    evaluation = loader_with({"ImageFolder": {"root": "data"}})
    with pytest.raises(ConfigError, match="model.weights"):
        Config.from_dict({"model": model, "evaluation": evaluation})
    monkeypatch.chdir(tmp_path)
    c = Config.from_dict({"model": model, "evaluation": evaluation})
    assert c.model.weights == "w.pt"  # kept as written
    assert c.evaluation.accuracy.dataloader.dataset.params == {"root": "data"}


FULL_YAML = """\
version: 1.0
model:
  name: resnet_toy
  framework: pytorch_fx
device: cpu
quantization:
  approach: post_training_static_quant
  backend: [x86, onednn]
  calibration:
    sampling_size: 100, 200
    dataloader:
      batch_size: 10
      last_batch: rollover
      shuffle: false
      dataset:
        ImageFolder:
          root: {root}
      transform:
        Resize: {{size: 32, interpolation: bicubic}}
        CenterCrop: {{size: [28, 28]}}
        ToTensor: {{}}
        Normalize: {{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  model_wise:
    weight:
      granularity: per_channel
      scheme: sym
      dtype: int8
      algorithm: minmax
    activation:
      granularity: per_tensor
      scheme: [asym, sym]
      dtype: [uint8]
      algorithm: [minmax, kl]
  optype_wise:
    Linear:
      weight: {{granularity: [per_tensor]}}
  op_wise:
    conv1:
      activation: {{dtype: ['fp32']}}
      weight: {{dtype: ['fp32']}}
    'layer4\\..*':
      activation: {{algorithm: ['minmax']}}
evaluation:
  accuracy:
    multi_metrics:
      topk: 1
      MSE: {{compare_label: false}}
      weight: [0.8, 0.2]
      higher_is_better: [true, false]
    dataloader:
      batch_size: 32
      dataset:
        dummy_v2: {{input_shape: [3, 28, 28], label_shape: [1], low: 0, high: 1, length: 64}}
    postprocess:
      transform:
        LabelShift: -1
    iteration: 10
  performance:
    warmup: 10
    iteration: 100
    dataloader:
      batch_size: 1
      dataset:
        dummy:
          shape: [[16, 3, 28, 28], [16, 4]]
          low: [0.0, -1.0]
          high: [1.0, 1.0]
          dtype: [float32, int64]
          label: false
tuning:
  strategy:
    name: tpe
  accuracy_criterion:
    relative: 1%
    higher_is_better: true
  objective: performance
  exit_policy:
    timeout: 3600
    max_trials: 50
    performance_only: false
  random_seed: 9527
  workspace:
    path: ./nc_workspace/toy
  storage: sqlite:///toy.db
  study_name: toy
tracking:
  uri: sqlite:///mlflow.db
  experiment: toy-exp
  registered_model_name: toy-int8
  enabled: true
"""


def test_full_inc_style_yaml(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(FULL_YAML.format(root=tmp_path))
    before = path.read_bytes()
    c = Config.from_yaml(path)
    assert path.read_bytes() == before  # the user's file is never rewritten
    q = c.quantization
    assert q.backend == ("x86", "onednn") and q.calibration.sampling_size == (100, 200)
    loader = q.calibration.dataloader
    assert [t.name for t in loader.transform] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert loader.transform[0] == TransformSpec("Resize", {"size": 32, "interpolation": "bicubic"})
    assert loader.transform[1].params == {"size": (28, 28)}
    assert q.model_wise.weight == TensorSpace(("int8",), ("sym",), ("per_channel",), ("minmax",))
    assert q.op_wise["conv1"].weight.dtype == ("fp32",)
    multi = c.evaluation.accuracy.multi_metrics
    assert [m.name for m in multi.metrics] == ["topk", "MSE"]
    assert multi.weight == {"topk": 0.8, "MSE": 0.2}
    assert multi.higher_is_better == {"topk": True, "MSE": False}
    assert c.evaluation.accuracy.iteration == 10
    perf = c.evaluation.performance.dataloader.dataset
    assert perf.params["shape"] == ((16, 3, 28, 28), (16, 4))
    assert perf.params["dtype"] == ("float32", "int64") and perf.params["label"] is False
    assert c.tuning.accuracy_criterion.relative == 0.01 and c.tuning.strategy.name == "tpe"
    assert c.tuning.exit_policy.timeout == 3600.0 and c.tuning.random_seed == 9527
    assert c.tracking.registered_model_name == "toy-int8"
    assert Config.from_dict(c.to_dict()) == c
    dumped = tmp_path / "dumped.yaml"
    text = c.to_yaml(dumped)
    assert dumped.read_text() == text and Config.from_yaml(dumped) == c


def test_round_trip_of_python_built_config(tmp_path):
    c = Config(
        model=ModelConfig(name="m", input_shape=[3, 8, 8]),
        tuning=TuningConfig(accuracy_criterion=AccuracyCriterion(absolute="2%")),
        evaluation={"accuracy": {"metric": MetricSpec("topk", {"k": 1})}},
    )
    assert c.model.input_shape == (3, 8, 8) and c.tuning.accuracy_criterion.absolute == 0.02
    assert Config.from_dict(c.to_dict()) == c
    assert Config.from_kwargs(**c.to_dict()) == c
    kw = Config.from_kwargs(model={"name": "m"}, tuning={"random_seed": 1})
    assert kw.tuning.random_seed == 1 and kw.model.name == "m"
    assert c.to_yaml().startswith("version: 1.0\nmodel:\n")


@pytest.mark.parametrize("name", ["lenet_static", "lenet_dynamic"])
def test_example_configs_load(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    if not os.path.isfile("examples/lenet/lenet_fmnist.pt"):
        pytest.skip("examples/lenet/lenet_fmnist.pt is not trained yet")
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST is not installed")
    c = Config.from_yaml(ROOT / "conf" / f"{name}.yaml")
    assert c.model.factory == "examples.lenet.model:LeNet" and c.model.input_shape == (1, 28, 28)
    assert c.quantization.approach.startswith("post_training_")
    assert (c.quantization.calibration.dataloader is None) == (name == "lenet_dynamic")
    assert c.evaluation.accuracy.metric == MetricSpec("topk", {"k": 1})
    assert c.tuning.exit_policy.max_trials == 20
    assert Config.from_dict(c.to_dict()) == c


# --- rejected ------------------------------------------------------------------------------
def M(**model) -> dict:
    return {"model": {"name": "toy", **model}}


def Q(**quantization) -> dict:
    return cfg(quantization=quantization)


def T(**tuning) -> dict:
    return cfg(tuning=tuning)


def E(**evaluation) -> dict:
    return cfg(evaluation=evaluation)


def CAL(**dataloader) -> dict:
    return Q(calibration={"dataloader": dataloader})


def DS(dataset) -> dict:
    return CAL(dataset=dataset)


HERE = str(ROOT)  # an existing directory
ACC = "evaluation.accuracy"
PERF = "evaluation.performance.configs"
CALDL = "quantization.calibration.dataloader"
QMW = "quantization.model_wise"
QOW = "quantization.op_wise"
REJECTED = [
    # model, device, version, top level
    ({"model": {"name": ""}}, "model.name"),
    ({"model": {"name": 3}}, "model.name"),
    ({"model": {"framework": "pytorch"}}, "model.name"),
    (M(framework="tensorflow"), "model.framework"),
    (M(framework="pytorch_ipex"), "model.framework"),
    (M(factory="examples.lenet.model.LeNet"), "model.factory"),
    (M(weights="/nonexistent/lenet.pt"), "model.weights"),
    (M(input_shape=[1, "28"]), "model.input_shape"),
    (M(input_shape=[0, 28]), "model.input_shape"),
    (M(inputs=["x"]), "model.inputs"),
    (M(nme="x"), "model.nme"),
    (cfg(device="gpu"), "device"),
    (cfg(version=2.0), "version"),
    (cfg(tunning={}), "tunning"),
    (cfg(pruning={}), "pruning"),
    (cfg(tuning=[1]), "tuning"),
    # quantization
    (Q(approach="ptq"), "quantization.approach"),
    (Q(backend="arm"), "quantization.backend"),
    (Q(backend=[]), "quantization.backend"),
    (Q(calibration={"sampling_size": 0}), "quantization.calibration.sampling_size"),
    (Q(calibration={"sampling_size": "100, abc"}), "quantization.calibration.sampling_size"),
    (Q(calibration={"sampling_size": True}), "quantization.calibration.sampling_size"),
    (Q(calibration={"sampling_size": [100, -5]}), "quantization.calibration.sampling_size"),
    (Q(train={"epoch": 1}), "quantization.train"),
    (Q(model_wise={"weight": {"dtype": ["int4"]}}), f"{QMW}.weight.dtype"),
    (Q(model_wise={"weight": {"algorithm": ["kl"]}}), f"{QMW}.weight.algorithm"),
    (Q(model_wise={"activation": {"scheme": "symm"}}), f"{QMW}.activation.scheme"),
    (Q(model_wise={"activation": {"granularity": []}}), f"{QMW}.activation.granularity"),
    (Q(optype_wise={"Conv2d": {"weight": {"dtype": "fp32"}}}),
     "quantization.optype_wise.Conv2d.weight.dtype"),
    (Q(**op_wise(conv1={"activation": {"dtype": "fp32"}})), f"{QOW}.conv1.activation.dtype"),
    (Q(**op_wise(**{"conv[": {"activation": {"dtype": ["fp32"]}}})), f"{QOW}.conv["),
    (Q(**op_wise(conv1={"weight": {"bit": [4.0]}})), f"{QOW}.conv1.weight.bit"),
    (Q(**op_wise(conv1={"activaton": {"dtype": ["fp32"]}})), f"{QOW}.conv1.activaton"),
    (Q(op_wise=["conv1"]), "quantization.op_wise"),
    # dataloaders and datasets
    (CAL(batch_size=0, dataset={"dummy": {"shape": [4, 3]}}), f"{CALDL}.batch_size"),
    (CAL(batch_size=64), f"{CALDL}.dataset"),
    (DS({"dummy": {"shape": [4, 3]}, "MNIST": {}}), f"{CALDL}.dataset"),
    (DS({"ImageNet": {"root": HERE}}), f"{CALDL}.dataset.ImageNet"),
    (DS({"FashionMNIST": {"root": MISSING_DIR}}), f"{CALDL}.dataset.FashionMNIST.root"),
    (DS({"FashionMNIST": {"root": HERE, "download": True}}),
     f"{CALDL}.dataset.FashionMNIST.download"),
    (DS({"FashionMNIST": {"root": HERE, "train": "yes"}}), f"{CALDL}.dataset.FashionMNIST.train"),
    (DS({"dummy": {"low": 0.0}}), f"{CALDL}.dataset.dummy.shape"),
    (DS({"dummy": {"shape": [2, "a"]}}), f"{CALDL}.dataset.dummy.shape"),
    (DS({"dummy": {"shape": [2, 3], "low": 1.0, "high": 0.0}}), f"{CALDL}.dataset.dummy.high"),
    (DS({"dummy": {"shape": [[2, 3], [2, 1]], "dtype": ["float32"]}}),
     f"{CALDL}.dataset.dummy.dtype"),
    (DS({"dummy": {"shape": [2, 3], "dtype": "float"}}), f"{CALDL}.dataset.dummy.dtype"),
    (DS({"dummy": {"shap": [2, 3]}}), f"{CALDL}.dataset.dummy.shap"),
    (DS({"dummy_v2": {"input_shape": [3], "length": 0}}), f"{CALDL}.dataset.dummy_v2.length"),
    (DS({"ImageFolder": {}}), f"{CALDL}.dataset.ImageFolder.root"),
    (E(**loader_with(transform={"RandomCrop": {"size": 3}})),
     f"{ACC}.dataloader.transform.RandomCrop"),
    (E(**loader_with(transform={"Normalize": {"mean": [0.5], "std": [0.0]}})),
     f"{ACC}.dataloader.transform.Normalize.std"),
    (E(**loader_with(transform={"Normalize": {"mean": [0.5, 0.5], "std": [1, 1, 1]}})),
     f"{ACC}.dataloader.transform.Normalize.std"),
    (E(**loader_with(transform={"Resize": {"size": [1, 2, 3]}})),
     f"{ACC}.dataloader.transform.Resize.size"),
    (E(**loader_with(transform={"Resize": {"size": 8, "interpolation": "area"}})),
     f"{ACC}.dataloader.transform.Resize.interpolation"),
    (E(**loader_with(transform=["ToTensor"])), f"{ACC}.dataloader.transform"),
    (E(**loader_with(last_batch="drop")), f"{ACC}.dataloader.last_batch"),
    (E(**loader_with(shuffle=1)), f"{ACC}.dataloader.shuffle"),
    (E(**loader_with(filter={"LabelBalance": {"size": 1}})), f"{ACC}.dataloader.filter"),
    (E(**loader_with(distributed=False)), f"{ACC}.dataloader.distributed"),
    # evaluation
    (E(accuracy={"metric": {"topk": 3}}), f"{ACC}.metric.topk"),
    (E(accuracy={"metric": {"topk": True}}), f"{ACC}.metric.topk"),
    (E(accuracy={"metric": {"mAP": {}}}), f"{ACC}.metric.mAP"),
    (E(accuracy={"metric": {"topk": 1, "Loss": {}}}), f"{ACC}.metric"),
    (E(accuracy={"metric": {"MSE": {"compare_label": "no"}}}), f"{ACC}.metric.MSE.compare_label"),
    (E(accuracy={"metric": {"topk": 1}, "multi_metrics": {"Loss": {}}}), f"{ACC}.multi_metrics"),
    (E(accuracy={"multi_metrics": {"topk": 1, "Loss": {}, "weight": [1.0]}}),
     f"{ACC}.multi_metrics.weight"),
    (E(accuracy={"multi_metrics": {"topk": 1, "higher_is_better": [1]}}),
     f"{ACC}.multi_metrics.higher_is_better"),
    (E(accuracy={"multi_metrics": {"weight": []}}), f"{ACC}.multi_metrics"),
    (E(accuracy={"iteration": 0}), f"{ACC}.iteration"),
    (E(accuracy={"postprocess": {"transform": {"LabelShift": "one"}}}),
     f"{ACC}.postprocess.transform.LabelShift"),
    (E(accuracy={"postprocess": {"transforms": {}}}), f"{ACC}.postprocess.transforms"),
    (E(accuracy={"configs": {"num_of_instance": 4}}), f"{ACC}.configs.num_of_instance"),
    (E(accuracy={"configs": {"cores_per_instance": 0}}), f"{ACC}.configs.cores_per_instance"),
    (E(performance={"warmup": -1}), "evaluation.performance.warmup"),
    (E(performance={"iteration": 1.5}), "evaluation.performance.iteration"),
    (E(performance={"configs": {"num_of_instance": 2}}), f"{PERF}.num_of_instance"),
    (E(performance={"configs": {"num_of_instance": 0}}), f"{PERF}.num_of_instance"),
    (E(performance={"configs": {"intra_num_of_threads": "2"}}), f"{PERF}.intra_num_of_threads"),
    (E(performance={"configs": {"inter_num_of_threads": 1}}), f"{PERF}.inter_num_of_threads"),
    (E(performance={"configs": {"kmp_blocktime": 1}}), f"{PERF}.kmp_blocktime"),
    (E(performance={"configs": {"cores": 2}}), f"{PERF}.cores"),
    (E(performance={"configs": 4}), f"{PERF}"),
    (E(acuracy={}), "evaluation.acuracy"),
    # tuning
    (T(strategy={"name": "sigopt"}), "tuning.strategy.name"),
    (T(strategy="basic"), "tuning.strategy"),
    (T(accuracy_criterion={"relative": 1.5}), "tuning.accuracy_criterion.relative"),
    (T(accuracy_criterion={"relative": "150%"}), "tuning.accuracy_criterion.relative"),
    (T(accuracy_criterion={"relative": "abc"}), "tuning.accuracy_criterion.relative"),
    (T(accuracy_criterion={"relative": True}), "tuning.accuracy_criterion.relative"),
    (T(accuracy_criterion={"relativ": 0.1}), "tuning.accuracy_criterion.relativ"),
    (T(accuracy_criterion={"relative": 0.1, "absolute": 0.1}), "tuning.accuracy_criterion"),
    (T(accuracy_criterion={"absolute": -0.1}), "tuning.accuracy_criterion.absolute"),
    (T(accuracy_criterion={"higher_is_better": "true"}),
     "tuning.accuracy_criterion.higher_is_better"),
    (T(objective="latency"), "tuning.objective"),
    (T(exit_policy={"max_trials": -1}), "tuning.exit_policy.max_trials"),
    (T(exit_policy={"max_trials": 0}), "tuning.exit_policy.max_trials"),
    (T(exit_policy={"max_trials": True}), "tuning.exit_policy.max_trials"),
    (T(exit_policy={"max_trials": 10.5}), "tuning.exit_policy.max_trials"),
    (T(exit_policy={"timeout": -1}), "tuning.exit_policy.timeout"),
    (T(exit_policy={"performance_only": 0}), "tuning.exit_policy.performance_only"),
    (T(random_seed="1978"), "tuning.random_seed"),
    (T(random_seed=-1), "tuning.random_seed"),
    (T(workspace={"path": ""}), "tuning.workspace.path"),
    (T(tensorboard=False), "tuning.tensorboard"),
    (T(storage=5), "tuning.storage"),
    (T(finalists=0), "tuning.finalists"),
    (T(finalists=2.0), "tuning.finalists"),
    (T(finalists=True), "tuning.finalists"),
    # tracking
    (cfg(tracking={"enabled": "yes"}), "tracking.enabled"),
    (cfg(tracking={"uri": 1}), "tracking.uri"),
    (cfg(tracking={"experimnt": "x"}), "tracking.experimnt"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "path"), REJECTED, ids=[p for _, p in REJECTED])
def test_rejected_with_key_path(data, path):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    assert f"`{path}`" in str(info.value)
    assert path in [p for p, _ in info.value.problems]


@pytest.mark.parametrize(
    ("configs", "key", "says"),
    [
        ({"num_of_instance": 2}, "num_of_instance", r"must be 1: inc_flow measures in one "
         r"process \(no multi-instance runs\), got 2"),
        ({"kmp_blocktime": 1}, "kmp_blocktime", r"OpenMP reads KMP_BLOCKTIME once, when the "
         r"process starts.*export KMP_BLOCKTIME before running inc_flow instead; got 1"),
        ({"inter_num_of_threads": 4}, "inter_num_of_threads",
         r"inter-op thread pool once per process.*`intra_num_of_threads`\); got 4"),
    ],
)  # fmt: skip
def test_measurement_configs_say_why_they_are_rejected(configs, key, says):
    for section in ("accuracy", "performance"):
        with pytest.raises(ConfigError) as info:
            Config.from_dict(E(**{section: {"configs": configs}}))
        ((path, message),) = info.value.problems
        assert path == f"evaluation.{section}.configs.{key}"
        assert re.search(says, message), message


def test_at_least_forty_rejections():
    assert len(REJECTED) >= 40


def test_message_style_names_path_value_and_expectation():
    with pytest.raises(ConfigError) as info:
        Config.from_dict(T(accuracy_criterion={"relative": 1.5}))
    assert str(info.value) == "`tuning.accuracy_criterion.relative` must be in [0, 1), got 1.5"
    assert info.value.path == "tuning.accuracy_criterion.relative"


def test_unknown_key_lists_allowed_keys_and_suggests():
    with pytest.raises(ConfigError) as info:
        Config.from_dict(T(accuracy_criterion={"relativ": 0.1}))
    message = str(info.value)
    assert "['relative', 'absolute', 'higher_is_better']" in message
    assert "did you mean 'relative'?" in message


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (Q(approach="static"), "post_training_dynamic_quant"),
        (T(strategy={"name": "sigopt"}), "'basic', 'inc', 'tpe'"),
        (Q(backend=["x86", "arm"]), "'x86', 'onednn', 'fbgemm'"),
        (DS({"Cifar10": {}}), "'FashionMNIST'"),
        (E(**loader_with(transform={"Flip": {}})), "'Normalize'"),
        (E(accuracy={"metric": {"acc": {}}}), "'topk', 'Accuracy'"),
    ],
)
def test_unknown_names_list_the_allowed_ones(data, names):
    with pytest.raises(ConfigError, match=names):
        Config.from_dict(data)


def test_all_problems_reported_at_once_first_path_first():
    bad = {
        "model": {"name": "x", "framwork": "pytorch"},
        "device": "gpu",
        "tuning": {"random_seed": True, "exit_policy": {"max_trials": -3}},
    }
    with pytest.raises(ConfigError) as info:
        Config.from_dict(bad)
    lines = str(info.value).splitlines()
    expected = ["model.framwork", "device", "tuning.exit_policy.max_trials", "tuning.random_seed"]
    assert info.value.path == "model.framwork"
    assert len(lines) == len(expected)
    for line, path in zip(lines, expected, strict=True):
        assert line.startswith(f"`{path}` ")


def test_dataclasses_validate_when_built_directly():
    with pytest.raises(ConfigError) as info:
        AccuracyCriterion(relative=1.5)
    assert info.value.path == "relative"
    with pytest.raises(ConfigError, match="max_trials"):
        ExitPolicy(max_trials=-1)
    with pytest.raises(ConfigError, match="k"):
        MetricSpec("topk", {"k": 3})
    with pytest.raises(ConfigError, match="dataset"):
        DataloaderConfig(batch_size=4)
    with pytest.raises(ConfigError, match="tuning.random_seed"):
        Config(model=ModelConfig(name="x"), tuning={"random_seed": "x"})
    with pytest.raises(ConfigError, match="Loss"):
        MultiMetricSpec((MetricSpec("topk", {"k": 1}), MetricSpec("Loss")), weight=[1.0])
    assert TensorSpace(dtype="fp32").dtype == ("fp32",)
    assert DatasetSpec("dummy", {"shape": [2, 3]}).params["shape"] == (2, 3)
    c = Config(model=ModelConfig(name="x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.device = "gpu"  # type: ignore[misc]


# --- files ---------------------------------------------------------------------------------
def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: x\ntuning:\n  random_seed: [1978\n  objective: performance\n")
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(path)
    assert "line 5, column 12" in str(info.value) and "bad.yaml" in str(info.value)


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("model:\n  name: x\ntuning:\n  random_seed: 1\n  random_seed: 2\n")
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(path)
    assert "duplicate key 'random_seed'" in str(info.value) and "line 5" in str(info.value)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        Config.from_yaml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file_says_model_name_is_required(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="is empty") as info:
        Config.from_yaml(path)
    assert "model.name" in str(info.value)


@pytest.mark.parametrize("text", ["- model\n- tuning\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        Config.from_yaml(path)


def test_yaml_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text("model:\n  name: x\ntuning:\n  accuracy_criterion:\n    relative: 1e-2\n")
    assert Config.from_yaml(path).tuning.accuracy_criterion.relative == 0.01
    path.write_text("model:\n  name: x\ntuning:\n  random_seed: yes\n")
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(path)
    assert info.value.path == "tuning.random_seed" and str(path) in str(info.value)


# --- op spaces -----------------------------------------------------------------------------
SPACES = {
    "model_wise": {
        "weight": {"granularity": ["per_channel"], "scheme": ["sym"]},
        "activation": {"algorithm": ["minmax", "kl"]},
    },
    "optype_wise": {
        "Conv2d": {"weight": {"granularity": ["per_tensor"]}, "activation": {"dtype": ["uint8"]}},
    },
    "op_wise": {
        "conv.*": {"activation": {"algorithm": ["kl"]}},
        "conv1": {"activation": {"dtype": ["fp32"]}},
        "fc.*": {"weight": {"dtype": ["fp32"]}},
    },
}


def test_op_space_precedence_per_field():
    c = Config.from_dict(Q(**SPACES))
    conv1 = c.op_space_for("conv1", "Conv2d")  # exact op_wise key beats the regex listed first
    assert conv1.activation.dtype == ("fp32",)
    assert conv1.activation.algorithm == ("minmax", "kl")  # from model_wise
    assert conv1.weight.granularity == ("per_tensor",)  # optype_wise beats model_wise
    assert conv1.weight.scheme == ("sym",)  # model_wise field kept
    conv2 = c.op_space_for("conv2", "Conv2d")  # regex op_wise beats optype_wise, per field
    assert conv2.activation == TensorSpace(dtype=("uint8",), algorithm=("kl",))
    other = c.op_space_for("head", "Linear")
    assert other.weight.granularity == ("per_channel",) and other.activation.dtype is None
    assert c.fallback_forced("conv1", "Conv2d")
    assert c.fallback_forced("fc1", "Linear")
    assert not c.fallback_forced("xfc1", "Linear")  # regex keys must match the whole name
    assert not c.fallback_forced("conv2", "Conv2d")


def test_op_space_of_an_empty_config_is_open():
    c = Config.from_dict(cfg())
    assert c.op_space_for("conv1", "Conv2d") == OpSpace(TensorSpace(), TensorSpace())
    assert not c.fallback_forced("conv1", "Conv2d")


# --- boundaries ----------------------------------------------------------------------------
def test_import_does_not_import_torch():
    code = "import inc_flow.config.sections, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
