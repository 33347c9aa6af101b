"""A small int8 TinyNet to save, in the tests and in child processes killed while saving.

``python -m tests.helpers.saving SHIFT STEP=OUT [STEP=OUT ...]`` builds the model once (seed
1, conv1's bias shifted by SHIFT), then
forks one process per pair that saves it to ``OUT`` with ``INC_FLOW_TEST_KILL_AT=STEP`` (``-``
for none), and prints ``STEP=<exit status>`` for each: a negative status is the signal that
ended it (``-9`` once the step was reached). Forking saves importing torch once per kill.
"""

from __future__ import annotations

import copy
import os
import sys

import torch

from inc_flow.model.faults import KILL_AT_ENV
from inc_flow.model.output import QuantizedModel
from inc_flow.quant.graph import calibrate, convert, list_ops, prepare
from inc_flow.search.plan import default_plan
from inc_flow.vocab import Approach
from tests.toys import SHAPE, TinyNet


def int8_tinynet(seed: int) -> QuantizedModel:
    """A static int8 TinyNet whose weights depend on ``seed``."""
    torch.manual_seed(seed)
    model = TinyNet().eval()
    x = torch.randn(4, *SHAPE)
    approach = Approach.STATIC.value
    plan = default_plan(list_ops(model, approach), approach=approach, backend="x86")
    prepared = prepare(model, plan.calibration_plan(), (x,))
    calibrate(prepared, [x], 4, lambda m, b: (m(b), b.shape[0])[1])
    return QuantizedModel(convert(prepared, plan), plan, (x,), calibration_size=4)


def shifted(q: QuantizedModel, by: float = 0.5) -> QuantizedModel:
    """A copy of ``q`` whose first conv's bias is shifted: other outputs, no rebuild."""
    model = copy.deepcopy(q.model)
    model.conv1.set_weight_bias(model.conv1.weight(), model.conv1.bias() + by)
    return QuantizedModel(model, q.plan, q.example_inputs, q.calibration_size)


def _save_in_child(q: QuantizedModel, step: str, out: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: save, killed at `step` by the hook
        try:
            if step != "-":
                os.environ[KILL_AT_ENV] = step
            q.save(out)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


if __name__ == "__main__":
    torch.set_num_threads(1)
    model = shifted(int8_tinynet(1), float(sys.argv[1]))
    for pair in sys.argv[2:]:
        step, _, out = pair.partition("=")
        print(f"{step}={_save_in_child(model, step, out)}", flush=True)
