"""One benchmark over everything: SLDBench's 8 tasks, the catalogue of real datasets, the synthetic sets.

    python benchmarks/suite.py [--budget 2m] [--seeds 3] [--workers 2] [--only catalogue|sldbench|synthetic|a,b]
                               [--inner] [--set KEY=VALUE] [--json]

Runs ``lawforge campaign`` over datasets x seeds (native engine, CPU, no LLM) and prints per
dataset lawforge's test R2 (mean, worst and best over seeds, and every seed) beside the refits on
the same split of the card's human (paper) laws (the best of them is the reference) and, where
the card has features named N and D, of the Chinchilla form E + A/N^a + B/D^b; then every chosen
law with its parameter count, its building blocks and whether it passes the readable-law
contract (lawforge.search.contract). ``--inner`` scores on each dataset's inner holdout made from
train alone (for choosing settings; never the test split).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset
from lawforge.datasets.loader import holdout_dataset
from lawforge.errors import ConfigError
from lawforge.fitting.scoring import score_human, score_refit
from lawforge.fitting.lm import predict
from lawforge.laws.law import Law, law_from_text
from lawforge.laws.metrics import compute_metrics
from lawforge.outputs import run_hooks
from lawforge.runs.campaign import run_campaign
from lawforge.search.contract import check_law
from lawforge.search.settings import parse_budget, parse_settings

SLDBENCH = ["parallel_scaling_law", "vocab_scaling_law", "sft_scaling_law", "domain_mixture_scaling_law",
            "moe_scaling_law", "data_constrained_scaling_law", "lr_bsz_scaling_law", "easy_question_scaling_law"]
CATALOGUE = ["steplaw_moe", "porian_resolving", "gemstones", "olmo_ladder", "openclip", "obsscaling"]
SYNTHETIC = ["synthetic_chinchilla", "synthetic_data_constrained", "synthetic_multigroup", "synthetic_lr_bowl"]
CHINCHILLA = "E + A/N**a + B/D**b"


def chinchilla_law(card) -> Law | None:
    """The Chinchilla form over the card's features named N and D, when it has both."""
    syms = {f.symbol: f.column for f in card.features}
    if not {"N", "D"} <= set(syms):
        return None
    params = {"E": {"init": 1.0, "bounds": [0, None]}, "A": {"init": 100, "bounds": [0, None]},
              "a": {"init": 0.3, "bounds": [0, 3]}, "B": {"init": 100, "bounds": [0, None]},
              "b": {"init": 0.3, "bounds": [0, 3]}}
    return Law({card.target_columns[0]: CHINCHILLA}, syms, params, name="chinchilla_form")


def references(ds, data_dir) -> dict:
    """Test R2 of each human law refit on train, and of the Chinchilla form where it applies."""
    out = {}
    for h in ds.card.human_laws:
        out[h.name] = float(score_human(ds, "refit", law_name=h.name, data_dir=data_dir).test.r2)
    law = chinchilla_law(ds.card)
    out["chinchilla_form"] = float(score_refit(ds, law).test.r2) if law is not None and len(ds.card.targets) == 1 \
        else float("nan")
    return out


def contract_of_run(run_dir, ds):
    """The readable-law contract checked on a run's chosen law and its fitted constants."""
    lj = json.loads((Path(run_dir) / "law.json").read_text())
    law = law_from_text(lj["expression"], ds.card.variables, ds.card.target_columns)
    return check_law(law, lj["params"], ds.train, ds.card)


