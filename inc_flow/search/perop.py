"""Per-op observer settings of a search space: the setting names, their values, and the exact
count of distinct canonical plans when some ops have their own choices.

No torch, no optuna. :class:`inc_flow.search.space.SearchSpace` uses these.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from inc_flow.errors import PlanError
from inc_flow.search.plan import ACT_ALGORITHMS, GRANULARITIES, SCHEMES

SETTINGS: dict[str, tuple[str, ...]] = {
    "act_algorithm": ACT_ALGORITHMS,
    "act_scheme": SCHEMES,
    "weight_granularity": GRANULARITIES,
    "weight_scheme": SCHEMES,
}
"""The observer fields of an OpPlan, each with the values a plan may hold."""
ACT_SETTINGS = ("act_algorithm", "act_scheme")
"""Fields a dynamic plan does not search (it has no activation observer)."""
PARAM_SEP = ":"
"""A per-op parameter is ``<setting>:<op name>`` (``act_algorithm:conv1``)."""
OWN_FIELDS = ("act_algorithm", "weight_granularity")
"""Fields an int8 op that follows them may hold on its own (``SearchSpace.op_observers``)."""
INT8_OWN = "int8:"
"""``op:<name>`` value prefix of such an op: ``int8:kl`` is int8 with its own ``kl``."""


def choices(name: str, values: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` without duplicates, checked against ``allowed``; a PlanError names ``name``."""
    values = tuple(dict.fromkeys(values))
    if not values:
        raise PlanError(f"`{name}` must not be empty, got {name}={values!r}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise PlanError(f"`{name}` values must be in {list(allowed)}, got {name}={list(values)}")
    return values


def check_op_settings(
    op_settings: Mapping[str, Mapping[str, Sequence[str]]], names: Sequence[str]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """``op name -> {setting: allowed values}`` checked: known ops, settings and values."""
    unknown = sorted(set(op_settings) - set(names))
    if unknown:
        raise PlanError(f"`op_settings` names unknown ops {unknown}")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for op, settings in op_settings.items():
        bad = sorted(set(settings) - set(SETTINGS))
        if bad:
            raise PlanError(
                f"`op_settings[{op!r}]` keys must be in {list(SETTINGS)}, got {sorted(settings)}"
            )
        out[op] = {
            k: choices(f"op_settings[{op!r}][{k!r}]", v, SETTINGS[k]) for k, v in settings.items()
        }
    return out


def count_plans(
    global_sizes: Mapping[str, int],
    followers: Mapping[str, frozenset[str]],
    ops: Sequence[tuple[str, bool, bool, int]],
) -> int:
    """Distinct canonical plans: sum over the int8 op sets D of the global choices that some
    op of D follows, times the per-op choices of D's ops.

    Args:
        global_sizes: global setting (and ``backend``) -> its number of choices.
        followers: global setting -> the ops that take it (not pinned, no own choice).
        ops: (name, may be fp32, may be int8, product of its own choice counts) per op.

    Inclusion-exclusion over the settings keeps this exact without listing the int8 sets.
    """
    names = [s for s, n in global_sizes.items() if n > 1]

    def avoiding(ops_out: frozenset[str]) -> int:  # sum over D disjoint from ops_out
        total = 1
        for name, fp32, int8, own in ops:
            total *= int(fp32) if name in ops_out else int(fp32) + int(int8) * own
        return total

    count = 0
    for k in range(len(names) + 1):
        for hit in itertools.combinations(names, k):  # D meets the followers of each of `hit`
            weight = math.prod(global_sizes[s] - 1 for s in hit)
            meets = 0
            for j in range(len(hit) + 1):
                for miss in itertools.combinations(hit, j):
                    out = frozenset().union(*(followers[s] for s in miss))
                    meets += (-1) ** j * avoiding(out)
            count += weight * meets
    return count


def shared_values(
    options: Mapping[str, tuple[str, ...]], own: Sequence[Mapping[str, str]]
) -> dict[str, str] | None:
    """The global values of ``options``' fields under which each int8 op (``own``: its values
    of the fields it follows) differs in one field at most: the values most ops hold (first
    seen on ties), else the first combination that fits; None when none fits."""
    fields = list(options)
    keys = [tuple(o[f] for f in fields) for o in own if len(o) == len(fields)]
    ranked = sorted(dict.fromkeys(keys), key=lambda key: -keys.count(key))
    for key in itertools.chain(ranked, itertools.product(*options.values())):
        ref = dict(zip(fields, key, strict=True))
        if all(sum(v != ref[f] for f, v in o.items()) <= 1 for o in own):
            return ref
    return None


def space_plans(space: Any) -> int:
    """``SearchSpace.n_plans``: :func:`count_plans` of the space's globals, followers and ops;
    with ``op_observers`` an int8 op's own values multiply its int8 choices; with
    ``fp32_outputs`` every plan holding an int8 op counts twice."""
    names = [n for n, _ in space.ops]
    sizes = {"backend": len(space.backends)}
    followers = {"backend": frozenset(names)}
    for setting in SETTINGS:
        sizes[setting] = len(space._global(setting))
        followers[setting] = frozenset(n for n in names if space.follows_global(n, setting))
    own = space._own_params()
    ops = []
    for n in names:
        dtypes, variants = space.allowed_dtypes[n], space.op_variants(n)
        n_own = math.prod(len(v) for k, v in own.items() if k.endswith(PARAM_SEP + n))
        n_own *= 1 + len(variants) - len({f for f, _ in variants})
        ops.append((n, "fp32" in dtypes, "int8" in dtypes, n_own))
    count = count_plans(sizes, followers, ops)
    if space.fp32_outputs:  # each plan with an int8 op twice: int8 or fp32 output
        all_fp32 = int(all(fp32 for _, fp32, _, _ in ops))
        count = all_fp32 + 2 * (count - all_fp32)
    return count
