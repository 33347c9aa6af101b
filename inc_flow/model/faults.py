"""Test hook: ``INC_FLOW_TEST_KILL_AT=<step>`` SIGKILLs the process at a named step.

The steps are where a real kill (``kill -9``, a lost machine) would leave the most behind:
between the two writes of :meth:`inc_flow.model.output.QuantizedModel.save`, between its two
renames, and between the publishing steps of :mod:`inc_flow.model.registry`. Tests start a
real subprocess with the variable set and check what the next run finds.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "INC_FLOW_TEST_KILL_AT"
# save: the weights are in the temporary directory, the configure file is not
AFTER_WEIGHTS_WRITTEN = "after_weights_written"
# save: both files are in the temporary directory, nothing is in place yet
AFTER_CONFIGURE_WRITTEN = "after_configure_written"
# save: the previous output is moved aside (or, in place, its configure file removed) and the
# new one is not in place yet
AFTER_OLD_MOVED = "after_old_moved"
# publishing (inc_flow.model.registry)
AFTER_LOG_MODEL, AFTER_REGISTER, AFTER_ALIAS = "after_log_model", "after_register", "after_alias"


def fault_point(step: str) -> None:
    """SIGKILL this process when ``INC_FLOW_TEST_KILL_AT`` names ``step``."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
