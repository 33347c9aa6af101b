"""Per-sample outputs for the search's ranking (``search.ports.HasProbe``).

``SampleProbe`` runs a model and the fp32 model on chosen samples of a loader and compares
them sample by sample into a ``search.probe.Probe``: argmax class, whether the top score ties,
fp32's top-1 margin and the output error. Outputs of full evaluations are recorded per batch
(``record``), so probing all-int8 over every eval sample after its evaluation runs nothing
again. Only the first tensor of a model's output is compared, flattened per sample. With
``labelled`` (a top-1 metric on the eval data: :func:`counts_top1`) a probe also carries the
samples' labels, when every batch's label is one integer class per sample.

On calibration data (an ``eval_func``'s ranking), a probe of every sample reads at least
``limit`` samples, then goes on until the model disagrees with fp32 on ``disagreements`` of
them or ``most`` samples are read: a plan close to fp32 needs more samples before the ranking
can tell candidates apart. fp32's outputs there are kept (``KEEP_VALUES`` at most), so it runs
once per sample.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from inc_flow.data.batches import call_model, split_batch
from inc_flow.errors import DataError
from inc_flow.metrics.classification import Accuracy, TopK
from inc_flow.search.probe import Probe

MAX_VALUES = 4096  # per sample: larger outputs are not recorded (probes run them again)
KEPT_RUNS = 3  # models whose recorded outputs are kept: the first (fp32), the two latest
KEEP_VALUES = 1 << 24  # values of the reference's probed outputs kept (64 MB of float32)


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model's output (a tensor, or nested in a tuple, list or dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, tuple | list) and out:
        return first_tensor(out[0])
    raise DataError(f"model output has no tensor: {type(out).__name__}")


def flat(out: Any, n: int) -> torch.Tensor:
    """The output as float ``[n, values]`` (dequantized, detached)."""
    t = first_tensor(out).detach()
    if t.is_quantized:
        t = t.dequantize()
    return t.float().reshape(n, -1)


def take(inputs: Any, positions: list[int]) -> Any:
    """The samples at ``positions`` (dim 0) of a batch's inputs."""
    if isinstance(inputs, torch.Tensor):
        return inputs[positions]
    if isinstance(inputs, tuple | list):
        return type(inputs)(take(x, positions) for x in inputs)
    if isinstance(inputs, dict):
        return {k: take(v, positions) for k, v in inputs.items()}
    raise DataError(f"cannot select samples from inputs of type {type(inputs).__name__}")


def compare(out: torch.Tensor, ref: torch.Tensor, classes: bool) -> dict[str, list]:
    """Per-sample facts of ``out`` beside ``ref`` (both ``[n, values]``)."""
    err = ((out - ref) ** 2).mean(dim=1) / ((ref**2).mean(dim=1) + 1e-12)
    facts: dict[str, list] = {"errors": err.tolist()}
    if classes and out.shape[1] >= 2:
        top = out.max(dim=1, keepdim=True).values
        two = torch.topk(ref, 2, dim=1).values
        facts.update(
            preds=out.argmax(dim=1).tolist(),
            ref_preds=ref.argmax(dim=1).tolist(),
            tied=((out == top).sum(dim=1) > 1).tolist(),
            ref_margins=(two[:, 0] - two[:, 1]).tolist(),
        )
    return facts


