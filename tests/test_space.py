"""SearchSpace: Optuna params <-> canonical plans, and the seed phases."""

from __future__ import annotations

import itertools

import optuna
import pytest

from inc_flow.search.space import SearchSpace

pytestmark = pytest.mark.no_mlflow

OPS = [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("add", "add")]
DYNAMIC = "post_training_dynamic_quant"


def all_plans(space: SearchSpace) -> set:
    choices = space.choices()
    combos = itertools.product(*choices.values())
    return {space.plan_from_params(dict(zip(choices, c, strict=True))) for c in combos}


def test_default_plan_is_all_int8_with_first_choices() -> None:
    plan = SearchSpace(OPS).default_plan()
    assert plan.fp32_ops == ()
    assert {op.act_algorithm for op in plan.ops} == {"minmax"}
    assert {op.weight_granularity for op in plan.ops} == {"per_channel"}
    assert plan.backend == "x86" and plan.approach == "post_training_static_quant"


def test_choices_names_and_fixed_ops() -> None:
    space = SearchSpace(
        OPS,
        {"conv1": ("fp32",), "add": ("int8",)},
        backends=("x86", "onednn"),
        act_schemes=("asym", "sym"),
    )
    assert list(space.choices()) == [
        "backend",
        "weight_granularity",
        "act_algorithm",
        "act_scheme",
        "op:conv2",
        "op:fc1",
    ]
    assert space.tunable_ops() == ("conv2", "fc1")
    plan = space.default_plan()
    assert plan.op("conv1").dtype == "fp32" and plan.op("add").dtype == "int8"


def test_dynamic_has_no_activation_params() -> None:
    space = SearchSpace(OPS, approach=DYNAMIC)
    assert "act_algorithm" not in space.choices() and "act_scheme" not in space.choices()
    assert space.observer_variants() == []
    assert {op.act_algorithm for op in space.default_plan().ops} == {"minmax"}


def test_params_round_trip_and_canonical_all_fp32() -> None:
    space = SearchSpace(OPS, backends=("x86", "fbgemm"))
    for plan in all_plans(space):
        assert space.plan_from_params(space.params_for(plan)) == plan
        assert space.canonical(plan) == plan
    kl_fp32 = {"act_algorithm": "kl", "backend": "fbgemm", **{f"op:{n}": "fp32" for n, _ in OPS}}
    all_fp32 = space.plan_from_params(kl_fp32)
    assert all_fp32 == space.default_plan().with_fallback({n for n, _ in OPS})


def test_fallback_ops_share_the_calibration_of_their_observer_setting() -> None:
    space = SearchSpace(OPS)
    kl = space.observer_variants()[0]
    a = space.plan_from_params({**space.params_for(kl), "op:conv1": "fp32"})
    b = space.plan_from_params({**space.params_for(kl), "op:fc1": "fp32", "op:add": "fp32"})
    assert a.calibration_key() == b.calibration_key() == kl.calibration_key()
    assert a.calibration_key() != space.default_plan().calibration_key()


def test_n_plans_counts_distinct_canonical_plans() -> None:
    for space in (
        SearchSpace(OPS),
        SearchSpace(OPS[:2], act_algorithms=("minmax",), weight_granularities=("per_tensor",)),
        SearchSpace(OPS, {"add": ("int8",)}),
        SearchSpace(OPS, approach=DYNAMIC, backends=("x86", "onednn")),
    ):
        assert space.n_plans() == len(all_plans(space))


def test_suggest_with_fixed_trial_and_enqueued_trial() -> None:
    space = SearchSpace(OPS)
    plan = space.plan_from_params({"act_algorithm": "kl", "op:fc1": "fp32"})
    assert space.suggest(optuna.trial.FixedTrial(space.params_for(plan))) == plan
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.params_for(plan))
    assert space.suggest(study.ask()) == plan


