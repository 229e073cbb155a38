"""Discovery on the 8 SLDBench tasks: lawforge (no LLM) beside the human law and SLDAgent.

    python benchmarks/sldbench.py [--budget 10m] [--seeds 3] [--workers 2] [--tasks a,b] [--inner] [--json]

Runs ``lawforge campaign`` over the tasks x seeds (native engine, CPU, no LLM; one run per
worker process, ``--workers`` of them side by side, each within the budget) and reports the test
R2 (mean and best over seeds), wall time and evaluations per task, beside the human law
(published constants and lawforge's refit, computed here) and SLDAgent + GPT-5 (mean of 5 runs
and best run, from the benchmark's published leaderboard after its leakage fix).

``--inner`` runs the same protocol on each task's inner holdout, made from train alone (train's
largest-scale rows, its validation carve, play the test split): the way to compare search and
selection settings without reading the real test split. SLDAgent's figures do not apply there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from lawforge.datasets import load_dataset
from lawforge.errors import ConfigError
from lawforge.datasets.loader import holdout_dataset
from lawforge.fitting.scoring import score_human
from lawforge.runs.campaign import run_campaign
from lawforge.outputs import run_hooks
from lawforge.search.settings import parse_budget
from lawforge.search.settings import parse_settings

TASKS = ["parallel_scaling_law", "vocab_scaling_law", "sft_scaling_law", "domain_mixture_scaling_law",
         "moe_scaling_law", "data_constrained_scaling_law", "lr_bsz_scaling_law", "easy_question_scaling_law"]
# Published leaderboard (test R2), ../shared/docs/sldbench-tasks.md: SLDAgent + GPT-5.
SLDAGENT = {"parallel_scaling_law": (0.9998, 0.99996), "vocab_scaling_law": (0.9874, 0.9882),
            "sft_scaling_law": (0.9930, 0.9932), "domain_mixture_scaling_law": (0.9882, 0.9902),
            "moe_scaling_law": (0.7734, 0.7963), "data_constrained_scaling_law": (0.9440, 0.9757),
            "lr_bsz_scaling_law": (0.6045, 0.8479), "easy_question_scaling_law": (-0.3050, 0.2804)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--budget-for", action="append", default=[], metavar="TASK=BUDGET",
                    help="a different budget for one task, e.g. --budget-for lr_bsz_scaling_law=10m")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (seeds are SEED_START..+SEEDS-1)")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (one process each)")
    ap.add_argument("--tasks", help="comma-separated subset")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--out", help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--inner", action="store_true", help="score on the inner holdout of train, not on test")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a search setting (lawforge settings lists them), e.g. --set validation.folds=1 --set selection.rule=score")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    budget = parse_budget(args.budget)
    tasks = args.tasks.split(",") if args.tasks else TASKS
    budgets = {}
    for kv in args.budget_for:
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit(f"--budget-for {kv!r}: expected TASK=BUDGET, e.g. lr_bsz_scaling_law=10m")
        budgets[k] = parse_budget(v)
    try:
        search = parse_settings(args.set)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    out_root = args.out or tempfile.mkdtemp(prefix="lawforge-sldbench-")

    def on_row(r):
        if not args.json:
            print(f"  {r['dataset']} seed {r['seed']}: test R2 {r.get('test_r2')} (val {r.get('val_r2')}) "
                  f"{r.get('evaluations')} evals {r.get('seconds')}s  {r.get('law') or r['status']}",
                  file=sys.stderr, flush=True)

    camp = run_campaign(tasks, args.seeds, out_root, budget_s=budget, data_dir=args.data_dir, workers=args.workers,
                        report=False, on_row=on_row, inner=args.inner,
                        search=search or None, seed_start=args.seed_start, budgets=budgets or None,
                        hooks=run_hooks(report=False))
    rows = []
    nan = float("nan")
    for task in tasks:
        ds = load_dataset(task, args.data_dir)
        if args.inner:
            ds = holdout_dataset(ds)
        pub = score_human(ds, "published", data_dir=args.data_dir).test.r2
        refit = score_human(ds, "refit", data_dir=args.data_dir).test.r2
        runs = [r for r in camp["rows"] if r["dataset"] == task]
        bad = [r for r in runs if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"{task}: run failed: {bad[0]['status']}")
        r2 = [r["test_r2"] for r in runs]
        rows.append({"task": task, "lawforge_mean": float(np.mean(r2)), "lawforge_best": float(np.max(r2)),
                     "human_published": pub, "human_refit": refit,
                     "sldagent_mean": nan if args.inner else SLDAGENT[task][0],
                     "sldagent_best": nan if args.inner else SLDAGENT[task][1],
                     "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
                     "evaluations_mean": float(np.mean([r["evaluations"] for r in runs])),
                     "laws": [r["law"] for r in runs], "test_r2": r2, "val_r2": [r["val_r2"] for r in runs],
                     "at_or_above_human": bool(np.mean(r2) >= pub)})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("lawforge_mean", "lawforge_best", "human_published", "human_refit", "sldagent_mean", "sldagent_best")}
    result = {"inner": args.inner, "search": search, "budget_s": budget, "budgets": budgets, "seeds": args.seeds, "workers": args.workers, "tasks": rows, "mean": mean,
              "runs_dir": out_root}
    if args.json:
        print(json.dumps(result))
        return
    hdr = f"{'task':30s} {'lf mean':>8s} {'lf best':>8s} {'human':>8s} {'h refit':>8s} {'agent':>8s} {'a best':>8s} {'sec':>6s} {'evals':>6s}"
    print(hdr)
    for r in rows:
        print(f"{r['task']:30s} {r['lawforge_mean']:8.4f} {r['lawforge_best']:8.4f} {r['human_published']:8.4f} "
              f"{r['human_refit']:8.4f} {r['sldagent_mean']:8.4f} {r['sldagent_best']:8.4f} "
              f"{r['seconds_mean']:6.0f} {r['evaluations_mean']:6.0f}")
    print(f"{'MEAN':30s} {mean['lawforge_mean']:8.4f} {mean['lawforge_best']:8.4f} {mean['human_published']:8.4f} "
          f"{mean['human_refit']:8.4f} {mean['sldagent_mean']:8.4f} {mean['sldagent_best']:8.4f}")
    print(f"run folders: {out_root}")


if __name__ == "__main__":
    main()
