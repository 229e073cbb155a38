"""Candidate forms fitted and scored per minute by the search: one form per fit (the per-form
path) beside a batch of forms per fit (the batched path), side by side in one run, on the CPU.

    python benchmarks/search_throughput.py [--datasets moe_scaling_law,sft_scaling_law,lr_bsz_scaling_law]
                                           [--seconds 30] [--workers 2] [--batch 16] [--json]

Each (dataset, path) pair runs the native search for ``--seconds`` of wall time with the same
seed and settings except ``fitting.batch`` (1 for the per-form path); the final choice and the
outputs are skipped (``selection.rule=score``, ``top_k=0``, no report) so the figure is the
search's own rate: evaluations / search seconds. Data: $LAWFORGE_DATA (SLDBench tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from lawforge.datasets import load_dataset
from lawforge.runs.discover import discover
from lawforge.search.settings import SearchConfig

DEFAULT = "moe_scaling_law,sft_scaling_law,lr_bsz_scaling_law"


def rate(ds, seconds: float, workers: int, batch: int) -> dict:
    cfg = SearchConfig.build(max_evals=None, budget_s=seconds, seed=0, workers=workers, top_k=0,
                             **{"fitting.batch": batch, "selection.rule": "score"})
    s = discover(ds, cfg, tempfile.mkdtemp(prefix="lawforge-tp-"), report=False)
    return {"dataset": ds.name, "rows": ds.train.n, "batch": batch, "workers": workers,
            "evaluations": s["evaluations"], "seconds": s["seconds"],
            "per_minute": round(60 * s["evaluations"] / s["seconds"], 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=DEFAULT)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="forms per batched fit (the batched path)")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name in args.datasets.split(","):
        ds = load_dataset(name, args.data_dir)
        per_form = rate(ds, args.seconds, args.workers, 1)
        batched = rate(ds, args.seconds, args.workers, args.batch)
        batched["ratio_vs_per_form"] = round(batched["per_minute"] / per_form["per_minute"], 2)
        rows += [per_form, batched]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'dataset':24s} {'rows':>5s} {'batch':>5s} {'workers':>7s} {'evals':>6s} {'sec':>6s} "
          f"{'cand/min':>9s} {'ratio':>6s}")
    for r in rows:
        ratio = r.get("ratio_vs_per_form")
        print(f"{r['dataset']:24s} {r['rows']:5d} {r['batch']:5d} {r['workers']:7d} {r['evaluations']:6d} "
              f"{r['seconds']:6.1f} {r['per_minute']:9.0f} {'' if ratio is None else f'{ratio:6.2f}':>6s}")


if __name__ == "__main__":
    main()
