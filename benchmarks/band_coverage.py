"""How often do the bands of a discovered law cover the held-out test points? (An honest table,
not a test.)

    python benchmarks/band_coverage.py [--datasets all] [--max-evals 300] [--resamples 100] [--level 0.9] [--json]

For each dataset (default: every bundled dataset whose data is here), one discovery (seed 0,
``--max-evals``), then ``lawforge predict``'s bands (:func:`lawforge.runs.predict.predict_run`)
at every test point, per group: the share of test points inside the parameter band (the chosen
law's bootstrap), inside the model range (the top laws' predictions), inside the combined
band (the top laws' bootstraps pooled), and inside the observed band (the combined draws plus
the train residuals' scatter: where a measurement may land). Test points carry their own noise, and a band is about
the law's mean, so a band can be honest and still miss noisy points; a wrong form misses them
whatever its band. Data: $LAWFORGE_DATA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd

from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset
from lawforge.runs.discover import discover
from lawforge.runs.predict import load_run_laws, predict_run
from lawforge.search.settings import SearchConfig


def coverage(name: str, max_evals: int, resamples: int, level: float) -> dict:
    ds = load_dataset(name)
    out = tempfile.mkdtemp(prefix="lawforge-cov-")
    t0 = time.perf_counter()
    s = discover(ds, SearchConfig.build(max_evals=max_evals, seed=0, workers=2), out, report=False)
    rl = load_run_laws(out)
    test = ds.test
    hits = {"parameter": [], "model": [], "combined": [], "observed": []}
    for g in test.group_names:
        rows = test.group_rows(g)
        frame = pd.DataFrame({c: v[rows] for c, v in test.X.items()})
        res = predict_run(rl, frame, g, level, resamples, seed=0)
        y = np.concatenate([test.y[rows, j] for j in range(test.y.shape[1])])
        for kind, (lo, hi) in {"parameter": ("low", "high"), "model": ("model_low", "model_high"),
                               "combined": ("combined_low", "combined_high"),
                               "observed": ("observed_low", "observed_high")}.items():
            hits[kind].append((res[lo].to_numpy() <= y) & (y <= res[hi].to_numpy()))
    row = {"dataset": name, "test_points": int(sum(len(h) for h in hits["parameter"])), "test_r2": s["test_r2"],
           "law": s["law"], "laws": len(rl.laws), "seconds": round(time.perf_counter() - t0, 1)}
    row.update({k: round(float(np.concatenate(v).mean()), 3) for k, v in hits.items()})
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="all")
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--resamples", type=int, default=100)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = ([n for n in bundled_card_paths() if data_available(get_card(n), None)] if a.datasets == "all"
             else a.datasets.split(","))
    rows = [coverage(n, a.max_evals, a.resamples, a.level) for n in names]
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{a.level:.0%} bands at the test points (one discovery per dataset, seed 0, --max-evals {a.max_evals}, "
          f"{a.resamples} bootstrap refits)")
    print(f"{'dataset':<30} {'points':>6} {'test R2':>8} {'parameter':>9} {'model':>6} {'combined':>8} {'observed':>8} "
          f"{'laws':>4}")
    for r in rows:
        print(f"{r['dataset']:<30} {r['test_points']:>6} {r['test_r2']:>8.4f} {r['parameter']:>9.3f} {r['model']:>6.3f} "
              f"{r['combined']:>8.3f} {r['observed']:>8.3f} {r['laws']:>4}")


if __name__ == "__main__":
    main()
