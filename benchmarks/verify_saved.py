"""Check a tuned model against what the tuner reported, independently of the tuner.

Loads the fp32 model from the config's factory and the int8 model from the output directory
with ``inc_flow.load``, scores both with a plain ``argmax`` over the config's eval set (its
``iteration`` batches; no inc_flow metric code), and times them side by side in this one
process: 1 thread, interleaved, the order reversed every round, at batch 1 and at the
performance batch size.
Prints the tuner's numbers (``best_configure.yaml``'s ``info``) beside the independent ones.

    python benchmarks/verify_saved.py conf/lenet_static.yaml outputs/lenet
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import inc_flow  # noqa: E402
from inc_flow.config import Config  # noqa: E402
from inc_flow.data import build_dataloader, split_batch  # noqa: E402
from inc_flow.model.factory import build_model  # noqa: E402


def argmax_top1(model: torch.nn.Module, loader, batches: int = -1) -> tuple[float, int]:
    """Top-1 as a deployed model scores it: ``argmax`` (first maximal index) == label, over
    the first ``batches`` batches (INC's ``evaluation.accuracy.iteration``; -1: all)."""
    right = total = 0
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            x, y = split_batch(batch)
            logits = model(x)
            right += int((logits.argmax(dim=1) == y).sum())
            total += int(y.shape[0])
    return right / total, total


def first_inputs(loader, n: int) -> torch.Tensor:
    """``n`` eval inputs, repeating the eval set's first batch if it is shorter."""
    x, _ = split_batch(next(iter(loader)))
    reps = -(-n // x.shape[0])
    return torch.cat([x] * reps)[:n]


def time_side_by_side(models: dict, x: torch.Tensor, rounds: int, iters: int) -> dict:
    """Per model: median, min and max over rounds of the median ms of ``iters`` calls."""
    torch.set_num_threads(1)
    names = list(models)
    per: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            for _ in range(5):
                models[n](x)
        for r in range(rounds):
            for n in names if r % 2 == 0 else reversed(names):
                samples = []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    models[n](x)
                    samples.append((time.perf_counter() - t0) * 1e3)
                per[n].append(statistics.median(samples))
    return {n: (statistics.median(v), min(v), max(v)) for n, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("output")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args(argv)

    cfg = Config.from_yaml(args.config)
    fp32 = build_model(cfg.model.factory, cfg.model.weights).eval()
    int8 = inc_flow.load(args.output, copy.deepcopy(fp32)).eval()
    loader = build_dataloader(cfg.evaluation.accuracy.dataloader)
    batches = cfg.evaluation.accuracy.iteration
    acc32, n = argmax_top1(fp32, loader, batches)
    acc8, _ = argmax_top1(int8, loader, batches)
    info = yaml.safe_load((Path(args.output) / "best_configure.yaml").read_text()).get("info", {})

    print(f"{args.config} -> {args.output}: {n} eval samples")
    print("| | tuner reported | independent (argmax, same eval set) |")
    print("|---|---|---|")
    print(f"| fp32 top-1 | {info.get('baseline_accuracy')} | {acc32:.4f} |")
    print(f"| int8 top-1 | {info.get('accuracy')} | {acc8:.4f} |")
    print(f"| relative drop | {info.get('relative_drop')} | {(acc32 - acc8) / acc32:.4%} |")
    perf_batch = cfg.evaluation.performance.dataloader.batch_size
    print(f"| speed-up (objective batch) | {info.get('speedup')} | see below |")
    print()
    print("| batch | fp32 ms (min-max) | int8 ms (min-max) | speed-up |")
    print("|---|---|---|---|")
    for b in sorted({1, perf_batch}):
        x = first_inputs(loader, b)
        t = time_side_by_side({"fp32": fp32, "int8": int8}, x, args.rounds, args.iters)
        (f, f0, f1), (q, q0, q1) = t["fp32"], t["int8"]
        print(
            f"| {b} | {f:.3f} ({f0:.3f}-{f1:.3f}) | {q:.3f} ({q0:.3f}-{q1:.3f}) | {f / q:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
