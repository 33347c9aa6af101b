"""What ``tune`` needs from the config: ``TuneSettings``, with its sampler and directions.

Built by the caller from the config; validated on construction (``StudyError``).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from inc_flow.errors import StudyError
from inc_flow.search.accuracy import required_value
from inc_flow.search.plan import APPROACHES, BACKENDS
from inc_flow.vocab import Approach, Backend, Objective, Strategy, names

STRATEGIES = names(Strategy)
# INC's ``footprint`` is scored as model size: the caller passes it as ``modelsize``.
OBJECTIVES = tuple(o for o in names(Objective) if o != Objective.FOOTPRINT)
MEMORY_STORAGE = ":memory:"  # settings.storage value for an in-memory study (tests, dry runs)


ACCURACY_NAME, LATENCY_NAME, SIZE_NAME = "accuracy", "latency (ms)", "model size (bytes)"


def name_metrics(study: optuna.Study, settings: TuneSettings) -> None:
    """Set the study's metric names (Optuna's plots and ``trials_dataframe`` use them)."""
    names = settings.metric_names()
    if study.metric_names != names:
        with warnings.catch_warnings():  # "experimental" since 3.2; we pin optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


@dataclass(frozen=True)
class TuneSettings:
    """What ``tune`` needs from the config. ``relative`` and ``absolute`` both None means
    INC's default, 1% relative. ``storage`` None: ``sqlite:///<workspace>/optuna.db``."""

    study_name: str = "inc_flow"
    strategy: str = Strategy.BASIC.value
    relative: float | None = None
    absolute: float | None = None
    higher_is_better: bool = True
    objective: str = Objective.PERFORMANCE.value
    timeout: float = 0.0
    max_trials: int = 100
    performance_only: bool = False
    random_seed: int = 1978
    storage: str | None = None
    workspace: str = "./nc_workspace"
    approach: str = Approach.STATIC.value
    backends: tuple[str, ...] = (Backend.X86.value,)
    new_trials: bool = True  # False: read the study, run no trial (``inc-flow finalize``)
    finalists: int = 3  # passing plans re-timed beside fp32 after the search (``search.speed``)
    final_round: bool = True  # False: no side-by-side round (a worker: it publishes nothing)
    # what determines the answer (name -> text; ``inc_flow.fingerprint``), stored with the
    # study: a study stored with another one is refused. Empty: not checked.
    fingerprint: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("strategy", self.strategy, STRATEGIES),
            ("objective", self.objective, OBJECTIVES),
            ("approach", self.approach, APPROACHES),
        ):
            if value not in allowed:
                raise StudyError(f"`{name}` must be one of {list(allowed)}, got {name}={value!r}")
        if not self.backends or any(b not in BACKENDS for b in self.backends):
            raise StudyError(f"`backends` must be a non-empty subset of {list(BACKENDS)}")
        finalists = self.finalists
        if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
            raise StudyError(f"`finalists` must be an int >= 1, got finalists={finalists!r}")
        if self.timeout < 0 or self.max_trials < 1 or not self.study_name:
            raise StudyError(
                "`timeout` must be >= 0, `max_trials` >= 1 and `study_name` non-empty, got "
                f"timeout={self.timeout!r}, max_trials={self.max_trials!r}, "
                f"study_name={self.study_name!r}"
            )
        self.required(1.0)  # validates relative/absolute

    def required(self, baseline: float) -> float:
        """The accuracy a trial must reach against ``baseline`` (the accuracy rule)."""
        rel = 0.01 if self.relative is None and self.absolute is None else self.relative
        return required_value(
            baseline, relative=rel, absolute=self.absolute, higher_is_better=self.higher_is_better
        )

    def storage_url(self) -> str:
        """The Optuna storage URL: ``storage``, else the workspace's SQLite file."""
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.workspace).resolve() / 'optuna.db'}"

    @property
    def checked(self) -> bool:
        """Whether trials are evaluated for accuracy (not ``performance_only``)."""
        return not self.performance_only

    @property
    def multi_objective(self) -> bool:
        """Accuracy x latency (needs accuracy, so not with ``performance_only``)."""
        return self.strategy == Strategy.MULTI_OBJECTIVE and not self.performance_only

    @property
    def scored_objective(self) -> str:
        """What the study optimizes: ``multi_objective``, or the objective."""
        return Strategy.MULTI_OBJECTIVE.value if self.multi_objective else self.objective

    def directions(self) -> list[str]:
        """Optuna study directions: accuracy and latency, the accuracy, or latency/size."""
        acc = "maximize" if self.higher_is_better else "minimize"
        if self.multi_objective:
            return [acc, "minimize"]
        if self.objective == Objective.ACCURACY and not self.performance_only:
            return [acc]
        return ["minimize"]

    def metric_names(self) -> list[str]:
        """The study's metric names, one per direction (axes and tables read them)."""
        if self.multi_objective:
            return [ACCURACY_NAME, LATENCY_NAME]
        if self.objective == Objective.ACCURACY and not self.performance_only:
            return [ACCURACY_NAME]
        return [SIZE_NAME if self.objective == Objective.MODELSIZE else LATENCY_NAME]

    def sampler(self) -> tuple[optuna.samplers.BaseSampler, str | None]:
        """The seeded sampler of the strategy, and a warning when it had to be replaced."""
        seed, name = self.random_seed, self.strategy
        if name == Strategy.RANDOM:
            return optuna.samplers.RandomSampler(seed=seed), None
        if name == Strategy.EXHAUSTIVE:
            with warnings.catch_warnings():  # "experimental" since 3.1; we pin optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.BruteForceSampler(seed=seed), None
        if name == Strategy.BAYESIAN:
            missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
            if not missing:
                return optuna.samplers.GPSampler(seed=seed), None
            note = f"strategy 'bayesian' needs {missing} for GPSampler; using TPE instead"
            return optuna.samplers.TPESampler(seed=seed), note
        return optuna.samplers.TPESampler(seed=seed), None
