"""The study fingerprint (issue 14, item 1): a resumed study is tied to its fp32 weights, its
calibration and eval data and its settings; a change is refused before any trial or baseline
is reused, naming what changed and how to start anew. Also NaN calibration data named before
calibration, and ``sampling_size`` beyond the data recorded as what was used.

In-process, on TinyNet (tests/toys.py) with small in-memory data and no MLflow (a list
tracker), except the one CLI test, which tunes from yaml with MLflow as a user would.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from inc_flow import fingerprint, quantize
from inc_flow.cli import main as cli_main
from inc_flow.errors import DataError, StudyError
from inc_flow.search import identity, storage
from inc_flow.search.settings import TuneSettings
from tests.fakes import ListTracker
from tests.toys import SleepyNet, TinyNet

NAME = "ident"


def _model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def _data(model: TinyNet, n: int, seed: int = 1, batch: int = 16) -> list:
    """``n`` samples in batches, labelled with ``model``'s own top-1 (fp32 accuracy 1.0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 20, 20, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _conf(tmp: Path, name: str = NAME, sampling_size: int = 32) -> dict:
    return {
        "model": {"name": "tiny"},
        "tracking": {"enabled": False},
        "quantization": {"calibration": {"sampling_size": sampling_size}},
        "evaluation": {
            "accuracy": {"metric": {"topk": 1}},
            "performance": {"warmup": 1, "iteration": 3},
        },
        "tuning": {
            "study_name": name,
            "workspace": {"path": str(tmp / "ws")},
            "accuracy_criterion": {"absolute": 1.0},  # every plan passes: scores not tested
            "exit_policy": {"timeout": 600, "max_trials": 2},
        },
    }


def _tune(tmp: Path, model=None, calib=None, evald=None, name: str = NAME, **kw):
    model = model if model is not None else _model()
    base = _model()
    tracker = ListTracker()
    outcome = quantize(
        _conf(tmp, name, **kw),
        model=model,
        calib_dataloader=calib if calib is not None else _data(base, 32, seed=2),
        eval_dataloader=evald if evald is not None else _data(base, 64),
        tracker=tracker,
    )
    return outcome, tracker


