"""INC's ``evaluation.accuracy.configs`` / ``evaluation.performance.configs``, in one process.

INC runs its benchmark as ``num_of_instance`` processes of ``cores_per_instance`` cores each.
inc_flow measures in its own process, so it takes what applies there: the intra-op thread
count (``intra_num_of_threads``, else ``cores_per_instance``) and a single instance. Keys it
cannot honour in a running process are rejected with the reason, never accepted and ignored.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from inc_flow.config.base import Section, checked
from inc_flow.config.checks import check_int
from inc_flow.config.problems import Problems

INTER_THREADS = (
    "is not supported: torch sets its inter-op thread pool once per process, before any work; "
    "inc_flow measures with intra-op threads (`intra_num_of_threads`)"
)
KMP_BLOCKTIME = (
    "is not supported: OpenMP reads KMP_BLOCKTIME once, when the process starts, so inc_flow "
    "cannot set it for its measurements; export KMP_BLOCKTIME before running inc_flow instead"
)


def _positive(p: Problems, key: str, value: Any) -> Any:
    return value if value is None else check_int(p, key, value, minimum=1)


def _instances(p: Problems, key: str, value: Any) -> Any:
    if value is None:
        return value
    before = len(p)
    check_int(p, key, value, minimum=1)
    if len(p) == before and value != 1:
        message = "must be 1: inc_flow measures in one process (no multi-instance runs)"
        p.add(key, f"{message}, got {value}")
    return value


def _rejected(p: Problems, key: str, value: Any, reason: str) -> Any:
    if value is not None:
        p.add(key, f"{reason}; got {value!r}")
    return value


@dataclass(frozen=True)
class InstanceConfig(Section):
    """INC ``configs`` of ``evaluation.accuracy`` or ``evaluation.performance``.

    Attributes:
        cores_per_instance: the threads to use, unless ``intra_num_of_threads`` is given.
        num_of_instance: 1 (one process), or absent.
        intra_num_of_threads: torch's intra-op threads while measuring.
        inter_num_of_threads, kmp_blocktime: rejected when set (see the messages).
    """

    cores_per_instance: int | None = checked(None, _positive)
    num_of_instance: int | None = checked(None, _instances)
    inter_num_of_threads: None = checked(None, _rejected, reason=INTER_THREADS)
    intra_num_of_threads: int | None = checked(None, _positive)
    kmp_blocktime: None = checked(None, _rejected, reason=KMP_BLOCKTIME)

    _SECTION: ClassVar[str] = "configs"

    @property
    def threads(self) -> int | None:
        """``intra_num_of_threads``, else ``cores_per_instance``, else None (not set)."""
        if self.intra_num_of_threads is not None:
            return self.intra_num_of_threads
        return self.cores_per_instance
