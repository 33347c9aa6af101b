"""The calibration and eval data as MLflow datasets (the runs' Dataset column): a name, a
digest and a size, taken from the study fingerprint (``inc_flow.fingerprint``), which has
already hashed every sample, so no data is read again here.

A fingerprint part reads ``<n> samples in <m> batches ...; sha256 <hex>``; a part without a
digest (data not used, ``performance_only``, an ``eval_func`` alone) gives no dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from mlflow.entities import Dataset, DatasetInput, InputTag

from inc_flow.fingerprint import CALIB, EVAL
from inc_flow.record import keys as k

_PART = re.compile(r"(\d+) samples in (\d+) batches.*sha256 ([0-9a-f]{64})")
_CONTEXTS = ((CALIB, k.DATASET_CALIBRATION), (EVAL, k.DATASET_EVAL))


def study_datasets(model: str, fingerprint: Mapping[str, str]) -> list[DatasetInput]:
    """The study's datasets as MLflow inputs: ``<model>-calibration`` and ``<model>-eval``,
    each with the first :data:`~inc_flow.record.keys.DATASET_DIGEST_CHARS` hex digits of its
    sha256 as digest and its sample and batch counts as profile."""
    out = []
    for part, context in _CONTEXTS:
        found = _PART.search(fingerprint.get(part, ""))
        if found is None:
            continue
        samples, batches, sha = int(found[1]), int(found[2]), found[3]
        dataset = Dataset(
            name=f"{model}-{context}",
            digest=sha[: k.DATASET_DIGEST_CHARS],
            source_type="code",
            source=json.dumps({"tags": {"inc_flow.fingerprint": fingerprint[part]}}),
            profile=json.dumps({"num_rows": samples, "num_batches": batches, "sha256": sha}),
        )
        out.append(DatasetInput(dataset, [InputTag(k.DATASET_CONTEXT, context)]))
    return out


__all__ = ["study_datasets"]
