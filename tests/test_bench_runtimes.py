"""benchmarks/bench_runtimes.py's table building (pure; no timing: the benchmark is no test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

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
    lines = br.summarize("resnet18", 1, 32, SAMPLES, WRAPS, top1={RAW: 0.8425})
    lines.append(br.Line("resnet18", 1, "OpenVINO int8", 32, skipped="no `openvino` installed"))
    head, rule, *rows = br.table(lines)
    assert head.count("|") == rule.count("|") == rows[0].count("|") == 11
    assert rows[0].startswith(f"| resnet18 | 1 | {FP32} | - | ")  # no accuracy given
    assert rows[1] == (
        f"| resnet18 | 1 | {RAW} | 84.25 % | 3.000 (2.000-3.000) | 4.00x (3.00-5.00) "
        "| 40.0 (30.0-40.0) (b32) | 3.00x (2.50-3.00) | - | - |"
    )
    assert rows[2].endswith("| +10.0 % (+0.0 % to +100.0 %) | +5.0 % (+0.0 % to +20.0 %) |")
    assert rows[3] == (
        "| resnet18 | 1 | OpenVINO int8 | - | skipped: no `openvino` installed "
        "| - | - | - | - | - |"
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
    assert [rt.goal for rt in br.RUNTIMES if rt.wraps] == [True, False, True, True]


def test_runtimes_are_an_extensible_list_with_fp32_first():
    names = [rt.name for rt in br.RUNTIMES]
    assert names[0] == FP32 and len(set(names)) == len(names)
    assert all(rt.wraps in (None, *names) for rt in br.RUNTIMES)
    # the pyfunc rows: FX tuned plan (default threads, 1 thread), OpenVINO tuned plan
    assert [rt.wraps for rt in br.RUNTIMES if rt.wraps] == [RAW, RAW, br.OV_TUNED, br.OV_ALL_INT8]
    assert set(br.SHIPPED) <= set(names) and br.ONE_SHOT in names


def test_top1_takes_argmax_of_tensors_quantized_tensors_and_numpy():
    x = torch.zeros(4, 1)
    y = torch.tensor([0, 1, 1, 0])
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [1.0, 0.0]])  # 3 of 4 right
    assert br.top1_of(lambda _: logits, [(x, y)]) == 0.75
    assert br.top1_of(lambda _: logits.numpy(), [(x, y), (x, y)]) == 0.75
    q = torch.quantize_per_tensor(logits, 0.1, 0, torch.quint8)
    assert br.top1_of(lambda _: q, [(x, y)]) == 0.75


def _timed(name, runtime, b1, bn, top1):
    return br.Line(
        name, 2, runtime, 32,
        latency={1: br.Spread(b1, b1, b1), 32: br.Spread(bn, bn, bn)}, top1=top1,
    )  # fmt: skip


def test_ship_lines_check_speed_up_over_one_shot_and_accuracy():
    lines = [
        _timed("r", br.ONE_SHOT, 2.0, 30.0, 0.80),
        _timed("r", br.OV_TUNED, 1.0, 28.0, 0.81),  # 2.00x, 1.07x, better: met
        _timed("r", br.TUNED_NAME, 3.0, 40.0, 0.82),  # slower: missed
        _timed("r", br.SHIPPED[3], 0.9, 27.0, 0.79),  # fast but less accurate: missed
        _timed("r", FP32, 9.0, 140.0, 0.81),  # not a shipped row
    ]
    met, slow, worse = br.ship_lines(lines)
    assert met.startswith(f"- r, 2 thread(s), {br.OV_TUNED} vs {br.ONE_SHOT}: b1 2.00x, b32 1.07x")
    assert met.endswith(" met") and "top-1 81.00 % vs 80.00 %" in met
    assert slow.endswith("MISSED") and worse.endswith("MISSED") and "b1 2.22x" in worse
    assert br.ship_lines(lines[1:]) == []  # no one-shot row: nothing to compare with


def test_fastest_lines_name_the_fastest_runtime_per_batch():
    lines = [
        _timed("lenet", FP32, 0.10, 2.0, 0.90),
        _timed("lenet", br.OV_TUNED, 0.05, 3.0, 0.89),
        br.Line("lenet", 2, "skipped one", 32, skipped="why"),
    ]
    b1, bn = br.fastest_lines(lines)
    assert b1 == f"- lenet, 2 thread(s), b1: fastest is {br.OV_TUNED} (0.050 ms, top-1 89.00 %)"
    assert bn.startswith(f"- lenet, 2 thread(s), b32: fastest is {FP32} (2.000 ms")


def test_readme_splice(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{br.BEGIN}\nold\n{br.END}\nb\n")
    assert br.splice_readme(readme, "new")
    assert readme.read_text() == f"a\n{br.BEGIN}\nnew\n{br.END}\nb\n"
    readme.write_text("no markers\n")
    assert not br.splice_readme(readme, "new") and readme.read_text() == "no markers\n"


def test_the_pyfunc_benchmark_names_a_missing_output_and_how_to_make_one(tmp_path, capsys):
    import bench_pyfunc_overhead

    with pytest.raises(SystemExit) as stop:
        bench_pyfunc_overhead.main(["--output", str(tmp_path), "--workdir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "bench_runtimes.py --models lenet" in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before any work