def test_seed_phases_in_order_and_sensitivity_is_lazy() -> None:
    space = SearchSpace(OPS)
    calls = []

    def sensitivity() -> dict[str, float]:
        calls.append(1)
        return {"conv1": 0.1, "conv2": 0.5, "fc1": 0.3, "add": 0.0}

    seeds = space.seeds(sensitivity)
    first = list(itertools.islice(seeds, 5))
    assert [phase for phase, _ in first] == [
        "default",
        "observer",
        "op_type",
        "op_type",
        "op_type",
    ]
    assert calls == []  # not reached yet
    assert first[1][1].ops[0].act_algorithm == "kl"
    assert [p.fp32_ops for _, p in first[2:]] == [("conv1", "conv2"), ("fc1",), ("add",)]
    rest = list(seeds)
    assert calls == [1]
    singles = [p.fp32_ops for ph, p in rest if ph == "single_op"]
    assert singles == [("conv2",), ("fc1",), ("conv1",), ("add",)]
    accumulated = [set(p.fp32_ops) for ph, p in rest if ph == "accumulated"]
    assert accumulated == [{"conv2"}, {"conv2", "fc1"}, {"conv1", "conv2", "fc1"}]


def test_seeds_without_basic_are_the_default_only() -> None:
    seeds = list(SearchSpace(OPS).seeds(lambda: pytest.fail("not needed"), basic=False))
    assert [phase for phase, _ in seeds] == ["default"]


def test_rank_by_sensitivity_ties_missing_and_nan_keep_graph_order() -> None:
    space = SearchSpace(OPS)
    ranked = space.rank_by_sensitivity({"fc1": 1.0, "conv2": 1.0, "conv1": float("nan")})
    assert ranked == ["conv2", "fc1", "conv1", "add"]


def test_single_type_model_has_no_all_fp32_seed() -> None:
    space = SearchSpace([("fc1", "Linear"), ("fc2", "Linear")])
    assert space.op_type_fallbacks() == []
    assert all(p.int8_ops for p in space.accumulated_fallbacks({"fc1": 1.0, "fc2": 0.5}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ops": OPS + [("add", "add")]}, "unique names"),
        ({"allowed_dtypes": {"nope": ("fp32",)}}, "unknown ops"),
        ({"allowed_dtypes": {"fc1": ("int4",)}}, "allowed_dtypes"),
        ({"allowed_dtypes": {"fc1": ()}}, "must not be empty"),
        ({"act_algorithms": ("percentile",)}, "act_algorithms"),
        ({"backends": ("qnnpack",)}, "backends"),
        ({"approach": "post_training_auto_quant"}, "approach"),
    ],
)
def test_invalid_spaces(kwargs: dict, match: str) -> None:
    kwargs = {"ops": OPS, **kwargs}
    with pytest.raises(ValueError, match=match):
        SearchSpace(**kwargs)


def test_plan_from_params_rejects_unknown_and_bad_values() -> None:
    space = SearchSpace(OPS)
    with pytest.raises(ValueError, match="unknown search parameters"):
        space.plan_from_params({"op:nope": "fp32"})
    with pytest.raises(ValueError, match="act_algorithm"):
        space.plan_from_params({"act_algorithm": "percentile"})


def test_op_type_covering_most_ops_is_not_a_seed() -> None:
    ops = [(f"conv{i}", "Conv2d") for i in range(5)] + [("fc", "Linear")]
    fallbacks = [p.fp32_ops for p in SearchSpace(ops).op_type_fallbacks()]
    assert fallbacks == [("fc",)]  # 5 of 6 ops in fp32 would be slower than fp32 itself


def test_a_plan_keeps_vocab_members_as_plain_strings() -> None:
    """Plans travel through yaml, Optuna and MLflow: a StrEnum member is stored as its value,
    and a wrong value is a PlanError (a ValueError the CLI reports as a user error)."""
    import yaml

    from inc_flow.errors import IncFlowError, PlanError
    from inc_flow.search.plan import OpPlan, Plan
    from inc_flow.vocab import Approach, Backend

    plan = Plan((OpPlan("fc", "Linear"),), approach=Approach.STATIC, backend=Backend.ONEDNN)
    assert type(plan.approach) is str and type(plan.backend) is str
    assert yaml.safe_load(yaml.safe_dump(plan.to_dict()))["backend"] == "onednn"
    with pytest.raises(PlanError, match="`backend` must be one of") as caught:
        Plan((OpPlan("fc", "Linear"),), backend="arm")
    assert isinstance(caught.value, IncFlowError) and isinstance(caught.value, ValueError)
