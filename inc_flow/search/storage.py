"""The Optuna side of a study: its storage, the heartbeat and stale trials, and every
attribute inc_flow keeps on Optuna studies and trials, behind typed getters and setters.

The attribute keys and environment variables are defined here only. Study user attrs: the
fp32 baseline (tied to the fingerprint), the sensitivity scores, the identity of the search
and the fingerprint of its inputs (``open_study`` refuses a study made for another one) and
the MLflow parent run shared by workers. Trial user attrs:
the ``TrialRecord``, the seed phase and the worker (``host:pid``) running it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from inc_flow.errors import ConfigError, StudyError
from inc_flow.locks import sqlite_lock
from inc_flow.search import identity as ident
from inc_flow.search.records import TrialRecord, why
from inc_flow.search.settings import MEMORY_STORAGE, TuneSettings

logger = logging.getLogger("inc_flow")

# Trial user attrs.
RECORD_ATTR, PHASE_ATTR, WORKER_ATTR = "inc_flow.record", "inc_flow.phase", "inc_flow.worker"
RANK_ATTR = "inc_flow.rank_samples"  # samples the ranking ran to propose the trial
# Study user attrs.
BASELINE_ATTR, SENSITIVITY_ATTR = "inc_flow.baseline", "inc_flow.sensitivity"
SPACE_ATTR = "inc_flow.space"
PARENT_ATTR = "inc_flow.parent_run"  # the MLflow parent run of the study
CHOICE_ATTR = "inc_flow.final_choice"  # the side-by-side round's pick and its candidates
FINGERPRINT_ATTR = "inc_flow.fingerprint"  # what determines the answer (inc_flow.fingerprint)
# RDB heartbeat (server databases: PostgreSQL, MySQL): seconds between beats of a running
# trial, and seconds without a beat after which another worker fails and retries it.
HEARTBEAT_ENV, GRACE_ENV = "INC_FLOW_HEARTBEAT_S", "INC_FLOW_GRACE_S"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
DEFAULT_PHASE = "sampler"  # a trial the sampler proposed (not an enqueued seed)

Storage = str | optuna.storages.BaseStorage  # what ``optuna.create_study`` takes


# --- storage and study ---------------------------------------------------------------------
def heartbeat_enabled(url: str) -> bool:
    """Heartbeats for server databases; SQLite files (one machine) keep the host:pid check."""
    return url != MEMORY_STORAGE and not url.startswith("sqlite")


def open_storage(url: str) -> Storage:
    """The Optuna storage for ``url``: for a server database an ``RDBStorage`` with a heartbeat
    and ``RetryHeartbeatStaleTrialCallback(max_retry=1)``, so that a trial of a dead worker is
    failed and enqueued again (same params) for another worker; else the URL itself."""
    if not heartbeat_enabled(url):
        return url
    interval = int(os.environ.get(HEARTBEAT_ENV, "10"))
    grace = int(os.environ.get(GRACE_ENV, str(3 * interval)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=retry,
                )
            except Exception as e:  # noqa: BLE001 -- see below
                # workers starting together on an empty database race to create Optuna's
                # tables: the loser's CREATE fails; the tables exist a moment later
                if attempt == 2 or "already exists" not in str(e):
                    raise
                logger.debug("Optuna tables created concurrently, retrying: %s", why(e))
                time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def open_study(
    settings: TuneSettings, sampler: optuna.samplers.BaseSampler, identity: Mapping[str, Any]
) -> tuple[optuna.Study, Storage]:
    """Create or load the study of ``settings``, and the storage opened for it.

    ``identity`` is what makes stored values, constraints and states comparable with new ones
    (ops, approach, objective, criterion); a study stored with another one is refused.

    Raises:
        ConfigError: the storage cannot be opened (driver missing, server down, bad file).
        StudyError: the study was created for other directions or another ``identity``.
    """
    s = settings
    name = s.storage if s.storage == MEMORY_STORAGE else s.storage_url()
    storage: Storage = s.storage_url()
    if s.storage == MEMORY_STORAGE:
        storage = optuna.storages.InMemoryStorage()
    elif s.storage is None:
        Path(s.workspace).mkdir(parents=True, exist_ok=True)
    try:
        if s.storage != MEMORY_STORAGE:
            storage = open_storage(storage)
        with sqlite_lock(name):  # processes started together create the tables once
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                study_name=s.study_name,
                directions=s.directions(),
                load_if_exists=True,
            )
    except Exception as e:  # noqa: BLE001 -- driver missing, server down, bad file
        key = "tuning.storage" if s.storage else "tuning.workspace.path"
        raise ConfigError(key, f"cannot open the Optuna storage {name!r}: {why(e)}") from e
    if s.fingerprint:
        check_fingerprint(study, s, name)
    wanted = [optuna.study.StudyDirection[d.upper()] for d in s.directions()]
    stored = study.user_attrs.get(SPACE_ATTR)
    if study.directions != wanted or stored not in (None, dict(identity)):
        raise StudyError(
            f"study {s.study_name!r} in {name} was created for other ops, "
            "approach, objective or accuracy criterion; set another `study_name`"
        )
    if stored is None:
        study.set_user_attr(SPACE_ATTR, dict(identity))
    return study, storage


def check_fingerprint(study: optuna.Study, settings: TuneSettings, where: str) -> None:
    """Store ``settings.fingerprint`` on a study that has none and nothing to reuse yet;
    refuse a study stored with another one, or with trials or a baseline but none (made
    before fingerprints existed).

    Raises:
        StudyError: naming what changed, and how to start a new study.
    """
    current = dict(settings.fingerprint)
    stored = stored_fingerprint(study)
    n_trials = len(study.get_trials(deepcopy=False))
    if stored is None:
        if n_trials or BASELINE_ATTR in study.user_attrs:
            raise StudyError(ident.legacy(settings, where, n_trials))
        study.set_user_attr(FINGERPRINT_ATTR, current)
        stored = stored_fingerprint(study) or {}  # a worker starting with us may have won
    changed = ident.changes(stored, current)
    if changed:
        raise StudyError(ident.refusal(settings, where, changed, n_trials))


# --- heartbeat and stale trials ------------------------------------------------------------
@contextmanager
def heartbeat(storage: Storage, study: optuna.Study, number: int) -> Iterator[None]:
    """Record the heartbeat of trial ``number`` every interval while the block runs (what
    ``Study.optimize`` does; inc_flow asks and tells itself). Only for a storage with one."""
    rdb = storage if isinstance(storage, optuna.storages.RDBStorage) else None
    interval = rdb.get_heartbeat_interval() if rdb is not None else None
    if rdb is None or not interval:
        yield
        return
    study_id = rdb.get_study_id_from_name(study.study_name)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                rdb.record_heartbeat(trial_id)
            except Exception as e:  # noqa: BLE001 -- a lost beat: the next one may pass
                logger.debug("heartbeat of trial id %s failed: %s", trial_id, e)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"inc_flow-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_heartbeat_stale(study: optuna.Study) -> None:
    """Fail trials whose worker stopped beating; the storage's callback retries them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_stale(
    study: optuna.Study,
    storage: Storage,
    heartbeat: bool,
    retry: bool,
    tell: Callable[[int, None, TrialState], None],
) -> tuple[int, ...]:
    """Fail the RUNNING trials whose worker is gone (``is_stale``) with ``tell(number, None,
    FAIL)``; return their numbers. With ``heartbeat`` (a server database), only trials a
    worker has marked are judged, and with ``retry`` too each failed one gets the retry a
    heartbeat-stale trial gets (the storage's callback: the same params enqueued again)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if heartbeat:
        # another worker's trial not yet named is its heartbeat's business, not ours
        running = [t for t in running if has_worker(t)]
    failed = []
    for number in (t.number for t in running if is_stale(t)):
        try:
            tell(number, None, TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # failed elsewhere
            continue
        failed.append(number)
    rdb = storage if isinstance(storage, optuna.storages.RDBStorage) else None
    callback = rdb.get_heartbeat_stale_trial_callback() if rdb and heartbeat and retry else None
    if callback is not None and failed:
        trials = study.get_trials(deepcopy=True)
        for number in failed:
            callback(study, trials[number])
    return tuple(failed)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker(trial: FrozenTrial) -> tuple[str, int | None]:
    """(host, pid) of the worker that runs ``trial``; pid None when unknown."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def set_worker(trial: optuna.Trial) -> None:
    """Mark ``trial`` as run by this process (``host:pid``)."""
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


