"""benchmarks/bench_runtimes.py's table building (pure; no timing: the benchmark is no test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_runtimes as br  # noqa: E402

pytestmark = pytest.mark.no_mlflow

FP32, RAW, PYFUNC = br.FP32_NAME, br.TUNED_NAME, "pyfunc"
# runtime -> batch -> ms per round (3 rounds); the pyfunc wraps RAW
SAMPLES = {
    FP32: {1: [10.0, 12.0, 9.0], 32: [100.0, 120.0, 90.0]},
    RAW: {1: [2.0, 3.0, 3.0], 32: [40.0, 40.0, 30.0]},
    PYFUNC: {1: [4.0, 3.0, 3.3], 32: [42.0, 48.0, 30.0]},
}
WRAPS = {FP32: None, RAW: None, PYFUNC: RAW}


def test_summarize_takes_ratios_per_round():
    fp32, raw, pyfunc = br.summarize("m", 2, 32, SAMPLES, WRAPS)
    assert [ln.runtime for ln in (fp32, raw, pyfunc)] == [FP32, RAW, PYFUNC]
    assert fp32.speedup[32] == br.Spread(1.0, 1.0, 1.0) and fp32.overhead == {}
    # per round: 100/40, 120/40, 90/30 -> 2.5, 3.0, 3.0 (the ratio of medians would be 2.75)
    assert raw.speedup[32] == br.Spread(3.0, 2.5, 3.0)
    assert raw.latency[1] == br.Spread(3.0, 2.0, 3.0) and raw.overhead == {}
    # pyfunc / raw - 1 per round: 42/40, 48/40, 30/30 -> +5 %, +20 %, 0 %
    over = pyfunc.overhead[32]
    assert over.median == pytest.approx(0.05) and over.low == pytest.approx(0.0)
    assert over.high == pytest.approx(0.2)
    assert pyfunc.overhead[1].median == pytest.approx(0.1)  # 4/2, 3/3, 3.3/3 -> +100, 0, +10 %


def test_table_has_one_row_per_runtime_and_marks_skipped_ones():
    lines = br.summarize("resnet18", 1, 32, SAMPLES, WRAPS)
    lines.append(br.Line("resnet18", 1, "OpenVINO int8", 32, skipped="no `openvino` installed"))
    head, rule, *rows = br.table(lines)
    assert head.count("|") == rule.count("|") == rows[0].count("|") == 10
    assert rows[1] == (
        f"| resnet18 | 1 | {RAW} | 3.000 (2.000-3.000) | 4.00x (3.00-5.00) "
        "| 40.0 (30.0-40.0) (b32) | 3.00x (2.50-3.00) | - | - |"
    )
    assert rows[2].endswith("| +10.0 % (+0.0 % to +100.0 %) | +5.0 % (+0.0 % to +20.0 %) |")
    assert rows[3] == (
        "| resnet18 | 1 | OpenVINO int8 | skipped: no `openvino` installed | - | - | - | - | - |"
    )


def test_goal_lines_name_each_pyfunc_and_the_verdict():
    lines = br.summarize("m", 2, 32, SAMPLES, WRAPS)
    (met,) = br.goal_lines(lines)
    assert met.startswith(f"- m, 2 thread(s), {PYFUNC}: overhead at b32 +5.0 %")
    assert met.endswith("goal < 10% met")
    slow = {**SAMPLES, PYFUNC: {1: [4.0] * 3, 32: [48.0, 48.0, 48.0]}}
    (missed,) = br.goal_lines(br.summarize("m", 2, 32, slow, WRAPS))
    assert missed.endswith("MISSED")
    assert br.goal_lines(lines, checked={RAW}) == []  # a comparison row is not checked
    assert [rt.goal for rt in br.RUNTIMES if rt.wraps] == [True, False]


def test_runtimes_are_an_extensible_list_with_fp32_first():
    names = [rt.name for rt in br.RUNTIMES]
    assert names[0] == FP32 and len(set(names)) == len(names)
    assert all(rt.wraps in (None, *names) for rt in br.RUNTIMES)
    assert [rt.wraps for rt in br.RUNTIMES if rt.wraps] == [RAW, RAW]  # the two pyfunc rows


def test_readme_splice(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{br.BEGIN}\nold\n{br.END}\nb\n")
    assert br.splice_readme(readme, "new")
    assert readme.read_text() == f"a\n{br.BEGIN}\nnew\n{br.END}\nb\n"
    readme.write_text("no markers\n")
    assert not br.splice_readme(readme, "new") and readme.read_text() == "no markers\n"