class SampleProbe:
    """Probes over ``loader``: its first ``limit`` samples (None: all) and ``batches`` batches
    (<= 0: all; an eval loader's ``iteration``). ``classes``: compare argmax classes
    (classification metrics, ``eval_func``), else output errors only. ``disagreements`` > 0
    (with ``limit`` and ``classes``): a probe of every sample goes on past ``limit`` until the
    model disagrees with the reference on that many samples, up to ``most`` samples.
    ``labelled``: probes carry the samples' labels (see the module doc)."""

    def __init__(
        self,
        loader: Iterable[Any],
        classes: bool,
        limit: int | None = None,
        batches: int = -1,
        disagreements: int = 0,
        most: int | None = None,
        labelled: bool = False,
    ) -> None:
        self.loader, self.classes, self.limit, self.batches = loader, classes, limit, batches
        self.labelled = labelled and classes
        self.disagreements = disagreements if limit is not None and classes else 0
        self.most = max(most or 0, limit) if self.disagreements and limit is not None else limit
        self._runs: OrderedDict[int, tuple[Any, dict[int, torch.Tensor]]] = OrderedDict()
        self._subsets: dict[tuple[int, ...], list[tuple[int, list[int], Any]]] = {}

    # --- recording during evaluation ------------------------------------------------------
    def record(self, model: Any, batch: int, out: Any, n: int) -> None:
        """Keep ``model``'s outputs on batch ``batch`` (of ``n`` samples)."""
        key = id(model)
        if batch == 0 or key not in self._runs:
            self._runs.pop(key, None)
            self._runs[key] = (model, {})
            while len(self._runs) > KEPT_RUNS:  # the first run (fp32's baseline) stays
                del self._runs[list(self._runs)[1]]
        values = flat(out, n)
        if values.shape[1] <= MAX_VALUES:
            self._runs[key][1][batch] = values

    def _keep(self, reference: Any, batch: int, values: torch.Tensor) -> None:
        """Keep the reference's outputs on batch ``batch``, probed (``KEEP_VALUES``)."""
        run = self._runs.get(id(reference))
        if run is None or run[0] is not reference:
            if batch != 0:
                return
            self.record(reference, batch, values, int(values.shape[0]))
            return
        if values.shape[1] <= MAX_VALUES and batch not in run[1]:
            if sum(v.numel() for v in run[1].values()) + values.numel() <= KEEP_VALUES:
                run[1][batch] = values

    def _recorded(self, model: Any, batch: int) -> torch.Tensor | None:
        run = self._runs.get(id(model))
        return None if run is None or run[0] is not model else run[1].get(batch)

    # --- probing ---------------------------------------------------------------------------
    def _batches(self) -> Iterable[tuple[int, Any, torch.Tensor | None]]:
        """(batch index, inputs, labels as one integer class per sample or None)."""
        seen = 0
        for i, batch in enumerate(self.loader):
            if (self.most is not None and seen >= self.most) or 0 < self.batches <= i:
                return
            inputs, labels = split_batch(batch)
            n = _size(inputs)
            yield i, inputs, _classes_of(labels, n) if self.labelled else None
            seen += n

    def probe(self, model: Any, reference: Any, indices: Sequence[int] | None) -> Probe:
        """``model`` beside ``reference`` on the samples at ``indices`` (None: all)."""
        facts: dict[str, list] = {}
        order: list[int] = []
        labels: list[int] | None = [] if self.labelled else None
        cost = wrong = 0
        with torch.no_grad():
            for batch, local, where, inputs, classes in self._pieces(indices):
                outs = []
                for m in (model, reference):
                    values = self._recorded(m, batch)
                    if values is not None and local is not None:
                        values = values[local]
                    if values is None:
                        values, cost = flat(call_model(m, inputs), len(where)), cost + len(where)
                        if m is reference and local is None and self.limit is not None:
                            self._keep(reference, batch, values)
                    outs.append(values)
                order += where
                more = compare(outs[0], outs[1], self.classes)
                if labels is not None:  # a batch without usable labels: ranked by agreement
                    if classes is not None and int(classes.max()) < outs[0].shape[1]:
                        labels += classes.tolist()
                    else:
                        labels = None
                for k, v in more.items():
                    facts.setdefault(k, []).extend(v)
                wrong += _wrong(more)
                if indices is None and self._enough(len(order), wrong):
                    break
        return Probe(
            indices=tuple(order),
            preds=tuple(facts.get("preds", ())),
            ref_preds=tuple(facts.get("ref_preds", ())),
            tied=tuple(bool(t) for t in facts.get("tied", ())),
            ref_margins=tuple(facts.get("ref_margins", ())),
            errors=tuple(facts.get("errors", ())),
            labels=tuple(labels) if labels and "preds" in facts else (),
            cost=cost,
        )

    def _enough(self, seen: int, wrong: int) -> bool:
        """Whether a probe of every sample can stop (see the class doc)."""
        return self.limit is not None and seen >= self.limit and wrong >= self.disagreements

    def _pieces(self, indices: Sequence[int] | None) -> Iterable[tuple]:
        """(batch index, positions in the batch or None for all, sample indices, inputs,
        their labels or None)."""
        if indices is None:
            start = 0
            for i, inputs, classes in self._batches():
                n = _size(inputs)
                yield i, None, list(range(start, start + n)), inputs, classes
                start += n
            return
        key = tuple(sorted(set(indices)))
        if key not in self._subsets:
            wanted, pieces, start = set(key), [], 0
            for i, inputs, classes in self._batches():
                n = _size(inputs)
                local = [j for j in range(n) if start + j in wanted]
                if local:
                    kept = None if classes is None else classes[local]
                    where = [start + j for j in local]
                    pieces.append((i, local, where, take(inputs, local), kept))
                start += n
            self._subsets[key] = pieces
        yield from self._subsets[key]


def counts_top1(metric: Any) -> bool:
    """Whether ``metric`` counts argmax hits on class labels (``topk`` with k=1,
    ``Accuracy``): the ranking can then count the hits a plan makes on the probed samples."""
    return isinstance(metric, Accuracy) or (isinstance(metric, TopK) and metric.k == 1)


def _classes_of(labels: Any, n: int) -> torch.Tensor | None:
    """A batch's labels as ``n`` integer classes, or None (no labels, one-hot, other shapes)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point:
        return None
    if labels.is_complex() or labels.dtype == torch.bool or labels.numel() != n or n == 0:
        return None
    flat_labels = labels.reshape(-1).long()
    return flat_labels if int(flat_labels.min()) >= 0 else None


def ranks_classes(metric: Any) -> bool:
    """Whether ``metric`` judges class scores (``topk``, ``Accuracy``: they count ties)."""
    metrics = getattr(metric, "metrics", None)
    if isinstance(metrics, dict):
        return any(ranks_classes(m) for m in metrics.values())
    return hasattr(metric, "tied")


def _wrong(facts: dict[str, list]) -> int:
    """Samples whose class is not the reference's, or whose top score ties."""
    if "preds" not in facts:
        return 0
    agree = zip(facts["preds"], facts["ref_preds"], facts["tied"], strict=True)
    return sum(p != r or t for p, r, t in agree)


def _size(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if isinstance(inputs, tuple | list) and inputs:
        return _size(inputs[0])
    return 1
