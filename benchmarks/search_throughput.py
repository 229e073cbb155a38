"""Candidate forms fitted and scored per minute by the native search, on the CPU.

    python benchmarks/search_throughput.py [--dataset parallel_scaling_law] [--seconds 30] [--json]

Runs the search for a fixed wall time with 1 and 2 validation folds and 1 and 2 worker
processes, side by side in one run, and prints evaluations per minute and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from lawforge.datasets import load_dataset
from lawforge.runs.discover import discover
from lawforge.search.settings import SearchConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="parallel_scaling_law")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ds = load_dataset(args.dataset, args.data_dir)
    rows = []
    for folds in (1, 2):
        for workers in (1, 2):
            out = tempfile.mkdtemp(prefix="lawforge-tp-")
            s = discover(ds, SearchConfig.build(max_evals=None, budget_s=args.seconds, seed=0, workers=workers,
                                                val_folds=folds, top_k=0), out, report=False)
            rows.append({"dataset": args.dataset, "val_folds": folds, "workers": workers,
                         "evaluations": s["evaluations"], "seconds": s["seconds"],
                         "per_minute": 60 * s["evaluations"] / s["seconds"]})
    base = rows[0]["per_minute"]
    for r in rows:
        r["ratio_vs_1fold_1worker"] = r["per_minute"] / base
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'dataset':24s} {'folds':>5s} {'workers':>7s} {'evals':>6s} {'sec':>6s} {'cand/min':>9s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['dataset']:24s} {r['val_folds']:5d} {r['workers']:7d} {r['evaluations']:6d} {r['seconds']:6.1f} "
              f"{r['per_minute']:9.0f} {r['ratio_vs_1fold_1worker']:6.2f}")


if __name__ == "__main__":
    main()
