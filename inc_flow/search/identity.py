"""Comparing study fingerprints (plain dicts of strings; built by ``inc_flow.fingerprint``)
and the messages of a refused resume. No optuna, no torch: ``search.storage`` stores them.

A part's text reads ``<what people read>; sha256 <hex>``; a change shows the readable side
(``eval data changed (10000 samples in 40 batches -> 2000 samples in 8 batches)``), or says
the contents differ when only the digest does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from inc_flow.search.settings import TuneSettings

DIGEST_SEP = "; sha256 "


def digest(fingerprint: Mapping[str, str] | None) -> str:
    """A short digest of a whole fingerprint ('' for none): what a stored baseline is tied to."""
    if not fingerprint:
        return ""
    text = json.dumps(dict(fingerprint), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shown(value: str | None) -> str:
    return "absent" if value is None else value.split(DIGEST_SEP)[0]


def changes(stored: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """What differs, one phrase per part, in ``current``'s order (then parts only stored)."""
    out = []
    for key in [*current, *(k for k in stored if k not in current)]:
        old, new = stored.get(key), current.get(key)
        if old == new:
            continue
        a, b = _shown(old), _shown(new)
        detail = f"{a} -> {b}" if a != b else "same size, other contents"
        out.append(f"{key} changed ({detail})")
    return out


def start_anew(settings: TuneSettings) -> str:
    """How to start a new study instead of resuming this one."""
    s = settings
    name = f"`tuning.study_name` (e.g. {s.study_name + '-2'!r})"
    if s.storage:
        return (
            f"To start a new study, set another {name}, or delete this one: `optuna "
            f"delete-study --study-name {s.study_name} --storage {s.storage}`"
        )
    db = s.storage_url().removeprefix("sqlite:///")
    return (
        f"To start a new study, set another {name} or another `tuning.workspace.path` "
        f"(this study is in {db}; deleting that file deletes every study in it)"
    )


def refusal(settings: TuneSettings, where: str, changed: list[str], n_trials: int) -> str:
    """The message of a resume refused because the fingerprint changed."""
    return (
        f"study {settings.study_name!r} in {where} was made with other inputs, so its "
        f"{n_trials} trials and fp32 baseline do not apply here: {'; '.join(changed)}. "
        + start_anew(settings)
    )


def legacy(settings: TuneSettings, where: str, n_trials: int) -> str:
    """The message of a resume refused because the study predates fingerprints."""
    return (
        f"study {settings.study_name!r} in {where} was stored by an inc_flow without study "
        f"fingerprints: whether its {n_trials} trials and fp32 baseline came from the "
        "current fp32 weights and data cannot be checked, so it is not resumed. "
        + start_anew(settings)
    )
