"""Dashboard rows as data (inc_flow.record.rows), the HTML they render into, the CLI.

Most tests build the ``search_runs`` frame by hand; the ``toy`` fixture tunes two tiny
studies for real, to pin the report to what the tracker actually writes.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd
import pytest

from inc_flow.cli import main
from inc_flow.errors import IncFlowError
from inc_flow.record import fetch
from inc_flow.record import rows as report
from inc_flow.record.report import log_report, write_report
from inc_flow.record.rows import StudyRuns
from inc_flow_dashboards import comparison_html, study_html
from tests.toys import tiny_study

# --- a hand-built MLflow record ---------------------------------------------------------

OPS = (("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear"))


def _parent(run_id: str, study: str, start: int, **metrics) -> dict:
    return {
        "run_id": run_id,
        "status": "FINISHED",
        "start_time": start,
        "tags.inc_flow.role": "study",
        "tags.inc_flow.study": study,
        "params.model": "lenet",
        "params.approach": "post_training_static_quant",
        "params.backends": "x86",
        **{f"metrics.{k}": v for k, v in metrics.items()},
    }


def _trial(parent: str, n: int, state: str, fp32: tuple[str, ...] = (), start: int = 0, **m):
    row = {
        "run_id": f"{parent}-t{n}-{start}",
        "status": {"error": "FAILED", "killed": "KILLED"}.get(state, "FINISHED"),
        "start_time": 100 + n + start,
        "tags.inc_flow.role": "trial",
        "tags.mlflow.parentRunId": parent,
        "tags.inc_flow.trial": str(n),
        "tags.inc_flow.state": state,
        "tags.inc_flow.phase": "default" if n == 0 else "op_type",
        "params.backend": "x86",
        **{f"metrics.{k}": v for k, v in m.items()},
    }
    if state != "killed":
        row.update({f"params.op.{op}": "fp32" if op in fp32 else "int8" for op, _ in OPS})
    return row


def _frame() -> pd.DataFrame:
    """Study B (latest) with five trials, and an older study A whose ops differ."""
    parent_b = _parent(
        "B", "lenet-static-b", 2, fp32_accuracy=0.80, fp32_latency_ms=6.0,
        required_accuracy=0.792, tuning_wall_time_s=20.0, mlflow_logging_s=2.0,
        n_trials=5, speedup=3.0, best_latency_ms=2.0, best_accuracy=0.795,
    )  # fmt: skip
    parent_b["tags.inc_flow.best_trial"] = "2"
    rows = [
        _parent("A", "lenet-static-a", 1, fp32_accuracy=0.80, fp32_latency_ms=5.0),
        {**_trial("A", 0, "passed", accuracy=0.8, latency_ms=2.5), "params.op.extra": "int8"},
        parent_b,
        _trial("B", 0, "failed", accuracy=0.78, latency_ms=1.5, relative_drop=0.025),
        _trial("B", 1, "pruned", accuracy=0.70, latency_ms=1.0),
        _trial("B", 2, "passed", ("conv1",), accuracy=0.795, latency_ms=2.0),
        _trial("B", 3, "passed", ("fc1", "fc2"), accuracy=0.799, latency_ms=3.0),
        _trial("B", 4, "passed", ("conv1", "conv2"), accuracy=0.797, latency_ms=4.0),
        _trial("B", 5, "killed"),
        _trial("B", 5, "error", start=50),  # trial 5 again after a resume: the later run wins
    ]
    rows[-1]["tags.inc_flow.failure_reason"] = "boom"
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # MLflow's order is not ours


def _study(**kw) -> StudyRuns:
    parent, trials = report.split_study(_frame(), kw.pop("run_id", None), "lenet")
    table = {"columns": ["Op Type", "Total", "INT8", "FP32"], "data": [["Conv2d", 2, 1, 1]]}
    return StudyRuns("lenet", parent, trials, kw.pop("ops", OPS), kw.pop("table", table))


def test_split_study_takes_the_latest_study_and_only_its_trials():
    study = _study()
    assert study.run_id == "B" and study.name == "lenet-static-b"
    assert list(study.trials["trial"]) == [0, 1, 2, 3, 4, 5]
    assert "params.op.extra" not in study.trials  # study A's op
    older = _study(run_id="A")
    assert list(older.trials["trial"]) == [0]


def test_split_study_errors_name_what_is_missing():
    with pytest.raises(IncFlowError, match="'nope' is not an inc_flow study in 'lenet'"):
        report.split_study(_frame(), "nope", "lenet")
    no_parents = _frame().query("`tags.inc_flow.role` == 'trial'")
    with pytest.raises(IncFlowError, match="has no inc_flow study"):
        report.split_study(no_parents, None, "lenet")


def test_study_rows_are_the_trial_table():
    rows = report.study_rows(_study())
    assert [(r["trial"], r["state"], r["plan"]) for r in rows] == [
        (0, "failed", "int8 4/4"),
        (1, "pruned", "int8 4/4"),
        (2, "passed", "int8 3/4 fp32=[conv1]"),
        (3, "passed", "int8 2/4 fp32=[fc1,fc2]"),
        (4, "passed", "int8 2/4 fp32=[conv1,conv2]"),
        (5, "error", "int8 4/4"),
    ]
    assert [r["trial"] for r in rows if r["best"]] == [2]
    assert rows[0]["relative_drop"] == 0.025 and rows[1]["relative_drop"] is None
    assert rows[5]["reason"] == "boom" and rows[5]["accuracy"] is None
    assert rows[0]["phase"] == "default" and rows[0]["backend"] == "x86"


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ({}, "-"),
        ({"a": "int8"}, "int8 1/1"),
        ({"a": "fp32", "b": "int8"}, "int8 1/2 fp32=[a]"),
        ({k: "fp32" for k in "abcdef"}, "int8 0/6 fp32=[a,b,c,d,...]"),
    ],
)
def test_plan_summary(dtypes, expected):
    row = {f"params.op.{k}": v for k, v in dtypes.items()}
    assert report.plan_summary(row, list("abcdef")) == expected


def _pts(*pairs):
    return [{"trial": i, "accuracy": a, "latency_ms": t} for i, (a, t) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("pairs", "higher", "front"),
    [
        ([(0.9, 1.0), (0.8, 2.0), (0.95, 3.0)], True, [0, 2]),  # 1 is slower and worse than 0
        ([(0.9, 1.0), (0.9, 1.0)], True, [0, 1]),  # ties dominate nothing
        ([(0.9, 2.0), (0.9, 1.0)], True, [1]),
        ([(0.1, 1.0), (0.2, 1.5), (0.05, 3.0)], False, [0, 2]),  # a loss: lower is better
        ([], True, []),
    ],
)
def test_pareto_front(pairs, higher, front):
    assert [p["trial"] for p in report.pareto_front(_pts(*pairs), higher)] == front


def test_scatter_points_front_leaves_out_pruned_trials():
    data = report.scatter_points(_study())
    assert [p["trial"] for p in data["points"]] == [0, 1, 2, 3, 4]  # 5 has no scores
    # trial 1 (pruned, 0.70 at 1.0 ms) would dominate nothing real: its accuracy is a bound
    assert [p["trial"] for p in data["pareto"]] == [0, 2, 3]
    assert [p["trial"] for p in data["points"] if p["pareto"]] == [0, 2, 3]
    assert data["fp32"] == {"accuracy": 0.80, "latency_ms": 6.0}
    assert data["target"] == 0.792 and data["best"] == 2 and data["higher_is_better"]


def test_higher_is_better_is_read_from_the_target():
    study = _study()
    assert report.higher_is_better(study)
    lower = StudyRuns("x", {**study.parent, "metrics.required_accuracy": 0.9}, study.trials)
    assert not report.higher_is_better(lower)


def test_precision_map_is_ops_by_trials_in_model_order():
    frame = report.precision_map(_study(ops=tuple(reversed(OPS))))
    assert list(frame.index) == ["fc2", "fc1", "conv2", "conv1"]
    assert list(frame.columns) == [0, 1, 2, 3, 4, 5]
    assert frame.loc["conv1", 2] == "fp32" and frame.loc["conv1", 3] == "int8"
    assert set(frame[5]) == {"int8"}
    unordered = report.precision_map(_study(ops=()))
    assert sorted(unordered.index) == ["conv1", "conv2", "fc1", "fc2"]


def test_precision_map_marks_a_trial_without_plan():
    frame = _frame()
    frame = frame[~((frame["tags.inc_flow.trial"] == "5") & (frame["status"] == "FAILED"))]
    parent, trials = report.split_study(frame, None, "lenet")
    pmap = report.precision_map(StudyRuns("lenet", parent, trials, OPS))
    assert list(pmap[5]) == [None] * 4
    rows = report.study_rows(StudyRuns("lenet", parent, trials, OPS))
    assert (rows[5]["state"], rows[5]["plan"]) == ("killed", "-")


def test_best_op_stats_reads_the_logged_table():
    assert report.best_op_stats(_study()) == [
        {"Op Type": "Conv2d", "Total": 2, "INT8": 1, "FP32": 1}
    ]
    assert report.best_op_stats(_study(table=None)) == []


def test_time_breakdown_says_what_was_not_recorded():
    rows = {r["part"]: r for r in report.time_breakdown(_study())}
    assert [p for p, r in rows.items() if not r["recorded"]] == [
        "calibration", "convert", "evaluation", "latency measurement",
    ]  # fmt: skip
    assert rows["logging"]["metric"] == "mlflow_logging_s" and rows["logging"]["seconds"] == 2.0
    assert rows["rest of the wall time"]["seconds"] == 18.0
    assert rows["tuning wall time"]["share"] == 1.0


def test_time_breakdown_uses_the_time_metrics_when_present():
    study = _study()
    times = {"calibration": 1.0, "convert": 2.0, "evaluation": 8.0, "latency": 4.0}
    parent = {**study.parent, **{f"metrics.time_{k}_s": v for k, v in times.items()}}
    parent["metrics.time_logging_s"] = 3.0
    rows = {r["part"]: r for r in report.time_breakdown(StudyRuns("x", parent, study.trials))}
    assert all(r["recorded"] for r in rows.values())
    assert rows["logging"]["metric"] == "time_logging_s" and rows["logging"]["seconds"] == 3.0
    assert rows["rest of the wall time"]["seconds"] == 2.0
    assert math.isclose(rows["evaluation"]["share"], 0.4)


def test_a_study_without_trials_yet():
    frame = pd.DataFrame([_parent("P", "s", 1)]).assign(status="RUNNING")
    parent, trials = report.split_study(frame, None, "lenet")
    study = StudyRuns("lenet", parent, trials)
    assert report.study_rows(study) == [] and report.precision_map(study).empty
    assert report.scatter_points(study)["points"] == [] and report.best_op_stats(study) == []
    times = report.time_breakdown(study)
    assert [r["metric"] for r in times if not r["recorded"]] == [m for _, m in report.TIME_PARTS]
    page = study_html(study)
    assert "still running" in page and "No trial recorded a plan." in page


def test_compare_rows_and_points_across_studies():
    a, b = _study(run_id="A"), _study()
    assert report.compare_rows([b])[0]["label"] == "lenet static x86"
    rows = report.compare_rows([a, b])
    assert [r["study"] for r in rows] == ["lenet-static-a", "lenet-static-b"]
    assert [r["label"] for r in rows] == [  # same model, approach, backend: names added
        "lenet static x86 (lenet-static-a)", "lenet static x86 (lenet-static-b)",
    ]  # fmt: skip
    assert rows[1]["best_trial"] == 2 and rows[1]["best_plan"] == "int8 3/4 fp32=[conv1]"
    assert rows[0]["best_trial"] is None and rows[1]["speedup"] == 3.0
    points = report.compare_points([a, b])
    assert {p["label"] for p in points} == {rows[1]["label"]}  # a's trial has no drop
    assert [(p["trial"], p["speedup"]) for p in points] == [(0, 4.0)]  # 6.0 ms / 1.5 ms


def test_study_html_is_self_contained():
    page = study_html(_study())
    _assert_self_contained(page)
    for section in ('id="trials"', 'id="scatter"', 'id="precision-map"', 'id="op-stats"'):
        assert section in page
    assert page.count("<svg") == 4  # scatter, precision map, op types, time
    assert "not recorded" in page and "lenet-static-b" in page


def test_study_html_shows_the_side_by_side_speed_verdict():
    study = _study()
    verdict = "fp32 is faster at batch 64: int8 (trial 2) 2.2 ms vs fp32 2.0 ms <&>"
    study.parent.update(
        {
            "tags.inc_flow.faster_than_fp32": "False",
            "tags.inc_flow.speed_verdict": verdict,
            "metrics.speedup": 0.91,
            "metrics.speedup_min": 0.85,
            "metrics.speedup_max": 0.97,
            "metrics.round_batch": 64.0,
        }
    )
    summary = report.study_summary(study)
    assert not summary["faster_than_fp32"] and summary["speed_verdict"] == verdict
    page = study_html(study)
    assert f"Not champion: {html.escape(verdict)}" in page
    assert "x0.91 (0.85-0.97, b64)" in page
    assert "Not champion" not in study_html(_study())  # no verdict recorded: no note


def test_study_html_without_a_best_trial_or_scores():
    study = _study(run_id="A", table=None)
    page = study_html(study)
    _assert_self_contained(page)
    assert "No trial met the accuracy target." in page and "No best model." in page


def test_comparison_html_is_self_contained():
    page = comparison_html([_study(run_id="A"), _study()])
    _assert_self_contained(page)
    assert 'id="studies"' in page and page.count("<svg") == 2


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page)


# --- the real record of tiny studies ----------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Two tiny studies (x86, onednn) in their own store; returns its tracking URI."""
    tmp = tmp_path_factory.mktemp("toy")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tiny_study(tmp, "x86")
        tiny_study(tmp, "onednn")
    return uri


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_rows_from_the_tracker_record(toy):
    study = fetch.fetch_study("tiny", client=_client(toy))
    assert study.ops == OPS  # from plan.yaml, in model order
    rows = report.study_rows(study)
    assert [r["trial"] for r in rows] == [0, 1]
    assert rows[0]["plan"] == "int8 4/4" and rows[0]["state"] == "passed"
    assert all(r["accuracy"] == 0.9 and r["latency_ms"] > 0 for r in rows)
    summary = report.study_summary(study)
    assert summary["backends"] == "onednn" and summary["n_trials"] == 2
    assert summary["label"] == "tiny static onednn"
    # both pass, at about the same speed: the side-by-side round chose one of them
    (best,) = [r for r in rows if r["best"]]
    assert summary["best_trial"] == best["trial"] and summary["speed_verdict"]
    stats = report.best_op_stats(study)  # the all-int8 plan: no FP32 anywhere
    assert stats and all(set(r) == {"Op Type", "Total", "INT8", "FP32"} for r in stats)
    assert all(r["FP32"] == 0 and r["Total"] == r["INT8"] > 0 for r in stats)
    scatter = report.scatter_points(study)
    assert scatter["fp32"]["accuracy"] == 0.9 and scatter["target"] == pytest.approx(0.4)
    metrics = {k[len("metrics.") :] for k in study.parent if k.startswith("metrics.")}
    for row in report.time_breakdown(study):
        if row["metric"] and row["part"] != "rest of the wall time":
            assert row["recorded"] == (row["metric"] in metrics), row


