"""The engine of a search over runtimes: torch plans built by :class:`FxEngine`, OpenVINO
plans by :class:`~inc_flow.quant.openvino.OpenVinoEngine` (created on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from inc_flow.errors import ConfigError, IncFlowError
from inc_flow.quant import stats
from inc_flow.quant.engine import FxEngine
from inc_flow.quant.openvino import OpenVinoEngine, OpenVinoModel, modules, plan_statistics
from inc_flow.search.plan import Plan
from inc_flow.vocab import Approach, Runtime

if TYPE_CHECKING:
    import pandas as pd


class RuntimeEngine(FxEngine):
    """:class:`FxEngine` that also builds ``openvino`` plans (same model, calibration data
    and sampling size); sensitivity is torch's."""

    _openvino: OpenVinoEngine | None = None

    @property
    def openvino(self) -> OpenVinoEngine:
        if self._openvino is None:
            self._openvino = OpenVinoEngine(
                self.fp32_model, self.example_inputs, self.calib_loader, self.sampling_size
            )
        return self._openvino

    def build(self, plan: Plan) -> nn.Module:
        if plan.runtime != Runtime.OPENVINO:
            return super().build(plan)
        ov = self.openvino
        passes, seconds = ov.calibration_passes, ov.calibration_seconds
        model = ov.build(plan)
        self.calibration_passes += ov.calibration_passes - passes
        self.calibration_seconds += ov.calibration_seconds - seconds
        return model

    def statistics(self, model: nn.Module) -> pd.DataFrame:
        if isinstance(model, OpenVinoModel) and model.plan is not None:
            return stats.statistics_frame(plan_statistics(model.plan))
        return super().statistics(model)

    @staticmethod
    def model_size(model: Any) -> int:
        if isinstance(model, OpenVinoModel):
            return model.size()
        return FxEngine.model_size(model)


def check_runtimes(runtimes: tuple[str, ...], approach: str) -> None:
    """``quantization.runtime`` usable for ``approach``: OpenVINO plans are static
    post-training plans, and need the ``[openvino]`` extra installed."""
    if Runtime.OPENVINO not in runtimes:
        return
    if approach != Approach.STATIC:
        raise ConfigError(
            "quantization.runtime",
            f"'openvino' builds static post-training plans only (NNCF), got approach "
            f"{approach!r} with runtime={list(runtimes)}",
        )
    try:
        modules()
    except IncFlowError as e:
        raise ConfigError("quantization.runtime", f"has 'openvino': {e}") from e