def _study(tmp: Path, name: str = NAME) -> optuna.Study:
    url = f"sqlite:///{(tmp / 'ws' / 'optuna.db').resolve()}"
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One study tuned once (two trials); each test refuses or resumes it in place."""
    tmp = tmp_path_factory.mktemp("tuned")
    outcome, _ = _tune(tmp)
    assert outcome.result.n_trials == 2
    return tmp


def _unchanged(tmp: Path, before: dict) -> None:
    study = _study(tmp)
    assert len(study.trials) == 2  # no trial was added
    assert study.user_attrs[storage.BASELINE_ATTR] == before[storage.BASELINE_ATTR]
    assert study.user_attrs[storage.FINGERPRINT_ATTR] == before[storage.FINGERPRINT_ATTR]


def test_same_inputs_resume_and_reuse_every_trial(tuned):
    outcome, tracker = _tune(tuned)
    assert [r.number for r in tracker.info.resumed] == [0, 1]
    assert outcome.result.n_trials == 2 and len(tracker.records) == 0  # no new trial
    fp = storage.stored_fingerprint(_study(tuned))
    assert fp[fingerprint.WEIGHTS].startswith("38282 values in 8 tensors; sha256 ")
    assert fp[fingerprint.CALIB].startswith("32 samples in 2 batches, sampling_size 32; ")


def test_changed_weights_refuse_and_name_the_weights(tuned):
    before = _study(tuned).user_attrs
    model = _model()
    with torch.no_grad():
        model.fc2.bias += 0.01
    with pytest.raises(StudyError) as err:
        _tune(tuned, model=model)
    text = str(err.value)
    assert "fp32 weights changed (same size, other contents)" in text
    assert "calibration data" not in text and "eval data" not in text
    assert "its 2 trials and fp32 baseline do not apply" in text
    _unchanged(tuned, before)


def test_changed_eval_data_refuses_with_the_sizes(tuned):
    before = _study(tuned).user_attrs
    with pytest.raises(StudyError) as err:
        _tune(tuned, evald=_data(_model(), 32))
    text = str(err.value)
    assert "eval data changed (64 samples in 4 batches -> 32 samples in 2 batches)" in text
    assert "fp32 weights" not in text
    _unchanged(tuned, before)
    with pytest.raises(StudyError, match=r"eval data changed \(same size, other contents\)"):
        _tune(tuned, evald=_data(_model(), 64, seed=5))


def test_changed_calibration_data_refuses(tuned):
    before = _study(tuned).user_attrs
    with pytest.raises(StudyError, match="calibration data changed .same size, other contents"):
        _tune(tuned, calib=_data(_model(), 32, seed=3))
    _unchanged(tuned, before)


def test_the_message_tells_how_to_start_anew_and_that_works(tuned):
    with pytest.raises(StudyError) as err:
        _tune(tuned, calib=_data(_model(), 32, seed=3))
    text = str(err.value)
    db = str((tuned / "ws" / "optuna.db").resolve())
    assert f"set another `tuning.study_name` (e.g. '{NAME}-2')" in text
    assert f"another `tuning.workspace.path` (this study is in {db};" in text
    outcome, tracker = _tune(tuned, calib=_data(_model(), 32, seed=3), name=f"{NAME}-2")
    assert tracker.info.resumed == () and outcome.result.n_trials == 2


def test_a_study_from_before_fingerprints_is_refused(tmp_path):
    url = f"sqlite:///{(tmp_path / 'ws').resolve()}/optuna.db"
    (tmp_path / "ws").mkdir()
    old = optuna.create_study(study_name=NAME, storage=url)
    old.set_user_attr(storage.BASELINE_ATTR, {"accuracy": 0.9, "latency_ms": 1.0})
    with pytest.raises(StudyError, match="stored by an inc_flow without study fingerprints"):
        _tune(tmp_path)
    assert storage.FINGERPRINT_ATTR not in _study(tmp_path).user_attrs


def test_nan_calibration_data_is_named_before_calibration(tmp_path):
    calib = _data(_model(), 32, seed=2)
    calib[1][0][3, 0, 5, 5] = float("nan")
    with pytest.raises(DataError, match=r"calibration data: batch 1 has non-finite inputs: 1 NaN"):
        _tune(tmp_path, calib=calib)
    assert not (tmp_path / "ws" / "optuna.db").exists()  # before the study, the calibration


def test_sampling_size_beyond_the_data_records_what_was_used(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="inc_flow"):
        outcome, _ = _tune(tmp_path, sampling_size=1000)
    warned = [r for r in caplog.records if "sampling_size is 1000" in r.getMessage()]
    assert len(warned) == 1 and "has 32 samples" in warned[0].getMessage()
    assert outcome.q_model.calibration_size == 32
    fp = storage.stored_fingerprint(_study(tmp_path))
    assert fp[fingerprint.CALIB].startswith("32 samples in 2 batches, sampling_size 1000;")


def test_an_eval_func_is_known_by_its_name(tmp_path):
    def score(model):
        return 0.9

    def other(model):
        return 0.9

    conf = _conf(tmp_path)
    calib = _data(_model(), 32, seed=2)
    quantize(conf, model=_model(), calib_dataloader=calib, eval_func=score, tracker=ListTracker())
    with pytest.raises(StudyError, match=r"eval data changed \(eval_func .*score -> eval_func"):
        quantize(conf, model=_model(), calib_dataloader=calib, eval_func=other)


def test_a_baseline_is_tied_to_the_fingerprint():
    study = optuna.create_study()
    study.set_user_attr(storage.FINGERPRINT_ATTR, {"fp32 weights": "a"})
    storage.set_baseline(study, 0.9, 1.5)
    assert storage.stored_baseline(study) == (0.9, 1.5)
    study.set_user_attr(storage.FINGERPRINT_ATTR, {"fp32 weights": "b"})
    assert storage.stored_baseline(study) is None


def test_changes_show_the_readable_side_only():
    old = {"eval data": "10000 samples in 40 batches; sha256 aa", "torch": "2.1"}
    new = {"eval data": "2000 samples in 8 batches; sha256 bb", "torch": "2.1", "x": "1"}
    assert identity.changes(old, new) == [
        "eval data changed (10000 samples in 40 batches -> 2000 samples in 8 batches)",
        "x changed (absent -> 1)",
    ]
    assert identity.changes(new, new) == []


def test_with_a_storage_url_the_message_tells_how_to_delete_the_study():
    settings = TuneSettings(study_name="s", storage="postgresql://db/optuna")
    text = identity.refusal(settings, "postgresql://db/optuna", ["torch changed (2.1 -> 2.2)"], 3)
    assert "its 3 trials and fp32 baseline do not apply here: torch changed (2.1 -> 2.2)" in text
    assert "optuna delete-study --study-name s --storage postgresql://db/optuna" in text


def test_cli_refuses_a_study_whose_weights_file_changed(tmp_path, monkeypatch, capsys):
    """The issue's reproduction: tune from yaml, overwrite the weights file, tune again."""
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "fp32.pt"
    torch.save(SleepyNet().state_dict(), weights)
    dummy = {"batch_size": 8, "dataset": {"dummy": {"shape": [16, 1, 20, 20]}}}
    conf = {
        "model": {"name": "sleepy", "factory": "tests.toys:SleepyNet", "weights": str(weights)},
        "quantization": {"calibration": {"sampling_size": 8, "dataloader": dummy}},
        "evaluation": {
            "accuracy": {"metric": {"topk": 1}, "dataloader": dummy},
            "performance": {"warmup": 1, "iteration": 3},
        },
        "tuning": {
            "workspace": {"path": str(tmp_path / "ws")},
            "accuracy_criterion": {"absolute": 1.0},
            "exit_policy": {"max_trials": 1},
        },
        "tracking": {"enabled": False},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli_main(["tune", str(path), "-o", str(tmp_path / "out")]) == 0
    saved = (tmp_path / "out" / "best_configure.yaml").read_bytes()
    state = SleepyNet().state_dict()
    state["conv1.weight"] = torch.zeros_like(state["conv1.weight"])  # "an untrained model"
    torch.save(state, weights)
    capsys.readouterr()
    assert cli_main(["tune", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fp32 weights changed (same size, other contents)" in err
    assert "To start a new study, set another `tuning.study_name`" in err
    assert (tmp_path / "out" / "best_configure.yaml").read_bytes() == saved  # not replaced


def test_a_data_digest_is_per_sample_and_order_free():
    x, y = torch.randn(4, 3), torch.arange(4)
    plain = fingerprint.data_print([(x[:2], y[:2]), (x[2:], y[2:])])
    shuffled = fingerprint.data_print([(x[[3, 1]], y[[3, 1]]), (x[[0, 2]], y[[0, 2]])])
    assert plain == shuffled and plain.samples == 4 and plain.batches == 2
    relabelled = fingerprint.data_print([(x[:2], y[:2]), (x[2:], y[[3, 2]])])
    assert relabelled.digest != plain.digest
    assert fingerprint.data_print([(x[:2], y[:2])], limit_samples=1).samples == 2  # whole batch
