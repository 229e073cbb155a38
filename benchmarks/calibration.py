"""Are lawforge's bootstrap bands honest? Coverage on ground truth.

    python benchmarks/calibration.py [--datasets 100] [--resamples 200] [--noise 0.02] [--level 0.9] [--json]

A known Chinchilla law, L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28 (Hoffmann et al. 2022), on a 5 x 6
grid (N from 7e7 to 2e9, D from 1e9 to 1e11), with multiplicative Gaussian noise (2%). For each of
``--datasets`` simulated datasets, the Chinchilla form is fitted (``fit_law``) and its
``--level`` bootstrap band (``FittedLaw.predict(..., interval=)``) is computed at 2x, 10x and
100x beyond the largest N (D at its largest train value), and along the compute diagonal (N
and D both scaled). Printed: how often the band covers the true (noiseless) value, and the
band's median relative width. A calibrated 90% band covers about 90% of the time.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from lawforge import fit_law

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
N_GRID = np.geomspace(7e7, 2e9, 5)
D_GRID = np.geomspace(1e9, 1e11, 6)
FACTORS = (2, 10, 100)
#: The fit's starts and bounds: every constant positive, starts far from the truth.
PARAMS = {"E": {"init": 1.0, "lower": 0.0}, "A": {"init": 100.0, "lower": 0.0}, "B": {"init": 100.0, "lower": 0.0},
          "alpha": {"init": 0.3, "lower": 0.0}, "beta": {"init": 0.3, "lower": 0.0}}


def truth(N, D):
    return E + A / N ** ALPHA + B / D ** BETA


def simulate(rng, noise: float) -> pd.DataFrame:
    N, D = np.meshgrid(N_GRID, D_GRID, indexing="ij")
    N, D = N.ravel(), D.ravel()
    return pd.DataFrame({"N": N, "D": D, "loss": truth(N, D) * (1 + noise * rng.standard_normal(N.size))})


def points() -> pd.DataFrame:
    rows = []
    for k in FACTORS:
        rows.append({"where": f"N x{k}", "N": N_GRID[-1] * k, "D": D_GRID[-1]})
        rows.append({"where": f"N, D x{k}", "N": N_GRID[-1] * k, "D": D_GRID[-1] * k})
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    pts = points()
    true = truth(pts["N"].to_numpy(), pts["D"].to_numpy())
    covered = np.zeros((a.datasets, len(pts)), dtype=bool)
    width = np.zeros((a.datasets, len(pts)))
    t0 = time.perf_counter()
    for i in range(a.datasets):
        rng = np.random.default_rng([a.seed, i])
        fitted = fit_law("E + A/N**alpha + B/D**beta", simulate(rng, a.noise), target="loss",
                         params=PARAMS)
        band = fitted.predict(pts[["N", "D"]], interval=a.level, resamples=a.resamples, seed=i)
        covered[i] = (band["low"].to_numpy() <= true) & (true <= band["high"].to_numpy())
        width[i] = (band["high"] - band["low"]).to_numpy() / true
    secs = time.perf_counter() - t0
    table = [{"where": w, "coverage": round(float(covered[:, j].mean()), 3),
              "median_rel_width": round(float(np.median(width[:, j])), 4)} for j, w in enumerate(pts["where"])]
    out = {"datasets": a.datasets, "resamples": a.resamples, "noise": a.noise, "level": a.level,
           "seconds": round(secs, 1), "table": table}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{a.datasets} simulated Chinchilla datasets (5x6 grid, {a.noise:.0%} noise), {a.resamples} resamples, "
          f"{a.level:.0%} bands, {secs:.0f} s")
    print(f"{'where':<12} {'coverage':>9} {'median width':>13}")
    for r in table:
        print(f"{r['where']:<12} {r['coverage']:>9.3f} {r['median_rel_width']:>13.2%}")


if __name__ == "__main__":
    main()
