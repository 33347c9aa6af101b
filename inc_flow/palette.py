"""One colour per meaning, for every plot (the PNGs on the parent run, the dashboards' SVG
charts) and the HTML report: a colour never stands for two things.

Trial states are the ``inc_flow.state`` tag values; the rest name what a mark means. Plain
hex strings (matplotlib and CSS both read them); standard library only.
"""

from __future__ import annotations

from typing import Final

from inc_flow.vocab import TrialState

STATE: Final[dict[str, str]] = {
    TrialState.PASSED.value: "#2e7d32",  # green
    TrialState.FAILED.value: "#c62828",  # red: missed the target
    TrialState.PRUNED.value: "#ef6c00",  # orange: stopped early, infeasible
    TrialState.ERROR.value: "#4e342e",  # dark brown
    TrialState.DUPLICATE.value: "#9e9e9e",  # grey
    "killed": "#6a1b9a",  # purple: the run died (MLflow status KILLED)
    "running": "#00838f",  # teal: still running
}
UNKNOWN: Final = "#757575"  # a state this version does not know

INT8: Final = "#3949ab"  # indigo: an int8 op, the best int8 latency
FP32: Final = "#8d6e63"  # brown: an fp32 op, the fp32 baseline point / line / bar
NO_PLAN: Final = "#eeeeee"  # a trial that recorded no plan
PARETO: Final = "#1e88e5"  # blue: the Pareto front
BEST: Final = "#f9a825"  # gold: the best trial (ring, box, best-so-far line)
BEST_ROW: Final = "#fff8e1"  # the best trial's row in the HTML tables (pale gold)
TARGET: Final = "#d81b60"  # magenta: the accuracy target line
IMPORTANCE: Final = "#00897b"  # teal-green: importance bars
TIME: Final = "#607d8b"  # blue-grey: time breakdown bars
ANNOTATION: Final = "#555555"  # trial numbers next to points

MEANINGS: Final[dict[str, str]] = {
    **{f"state {state}": color for state, color in STATE.items()},
    "int8": INT8,
    "fp32": FP32,
    "no plan": NO_PLAN,
    "Pareto front": PARETO,
    "best": BEST,
    "target": TARGET,
    "importance": IMPORTANCE,
    "time": TIME,
}


def state_color(state: object) -> str:
    """The colour of a trial state (``passed``, ``pruned``, ...); grey when unknown."""
    return STATE.get(str(state), UNKNOWN)


__all__ = [
    "ANNOTATION",
    "BEST",
    "BEST_ROW",
    "FP32",
    "IMPORTANCE",
    "INT8",
    "MEANINGS",
    "NO_PLAN",
    "PARETO",
    "STATE",
    "TARGET",
    "TIME",
    "UNKNOWN",
    "state_color",
]