def ensemble_r2(run_dir, ds) -> float:
    """Test R2 of the run's model ensemble (``ensemble_test_r2`` in metrics.json: the top forms
    and the card's laws weighted by 1 / refit validation NMSE). Runs written before ensembles
    were part of a run: the top forms of top_laws.json (each refit on train) averaged with
    weights 1 / search validation NMSE, forms whose predictions are not finite left out."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    if m.get("ensemble_test_r2") is not None:
        return float(m["ensemble_test_r2"])
    top = json.loads((Path(run_dir) / "top_laws.json").read_text())
    preds, weights = [], []
    for t in top:
        if not t.get("params") or t.get("val_r2") is None:
            continue
        law = law_from_text(t["expression"], ds.card.variables, ds.card.target_columns)
        with np.errstate(all="ignore"):
            p = predict(law, t["params"], ds.test)
        if np.isfinite(p).all():
            preds.append(p)
            weights.append(1.0 / max(1.0 - float(t["val_r2"]), 1e-12))
    if not preds:
        return float("nan")
    w = np.asarray(weights) / np.sum(weights)
    return float(compute_metrics(ds.test.y, np.tensordot(w, np.stack(preds), axes=1)).r2)


def pick(only: str | None, data_dir) -> list[str]:
    groups = {"sldbench": SLDBENCH, "catalogue": CATALOGUE, "synthetic": SYNTHETIC}
    if not only:
        names = SLDBENCH + CATALOGUE + SYNTHETIC
    else:
        names = [n for part in only.split(",") for n in groups.get(part, [part])]
    known = bundled_card_paths()
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown dataset {n!r}")
    here = [n for n in names if data_available(get_card(n), data_dir)]
    for n in sorted(set(names) - set(here)):
        print(f"skipping {n}: its data is not available here", file=sys.stderr)
    return here


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="2m")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (one process each)")
    ap.add_argument("--only", help="catalogue, sldbench, synthetic, or comma-separated dataset names")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--out", help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--inner", action="store_true", help="score on the inner holdout of train, not on test")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a search setting")
    ap.add_argument("--from", dest="from_dir", metavar="DIR",
                    help="report a finished campaign folder (its leaderboard.csv) instead of running one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    budget = parse_budget(args.budget)
    try:
        search = parse_settings(args.set)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    names = pick(args.only, args.data_dir)
    out_root = args.out or tempfile.mkdtemp(prefix="lawforge-suite-")

    def on_row(r):
        if not args.json:
            print(f"  {r['dataset']} seed {r['seed']}: test R2 {r.get('test_r2')} {r.get('seconds')}s "
                  f"{r.get('law') or r['status']}", file=sys.stderr, flush=True)

    if args.from_dir:
        import pandas as pd

        out_root = args.from_dir
        board = pd.read_csv(Path(args.from_dir) / "leaderboard.csv")
        camp = {"rows": [{k: v for k, v in r.items()} for r in board.to_dict("records") if r["dataset"] in names]}
        names = [n for n in names if n in set(board["dataset"])]
    else:
        camp = run_campaign(names, args.seeds, out_root, budget_s=budget, data_dir=args.data_dir,
                            workers=args.workers, report=False, on_row=on_row, inner=args.inner,
                            search=search or None, seed_start=args.seed_start, hooks=run_hooks(report=False))
    rows = []
    for name in names:
        ds = load_dataset(name, args.data_dir)
        if args.inner:
            ds = holdout_dataset(ds)
        refs = references(ds, args.data_dir)
        human = [v for k, v in refs.items() if k != "chinchilla_form"]
        runs = [r for r in camp["rows"] if r["dataset"] == name]
        bad = [r for r in runs if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"{name}: run failed: {bad[0]['status']}")
        r2 = [float(r["test_r2"]) for r in runs]
        best_ref = np.nanmax([max(human) if human else np.nan, refs["chinchilla_form"]])
        laws = []
        for r in runs:
            c = contract_of_run(r["run_dir"], ds)
            laws.append({"seed": r["seed"], "law": r["law"], "n_params": r["n_params"], "blocks": c.blocks,
                         "contract": c.ok, "why": c.reasons})
        ens = [ensemble_r2(r["run_dir"], ds) for r in runs]
        rows.append({"dataset": name, "test_r2": r2, "ensemble_r2": ens, "ensemble_mean": float(np.mean(ens)),
                     "ensemble_worst": float(np.min(ens)), "ensemble_at_or_above": bool(np.mean(ens) >= best_ref - 1e-12),
                     "mean": float(np.mean(r2)), "worst": float(np.min(r2)),
                     "best": float(np.max(r2)), "human_refit": max(human) if human else float("nan"),
                     "chinchilla_refit": refs["chinchilla_form"], "references": refs, "reference": float(best_ref),
                     "at_or_above": bool(np.mean(r2) >= best_ref - 1e-12),
                     "worst_within_0.05": bool(np.min(r2) >= best_ref - 0.05),
                     "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
                     "seconds_max": float(np.max([r["seconds"] for r in runs])), "laws": laws})
    result = {"inner": args.inner, "budget_s": budget, "seeds": args.seeds, "search": search, "datasets": rows,
              "runs_dir": out_root}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'dataset':30s} {'lf mean':>8s} {'worst':>8s} {'best':>8s} {'ens':>8s} {'ens wst':>8s} {'human':>8s} "
          f"{'chinch':>8s} {'>= ref':>6s} {'ens>=':>6s} {'sec':>5s}  seeds (law | ensemble)")
    for r in rows:
        print(f"{r['dataset']:30s} {r['mean']:8.4f} {r['worst']:8.4f} {r['best']:8.4f} {r['ensemble_mean']:8.4f} "
              f"{r['ensemble_worst']:8.4f} {r['human_refit']:8.4f} {r['chinchilla_refit']:8.4f} "
              f"{'yes' if r['at_or_above'] else 'NO':>6s} {'yes' if r['ensemble_at_or_above'] else 'NO':>6s} "
              f"{r['seconds_max']:5.0f}  " + " ".join(f"{v:.4f}" for v in r["test_r2"]) + " | "
              + " ".join(f"{v:.4f}" for v in r["ensemble_r2"]))
    for group, members in (("sldbench", SLDBENCH), ("catalogue", CATALOGUE), ("synthetic", SYNTHETIC)):
        sel = [r for r in rows if r["dataset"] in members]
        if sel:
            print(f"MEAN {group:25s} {np.mean([r['mean'] for r in sel]):8.4f} (ensemble "
                  f"{np.mean([r['ensemble_mean'] for r in sel]):.4f})")
    print("\nchosen laws (seed, parameters, contract, building blocks):")
    for r in rows:
        for lw in r["laws"]:
            flag = "ok" if lw["contract"] else "FAILS: " + "; ".join(lw["why"])
            print(f"  {r['dataset']} s{lw['seed']} [{lw['n_params']}p, {flag}] {', '.join(lw['blocks'])}\n"
                  f"      {lw['law']}")
    print(f"run folders: {out_root}")


if __name__ == "__main__":
    main()
