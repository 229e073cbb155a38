"""Fitting throughput: lawforge's batched LM fitter against sequential scipy multi-start.

Both methods solve the same problems from the same starting points: each (law, dataset) problem
is fitted per group from R starts (the law's init plus seeded random draws, in the same
bound-transformed coordinates). scipy runs ``least_squares(method="lm")`` once per (group,
start) with the same analytic Jacobian, the usual practice. Printed per problem: fits, wall
time, fits/s and the summed best loss over groups for each method, and the ratio.

    python benchmarks/fit_throughput.py [--device cpu|cuda] [--json] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset
from lawforge.evaluators.expr import numpy_backend
from lawforge.evaluators.fit import _ID, _LO, _HI, fit_law, start_points


def _scipy_fit(law, split, U, pr, max_nfev):
    from scipy.optimize import least_squares

    program, pairs = law.jacobian_program
    be = numpy_backend()
    kind = pr.kind.cpu().numpy()
    lo = pr.lo.cpu().numpy()
    hi = pr.hi.cpu().numpy()
    d = len(law.target_names)
    tcols = [split.target_columns.index(t) for t in law.target_names]

    def theta_of(u):
        u = np.clip(u, -300, 300)
        e = np.exp(np.minimum(u, 700))
        s = 1 / (1 + np.exp(-u))
        th = np.where(kind == _ID, u, np.where(kind == _LO, lo + e, np.where(kind == _HI, hi - e, lo + (hi - lo) * s)))
        dth = np.where(kind == _ID, 1.0, np.where(kind == _LO, e, np.where(kind == _HI, -e, (hi - lo) * s * (1 - s))))
        return th, dth

    best_total, fits, failures = 0.0, 0, 0
    for b, (groups) in enumerate(pr.names):
        g = groups[0]
        idx = split.group_rows(g)
        X = {sym: split.X[col][idx] for sym, col in law.variables.items()}
        y = split.y[idx][:, tcols]
        n = len(idx)

        def run(u):
            th, dth = theta_of(u)
            env = dict(X)
            env.update({nm: th[k] for k, nm in enumerate(law.param_names)})
            with np.errstate(all="ignore"):
                outs = program.run(be, env)
            return outs, dth

        def fun(u):
            outs, _ = run(u)
            f = np.stack([np.broadcast_to(o, (n,)) for o in outs[:d]], axis=1)
            r = (f - y).T.ravel()
            return np.where(np.isfinite(r), r, 1e10)

        def jac(u):
            outs, dth = run(u)
            J = np.zeros((d, n, len(u)))
            for (t, k), o in zip(pairs, outs[d:]):
                J[t, :, k] = np.broadcast_to(o, (n,)) * dth[k]
            J = J.reshape(d * n, len(u))
            return np.where(np.isfinite(J), J, 0.0)

        best = np.inf
        for r in range(U.shape[1]):
            fits += 1
            try:
                res = least_squares(fun, U[b, r], jac=jac, method="lm", xtol=1e-10, ftol=1e-10,
                                    max_nfev=max_nfev)
                loss = float(np.sum(fun(res.x) ** 2))
                if np.isfinite(loss) and loss < best:
                    best = loss
            except Exception:
                failures += 1
        best_total += best
    return best_total, fits, failures


def problems(data_dir, fits_per_problem: int = 1024):
    """(label, dataset, restarts per group) problems.

    Each human law is fitted with about ``fits_per_problem`` fits (restarts = that / groups, at
    least 32; sft's 42 groups x 256 restarts = 10,752 fits is the >= 10,000-fit problem), plus
    two small-batch rows (32 restarts) that show where batching stops paying.
    """
    out = []
    sld = [n for n in bundled_card_paths() if not n.startswith("synthetic")]
    have = [n for n in sld if data_available(get_card(n), data_dir)]
    if len(have) < len(sld):
        print(f"note: SLDBench data not found for {sorted(set(sld) - set(have))}; using what is here",
              file=sys.stderr)
    for n in have:
        groups = len(load_dataset(n, data_dir).train.group_names)
        R = 256 if n == "sft_scaling_law" else max(32, -(-fits_per_problem // groups))
        out.append((f"{n} (human law)", n, R))
    if "sft_scaling_law" not in have:  # a synthetic problem of the same size class
        out.append(("synthetic_multigroup (10,240 fits)", "synthetic_multigroup", 2560))
    for n in ("synthetic_chinchilla", "synthetic_multigroup"):
        out.append((f"{n} (true form)", n, max(32, fits_per_problem // len(load_dataset(n).train.group_names))))
    out.append(("parallel_scaling_law (small batch)" if "parallel_scaling_law" in have else
                "synthetic_multigroup (small batch)",
                "parallel_scaling_law" if "parallel_scaling_law" in have else "synthetic_multigroup", 32))
    out.append(("synthetic_chinchilla (small batch)", "synthetic_chinchilla", 32))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--only", help="comma-separated substrings of problem labels to run")
    ap.add_argument("--fits-per-problem", type=int, default=1024)
    args = ap.parse_args(argv)

    rows = []
    warm = load_dataset("synthetic_chinchilla")
    fit_law(warm.card.human_law()[0], warm.train, restarts=4, device=args.device)  # warm-up
    for label, name, R in problems(args.data_dir, args.fits_per_problem):
        if args.only and not any(s in label for s in args.only.split(",")):
            continue
        ds = load_dataset(name, args.data_dir)
        law, _ = ds.card.human_law()
        U, pr = start_points(law, ds.train, R, seed=0)
        t0 = time.perf_counter()
        res = fit_law(law, ds.train, restarts=R, seed=0, device=args.device, max_iter=args.max_iter)
        if args.device == "cuda":
            import torch

            torch.cuda.synchronize()
        t_torch = time.perf_counter() - t0
        t0 = time.perf_counter()
        sp_best, sp_fits, sp_fail = _scipy_fit(law, ds.train, U.cpu().numpy(), pr, max_nfev=args.max_iter)
        t_scipy = time.perf_counter() - t0
        lf_best = res.total_loss
        row = {"problem": label, "dataset": name, "law": law.name, "groups": len(ds.train.group_names),
               "restarts": R, "fits": res.n_fits,
               "lawforge_seconds": t_torch, "lawforge_fits_per_s": res.n_fits / t_torch, "lawforge_best_loss": lf_best,
               "scipy_seconds": t_scipy, "scipy_fits_per_s": sp_fits / t_scipy, "scipy_best_loss": sp_best,
               "scipy_failures": sp_fail}
        row["speedup"] = row["lawforge_fits_per_s"] / row["scipy_fits_per_s"]
        row["loss_ratio"] = lf_best / sp_best if sp_best > 0 else float("nan")
        row["equal_or_better"] = bool(lf_best <= sp_best * (1 + 1e-6) + 1e-12)
        rows.append(row)
        if not args.json:
            print(f"{label:48s} fits={row['fits']:6d}  lawforge {row['lawforge_fits_per_s']:9.0f} fits/s "
                  f"{t_torch:7.2f}s loss={lf_best:.6g} | scipy {row['scipy_fits_per_s']:7.0f} fits/s "
                  f"{t_scipy:7.2f}s loss={sp_best:.6g} | x{row['speedup']:.1f} "
                  f"{'ok' if row['equal_or_better'] else 'WORSE'}", flush=True)
    tot_fits = sum(r["fits"] for r in rows)
    lf_t = sum(r["lawforge_seconds"] for r in rows)
    sp_t = sum(r["scipy_seconds"] for r in rows)
    human = [r for r in rows if "(human law)" in r["problem"]]
    h_fits = sum(r["fits"] for r in human)
    summary = {"device": args.device, "problems": rows, "total_fits": tot_fits,
               "human_law_speedup": (h_fits / sum(r["lawforge_seconds"] for r in human))
               / (h_fits / sum(r["scipy_seconds"] for r in human)) if human else None,
               "human_law_equal_or_better": all(r["equal_or_better"] for r in human),
               "lawforge_fits_per_s": tot_fits / lf_t, "scipy_fits_per_s": tot_fits / sp_t,
               "speedup": (tot_fits / lf_t) / (tot_fits / sp_t),
               "speedup_min": min(r["speedup"] for r in rows),
               "all_equal_or_better": all(r["equal_or_better"] for r in rows)}
    if args.json:
        print(json.dumps(summary))
    else:
        if human:
            print(f"\nHUMAN LAWS {h_fits} fits: speedup x{summary['human_law_speedup']:.1f}, best loss equal or "
                  f"better on {sum(r['equal_or_better'] for r in human)}/{len(human)}")
        print(f"TOTAL {tot_fits} fits: lawforge {summary['lawforge_fits_per_s']:.0f} fits/s, scipy "
              f"{summary['scipy_fits_per_s']:.0f} fits/s, speedup x{summary['speedup']:.1f} "
              f"(min per problem x{summary['speedup_min']:.1f}); best loss equal or better on "
              f"{sum(r['equal_or_better'] for r in rows)}/{len(rows)} problems")


if __name__ == "__main__":
    main()
