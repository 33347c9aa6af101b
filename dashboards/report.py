"""Study report and study comparison as single, self-contained HTML pages.

Rows come from :mod:`inc_flow.record.rows`; this module only lays them out
(:mod:`inc_flow.record.report` fetches the studies and writes the files). Styles are inline and
plots are inline SVG, so a file opens offline, from an e-mail or inside the MLflow UI's
artifact viewer: nothing is fetched at view time and there is no JavaScript.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

from inc_flow import palette
from inc_flow.record import rows as report
from inc_flow.record.rows import StudyRuns

from . import charts

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#212121;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#616161;font-size:13px;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;min-width:120px}
.card .k{font-size:11px;color:#757575;text-transform:uppercase}.card .v{font-size:17px}
table{border-collapse:collapse;background:#fff;font-size:12px;margin:6px 0}
th,td{border:1px solid #e0e0e0;padding:3px 7px;text-align:left;vertical-align:top;
white-space:nowrap}
td.wrap{white-space:normal;min-width:160px;max-width:380px;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}code{font-size:11px}
th{background:#eceff1}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:BEST_ROW;font-weight:600}
.state{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px}
.muted{color:#9e9e9e}.warn{color:FAILED;font-weight:600}
figure{margin:8px 0;background:#fff;border:1px solid #e0e0e0;padding:6px;display:inline-block;
max-width:100%}figure svg{max-width:100%;height:auto}
.note{font-size:12px;color:#616161;max-width:900px}
""".replace("BEST_ROW", palette.BEST_ROW).replace("FAILED", palette.STATE["failed"])


# --- formatting ---------------------------------------------------------------------------


def _num(spec: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, spec)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _kb(v: Any) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def _int(v: Any) -> str:
    return "-" if v is None else str(int(v))


def _text(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


def _state(v: Any) -> str:
    color = palette.state_color(v)
    return f'<span class="state" style="background:{color}">{html.escape(str(v))}</span>'


def _seconds(v: Any) -> str:
    return '<span class="muted">not recorded</span>' if v is None else f"{v:.2f}"


def _code(v: Any) -> str:
    return "-" if not v else f"<code>{html.escape(str(v))}</code>"


def _approach(v: Any) -> str:
    return report.SHORT_APPROACH.get(v, _text(v))


_RAW = {_state, _seconds, _code}  # formatters that return markup, not text
_WRAP = {"reason", "plan", "best_plan"}  # long free text wraps; everything else stays on one line


def _table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str, Callable[[Any], str]]],
    css_id: str,
    highlight: str | None = None,
) -> str:
    """An HTML table. ``columns``: (key, header, formatter); numbers are right-aligned."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            text = fmt(value) if fmt in _RAW else html.escape(fmt(value))
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            cls = "n" if numeric else "wrap" if key in _WRAP else ""
            cells.append(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>")
        cls = ' class="best"' if highlight and row.get(highlight) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table id="{css_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cards(items: Sequence[tuple[str, str]]) -> str:
    cards = "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div>'
        f'<div class="v">{html.escape(v)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{cards}</div>'


def _figure(svg: str | None, css_id: str, empty: str) -> str:
    if svg is None:
        return f'<p class="muted" id="{css_id}">{html.escape(empty)}</p>'
    return f'<figure id="{css_id}">{svg}</figure>'


def _page(title: str, subtitle: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><div class="sub">{html.escape(subtitle)} · '
        f"generated {html.escape(stamp)} by inc_flow</div>{body}</body></html>\n"
    )


# --- the study report ----------------------------------------------------------------------

_TRIAL_COLUMNS = (
    ("trial", "trial", _int),
    ("state", "state", _state),
    ("phase", "phase", _text),
    ("backend", "backend", _text),
    ("plan", "plan", _text),
    ("accuracy", "accuracy", _num(".4f")),
    ("relative_drop", "rel. drop", _pct),
    ("absolute_drop", "abs. drop", _num(".4f")),
    ("latency_ms", "latency (ms)", _num(".3f")),
    ("latency_ms_b1", "latency b1 (ms)", _num(".3f")),
    ("model_size_bytes", "size (KiB)", _kb),
    ("wall_time_s", "time (s)", _num(".2f")),
    ("reason", "note", _text),
)
_STATS_COLUMNS = (
    ("Op Type", "Op Type", _text),
    ("Total", "Total", _int),
    ("INT8", "INT8", _int),
    ("FP32", "FP32", _int),
)


_TIME_COLUMNS = (
    ("part", "part", _text),
    ("seconds", "seconds", _seconds),
    ("share", "share of wall time", _pct),
    ("metric", "parent-run metric", _text),
)


def study_html(study: StudyRuns) -> str:
    """The study report: headline, trial table, accuracy x latency, precision map, the best
    model's op statistics and where the time went."""
    s = report.study_summary(study)
    rows = report.study_rows(study)
    scatter = report.scatter_points(study)
    pmap = report.precision_map(study)
    stats = report.best_op_stats(study)
    times = report.time_breakdown(study)
    speedup = f"x{s['speedup']:.2f}" if s["speedup"] else "-"
    if s["speedup_min"] is not None and s["speedup_max"] is not None:  # the side-by-side round
        speedup += f" ({s['speedup_min']:.2f}-{s['speedup_max']:.2f}, b{s['round_batch']:.0f})"
    cards = [
        ("fp32 accuracy", _num(".4f")(s["fp32_accuracy"])),
        ("target", _num(".4f")(s["required_accuracy"])),
        ("best accuracy", _num(".4f")(s["best_accuracy"])),
        ("fp32 latency (ms)", _num(".3f")(s["fp32_latency_ms"])),
        ("best latency (ms)", _num(".3f")(s["best_latency_ms"])),
        ("speed-up", speedup),
        ("best trial", _text(s["best_trial"])),
        ("trials", _int(s["n_trials"])),
        (
            "pruned / errors / dup.",
            "/".join(_int(s[k]) for k in ("n_pruned", "n_errors", "n_duplicates")),
        ),  # fmt: skip
        ("calibration passes", _int(s["calibration_passes"])),
        ("wall time (s)", _num(".1f")(s["wall_time_s"])),
        ("stop reason", _text(s["stop_reason"])),
    ]
    notes = []
    if s["best_trial"] is None:
        notes.append('<p class="warn">No trial met the accuracy target.</p>')
    if not s["faster_than_fp32"] and s["speed_verdict"]:  # never made @champion
        notes.append(f'<p class="warn">Not champion: {html.escape(s["speed_verdict"])}</p>')
    elif s["slower_than_fp32"]:
        notes.append('<p class="warn">The best int8 model is slower than fp32.</p>')
    if s["status"] == "RUNNING":
        notes.append('<p class="warn">The study is still running: this is a snapshot.</p>')
    settings = (
        f"model {s['model']} · {s['approach']} · backend {s['backends']} · strategy "
        f"{s['strategy']} · objective {s['objective']} · criterion {s['criterion']} · "
        f"max_trials {s['max_trials']} · best plan {_text(s['best_plan'])} · "
        f"registered {_text(s['registered'])}"
    )
    states = {r["trial"]: r["state"] for r in rows}
    recorded = [r for r in times if r["recorded"]]
    missing = [r["metric"] for r in times if not r["recorded"] and r["metric"]]
    time_note = (
        f"Not recorded by this study: {', '.join(missing)}."
        if missing
        else "Every part is recorded; the rest is the search itself (sampling, bookkeeping)."
    )
    body = "".join(
        [
            _cards(cards),
            *notes,
            f'<p class="note">{html.escape(settings)}</p>',
            "<h2>Trials</h2>",
            _table(rows, _TRIAL_COLUMNS, "trials", highlight="best"),
            "<h2>Accuracy × latency</h2>",
            '<p class="note">Each trial at the latency objective\'s batch size, numbered, '
            "coloured by state; the star is fp32, the dashed line the target, the blue steps "
            "the Pareto front of fully evaluated trials, the gold ring the best trial. Trials "
            "stopped before timing (pruned) sit past the dotted line on the right, at the "
            "accuracy at which evaluation stopped.</p>",
            _figure(charts.scatter_chart(scatter), "scatter", "No trial has both scores."),
            "<h2>Per-op precision</h2>",
            _figure(
                charts.precision_chart(pmap, report.op_types(study), states, s["best_trial"]),
                "precision-map",
                "No trial recorded a plan.",
            ),
            "<h2>Best model: op-type statistics</h2>",
            _figure(charts.op_stats_chart(stats), "op-stats-chart", "No best model."),
            _table(stats, _STATS_COLUMNS, "op-stats") if stats else "",
            "<h2>Where the time went</h2>",
            _figure(charts.time_chart(times), "time-chart", "No part of the time recorded."),
            _table(times, _TIME_COLUMNS, "time"),
            f'<p class="note">{html.escape(time_note)} {len(recorded)} of {len(times)} rows '
            "have a value.</p>",
        ]
    )
    title = f"inc_flow study {s['study']}"
    return _page(title, f"experiment {s['experiment']} · parent run {s['run_id']}", body)


