"""What a study holds, as one worker sees it: ``History``.

The records of finished trials (this worker's, an earlier run's or another worker's), the
plans already evaluated, and the plans of trials running or queued elsewhere, read back from
the Optuna study (``search.storage``) so that no plan is evaluated twice.
"""

from __future__ import annotations

import time
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from inc_flow.errors import PlanError
from inc_flow.search import storage as st
from inc_flow.search.plan import Plan
from inc_flow.search.records import TrialRecord
from inc_flow.search.space import SearchSpace
from inc_flow.vocab import TrialState


class History:
    """The records and pending plans of ``study`` over ``space``, kept by ``sync``."""

    def __init__(self, study: optuna.Study, space: SearchSpace) -> None:
        self.study, self.space = study, space
        self.records: dict[int, TrialRecord] = {}
        self.evaluated: dict[Plan, TrialRecord] = {}
        self.pending: set[Plan] = set()  # plans of trials running or queued (other workers)
        self.waiting = False  # a trial is queued

    def ordered(self) -> tuple[TrialRecord, ...]:
        """The records by trial number."""
        return tuple(self.records[n] for n in sorted(self.records))

    def add(self, record: TrialRecord) -> None:
        record = replace(record, plan=self.space.canonical(record.plan))
        self.records[record.number] = record
        if record.state != TrialState.DUPLICATE:
            self.evaluated.setdefault(record.plan, record)

    def sync(self) -> int:
        """Load records finished elsewhere (earlier runs, other workers); count finished trials."""
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.state in st.FINISHED and t.number not in self.records:
                record = st.record_of(t)
                if record is not None:
                    self.add(record)
        self.waiting = any(t.state == OptunaState.WAITING for t in trials)
        live = (OptunaState.RUNNING, OptunaState.WAITING)
        self.pending = {p for t in trials if t.state in live for p in [self.plan_of(t)] if p}
        return sum(t.state in st.FINISHED for t in trials)

    def dead(self) -> tuple[int, ...]:
        """Failed trials with no record: their worker died (their MLflow runs are orphans)."""
        failed = self.study.get_trials(deepcopy=False, states=(OptunaState.FAIL,))
        return tuple(t.number for t in failed if not st.has_record(t))

    def plan_of(self, trial: FrozenTrial) -> Plan | None:
        """The plan of a trial once all its params are known (enqueued ones: at once)."""
        params = st.params_of(trial)
        if set(params) != set(self.space.choices()):
            return None
        try:
            return self.space.plan_from_params(params)
        except PlanError:
            return None

    def wait_for_twin(self, plan: Plan, number: int) -> bool:
        """Wait while an earlier trial of ``plan`` runs in another live worker of this host
        (two workers can enqueue one seed at the same moment; other hosts' workers cannot be
        known alive, so they are not waited for); True if there was such a trial."""
        found = False
        while True:
            twins = [
                t
                for t in self.study.get_trials(deepcopy=False)
                if t.number < number and t.number not in self.records and self.plan_of(t) == plan
            ]
            found = found or bool(twins)
            running = [
                t for t in twins if t.state == OptunaState.RUNNING and st.runs_in_live_peer(t)
            ]
            if not running:
                return found
            time.sleep(0.2)
