"""The fixed sentence set of the MiniLM example, tokenized, as a map-style dataset.

``sentences.txt`` (next to this file, committed) holds 258 varied English sentences, one a
line: everyday life, science, technology, food, travel, sport, weather, money, health,
history, nature, feelings, questions, instructions, numbers, idioms, and some paraphrase
pairs. :func:`sentence_dataset` is the ``custom`` dataset factory of
``conf/minilm_dynamic.yaml``::

    dataset:
      custom:
        factory: "examples.minilm.data:sentence_dataset"
        kwargs: {split: eval}

A sample is ``((input_ids, attention_mask), 0)``: int64 ``[max_length]`` tensors padded to
one fixed length, so torch's default collate stacks them into ``[[ids, mask], labels]``,
which inc_flow splits into positional inputs ``model(ids, mask)`` and a dummy label (the
``CosineSimilarity`` metric compares with the fp32 model's outputs, not with the label).

Splits: ``calib`` is every 4th sentence (65, used by the tuner's sensitivity ranking;
dynamic quantization itself needs no calibration), ``eval`` the other 193, ``all`` all 258.
``start``/``count`` take a slice of the chosen split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from examples.minilm.model import tokenize

SENTENCES = Path(__file__).resolve().parent / "sentences.txt"
SPLITS = ("all", "calib", "eval")
CALIB_EVERY = 4
MAX_LENGTH = 32  # the longest committed sentence needs 18 tokens with [CLS] and [SEP]


def read_sentences(path: str | Path = SENTENCES) -> list[str]:
    """The non-empty lines of ``path``, stripped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip()]


def select(
    sentences: list[str], split: str = "all", start: int = 0, count: int | None = None
) -> list[str]:
    """The sentences of ``split``, then ``[start : start + count]`` of those."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")
    if split == "calib":
        sentences = sentences[::CALIB_EVERY]
    elif split == "eval":
        sentences = [s for i, s in enumerate(sentences) if i % CALIB_EVERY]
    if start < 0 or (count is not None and count < 1):
        raise ValueError(f"need start >= 0 and count >= 1, got start={start}, count={count}")
    chosen = sentences[start : None if count is None else start + count]
    if not chosen:
        raise ValueError(f"no sentence left in split {split!r} from start={start}")
    return chosen


class SentenceDataset(torch.utils.data.Dataset):
    """Tokenized sentences; ``dataset[i]`` is ``((input_ids, attention_mask), 0)``."""

    def __init__(self, sentences: list[str], max_length: int = MAX_LENGTH, tokenizer=None):
        self.sentences = list(sentences)
        self.input_ids, self.attention_mask = tokenize(self.sentences, max_length, tokenizer)

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        if not 0 <= index < len(self.sentences):
            raise IndexError(f"index {index} out of range for {len(self.sentences)} sentences")
        return (self.input_ids[index], self.attention_mask[index]), 0


def sentence_dataset(
    split: str = "all",
    start: int = 0,
    count: int | None = None,
    max_length: int = MAX_LENGTH,
    path: str | None = None,
    transform: Callable[..., Any] | None = None,
) -> SentenceDataset:
    """The ``custom`` dataset factory: the sentences of ``split`` (``all``, ``calib`` or
    ``eval``), sliced by ``start``/``count``, padded to ``max_length`` tokens.

    Raises:
        ValueError: an unknown split, an empty selection, a sentence longer than
            ``max_length`` tokens, or a ``transform`` (image transforms do not apply).
    """
    if transform is not None:
        raise ValueError("the sentence dataset takes no `transform` (inputs are token ids)")
    sentences = read_sentences(path if path is not None else SENTENCES)
    return SentenceDataset(select(sentences, split, start, count), max_length)
