"""Does the default strategy's ranking score predict the full evaluation? (MobileNetV2 check)

For a static config, builds all-int8 and, one at a time, the ``kl`` observer and every
single-op fp32 fallback, runs each over the config's eval set (its ``iteration`` batches),
and compares per candidate:

- ``agree``: the change in samples agreeing with fp32 (argmax equal, no tie at int8's top) on
  the ranking set, i.e. what ``search.probe`` scores (the samples where all-int8 disagrees
  with fp32 or ties, plus fp32's 64 closest calls, as ``search.probe.select`` picks them);
- ``label``: the change in samples whose argmax equals the label, on the same ranking set;
- ``full``: the change in samples whose argmax equals the label, on the whole eval set (what
  the full evaluation decides with top-1).

Prints one row per candidate and Spearman's rank correlation of ``agree`` and of ``label``
with ``full``. Heavy: one build and one eval pass per tunable op (about 3 min for the 53 ops
of MobileNetV2 on 1 thread). Run from the repository root::

    python benchmarks/rank_vs_eval.py conf/mobilenetv2_static.yaml
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inc_flow.assemble import assemble, stage  # noqa: E402
from inc_flow.config.sections import Config  # noqa: E402
from inc_flow.data import build_dataloader, split_batch  # noqa: E402
from inc_flow.search.probe import MARGIN_SAMPLES  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = Config.from_yaml(args.config)
    parts = assemble(cfg)
    step = stage(cfg, parts, cfg.quantization.approach)
    engine, space = step.engine, step.space
    batches = cfg.evaluation.accuracy.iteration
    xs, ys = [], []
    for i, batch in enumerate(build_dataloader(cfg.evaluation.accuracy.dataloader)):
        if i == batches:
            break
        x, y = split_batch(batch)
        xs.append(x)
        ys.append(y)
    inputs, labels = torch.cat(xs), torch.cat(ys)

    def outputs(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            outs = [model(inputs[i : i + 256]) for i in range(0, len(inputs), 256)]
        return torch.cat([o.dequantize() if o.is_quantized else o for o in outs]).float()

    def tied(out: torch.Tensor) -> torch.Tensor:
        return (out == out.max(1, keepdim=True).values).sum(1) > 1

    ref = outputs(parts.model)
    ref_pred = ref.argmax(1)
    top2 = torch.topk(ref, 2, 1).values
    margin = top2[:, 0] - top2[:, 1]
    default = space.default_plan()
    out = outputs(engine.build(default))
    agree = (out.argmax(1) == ref_pred) & ~tied(out)
    wrong = [i for i in range(len(inputs)) if not agree[i]]
    close = sorted((i for i in range(len(inputs)) if agree[i]), key=lambda i: float(margin[i]))
    chosen = torch.tensor(sorted(set(wrong) | set(close[:MARGIN_SAMPLES])))
    right = out.argmax(1) == labels
    base = (int(agree[chosen].sum()), int(right[chosen].sum()), int(right.sum()))
    fp32_top1, int8_top1 = float((ref_pred == labels).float().mean()), float(right.float().mean())
    print(
        f"{args.config}: {len(inputs)} eval samples, fp32 top-1 {fp32_top1:.4f}, all-int8 "
        f"{int8_top1:.4f}; ranking set {len(chosen)} ({len(wrong)} disagreements or ties)"
    )
    kl = tuple(replace(op, act_algorithm="kl") for op in default.ops)
    candidates = [("act=kl", space.canonical(replace(default, ops=kl)))]
    tunable = [n for n in space.tunable_ops() if "fp32" in space.allowed_dtypes[n]]
    candidates += [(f"{n} fp32", space.canonical(default.with_fallback({n}))) for n in tunable]
    rows = []
    print("| candidate | agree (set) | label (set) | label (eval set) |\n|---|---|---|---|")
    for name, plan in candidates:
        o = outputs(engine.build(plan))
        ok = (o.argmax(1) == ref_pred) & ~tied(o)
        hit = o.argmax(1) == labels
        row = (
            int(ok[chosen].sum()) - base[0],
            int(hit[chosen].sum()) - base[1],
            int(hit.sum()) - base[2],
        )
        rows.append(row)
        print(f"| {name} | {row[0]:+d} | {row[1]:+d} | {row[2]:+d} |", flush=True)
    full = [r[2] for r in rows]
    print(
        f"\nSpearman with the eval-set change, over {len(rows)} candidates: agreement on the "
        f"set {spearman([r[0] for r in rows], full):.2f}, labels on the set "
        f"{spearman([r[1] for r in rows], full):.2f}; candidates that gain agreement on the "
        f"set {sum(r[0] > 0 for r in rows)}, that gain on the eval set {sum(f > 0 for f in full)}"
    )


if __name__ == "__main__":
    main()