def has_worker(trial: FrozenTrial) -> bool:
    """Whether a worker has marked ``trial`` as its own."""
    return WORKER_ATTR in trial.user_attrs


def is_stale(trial: FrozenTrial) -> bool:
    """A RUNNING trial is stale when its worker is gone. Without heartbeats this can only be
    known for workers of this host; trials of other hosts are left alone."""
    host, pid = _worker(trial)
    if pid is None:
        return True
    return host == socket.gethostname() and (pid == os.getpid() or not _pid_alive(pid))


def runs_in_live_peer(trial: FrozenTrial) -> bool:
    """True when another live process of this host runs ``trial``."""
    host, pid = _worker(trial)
    if host != socket.gethostname() or pid is None:
        return False
    return pid != os.getpid() and _pid_alive(pid)


# --- trial attrs ---------------------------------------------------------------------------
def record_of(trial: FrozenTrial) -> TrialRecord | None:
    """The record stored on a finished trial; None for a trial that ended without one."""
    data = trial.user_attrs.get(RECORD_ATTR)
    return None if data is None else TrialRecord.from_dict(data)


def has_record(trial: FrozenTrial) -> bool:
    """Whether ``trial`` has a stored record (cheaper than ``record_of``)."""
    return RECORD_ATTR in trial.user_attrs


