"""What a user finds after a tracked study: readable run names, MLflow's source/user tags, the
data as MLflow datasets, the "next steps" block, the report kept in the workspace and nothing
left in the temp dir; the parent run under ``mlflow run`` (project run in "Default", a rerun)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from inc_flow import quantize
from inc_flow.config.sections import Config
from inc_flow.record import keys as k
from inc_flow.record import links, parent
from inc_flow.record.datasets import log_datasets, study_datasets
from inc_flow.record.tracking import MlflowTracker
from inc_flow.search.plan import default_plan
from inc_flow.search.records import StudyInfo
from inc_flow.search.settings import TuneSettings
from tests.toys import TinyNet

CALIB_PART = "32 samples in 1 batches, sampling_size 100; sha256 " + "ab" * 32
EVAL_PART = "eval_func tests.x; loader 64 samples in 2 batches; sha256 " + "cd" * 32


def _info(study: str = "s1", **settings) -> StudyInfo:
    fingerprint = (("calibration data", CALIB_PART), ("eval data", EVAL_PART))
    return StudyInfo(
        settings=TuneSettings(study_name=study, fingerprint=fingerprint, **settings),
        study_name=study,
        storage=":memory:",
        baseline_accuracy=0.9,
        baseline_latency_ms=1.0,
        required_accuracy=0.89,
        ops=(("a", "Linear"),),
    )


def _record(cfg: Config, info: StudyInfo) -> MlflowTracker:
    tracker = MlflowTracker(cfg)
    tracker.study_started(info)
    tracker.trial_started(0, default_plan([("a", "Linear")]).with_fallback({"a"}))
    tracker.close()
    return tracker


def _study_parents(client: MlflowClient, exp_id: str) -> list:
    runs = client.search_runs([exp_id])
    return [r for r in runs if r.data.tags.get(k.TAG_ROLE) == k.ROLE_STUDY]


def test_run_names_context_tags_and_datasets(monkeypatch):
    cfg = Config.from_dict({"model": {"name": "named"}})
    tracker = _record(cfg, _info(absolute=0.02, approach="post_training_dynamic_quant"))
    client = MlflowClient()
    run = client.get_run(tracker.parent_id)
    # <model>-<approach>-<target>-<YYYYmmdd-HHMM>; the study hash stays a tag (identity)
    assert re.fullmatch(
        r"named-post_training_dynamic_quant-abs0\.02-\d{8}-\d{4}", run.info.run_name
    )
    assert run.data.tags[k.TAG_STUDY] == "s1"
    for key in (k.TAG_SOURCE_NAME, k.TAG_SOURCE_TYPE, k.TAG_USER):
        assert run.data.tags[key], key
    (trial,) = [
        r for r in client.search_runs([run.info.experiment_id]) if r.info.run_id != run.info.run_id
    ]
    assert trial.info.run_name == "trial-000-x86-int8-0/1-fp32:a"
    assert trial.data.tags[k.TAG_USER] == run.data.tags[k.TAG_USER]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"named-calibration", "named-eval"}
    calib = inputs["named-calibration"]
    assert calib.dataset.digest == "ab" * 8
    assert '"num_rows": 32' in calib.dataset.profile
    assert {t.key: t.value for t in calib.tags} == {k.DATASET_CONTEXT: k.DATASET_CALIBRATION}

    # under `mlflow run --experiment-name chosen` the project run is the parent, renamed
    exp = client.create_experiment("chosen")
    project = client.create_run(exp).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    tracker = _record(Config.from_dict({"model": {"name": "m"}}), _info())
    assert tracker.parent_id == project
    run = client.get_run(project)
    assert run.info.run_name.startswith("m-post_training_static_quant-rel1%-")
    assert run.data.tags[k.TAG_ROLE] == k.ROLE_STUDY
    assert run.info.status == "RUNNING"  # the project run is ended by `mlflow run`
    client.set_terminated(project)


def test_datasets_only_for_data_the_fingerprint_hashed():
    parts = {"calibration data": "not used", "eval data": "eval_func tests.f"}
    assert study_datasets("m", parts) == []
    assert parent.target_text(None, None) == "rel1%"
    assert parent.target_text(0.005, None) == "rel0.5%"


def test_mlflow_run_in_default_records_in_the_configs_experiment_and_a_rerun_reuses_it(
    monkeypatch,
):
    """`mlflow run . -P config=...` without --experiment-name: the project run MLflow made
    sits in "Default"; the study goes to the config's experiment, the project run points at
    it. A second `mlflow run` of the same study records into the same parent run."""
    client = MlflowClient()
    cfg = Config.from_dict({"model": {"name": "projected"}})
    parents = []
    for _ in range(2):
        project = client.create_run(parent.DEFAULT_EXPERIMENT_ID).info.run_id
        monkeypatch.setenv("MLFLOW_RUN_ID", project)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", parent.DEFAULT_EXPERIMENT_ID)  # as mlflow run
        tracker = _record(cfg, _info())
        client.set_terminated(project)  # what `mlflow run` does when the command ends
        parents.append(tracker.parent_id)
        pointer = client.get_run(project)
        assert k.TAG_ROLE not in pointer.data.tags  # not a study: never listed as one
        assert pointer.data.tags[k.TAG_RECORDED_IN] == f"projected/{tracker.parent_id}"
    exp = client.get_experiment_by_name("projected")
    assert parents[0] == parents[1]
    assert [r.info.run_id for r in _study_parents(client, exp.experiment_id)] == parents[:1]
    assert client.get_run(parents[0]).info.status == "FINISHED"


def test_ui_link_opens_the_training_view_of_the_run():
    base, start = links.ui_base("sqlite:////tmp/x/mlflow.db")
    assert (base, start) == (
        links.LOCAL_UI,
        "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db",
    )
    assert links.ui_base("http://mlflow.lan:5000/") == ("http://mlflow.lan:5000", "")
    url = links.run_url("http://h:1", "7", "abc")
    assert url == "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning"


def test_a_tracked_study_leaves_nothing_in_the_temp_dir_and_says_what_is_next(
    tmp_path, monkeypatch
):
    fresh = tmp_path / "tmp"
    fresh.mkdir()
    monkeypatch.setenv("TMPDIR", str(fresh))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    torch.manual_seed(0)
    config = {
        "model": {"name": "tiny", "factory": "tests.toys:TinyNet"},
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "exit_policy": {"timeout": 600, "max_trials": 1},
            "accuracy_criterion": {"absolute": 0.5},
        },
    }
    x = torch.randn(8, 1, 20, 20)
    out = tmp_path / "out"
    outcome = quantize(
        config, model=TinyNet().eval(), calib_dataloader=[x], eval_func=lambda m: 0.9,
        output=out,
    )  # fmt: skip
    assert outcome.q_model is not None
    assert sorted(p.name for p in fresh.iterdir()) == []  # no tmp*_report, no leftovers
    steps = outcome.next_steps
    run = MlflowClient().get_run(re.search(r"/runs/([0-9a-f]{32})\?", steps)[1])
    exp = run.info.experiment_id
    assert f"/#/experiments/{exp}/runs/{run.info.run_id}?workflowType=machine_learning" in steps
    assert "mlflow ui --backend-store-uri sqlite:///" in steps
    assert "models:/tiny-int8@champion (version 1)" in steps
    report = Path(re.search(r"HTML report: +(\S+)", steps)[1])
    assert report.is_file() and report.parent.parent == tmp_path / "ws" / "reports"
    assert f'inc_flow.load("{out}", TinyNet())  # from tests.toys import TinyNet' in steps
    assert 'mlflow.pyfunc.load_model("models:/tiny-int8/1")' in steps


def test_the_cli_prints_the_next_steps(monkeypatch, capsys, tmp_path):
    from inc_flow import api, cli

    def fake(cfg, role, output):
        return api.Outcome(object(), None, cfg, next_steps="Next steps:\n  HTML report: r.html")

    monkeypatch.setattr(api, "quantize", fake)
    conf = tmp_path / "c.yaml"
    conf.write_text(f"model: {{name: m}}\ntuning: {{workspace: {{path: {tmp_path}/ws}}}}\n")
    assert cli.main(["tune", str(conf), "-o", str(tmp_path / "o")]) == 0
    assert "Next steps:\n  HTML report: r.html" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("aliases", "tags", "expected"),
    [
        (["champion"], {}, "models:/n@champion (version 3)"),
        (["challenger"], {k.VERSION_ALIAS_REASON: "fp32 is faster"},
         "models:/n/3 is @challenger, not @champion: fp32 is faster"),
    ],
)  # fmt: skip
def test_the_model_line_says_why_there_is_no_champion(aliases, tags, expected):
    class Version:
        name, version = "n", "3"

    class Recorder:
        version = Version()
        not_registered = ""

    Version.aliases, Version.tags = aliases, tags
    assert links.model_line(Recorder()) == expected
    Recorder.version, Recorder.not_registered = None, "accuracy was not checked"
    assert links.model_line(Recorder()) == "none: accuracy was not checked"


def test_the_comparison_lists_each_study_once():
    import pandas as pd

    from inc_flow.record.fetch import unique_studies
    from inc_flow.record.rows import StudyRuns

    def study(run_id: str, name: str, trials: int, start: int) -> StudyRuns:
        parent = {"run_id": run_id, "start_time": start, f"tags.{k.TAG_STUDY}": name}
        return StudyRuns("lenet", parent, pd.DataFrame({"trial": range(trials)}))

    full, empty_rerun = study("a" * 32, "s", 3, 1), study("b" * 32, "s", 0, 2)
    other = study("c" * 32, "t", 1, 3)
    kept = unique_studies([full, other, empty_rerun, full])
    assert [s.run_id for s in kept] == ["a" * 32, "c" * 32]
    assert [s.run_id for s in unique_studies([empty_rerun, other])] == ["b" * 32, "c" * 32]


class _RacingClient:
    """MlflowClient whose first ``errors`` log_inputs calls fail as PostgreSQL fails the
    second of two workers inserting the same dataset at once (the dataset is inserted)."""

    def __init__(self, errors: int, message: str):
        self.client, self.errors, self.message, self.calls = MlflowClient(), errors, message, 0

    def log_inputs(self, run_id, datasets):
        self.calls += 1
        if self.calls <= self.errors:
            from mlflow.exceptions import RestException

            raise RestException({"error_code": "BAD_REQUEST", "message": self.message})
        self.client.log_inputs(run_id, datasets=datasets)


RACE = (
    '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
)


def test_a_dataset_another_worker_inserted_first_is_logged_again():
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    datasets = study_datasets("m", {"calibration data": CALIB_PART, "eval data": EVAL_PART})
    racing = _RacingClient(1, RACE)
    log_datasets(racing, run_id, datasets)
    assert racing.calls == 2
    inputs = client.get_run(run_id).inputs.dataset_inputs
    client.set_terminated(run_id)
    assert sorted(d.dataset.name for d in inputs) == ["m-calibration", "m-eval"]


@pytest.mark.parametrize(
    ("errors", "message", "calls"),
    [(2, RACE, 2), (1, "RESOURCE_DOES_NOT_EXIST: run not found", 1)],
    ids=["raced-twice", "other-error"],
)
def test_other_dataset_errors_and_a_second_race_are_raised(errors, message, calls):
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    racing = _RacingClient(errors, message)
    with pytest.raises(MlflowException) as raised:
        log_datasets(racing, run_id, study_datasets("m", {"calibration data": CALIB_PART}))
    inputs = client.get_run(run_id).inputs.dataset_inputs
    client.set_terminated(run_id)
    assert message in str(raised.value)
    assert racing.calls == calls
    assert not inputs
