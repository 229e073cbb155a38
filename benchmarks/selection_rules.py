"""Compare rules for choosing the final law, post hoc, on inner-holdout runs.

    python benchmarks/sldbench.py --inner --budget 90s --seeds 2 --out runs/inner
    python benchmarks/selection_rules.py runs/inner [--top 40] [--json]

Every run folder of an ``--inner`` campaign (its test split is train's largest-scale rows, see
``lawforge.datasets.loader.holdout_dataset``) is re-read: the logged candidates are re-ranked
by each rule, the rule's choice is refit on the run's train split exactly as ``discover`` does
(first form whose refit passes the probe and trend checks), and scored on the inner test. Runs on
the real test split are refused: choosing a rule by its real test score would be tuning on test.

Rules (``c`` = complexity, NMSE = mean validation NMSE over the rolling-origin folds):
  score        NMSE * (1 + 0.02 c)               (the search's own ranking)
  worst        max fold NMSE * (1 + 0.02 c)
  pars10       NMSE * (1 + 0.10 c)
  onese        among the top forms, the fewest parameters (then lowest c) whose NMSE is within
               one standard error of the best form's (Breiman et al.'s one-SE rule; the SE is that
               of the best form's mean per-row error over all folds)
  refit        the top forms refit with 4x restarts and 3x iterations, then ranked by ``score``
  consensus    the top forms refit on train; the one whose predictions at the probe points
               (beyond the train range along the scale axis) are nearest the top forms' median
  stable       the top 20 by score, re-ranked by extrapolation shift (how far the prediction at
               the probe points moves when the validation carve joins the fit)
  stable2x     as ``stable``, among those of the top 20 whose score is within 2x the best (what
               ``discover`` does with ``select=stable`` where the fit part holds >= 3 values of
               each scale axis)
  fold1        the primary fold's NMSE alone (fit on train without its largest-scale slice,
               scored on that slice) * (1 + 0.02 c): the earlier rolling-origin folds fit on
               fewer scale values, so the mean over folds penalises forms with more per-group
               parameters than the final fit on all of train does
  fold1s2x     ``stable2x`` on the ``fold1`` ranking
  geo, geos2x  the geometric mean of the fold NMSEs * (1 + 0.02 c), and ``stable2x`` on it
  noisepars    among forms whose NMSE is within the replicate-noise NMSE of the lowest (what
               scatter between replicate runs costs the true law on the validation cells, see
               ``replicate_noise``), the fewest parameters; datasets with replicate rows only
  noisestable  the same window re-ranked by extrapolation shift (top 20 of it by score)
  p05s2x, p10s2x  ``stable2x`` on the ranking NMSE * (1 + 0.05 c), NMSE * (1 + 0.10 c): a
               stronger parsimony in the final choice only (the search keeps 0.02)
  win10, win25 the least complex form (then the fewest parameters) among those whose score is
               within 1.1x, 1.25x the best score
  win10s, win25s  the same windows re-ranked by extrapolation shift among the forms of the window
               no more complex than the median of the window (top 20 of it by score)

As in ``discover``, forms that kept the readable-law contract on their search fit are ranked
(ahead of the rest, which only count where none kept it), and a choice whose refit on train breaks
the contract falls back to the next form, like one that fails the checks.

Each run's line gives every rule's inner test R2 on the rows, then on the cell means (replicate
rows averaged; where a dataset has replicates, the rows' R2 has a ceiling below 1 that hides
differences between forms), then the chosen form's parameter count.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import sympy as sp

from lawforge.datasets import load_dataset
from lawforge.datasets.loader import SealedDataset, holdout_dataset
from lawforge.fitting.lm import fit_split, predict
from lawforge.laws.metrics import compute_metrics
from lawforge.search import space as S
from lawforge.runs.discover import test_metrics
from lawforge.search.prepare import final_train, make_context
from lawforge.search.settings import config_of_run
from lawforge.search.checks import passes_checks
from lawforge.search.choose import extrapolation_shift
from lawforge.search.contract import check_law

RULES = ["score", "worst", "pars10", "onese", "refit", "consensus", "stable", "stable2x", "stablemix", "sestable",
         "noisepars", "noisestable", "fold1", "fold1s2x", "geo", "geos2x", "p05s2x", "p10s2x", "win10", "win25",
         "win10s", "win25s"]


def fold_errors(law, ctx, text, restarts=None, max_iter=None):
    """Per fold, the per-row normalised squared errors (mean over targets of err^2 / Var(y_val));
    None when a fold cannot be fitted or predicted."""
    seed = zlib.crc32(text.encode())
    tcols = [ctx.val.target_columns.index(t) for t in law.target_names]
    out = []
    for fit, val in [(ctx.fit, ctx.val)] + list(ctx.folds or []):
        try:
            res = fit_split(law, fit, restarts=restarts or ctx.restarts, seed=seed, max_iter=max_iter or ctx.max_iter)
        except Exception:
            return None
        if not res.ok:
            return None
        with np.errstate(all="ignore"):
            p = predict(law, res.params(), val)
        y = val.y[:, tcols]
        if not np.all(np.isfinite(p)):
            return None
        out.append(np.mean((y - p) ** 2 / y.var(axis=0), axis=1))
    return out


def replicate_noise(train, vals) -> float | None:
    """The validation NMSE that replicate scatter alone costs the true law: per validation part
    (raw rows), the mean over its cells of ``sigma^2 / n_cell`` over the variance of the cell
    means, averaged over targets and parts; ``sigma^2`` is the pooled within-cell variance of
    ``train`` (replicate rows: same group and features). Two forms whose validation NMSE (on
    cell means) differ by less than this cannot be told apart by validation. None when train has
    no replicates. Train rows only."""
    codes, first = train._cells()
    if len(first) == train.n:
        return None
    n_cells = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_cells)
    means = np.zeros((n_cells, train.y.shape[1]))
    np.add.at(means, codes, train.y)
    means /= counts[:, None]
    sigma2 = ((train.y - means[codes]) ** 2).sum(axis=0) / (train.n - len(first))
    out = []
    for val in vals:
        vc, vf = val._cells()
        if len(vf) < 2:
            continue
        n_c = np.bincount(vc)[vc[vf]]
        var = val.cell_means().y.var(axis=0)
        if np.all(var > 0):
            out.append(float(np.mean(sigma2 * np.mean(1.0 / n_c) / var)))
    return float(np.mean(out)) if out else None


def consensus_order(cands, law_of, train, ctx, restarts: int = 16):
    """``cands`` ordered by how far their extrapolations (refit on train, predicted at the probe
    points beyond the train range) are from the candidates' median, in units of each probe
    row's group range; forms that cannot be refit or predict non-finite values go last."""
    if ctx.screen.probe is None:
        return list(cands)
    preds, kept = [], []
    for r in cands:
        law = law_of(r)
        try:
            fit = fit_split(law, train, restarts=restarts, seed=0)
        except Exception:
            continue
        if not fit.ok:
            continue
        tcols = [train.target_columns.index(t) for t in law.target_names]
        with np.errstate(all="ignore"):
            p = predict(law, fit.params(), ctx.screen.probe)
        if p.shape[1] != len(tcols) or not np.all(np.isfinite(p)):
            continue
        preds.append(p)
        kept.append(r)
    if not kept:
        return list(cands)
    P = np.stack(preds)                                  # (k, n_probe, d)
    med = np.median(P, axis=0)
    dev = np.mean(((P - med) / ctx.screen.probe_span[None, :, :P.shape[2]]) ** 2, axis=(1, 2))
    order = [kept[i] for i in np.argsort(dev, kind="stable")]
    return order + [r for r in cands if r not in kept]


