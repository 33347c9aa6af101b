"""The accuracy rule from a table of cases, and latency measurement on a tiny function."""

from __future__ import annotations

import math

import pytest

from inc_flow.quant.latency import LatencyResult, measure_latency
from inc_flow.search.accuracy import (
    absolute_drop,
    meets,
    relative_drop,
    required_value,
    shortfall,
)

pytestmark = pytest.mark.no_mlflow

NAN = float("nan")

# baseline, value, relative, absolute, higher_is_better, meets?
MEETS_CASES = [
    # relative, higher is better (INC default 1%)
    (0.80, 0.80, 0.01, None, True, True),
    (0.80, 0.792, 0.01, None, True, True),  # exactly on the target: ties pass
    (0.80, 0.7919, 0.01, None, True, False),
    (0.80, 0.95, 0.01, None, True, True),  # better than fp32
    (0.80, 0.70, 0.0, None, True, False),
    (0.80, 0.80, 0.0, None, True, True),
    # absolute, higher is better
    (0.80, 0.78, None, 0.02, True, True),
    (0.80, 0.7799, None, 0.02, True, False),
    (0.80, 0.10, None, 0.0, True, False),
    # lower is better (a loss): the value may rise by the tolerance
    (2.00, 2.02, 0.01, None, False, True),
    (2.00, 2.03, 0.01, None, False, False),
    (2.00, 1.50, 0.01, None, False, True),
    (2.00, 2.10, None, 0.1, False, True),
    (2.00, 2.11, None, 0.1, False, False),
    # zero baseline: relative falls back to an absolute comparison
    (0.0, -0.005, 0.01, None, True, True),
    (0.0, -0.02, 0.01, None, True, False),
    (0.0, 0.005, 0.01, None, False, True),
    (0.0, 0.02, 0.01, None, False, False),
    # negative baseline: the tolerance is a fraction of |baseline|
    (-10.0, -10.05, 0.01, None, True, True),
    (-10.0, -10.2, 0.01, None, True, False),
    # NaN values never meet
    (0.80, NAN, 0.01, None, True, False),
    (0.80, NAN, None, 0.5, False, False),
]


@pytest.mark.parametrize(("baseline", "value", "rel", "abs_", "hib", "expected"), MEETS_CASES)
def test_meets_table(
    baseline: float, value: float, rel: float | None, abs_: float | None, hib: bool, expected: bool
) -> None:
    assert meets(baseline, value, relative=rel, absolute=abs_, higher_is_better=hib) is expected
    required = required_value(baseline, relative=rel, absolute=abs_, higher_is_better=hib)
    assert (shortfall(required, value, hib) <= 0) is expected


# baseline, value, higher_is_better, relative drop, absolute drop
DROP_CASES = [
    (0.80, 0.76, True, 0.05, 0.04),
    (0.80, 0.84, True, -0.05, -0.04),
    (2.00, 2.20, False, 0.1, 0.2),
    (2.00, 1.80, False, -0.1, -0.2),
    (0.0, -0.3, True, 0.3, 0.3),  # zero baseline: relative = absolute
    (-4.0, -5.0, True, 0.25, 1.0),
]


@pytest.mark.parametrize(("baseline", "value", "hib", "rel", "abs_"), DROP_CASES)
def test_drops_table(baseline: float, value: float, hib: bool, rel: float, abs_: float) -> None:
    assert relative_drop(baseline, value, hib) == pytest.approx(rel)
    assert absolute_drop(baseline, value, hib) == pytest.approx(abs_)


def test_required_value_directions() -> None:
    assert required_value(0.8, relative=0.01) == pytest.approx(0.792)
    assert required_value(2.0, absolute=0.1, higher_is_better=False) == pytest.approx(2.1)


def test_shortfall_sign_and_nan() -> None:
    assert shortfall(0.79, 0.80) < 0 < shortfall(0.79, 0.70)
    assert shortfall(2.1, 2.0, higher_is_better=False) < 0 < shortfall(2.1, 2.2, False)
    assert shortfall(0.79, NAN) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"relative": 0.01, "absolute": 0.01}, "exactly one"),
        ({}, "got neither"),
        ({"relative": 1.0}, r"relative` must be \[0, 1\)"),
        ({"relative": -0.1}, "relative"),
        ({"absolute": -1.0}, "absolute` must be >= 0"),
        ({"relative": NAN}, "relative"),
    ],
)
def test_invalid_criteria(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        required_value(0.8, **kwargs)


@pytest.mark.parametrize("baseline", [NAN, math.inf])
def test_non_finite_baseline_is_an_error(baseline: float) -> None:
    with pytest.raises(ValueError, match="baseline"):
        meets(baseline, 0.5, relative=0.01)


def test_measure_latency_on_a_tiny_function() -> None:
    torch = pytest.importorskip("torch")
    calls = []
    before = torch.get_num_threads()

    def fn(x: object) -> object:
        calls.append(torch.get_num_threads())
        return torch.relu(x) + 1

    result = measure_latency(fn, (torch.ones(4, 4),), warmup=2, iterations=7, threads=1)
    assert isinstance(result, LatencyResult)
    assert len(calls) == 9 and set(calls) == {1}
    assert (result.threads, result.iterations) == (1, 7)
    assert 0 < result.median_ms <= result.p90_ms
    assert torch.get_num_threads() == before  # restored


def test_measure_latency_restores_threads_on_error() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(boom, (), warmup=0, iterations=1, threads=1)
    assert torch.get_num_threads() == before


def test_measure_latency_keeps_current_threads_when_unset() -> None:
    torch = pytest.importorskip("torch")
    result = measure_latency(lambda: None, (), warmup=0, iterations=3)
    assert result.threads == torch.get_num_threads()


@pytest.mark.parametrize(
    "kwargs", [{"warmup": -1}, {"iterations": 0}, {"threads": 0}], ids=["warmup", "iter", "thr"]
)
def test_measure_latency_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        measure_latency(lambda: None, (), **kwargs)
