"""benchmarks/bench_inc.py's plumbing (no timing, no INC: the benchmark itself is not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_inc  # noqa: E402


def test_without_neural_compressor_it_skips_with_the_reason_and_writes_nothing(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, "neural_compressor", None)  # import raises ImportError
    out = tmp_path / "inc.md"
    assert bench_inc.main(["--cases", "lenet-rel", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("skipped: neural_compressor is not importable")
    assert "neural-compressor==2.6" in printed
    assert not out.exists()


def test_inc_plan_names_the_fp32_ops_and_the_observers():
    act8 = {"dtype": "uint8", "algorithm": "kl"}
    q_config = {
        "op": {
            ("conv1", "Conv2d"): {"activation": act8, "weight": {"granularity": "per_channel"}},
            ("fc", "Linear"): {"activation": {"dtype": "fp32"}, "weight": {"dtype": "fp32"}},
            ("layer1.0.conv1", "Conv2d"): {
                "activation": {"dtype": "fp32"},
                "weight": {"dtype": "fp32"},
            },
        }
    }
    assert bench_inc.inc_plan(q_config) == (
        "int8 1/3 fp32=[fc,layer1.0.conv1] act=kl w=per_channel"
    )


def _row(case: str, tuner: str, round_: int, wall: float) -> bench_inc.Row:
    return bench_inc.Row(case, tuner, round_, 1, 2, "1", wall, 1.0, "int8 4/4", 0.79, 0.8, 1)


def test_wall_time_ratio_is_over_inc_of_the_same_case_and_round():
    rows = [
        _row("lenet", "inc_flow basic", 1, 30.0),
        _row("lenet", "INC 2.x basic", 1, 10.0),
        _row("lenet", "INC 2.x basic", 2, 60.0),
        _row("lenet", "inc_flow basic", 2, 30.0),
        _row("resnet18", "inc_flow inc", 1, 99.0),  # no INC row for it: no ratio
    ]
    bench_inc.set_ratios(rows)
    assert [r.ratio for r in rows] == ["3.00", "-", "-", "0.50", "-"]
    lines = bench_inc.table(rows)
    assert len(lines) == 2 + len(rows) and "| 3.00 |" in lines[2]


def test_counted_counts_calls_even_when_the_eval_func_raises():
    calls = []

    def func(model):
        calls.append(model)
        if model == "bad":
            raise ValueError(model)
        return 0.5

    counted = bench_inc.Counted(func)
    assert counted("a") == 0.5
    try:
        counted("bad")
    except ValueError:
        pass
    assert counted.calls == 2 and calls == ["a", "bad"]
