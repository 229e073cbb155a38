"""Does batching change fits? Candidate forms from real search logs, each fitted alone (the
per-form path, :func:`fit_split`) and in batches of forms (:func:`fit_many`), compared by best
loss, with the time each path took, side by side in one run.

    python benchmarks/fit_agreement.py [--forms 500] [--batch 16] [--restarts 12] [--max-iter 60]
                                       [--runs RUN_DIR ...] [--json]

Without ``--runs``, short discoveries on four datasets (synthetic_multigroup, and sft, moe and
domain_mixture from $LAWFORGE_DATA when there) write the logs first. Each form is fitted on its
run's own search fit split with the search's settings (restarts, iterations, the per-form seed)
unless told otherwise. Agreement: the batched best loss is within 1e-6 relative of the per-form
best loss, or lower; the forms where it is higher are listed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np

from lawforge.datasets import data_available, get_card, load_dataset
from lawforge.errors import LawforgeError
from lawforge.fitting.lm import FitJob, FitResult, fit_many, fit_split
from lawforge.laws.expr import parse_expression
from lawforge.runs.discover import discover
from lawforge.runs.folder import RunFolder
from lawforge.search.prepare import make_context
from lawforge.search.settings import SearchConfig, config_of_run
from lawforge.search.space import to_law
from lawforge.datasets.loader import SealedDataset

LOG_RUNS = [("synthetic_multigroup", 0), ("sft_scaling_law", 1), ("moe_scaling_law", 0),
            ("domain_mixture_scaling_law", 2)]


def make_logs(data_dir, per_run: int) -> list[str]:
    out = []
    for name, seed in LOG_RUNS:
        if not name.startswith("synthetic") and not data_available(get_card(name), data_dir):
            print(f"note: no data for {name}; skipped", file=sys.stderr)
            continue
        d = tempfile.mkdtemp(prefix=f"lawforge-agree-{name}-")
        cfg = SearchConfig.build(max_evals=per_run, seed=seed, workers=1, top_k=0, **{"selection.rule": "score"})
        discover(load_dataset(name, data_dir), cfg, d, report=False)
        out.append(d)
    return out


def forms_of(run_dir: str, data_dir, limit: int) -> list[tuple[str, object, object]]:
    """(form text, law, search fit split) for the run's logged candidates that make a law."""
    run = RunFolder.open(run_dir)
    conf = run.read_json("config.json")
    cfg = config_of_run(conf)
    ds = load_dataset(conf["dataset"], data_dir)
    ctx = make_context(SealedDataset(ds, cfg.seed), cfg)
    out = []
    for rec in run.read_candidates()[:limit]:
        try:
            law = to_law(parse_expression(rec["expr"], None, what="candidate"), ctx.variables, ctx.targets,
                         data=ctx.fit if ctx.scale_starts else None)
        except LawforgeError:
            continue
        out.append((rec["expr"], law, ctx.fit))
    return out


def best_loss(res) -> float:
    return res.total_loss if isinstance(res, FitResult) and res.ok else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forms", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--restarts", type=int, default=12)
    ap.add_argument("--max-iter", type=int, default=60)
    ap.add_argument("--runs", nargs="*", help="run folders whose candidate logs to use")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    runs = args.runs or make_logs(args.data_dir, -(-args.forms // len(LOG_RUNS)) + 10)
    per_run = -(-args.forms // len(runs))
    forms = [f for r in runs for f in forms_of(r, args.data_dir, per_run)][:args.forms]
    seed = [zlib.crc32(text.encode()) for text, _, _ in forms]
    t0 = time.perf_counter()
    alone = []
    for (text, law, split), s in zip(forms, seed):
        try:
            alone.append(fit_split(law, split, restarts=args.restarts, seed=s, max_iter=args.max_iter))
        except (LawforgeError, RuntimeError) as exc:
            alone.append(exc)
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = []
    for i in range(0, len(forms), args.batch):
        jobs = [FitJob(law, split, args.restarts, s) for (_t, law, split), s in
                zip(forms[i:i + args.batch], seed[i:i + args.batch])]
        batched += fit_many(jobs, max_iter=args.max_iter, errors="return")
    t_batch = time.perf_counter() - t0
    rows, agree, better, worse = [], 0, 0, []
    for (text, _law, _split), a, b in zip(forms, alone, batched):
        la, lb = best_loss(a), best_loss(b)
        ok = (np.isnan(la) and np.isnan(lb)) or lb <= la * (1 + 1e-6) + 1e-300 or (np.isnan(la) and not np.isnan(lb))
        agree += bool(ok)
        better += bool(lb < la * (1 - 1e-6))
        if not ok:
            worse.append({"form": text, "per_form_loss": la, "batched_loss": lb})
        rows.append({"form": text, "per_form_loss": la, "batched_loss": lb})
    n = len(rows)
    summary = {"forms": n, "agree_or_better": agree, "share": agree / max(n, 1), "batched_better": better,
               "batched_worse": worse, "per_form_seconds": round(t_alone, 2), "batched_seconds": round(t_batch, 2),
               "speedup": round(t_alone / t_batch, 2), "batch": args.batch, "restarts": args.restarts,
               "max_iter": args.max_iter}
    if args.json:
        print(json.dumps(summary, default=float))
        return
    print(f"{n} forms, {args.restarts} restarts, {args.max_iter} iterations, batches of {args.batch}")
    print(f"batched best loss within 1e-6 of the per-form one or lower: {agree}/{n} ({100 * agree / max(n, 1):.1f}%); "
          f"lower by more than 1e-6: {better}")
    print(f"fit time: per-form {t_alone:.1f}s, batched {t_batch:.1f}s (x{t_alone / t_batch:.2f})")
    for w in worse:
        print(f"  higher: {w['form']}: per-form {w['per_form_loss']:.8g}, batched {w['batched_loss']:.8g}")


if __name__ == "__main__":
    main()
