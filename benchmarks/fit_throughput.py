"""Fitting throughput: lawforge's batched LM fitter against sequential scipy multi-start.

Both methods solve the same problems from the same starting points: each (law, dataset) problem
is fitted per group from R starts (the law's init plus seeded random draws, in the same
bound-transformed coordinates). scipy runs ``least_squares(method="lm")`` once per (group,
start), the usual practice, in two variants: with its default forward-difference Jacobian
(``--scipy-jac 2-point``) and with the same analytic Jacobian lawforge uses (``analytic``, the
stronger baseline). Both get the same iteration budget as lawforge (200 Jacobians). The
finite-difference variant is timed on ``--fd-fits`` starts per problem (its fits/s does not
depend on the number of starts; its best loss is then over that subset). Printed per problem: fits, wall
time, fits/s and the summed best loss over groups for each method, and the ratio.

    python benchmarks/fit_throughput.py [--device cpu|cuda] [--json] [--data-dir DIR] [--full]

By default about 128 fits per problem (at least 4 restarts per group) against scipy with the
analytic Jacobian only (a few minutes on 2 cores; the finite-difference variant is far slower on
laws with many parameters);
``--full`` is the long run: about 1,024 fits per problem, sft's human law with 256 restarts in each
of its 42 groups (10,752 fits, the >= 10,000-fit problem) and both scipy variants (128
finite-difference fits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset
from lawforge.laws.expr import numpy_backend
from lawforge.fitting.lm import fit_split, start_points
from lawforge.fitting.problems import _HI, _ID, _LO


def _scipy_fit(law, split, U, pr, max_nfev, jac_mode="analytic"):
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
                if jac_mode == "analytic":
                    res = least_squares(fun, U[b, r], jac=jac, method="lm", xtol=1e-10, ftol=1e-10,
                                        max_nfev=max_nfev)
                else:  # scipy's default: forward differences (P + 1 evaluations per Jacobian)
                    res = least_squares(fun, U[b, r], jac="2-point", method="lm", xtol=1e-10, ftol=1e-10,
                                        max_nfev=max_nfev * (len(U[b, r]) + 1))
                loss = float(np.sum(fun(res.x) ** 2))
                if np.isfinite(loss) and loss < best:
                    best = loss
            except Exception:
                failures += 1
        best_total += best
    return best_total, fits, failures


def problems(data_dir, fits_per_problem: int = 1024, full: bool = True):
    """(label, dataset, restarts per group) problems.

    Each human law is fitted with about ``fits_per_problem`` fits (restarts = that / groups, at
    least 32, or 4 without ``full``; with ``full`` sft's 42 groups x 256 restarts = 10,752 fits is
    the >= 10,000-fit problem), plus two small-batch rows (32 restarts) that show where batching
    stops paying.
    """
    floor = 32 if full else 4
    out = []
    sld = [n for n in bundled_card_paths() if not n.startswith("synthetic")]
    have = [n for n in sld if data_available(get_card(n), data_dir)]
    if len(have) < len(sld):
        print(f"note: SLDBench data not found for {sorted(set(sld) - set(have))}; using what is here",
              file=sys.stderr)
    for n in have:
        groups = len(load_dataset(n, data_dir).train.group_names)
        R = 256 if n == "sft_scaling_law" and full else max(floor, -(-fits_per_problem // groups))
        out.append((f"{n} (human law)", n, R))
    if "sft_scaling_law" not in have and full:  # a synthetic problem of the same size class
        out.append(("synthetic_multigroup (10,240 fits)", "synthetic_multigroup", 2560))
    for n in ("synthetic_chinchilla", "synthetic_multigroup"):
        out.append((f"{n} (true form)", n, max(floor, fits_per_problem // len(load_dataset(n).train.group_names))))
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
    ap.add_argument("--full", action="store_true", help="the long run (see above)")
    ap.add_argument("--fits-per-problem", type=int, default=None, help="default 128, or 1024 with --full")
    ap.add_argument("--scipy-jac", choices=["analytic", "2-point", "both"], default=None,
                    help="default analytic, or both with --full")
    ap.add_argument("--fd-fits", type=int, default=None,
                    help="fits per problem timed for scipy's finite-difference variant (its best loss is "
                         "then over those starts only; default 32, or 128 with --full)")
    args = ap.parse_args(argv)
    if args.fits_per_problem is None:
        args.fits_per_problem = 1024 if args.full else 128
    if args.scipy_jac is None:
        args.scipy_jac = "both" if args.full else "analytic"
    if args.fd_fits is None:
        args.fd_fits = 128 if args.full else 32

    rows = []
    warm = load_dataset("synthetic_chinchilla")
    fit_split(warm.card.human_law()[0], warm.train, restarts=4, device=args.device)  # warm-up
    for label, name, R in problems(args.data_dir, args.fits_per_problem, args.full):
        if args.only and not any(s in label for s in args.only.split(",")):
            continue
        ds = load_dataset(name, args.data_dir)
        law, _ = ds.card.human_law()
        U, pr = start_points(law, ds.train, R, seed=0)
        t0 = time.perf_counter()
        res = fit_split(law, ds.train, restarts=R, seed=0, device=args.device, max_iter=args.max_iter)
        if args.device == "cuda":
            import torch

            torch.cuda.synchronize()
        t_torch = time.perf_counter() - t0
        lf_best = res.total_loss
        row = {"problem": label, "dataset": name, "law": law.name, "groups": len(ds.train.group_names),
               "restarts": R, "fits": res.n_fits,
               "lawforge_seconds": t_torch, "lawforge_fits_per_s": res.n_fits / t_torch, "lawforge_best_loss": lf_best}
        modes = ["2-point", "analytic"] if args.scipy_jac == "both" else [args.scipy_jac]
        for mode in modes:
            Us = U.cpu().numpy()
            if mode == "2-point":  # timed on a subsample: its per-fit cost does not depend on R
                Us = Us[:, :max(1, min(R, -(-args.fd_fits // Us.shape[0])))]
            t0 = time.perf_counter()
            sp_best, sp_fits, sp_fail = _scipy_fit(law, ds.train, Us, pr, args.max_iter, mode)
            t_scipy = time.perf_counter() - t0
            tag = "scipy_fd" if mode == "2-point" else "scipy"
            row.update({f"{tag}_fits": sp_fits, f"{tag}_seconds": t_scipy, f"{tag}_fits_per_s": sp_fits / t_scipy,
                        f"{tag}_best_loss": sp_best, f"{tag}_failures": sp_fail,
                        f"{tag}_speedup": row["lawforge_fits_per_s"] / (sp_fits / t_scipy),
                        f"{tag}_equal_or_better": bool(lf_best <= sp_best * (1 + 1e-6) + 1e-12)})
        row["equal_or_better"] = all(row[k] for k in row if k.endswith("_equal_or_better"))
        if not args.json:
            parts = [f"{label:44s} fits={row['fits']:6d}  lawforge {row['lawforge_fits_per_s']:8.0f}/s loss={lf_best:.6g}"]
            for tag, nm in (("scipy_fd", "scipy-fd"), ("scipy", "scipy-analytic")):
                if f"{tag}_seconds" in row:
                    parts.append(f"{nm} {row[f'{tag}_fits_per_s']:6.0f}/s loss={row[f'{tag}_best_loss']:.6g} "
                                 f"x{row[f'{tag}_speedup']:.1f}{'' if row[f'{tag}_equal_or_better'] else ' WORSE'}")
            print(" | ".join(parts), flush=True)
        rows.append(row)
    def ratio(rs, tag):
        rs = [r for r in rs if f"{tag}_seconds" in r]
        if not rs:
            return None
        fits = sum(r["fits"] for r in rs)
        lf = fits / sum(r["lawforge_seconds"] for r in rs)
        sp_ = sum(r[f"{tag}_fits"] for r in rs) / sum(r[f"{tag}_seconds"] for r in rs)
        geo = float(np.exp(np.mean([np.log(r[f"{tag}_speedup"]) for r in rs])))
        return {"fits": fits, "lawforge_fits_per_s": lf, "scipy_fits_per_s": sp_, "speedup": lf / sp_,
                "speedup_geomean": geo, "speedup_min": min(r[f"{tag}_speedup"] for r in rs),
                "equal_or_better": sum(r[f"{tag}_equal_or_better"] for r in rs), "problems": len(rs)}

    human = [r for r in rows if "(human law)" in r["problem"]]
    summary = {"device": args.device, "problems": rows,
               "human_laws": {tag: ratio(human, tag) for tag in ("scipy_fd", "scipy")},
               "all": {tag: ratio(rows, tag) for tag in ("scipy_fd", "scipy")}}
    main_tag = "scipy_fd" if summary["all"]["scipy_fd"] else "scipy"
    summary["speedup"] = summary["all"][main_tag]["speedup"]
    if args.json:
        print(json.dumps(summary))
    else:
        for scope in ("human_laws", "all"):
            for tag, nm in (("scipy_fd", "scipy default (2-point Jacobian)"), ("scipy", "scipy with analytic Jacobian")):
                r = summary[scope][tag]
                if r:
                    print(f"{scope:10s} vs {nm:34s}: {r['fits']} fits, speedup x{r['speedup']:.1f} (total time), "
                          f"geomean x{r['speedup_geomean']:.1f}, min x{r['speedup_min']:.1f}; best loss equal or "
                          f"better on {r['equal_or_better']}/{r['problems']}")


if __name__ == "__main__":
    main()
