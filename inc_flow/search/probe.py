"""Per-sample facts of one model beside fp32: what the default strategy ranks plans on.

Plain data, no torch: an evaluator that can run a model on chosen samples
(``search.ports.HasProbe``, ``quant.samples``) returns a ``Probe``. ``select`` picks the
samples worth ranking on from a probe of all-int8 over every sample: those where int8 and
fp32 disagree (or int8's top score ties), plus those with the smallest fp32 margin; for
outputs that are not class scores, those with the largest output error.
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
    over fp32's mean square, per sample. ``cost``: samples run through a model for it."""

    indices: tuple[int, ...]
    preds: tuple[int, ...] = ()
    ref_preds: tuple[int, ...] = ()
    tied: tuple[bool, ...] = ()
    ref_margins: tuple[float, ...] = ()
    errors: tuple[float, ...] = ()
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

    def score(self) -> float:
        """Higher is closer to fp32: samples agreeing with fp32, else minus the output error."""
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
    )
