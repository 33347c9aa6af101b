"""benchmarks/bench_models.py's plumbing (no timing: the benchmark itself is not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_models  # noqa: E402
from bench_tuning import Row  # noqa: E402

from inc_flow.search.speed import Spread  # noqa: E402


def test_every_subject_has_a_config_that_parses():
    from inc_flow.config.sections import Config

    for subject in bench_models.SUBJECTS.values():
        cfg = Config.from_yaml(ROOT / subject.conf)
        assert cfg.model.factory and cfg.evaluation.performance.dataloader.batch_size > 0


def test_table_rows_and_skipped_models():
    ok = bench_models.Result(
        bench_models.SUBJECTS["lstm"],
        approach="dynamic",
        metric="top-1",
        eval_n=2000,
        fp32=0.9,
        all_int8="0.8900",
        int8=0.891,
        fallbacks="`lstm`",
        n_ops=2,
        trials=3,
        wall_s=2.5,
        batch=64,
        rows=(
            Row("lstm", "fp32", 0.9, latency_b1=0.4, latency_bn=8.0),
            Row(
                "lstm",
                "int8",
                0.891,
                latency_b1=0.5,
                latency_bn=4.0,
                speedup_b1=Spread(0.8, 0.7, 0.9),
                speedup_bn=Spread(2.0, 1.9, 2.1),
            ),
        ),
        tuner="1.90x at b64",
    )
    skipped = bench_models.Result(bench_models.SUBJECTS["minilm"], skipped="skipped: no extra")
    header, rule, row, skip = bench_models.table([ok, skipped])
    assert header.count("|") == rule.count("|") == row.count("|") == skip.count("|") == 16
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == "top-1 (2000)" and cells[6] == "1.00 %" and cells[7] == "`lstm` (of 2)"
    # per-round speed-ups (median, min-max), then the tuner's own round
    assert cells[-3:] == ["0.80x (0.70-0.90)", "2.00x (1.90-2.10)", "1.90x at b64"]
    assert "skipped: no extra" in skip


def test_readme_splice_replaces_only_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench_models.BEGIN}\nold\n{bench_models.END}\noutro\n")
    assert bench_models.splice_readme(readme, "| new |")
    assert (
        readme.read_text() == f"intro\n{bench_models.BEGIN}\n| new |\n{bench_models.END}\noutro\n"
    )
    other = tmp_path / "other.md"
    other.write_text("no markers")
    assert not bench_models.splice_readme(other, "x") and other.read_text() == "no markers"
    assert bench_models.BEGIN in (ROOT / "README.md").read_text()


def test_unknown_models_are_refused():
    with pytest.raises(SystemExit):
        bench_models.parse_args(["--models", "lenet,vgg"])


def test_bench_tuning_table_shows_the_side_by_side_round(monkeypatch):
    import argparse

    import bench_tuning

    calls = []

    def fake_round(candidates, inputs, call, rounds, warmup, iterations, threads):
        calls.append(([(c.name, c.kind, c.backend) for c in candidates], sorted(inputs), rounds))
        ms = {"0": [4.0, 4.2, 3.8], "1": [2.0, 2.0, 2.0]}  # fp32, then int8
        return {c.name: {1: ms[c.name], 8: ms[c.name]} for c in candidates}

    monkeypatch.setattr(bench_tuning, "time_side_by_side", fake_round)
    rows = [
        Row("toy", "fp32", 0.9, module=object()),
        Row("toy", "inc_flow", 0.9, module=object(), backend="x86", tuner="1.90x at b8"),
        Row("toy", "-", None, note="skipped"),
    ]
    args = argparse.Namespace(repeats=3, warmup=1, iterations=5, threads=1)
    bench_tuning.measure_rows(rows, torch.zeros(2, 3), 8, args)
    assert calls == [([("0", "fp32", None), ("1", "trial", "x86")], [1, 8], 3)]
    assert rows[1].latency_bn == 2.0 and rows[1].speedup == 2.0
    _, _, fp32, int8, _ = bench_tuning.table(rows)
    cells = [c.strip() for c in int8.split("|")[1:-1]]
    assert cells[8:13] == [
        "2.000 (2.000-2.000)", "2.000 (2.000-2.000)", "2.00x (1.90-2.10)",
        "2.00x (1.90-2.10)", "1.90x at b8",
    ]  # fmt: skip
    assert fp32.split("|")[11].strip() == "1.00x (1.00-1.00)"
