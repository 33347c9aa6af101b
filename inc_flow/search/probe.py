"""Per-sample facts of one model beside fp32: what the default strategy ranks plans on.

Plain data, no torch: an evaluator that can run a model on chosen samples
(``search.ports.HasProbe``, ``quant.samples``) returns a ``Probe``. ``select`` picks the
samples worth ranking on from a probe of all-int8 over every sample: those where int8 and
fp32 disagree (or int8's top score ties), plus those with the smallest fp32 margin; for
outputs that are not class scores, those with the largest output error.

A plan is scored on those samples by how many it gets right when the probe knows the
samples' labels (a top-1 metric on labelled eval data: the change a full evaluation would
see there), else by how many agree with fp32 (an ``eval_func``: fp32's predictions are the
labels), else by output error.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN_SAMPLES = 64  # fp32's closest calls, where a small int8 error flips the class
MAX_DISAGREEING = 256  # when int8 disagrees more, the ones with the largest output error
ERROR_SAMPLES = 128  # outputs that are not class scores: the largest output errors


@dataclass(frozen=True)
class Probe:
    """One model's outputs on ``indices`` (positions in the probed data), beside fp32's.

    ``preds``/``ref_preds``: argmax class of the model / of fp32 (empty when the outputs are
    not class scores); ``tied``: the model's top score is shared by several classes;
    ``ref_margins``: fp32's top-1 minus top-2 score; ``errors``: squared output error to fp32
    over fp32's mean square, per sample; ``labels``: the samples' true classes, when the
    metric counts argmax hits on class labels (else empty). ``cost``: samples run through a
    model for it."""

    indices: tuple[int, ...]
    preds: tuple[int, ...] = ()
    ref_preds: tuple[int, ...] = ()
    tied: tuple[bool, ...] = ()
    ref_margins: tuple[float, ...] = ()
    errors: tuple[float, ...] = ()
    labels: tuple[int, ...] = ()
    cost: int = 0

    @property
    def classes(self) -> bool:
        """Whether the outputs are class scores (ranked by agreement, else by error)."""
        return bool(self.preds)

    def agrees(self) -> list[bool]:
        """Per sample: the model predicts fp32's class with no tie at its top score."""
        return [
            p == r and not t for p, r, t in zip(self.preds, self.ref_preds, self.tied, strict=True)
        ]

    def hits(self) -> int:
        """Samples whose class is their label with no tie at the model's top score (a tie is
        counted as a miss, as ``agrees`` counts it: which class wins it is luck)."""
        right = zip(self.preds, self.labels, self.tied, strict=True)
        return sum(p == y and not t for p, y, t in right)

    def score(self) -> float:
        """Higher is better: with labels, the samples right; else the samples agreeing with
        fp32; else minus the output error."""
        if self.classes and self.labels:
            return float(self.hits())
        if self.classes:
            return float(sum(self.agrees()))
        return -float(sum(self.errors))

    def tie_rate(self) -> float:
        return sum(self.tied) / len(self.tied) if self.tied else 0.0


def select(full: Probe) -> tuple[int, ...]:
    """The samples to rank on, from all-int8's probe over every sample (see the module doc)."""
    n = len(full.indices)
    if full.classes:
        agree = full.agrees()
        wrong = [i for i in range(n) if not agree[i]]
        if len(wrong) > MAX_DISAGREEING:
            wrong = sorted(wrong, key=lambda i: -full.errors[i])[:MAX_DISAGREEING]
        rest = sorted((i for i in range(n) if agree[i]), key=lambda i: full.ref_margins[i])
        chosen = set(wrong) | set(rest[:MARGIN_SAMPLES])
    else:
        chosen = set(sorted(range(n), key=lambda i: -full.errors[i])[:ERROR_SAMPLES])
    return tuple(full.indices[i] for i in sorted(chosen))


def restrict(full: Probe, indices: tuple[int, ...]) -> Probe:
    """``full`` on ``indices`` only (no cost: nothing is run)."""
    where = {idx: i for i, idx in enumerate(full.indices)}
    pos = [where[i] for i in indices]

    def pick(values: tuple) -> tuple:
        return tuple(values[i] for i in pos) if values else ()

    return Probe(
        indices=tuple(indices),
        preds=pick(full.preds),
        ref_preds=pick(full.ref_preds),
        tied=pick(full.tied),
        ref_margins=pick(full.ref_margins),
        errors=pick(full.errors),
        labels=pick(full.labels),
    )
