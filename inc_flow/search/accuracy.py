"""The accuracy rule of a trial: pure arithmetic, no torch (latency is ``quant/latency.py``).

The accuracy rule is INC's: a quantized model passes when its metric is within ``relative``
(a fraction of the fp32 baseline) or ``absolute`` (metric units) of the fp32 baseline, in the
direction given by ``higher_is_better``.

Two edge cases, decided once here:

* **Zero baseline.** A relative tolerance of a zero baseline is meaningless (INC divides by
  it), so the relative rule falls back to an absolute comparison: ``relative`` is then read
  in metric units. ``relative_drop`` follows the same fallback and equals the absolute drop.
* **Degenerate scores.** NaN and ±inf are errors, not results: such a metric never meets
  the target (the loop fails the trial), and such a baseline is an error, as is a baseline
  at or below chance (what ranking the classes at random scores, when the metric knows it):
  nothing can be compared with it.

Ties pass: ``required_value`` is lowered (raised when lower is better) by a tolerance of
``1e-9 * max(1, |baseline|)`` so that a value that equals the target up to float rounding
(``0.8 * (1 - 0.01)`` against ``792 / 1000``) is not rejected.
"""

from __future__ import annotations

import math

from inc_flow.errors import MetricError, StudyError

_TIE_TOLERANCE = 1e-9
CHANCE_TOLERANCE = 1e-9  # a baseline within this of chance is at chance


def degenerate(value: float) -> str | None:
    """``"NaN"``, ``"+inf"`` or ``"-inf"`` for a degenerate score; None for a finite one."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


def check_baseline(value: float, chance: float | None, higher_is_better: bool = True) -> float:
    """The fp32 model's metric ``value`` as a baseline; ``MetricError`` naming the value when
    it is NaN or ±inf, or (higher is better, ``chance`` known) at or below ``chance``."""
    bad = degenerate(value)
    if bad is not None:
        raise MetricError(
            f"the fp32 model's metric is {bad} (the baseline): a degenerate score is an "
            "error, not a result; nothing can be tuned against it"
        )
    value = float(value)
    if chance is not None and higher_is_better and value <= chance + CHANCE_TOLERANCE:
        raise MetricError(
            f"the fp32 model's metric is {value:.4f} (the baseline), at or below chance "
            f"{chance:.4f} (the score of ranking the classes at random): the model, its "
            "weights, the eval labels or the preprocessing are wrong; nothing to tune against"
        )
    return value


def _criterion(relative: float | None, absolute: float | None) -> tuple[str, float]:
    if relative is not None and absolute is not None:
        raise StudyError(
            "exactly one of `relative` and `absolute` must be set, got "
            f"relative={relative!r}, absolute={absolute!r}"
        )
    if relative is None and absolute is None:
        raise StudyError("one of `relative` and `absolute` must be set, got neither")
    kind, tol = ("relative", relative) if relative is not None else ("absolute", absolute)
    tol = float(tol)  # type: ignore[arg-type]
    if math.isnan(tol) or tol < 0 or (kind == "relative" and tol >= 1):
        bound = "[0, 1)" if kind == "relative" else ">= 0"
        raise StudyError(f"`{kind}` must be {bound}, got {kind}={tol!r}")
    return kind, tol


def _check_baseline(baseline: float) -> float:
    baseline = float(baseline)
    if math.isnan(baseline) or math.isinf(baseline):
        raise MetricError(f"`baseline` must be a finite number, got baseline={baseline!r}")
    return baseline


def required_value(
    baseline: float,
    *,
    relative: float | None = None,
    absolute: float | None = None,
    higher_is_better: bool = True,
) -> float:
    """The value a quantized model's metric must reach (or not exceed, when lower is better).

    Args:
        baseline: the fp32 model's metric.
        relative: allowed drop as a fraction of ``|baseline|`` (0.01 = 1%).
        absolute: allowed drop in metric units.
        higher_is_better: direction of the metric.

    Returns:
        The threshold, tie tolerance included (see the module docstring).

    Raises:
        StudyError: both or neither tolerances set, or a tolerance out of range.
        MetricError: a NaN or infinite baseline.
    """
    kind, tol = _criterion(relative, absolute)
    baseline = _check_baseline(baseline)
    allowed = tol * abs(baseline) if kind == "relative" and baseline != 0 else tol
    slack = _TIE_TOLERANCE * max(1.0, abs(baseline))
    if higher_is_better:
        return baseline - allowed - slack
    return baseline + allowed + slack


def shortfall(required: float, value: float, higher_is_better: bool = True) -> float:
    """How far ``value`` is from ``required``: > 0 misses the target, <= 0 meets it.

    This is the Optuna constraint value of a trial. NaN and ±inf values give ``inf``.
    """
    value = float(value)
    if degenerate(value) is not None:
        return math.inf
    return required - value if higher_is_better else value - required


def meets(
    baseline: float,
    value: float,
    *,
    relative: float | None = None,
    absolute: float | None = None,
    higher_is_better: bool = True,
) -> bool:
    """Whether ``value`` meets the accuracy criterion against ``baseline``. NaN and ±inf
    never do."""
    required = required_value(
        baseline, relative=relative, absolute=absolute, higher_is_better=higher_is_better
    )
    return shortfall(required, value, higher_is_better) <= 0


def absolute_drop(baseline: float, value: float, higher_is_better: bool = True) -> float:
    """Loss in metric units; positive = worse than the baseline."""
    return baseline - value if higher_is_better else value - baseline


def relative_drop(baseline: float, value: float, higher_is_better: bool = True) -> float:
    """Loss as a fraction of ``|baseline|``; positive = worse. Zero baseline: the absolute drop."""
    drop = absolute_drop(baseline, value, higher_is_better)
    return drop / abs(baseline) if baseline != 0 else drop