# --- the comparison -------------------------------------------------------------------------

_COMPARE_COLUMNS = (
    ("label", "study", _text),
    ("experiment", "experiment", _text),
    ("approach", "approach", _approach),
    ("backends", "backend", _text),
    ("strategy", "strategy", _text),
    ("n_trials", "trials", _int),
    ("fp32_accuracy", "fp32 acc.", _num(".4f")),
    ("best_accuracy", "best acc.", _num(".4f")),
    ("best_relative_drop", "rel. drop", _pct),
    ("fp32_latency_ms", "fp32 (ms)", _num(".3f")),
    ("best_latency_ms", "best (ms)", _num(".3f")),
    ("speedup", "speed-up", _num(".2f")),
    ("best_model_size_bytes", "size (KiB)", _kb),
    ("best_plan", "best plan", _text),
    ("stop_reason", "stop", _text),
    ("wall_time_s", "wall (s)", _num(".1f")),
    ("study", "study name", _text),
    ("run_id", "parent run", _code),
)


def comparison_html(studies: Sequence[StudyRuns]) -> str:
    """Studies side by side: a table, fp32 vs best latency, and every trial's speed-up x
    accuracy drop (axes comparable across models)."""
    rows = report.compare_rows(studies)
    points = report.compare_points(studies)
    fastest = max((r["speedup"] or 0.0 for r in rows), default=0.0)
    for r in rows:
        r["fastest"] = bool(r["speedup"]) and r["speedup"] == fastest
    body = "".join(
        [
            "<h2>Studies</h2>",
            _table(rows, _COMPARE_COLUMNS, "studies", highlight="fastest"),
            '<p class="note">Highlighted: the largest speed-up over its own fp32 model. '
            "Latency is measured at each study's performance batch size on this machine.</p>",
            "<h2>Latency: fp32 and best int8</h2>",
            _figure(charts.compare_latency_chart(rows), "latency-chart", "No latency."),
            "<h2>Speed-up × accuracy drop, every trial</h2>",
            _figure(charts.compare_scatter_chart(points), "compare-scatter", "No trial scored."),
        ]
    )
    experiments = sorted({r["experiment"] for r in rows})
    subtitle = f"{len(rows)} studies from experiments {', '.join(experiments)}"
    return _page("inc_flow study comparison", subtitle, body)
