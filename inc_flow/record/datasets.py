"""The calibration and eval data as MLflow datasets (the runs' Dataset column): a name, a
digest and a size, taken from the study fingerprint (``inc_flow.fingerprint``), which has
already hashed every sample, so no data is read again here.

A fingerprint part reads ``<n> samples in <m> batches ...; sha256 <hex>``; a part without a
digest (data not used, ``performance_only``, an ``eval_func`` alone) gives no dataset.

Workers of one study log the same datasets at the same moment; a store that inserts datasets
without an upsert (``mlflow server`` on PostgreSQL) refuses the second insert with a unique
violation. :func:`log_datasets` then logs again: the dataset exists by then and is reused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException

from inc_flow.fingerprint import CALIB, EVAL
from inc_flow.record import keys as k

_PART = re.compile(r"(\d+) samples in (\d+) batches.*sha256 ([0-9a-f]{64})")
_CONTEXTS = ((CALIB, k.DATASET_CALIBRATION), (EVAL, k.DATASET_EVAL))
_RACE = ("unique constraint", "duplicate key", "unique violation", "integrityerror")
logger = logging.getLogger("inc_flow")


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


def log_datasets(client: MlflowClient, run_id: str, datasets: Sequence[DatasetInput]) -> None:
    """Log ``datasets`` as inputs of ``run_id``; when another process inserted the same
    dataset at the same moment (the store reports a unique-key violation), log once more.
    Any other error, or the same error twice, is raised."""
    if not datasets:
        return
    try:
        client.log_inputs(run_id, datasets=list(datasets))
    except MlflowException as exc:
        if not any(word in str(exc).lower() for word in _RACE):
            raise
        logger.debug("datasets of run %s: another process inserted them first; again", run_id)
        client.log_inputs(run_id, datasets=list(datasets))


__all__ = ["log_datasets", "study_datasets"]