def test_fetch_studies_by_experiment_and_by_run(toy):
    client = _client(toy)
    both = fetch.fetch_studies(["tiny"], client=client)
    assert [report.study_summary(s)["backends"] for s in both] == ["x86", "onednn"]
    again = fetch.fetch_studies(run_ids=[both[0].run_id], client=client)
    assert again[0].run_id == both[0].run_id and again[0].experiment == "tiny"
    with pytest.raises(IncFlowError, match="no MLflow experiment named 'nope'"):
        fetch.fetch_studies(["nope"], client=client)


def test_log_report_puts_the_html_on_the_parent_run(toy, tmp_path):
    client = _client(toy)
    parent = fetch.fetch_study("tiny", client=client).run_id
    path = log_report(client, parent, "tiny", directory=tmp_path)
    assert path == tmp_path / "report.html" and "<svg" in path.read_text()
    assert "report.html" in {a.path for a in client.list_artifacts(parent)}
    assert write_report(tmp_path / "r.html", None, parent, client).read_text().count("<svg") == 4


def test_cli_report_and_compare(toy, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    assert main(["report", "--tracking-uri", toy, "--experiment", "tiny", "-o", str(out)]) == 0
    assert "tiny-static-" in out.read_text() and f"wrote {out}" in capsys.readouterr().out
    runs = [s.run_id for s in fetch.fetch_studies(["tiny"], client=_client(toy))]
    cmp_out = tmp_path / "cmp.html"
    argv = ["compare", "--tracking-uri", toy, "--run", runs[0], "--run", runs[1]]
    assert main([*argv, "-o", str(cmp_out)]) == 0
    assert "tiny static x86" in cmp_out.read_text() and "tiny static onednn" in cmp_out.read_text()
    assert main(["report", "--tracking-uri", toy, "--experiment", "nope", "-o", str(out)]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    assert main(["compare", "--tracking-uri", toy, "-o", str(cmp_out)]) == 2
    assert "at least one --experiment" in capsys.readouterr().err