def _stability(cands, law_of, train, ctx, restarts: int = 16) -> dict:
    """Per candidate (by id), its extrapolation shift (``lawforge.search.choose.extrapolation_shift``:
    how much its prediction at the probe points moves between the fit without the validation
    slice and the fit on all of train, in units of the group range)."""
    out = {}
    for r in cands:
        s = extrapolation_shift(law_of(r), ctx, train, restarts)
        if s is not None:
            out[id(r)] = s
    return out


def analyse(run: Path, top: int, rules: list[str], consensus_k: int = 20) -> dict:
    cfg_json = json.loads((run / "config.json").read_text())
    if "inner holdout" not in str(cfg_json.get("data_origin", "")):
        raise SystemExit(f"{run}: not an inner-holdout run (data_origin {cfg_json.get('data_origin')!r}); "
                         f"refusing to compare rules on the real test split")
    cfg = config_of_run(cfg_json)
    ds = holdout_dataset(load_dataset(cfg_json["dataset"], cfg_json.get("data_dir")))
    sealed = SealedDataset(ds, cfg.seed)
    ctx = make_context(sealed, cfg)
    train = final_train(sealed, cfg)  # what discover refits the chosen law on
    card = ds.card
    recs = [json.loads(line) for line in open(run / "candidates.jsonl")]
    ok = [r for r in recs if r["status"] == "ok" and r["val_nmse"] is not None and np.isfinite(r["val_nmse"])]
    for r in ok:
        r["_expr"] = S.from_tree(r["tree"])
        r["_worst"] = max(r.get("fold_nmse") or [r["val_nmse"]])

    def law_of(r):
        return S.to_law(r["_expr"], dict(card.variables), card.target_columns, name="discovered",
                        data=train if cfg.grammar.scale_starts else None)

    shifts: dict = {}

    def stability(cands, law_of, train, ctx):  # each candidate's shift is measured once across rules
        todo = [r for r in cands if id(r) not in shifts]
        shifts.update(_stability(todo, law_of, train, ctx))
        shifts.update({id(r): None for r in todo if id(r) not in shifts})
        return {id(r): shifts[id(r)] for r in cands if shifts[id(r)] is not None}

    def sort(key):
        """The ok forms by ``key``, those that kept the contract first (as ``discover`` ranks)."""
        kept = (lambda r: r.get("contract") is True) if cfg.checks.contract else (lambda r: True)
        return sorted([r for r in ok if kept(r)], key=key) + sorted([r for r in ok if not kept(r)], key=key)

    by_score = sort(lambda r: r["val_nmse"] * (1 + 0.02 * r["complexity"]))
    head = by_score[:top]
    orders = {"score": by_score}
    if "worst" in rules:
        orders["worst"] = sort(lambda r: r["_worst"] * (1 + 0.02 * r["complexity"]))
    if "pars10" in rules:
        orders["pars10"] = sort(lambda r: r["val_nmse"] * (1 + 0.10 * r["complexity"]))
    se = None
    if "onese" in rules or "sestable" in rules:
        errs = {id(r): fold_errors(law_of(r), ctx, r["expr"]) for r in head}
        best = next((r for r in head if errs[id(r)] is not None), None)
        orders["onese"] = orders["sestable"] = by_score
        if best is not None:
            e = errs[id(best)]
            se = float(np.sqrt(sum(x.var(ddof=1) / len(x) for x in e if len(x) > 1)) / len(e))
            within = [r for r in head if r["val_nmse"] <= best["val_nmse"] + se]
            if "sestable" in rules:
                shift = stability(within[:consensus_k], law_of, train, ctx)
                cand = [r for r in within[:consensus_k] if id(r) in shift]
                orders["sestable"] = sorted(cand, key=lambda r: shift[id(r)]) + [r for r in by_score if r not in cand]
            orders["onese"] = sorted(within, key=lambda r: (r["n_params"], r["complexity"], r["val_nmse"])) + \
                [r for r in by_score if r not in within]
    if "refit" in rules:
        refit_nmse = {}
        for r in head:
            e = fold_errors(law_of(r), ctx, r["expr"], restarts=4 * ctx.restarts, max_iter=3 * ctx.max_iter)
            refit_nmse[id(r)] = float(np.mean([x.mean() for x in e])) if e else float("inf")
        orders["refit"] = sorted(head, key=lambda r: refit_nmse[id(r)] * (1 + 0.02 * r["complexity"])) + by_score[top:]
    if "stable" in rules or "stablemix" in rules or "stable2x" in rules:
        shift = stability(by_score[:consensus_k], law_of, train, ctx)
        cand = [r for r in by_score[:consensus_k] if id(r) in shift]
        rest = [r for r in by_score if r not in cand]
        orders["stable"] = sorted(cand, key=lambda r: shift[id(r)]) + rest
        sc = lambda r: r["val_nmse"] * (1 + 0.02 * r["complexity"])  # noqa: E731
        near = [r for r in cand if sc(r) <= 2 * sc(by_score[0])]
        orders["stable2x"] = sorted(near, key=lambda r: shift[id(r)]) + [r for r in by_score if r not in near]
        med = float(np.median(list(shift.values()))) if shift else 1.0
        orders["stablemix"] = sorted(cand, key=lambda r: r["val_nmse"] * (1 + shift[id(r)] / (med + 1e-12))) + rest
    def s2x(order, sc1):
        """``stable2x`` on ``order`` (ranked by ``sc1``)."""
        sh = stability(order[:consensus_k], law_of, train, ctx)
        near = [r for r in order[:consensus_k] if id(r) in sh and sc1(r) <= 2 * sc1(order[0])]
        return sorted(near, key=lambda r: sh[id(r)]) + [r for r in order if r not in near]

    for name, agg in (("fold1", lambda f: f[0]), ("geo", lambda f: float(np.exp(np.mean(np.log(np.maximum(f, 1e-12))))))):
        if name in rules or name + "s2x" in rules:
            sc1 = lambda r, agg=agg: agg(r.get("fold_nmse") or [r["val_nmse"]]) * (1 + 0.02 * r["complexity"])  # noqa: E731
            orders[name] = sort(sc1)
            if name + "s2x" in rules:
                orders[name + "s2x"] = s2x(orders[name], sc1)
    for name, lam in (("p05s2x", 0.05), ("p10s2x", 0.10)):
        if name in rules:
            scl = lambda r, lam=lam: r["val_nmse"] * (1 + lam * r["complexity"])  # noqa: E731
            orders[name] = s2x(sort(scl), scl)
    sc0 = lambda r: r["val_nmse"] * (1 + 0.02 * r["complexity"])  # noqa: E731
    for name, w in (("win10", 1.1), ("win25", 1.25)):
        if name in rules or name + "s" in rules:
            keepers = cfg.checks.contract and by_score[0].get("contract") is True  # then only they are ranked
            win = [r for r in by_score if sc0(r) <= w * sc0(by_score[0])
                   and (not keepers or r.get("contract") is True)]
            rest = [r for r in by_score if r not in win]
            orders[name] = sorted(win, key=lambda r: (r["complexity"], r["n_params"], sc0(r))) + rest
            if name + "s" in rules:
                med = float(np.median([r["complexity"] for r in win]))
                cand = [r for r in win if r["complexity"] <= med][:consensus_k]
                sh = stability(cand, law_of, train, ctx)
                cand = [r for r in cand if id(r) in sh]
                orders[name + "s"] = sorted(cand, key=lambda r: sh[id(r)]) + [r for r in by_score if r not in cand]
    noise = None
    if "noisepars" in rules or "noisestable" in rules:
        parts = [sealed.val] + [v for _, v in sealed.extra_folds(max(0, cfg.validation.folds - 1))]
        noise = replicate_noise(sealed.train, parts)
        orders["noisepars"] = orders["noisestable"] = orders.get("stable2x", by_score)
        if noise is not None:
            lo = min(r["val_nmse"] for r in ok)
            win = [r for r in by_score if r["val_nmse"] <= lo + noise]
            orders["noisepars"] = sorted(win, key=lambda r: (r["n_params"], r["complexity"], r["val_nmse"])) + \
                [r for r in by_score if r not in win]
            shift = stability(win[:consensus_k], law_of, train, ctx)
            cand = [r for r in win[:consensus_k] if id(r) in shift]
            orders["noisestable"] = sorted(cand, key=lambda r: shift[id(r)]) + [r for r in by_score if r not in cand]
    if "consensus" in rules:
        orders["consensus"] = consensus_order(by_score[:consensus_k], law_of, train, ctx) + by_score[consensus_k:]
    final_restarts = cfg.fitting.final_restarts
    out = {"dataset": cfg_json["dataset"], "seed": cfg.seed, "run": str(run), "candidates": len(ok), "se_best": se,
           "noise": noise}
    cache = {}
    full = sealed.unseal()
    cells = full.test.cell_means()
    for rule in rules:
        for r in orders[rule][:10]:
            if r["key"] not in cache:
                law = law_of(r)
                fit = fit_split(law, train, restarts=final_restarts, seed=cfg.seed)
                tcols = [train.target_columns.index(t) for t in law.target_names]
                stable = fit.ok and passes_checks(law, fit.params(), ctx.screen, tcols)
                if stable and cfg.checks.contract and r.get("contract") is True:  # as discover: the refit too
                    try:
                        stable = check_law(law, fit.params(), train, card).ok
                    except Exception:
                        stable = False
                cache[r["key"]] = (stable, law, fit)
            stable, law, fit = cache[r["key"]]
            if stable:
                break
        else:
            r = orders[rule][0]
            _, law, fit = cache[r["key"]]
        tm = test_metrics(law, fit.params(), full)
        tc = compute_metrics(cells.y, predict(law, fit.params(), cells)) if cells.n < full.test.n else None
        out[rule] = {"test_r2": tm["r2"], "test_r2_cells": tc.r2 if tc else tm["r2"],
                     "law": sp.sstr(r["_expr"]), "n_params": r["n_params"], "complexity": r["complexity"]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("campaign", help="folder of an inner campaign (benchmarks/sldbench.py --inner --out DIR)")
    ap.add_argument("--top", type=int, default=40, help="forms the one-SE and refit rules look at")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated subset of " + ",".join(RULES))
    ap.add_argument("--consensus-k", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rules = args.rules.split(",")
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise SystemExit(f"--rules: unknown rule {bad[0]!r}; choose from {', '.join(RULES)}")
    if "score" not in rules:
        rules = ["score"] + rules
    runs = sorted(p.parent for p in Path(args.campaign).glob("*/candidates.jsonl"))
    if not runs:
        raise SystemExit(f"{args.campaign}: no run folders")
    rows = []
    for run in runs:
        row = analyse(run, args.top, rules, args.consensus_k)
        rows.append(row)
        print(f"  {run.name} (noise {row['noise']}): " + "  ".join(
            f"{k} {row[k]['test_r2']:.4f}/{row[k]['test_r2_cells']:.4f} [{row[k]['n_params']}]" for k in rules),
            file=sys.stderr, flush=True)
    tasks = sorted({r["dataset"] for r in rows})
    table = {t: {k: float(np.mean([r[k]["test_r2"] for r in rows if r["dataset"] == t])) for k in rules} for t in tasks}
    mean = {k: float(np.mean([table[t][k] for t in tasks])) for k in rules}
    size = {k: [float(np.mean([r[k][f] for r in rows])) for f in ("complexity", "n_params")] for k in rules}
    if args.json:
        print(json.dumps({"runs": rows, "tasks": table, "mean": mean, "size": size}))
        return
    print(f"{'task (inner test R2, mean over seeds)':40s}" + "".join(f"{k:>10s}" for k in rules))
    for t in tasks:
        print(f"{t:40s}" + "".join(f"{table[t][k]:10.4f}" for k in rules))
    print(f"{'MEAN':40s}" + "".join(f"{mean[k]:10.4f}" for k in rules))
    print(f"{'complexity / parameters of the choice':40s}" + "".join(f"{c:6.1f}/{n:<3.1f}" for c, n in size.values()))


if __name__ == "__main__":
    main()
