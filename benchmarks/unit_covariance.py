"""Unit covariance (measured, not a rule yet): can rescaling a positive feature, x -> k*x, be
absorbed by the law's fitted constants? Infinitesimally, v = x*df/dx must lie in the span of
df/dtheta on a group's train rows; printed is the relative residual of that projection per feature
(the worst of up to 3 groups): about 1e-11 where the law is covariant.

    python benchmarks/unit_covariance.py cards            # every card's human law, refit on train
    python benchmarks/unit_covariance.py runs DIR [DIR]   # the chosen law (law.json) of each run folder

See docs/search-design.md ("Measured, not adopted: unit covariance")."""
import glob
import json
import os
import sys

import numpy as np
from lawforge.datasets import load_dataset, bundled_card_paths
from lawforge.laws.law import law_from_text
from lawforge.laws.expr import numpy_backend
from lawforge.fitting.scoring import score_human

def jac(law, params, X):
    names = law.param_names
    prog, pairs = law.jacobian_program
    T = len(law.targets); n = len(next(iter(X.values())))
    env = {sym: np.asarray(X[col], float) for sym, col in law.variables.items() if col in X}
    env.update({p: np.float64(params[p]) for p in names})
    with np.errstate(all="ignore"):
        outs = prog.run(numpy_backend(), env)
    J = np.zeros((n * T, len(names)))
    for i, (t, k) in enumerate(pairs):
        J[t*n:(t+1)*n, k] += np.broadcast_to(np.asarray(outs[T+i], float), (n,))
    return J

def covariance(law, params_all, train, card, eps=1e-4):
    """worst relative residual per feature over (up to 3) groups"""
    logs = card.log_bases
    F = [c for c in train.X]
    cols, Fm = F, np.stack([train.X[c] for c in F], 1)
    simplex = len(F) > 1 and np.all(Fm >= 0) and np.ptp(Fm.sum(1)) < 1e-6
    out = {}
    used = {law.variables[s] for s in law.variables if any(sym.name == s for e in law.exprs.values() for sym in e.free_symbols)}
    for c in F:
        if c not in used or simplex: continue
        pos = (train.X[c] > 0).all()
        if not pos and c not in logs: continue
        worst = 0.0
        for g in [g for g in train.group_names if g in params_all][:3]:
            r = train.group_rows(g); X = {k: v[r] for k, v in train.X.items()}
            p = params_all[g]
            up, dn = dict(X), dict(X)
            if c in logs:
                d = eps / np.log(logs[c]); up[c] = X[c] + d; dn[c] = X[c] - d
            else:
                up[c] = X[c] * (1 + eps); dn[c] = X[c] * (1 - eps)
            with np.errstate(all="ignore"):
                v = ((law.predict(up, p) - law.predict(dn, p)) / (2 * eps)).T.ravel()
            J = jac(law, p, X)
            ok = np.isfinite(v) & np.isfinite(J).all(1)
            v, J = v[ok], J[ok]
            nv = np.linalg.norm(v)
            if nv < 1e-12 * max(1.0, np.abs(law.predict(X, p)).max()): continue
            norms = np.linalg.norm(J, axis=0); keep = norms > 0
            Jn = J[:, keep] / norms[keep]
            coef, *_ = np.linalg.lstsq(Jn, v, rcond=None)
            res = np.linalg.norm(v - Jn @ coef) / nv
            worst = max(worst, float(res))
        out[c] = worst
    return out

if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "cards"
    cache = {}
    if mode == "cards":
        for name in bundled_card_paths():
            try: ds = load_dataset(name)
            except Exception: continue
            for h in ds.card.human_laws:
                sc = score_human(ds, "refit", law_name=h.name)
                cv = covariance(sc.law, sc.params, ds.train, ds.card)
                print(f"{name:28s} {h.name:24s} " + " ".join(f"{k}={v:.1e}" for k, v in cv.items()), flush=True)
    else:
        for root in sys.argv[2:]:
            for f in sorted(glob.glob(f"{root}/**/law.json", recursive=True)):
                run = os.path.dirname(f); dsn = os.path.basename(run).rsplit("-s", 1)[0]
                try:
                    ds = cache.get(dsn) or load_dataset(dsn); cache[dsn] = ds
                except Exception: continue
                lj = json.load(open(f))
                try: law = law_from_text(lj["expression"], ds.card.variables, ds.card.target_columns)
                except Exception: continue
                cv = covariance(law, lj["params"], ds.train, ds.card)
                m = json.load(open(os.path.join(run, "metrics.json"))) if os.path.exists(os.path.join(run, "metrics.json")) else {}
                bad = [k for k, v in cv.items() if v > 1e-3]
                print(f"{'BAD' if bad else 'ok ':3s} {m.get('test_r2', float('nan')):8.4f} {run:45s} "
                      + " ".join(f"{k}={v:.0e}" for k, v in cv.items()) + f"  {lj['expression'][:90]}", flush=True)