def set_record(trial: optuna.Trial, record: TrialRecord) -> None:
    """Store ``record`` on its trial, before telling Optuna the outcome."""
    trial.set_user_attr(RECORD_ATTR, record.to_dict())


def phase_of(trial: optuna.Trial | FrozenTrial) -> str:
    """The seed phase of an enqueued trial, else ``sampler``."""
    return str(trial.user_attrs.get(PHASE_ATTR, DEFAULT_PHASE))


def enqueue(
    study: optuna.Study, params: Mapping[str, Any], phase: str, rank_samples: int = 0
) -> None:
    """Enqueue a seed plan's params, with its phase and the samples its ranking cost."""
    attrs: dict[str, Any] = {PHASE_ATTR: phase}
    if rank_samples:
        attrs[RANK_ATTR] = int(rank_samples)
    study.enqueue_trial(dict(params), user_attrs=attrs)


def rank_samples_of(trial: optuna.Trial | FrozenTrial) -> int:
    """Samples the ranking ran to propose ``trial`` (0: not proposed by a ranking)."""
    return int(trial.user_attrs.get(RANK_ATTR, 0))


def params_of(trial: FrozenTrial) -> Mapping[str, Any]:
    """The params of ``trial``, also while it waits or runs after ``enqueue_trial``.

    Optuna keeps the params given to ``enqueue_trial`` in the trial's system attr
    ``fixed_params`` until they are suggested; no public API reads them, and a trial
    enqueued by another worker (or by Optuna's retry of a stale trial) has them nowhere else.
    This is the one reader of that Optuna-internal key."""
    return trial.system_attrs.get("fixed_params") or trial.params


# --- study attrs ---------------------------------------------------------------------------
def stored_fingerprint(study: optuna.Study) -> dict[str, str] | None:
    """The study's fingerprint (part name -> text), None for a study stored without one."""
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    return None if stored is None else {str(k): str(v) for k, v in stored.items()}


def stored_baseline(study: optuna.Study) -> tuple[float | None, float] | None:
    """(fp32 accuracy, fp32 latency in ms) stored by an earlier run under the study's
    current fingerprint, if any (a baseline of other inputs is never reused)."""
    attrs = study.user_attrs
    stored = attrs.get(BASELINE_ATTR)
    if not stored or stored.get("fingerprint", "") != ident.digest(attrs.get(FINGERPRINT_ATTR)):
        return None
    return stored["accuracy"], stored["latency_ms"]


def set_baseline(study: optuna.Study, accuracy: float | None, latency_ms: float) -> None:
    """Store the baseline, tied to the study's fingerprint."""
    tie = ident.digest(study.user_attrs.get(FINGERPRINT_ATTR))
    value = {"accuracy": accuracy, "latency_ms": latency_ms, "fingerprint": tie}
    study.set_user_attr(BASELINE_ATTR, value)


def stored_sensitivity(study: optuna.Study) -> dict[str, float] | None:
    """Sensitivity scores (op name -> score) stored by an earlier run, if any."""
    return study.user_attrs.get(SENSITIVITY_ATTR)


def set_sensitivity(study: optuna.Study, scores: Mapping[str, float]) -> None:
    study.set_user_attr(SENSITIVITY_ATTR, dict(scores))


def final_choice(study: optuna.Study) -> tuple[int, frozenset[int]] | None:
    """The plan the last side-by-side round chose, and the passing trials it chose among."""
    value = study.user_attrs.get(CHOICE_ATTR)
    return None if not value else (int(value["chosen"]), frozenset(value["passed"]))


def set_final_choice(study: optuna.Study, chosen: int, passed: Sequence[int]) -> None:
    study.set_user_attr(CHOICE_ATTR, {"chosen": int(chosen), "passed": sorted(passed)})


def claim_parent_run(
    url: str, study_name: str, directions: list[str], create_run: Callable[[str], str]
) -> str | None:
    """Create the study; if this call made it (the database's unique study name decides:
    exactly one worker does), create its parent run with ``create_run(study_name)``, store
    and return the run id. None when the study existed already."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    run_id = create_run(study_name)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def parent_run(url: str, study_name: str, wait_s: float = 0.0) -> str | None:
    """The id of the study's MLflow parent run, waiting up to ``wait_s`` seconds for the
    worker that created the study to store it; None if it has none by then.

    Raises:
        KeyError: there is no such study (``optuna.load_study``).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    deadline = time.monotonic() + wait_s
    while True:
        study = optuna.load_study(study_name=study_name, storage=storage)
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id or time.monotonic() >= deadline:
            return str(run_id) if run_id else None
        time.sleep(0.5)


def set_parent_run(url: str, study_name: str, run_id: str) -> None:
    """Store ``run_id`` as the MLflow parent run of an existing study."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    study.set_user_attr(PARENT_ATTR, run_id)
