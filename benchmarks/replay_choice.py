"""Replay the final choice of finished runs with other selection settings, on their logged candidates.

    python benchmarks/replay_choice.py RUNS_DIR [--set selection.parsimony_choice=0.1 ...] [--json]

The search does not read the ``selection.*`` settings, so a run's ``candidates.jsonl`` is what the
same search would have produced under any of them. This re-runs ``lawforge.search.choose.choose``
(the code ``discover`` runs after the search; no deadline) on those candidates twice, with the
run's own settings and with them overridden by ``--set``, refits the choice on train and scores it
on the run's test split (the real one, or the inner holdout of an ``--inner`` run). The first
replay checks the replay against the law the run recorded; the second gives the figure of the
other setting without searching again.

Use it to report a selection setting already chosen on the inner holdouts
(``benchmarks/selection_rules.py``) on the runs of the real benchmark. It is not a way to choose
one: a setting picked by its replayed real-test score would be tuned on the test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import sympy as sp

from lawforge.datasets import load_dataset
from lawforge.datasets.loader import SealedDataset, holdout_dataset
from lawforge.errors import ConfigError
from lawforge.runs.discover import test_metrics
from lawforge.search import space as S
from lawforge.search.choose import choose
from lawforge.search.engine import Member
from lawforge.search.prepare import final_train, make_context
from lawforge.search.settings import SearchConfig, config_of_run, parse_settings


def _with(cfg: SearchConfig, overrides: dict) -> SearchConfig:
    cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection))
    for k, v in overrides.items():
        cfg.set(k, v)
    return cfg


def replay(run: Path, overrides: dict) -> dict:
    """The run's recorded law and test R2 beside the replayed choice with its own settings and
    with ``overrides`` (only ``selection.*`` settings: the search is not replayed)."""
    bad = [k for k in overrides if not k.startswith("selection.")]
    if bad:
        raise SystemExit(f"--set {bad[0]}: only selection.* settings can be replayed (the search reads the others)")
    conf = json.loads((run / "config.json").read_text())
    cfg = config_of_run(conf)
    ds = load_dataset(conf["dataset"], conf.get("data_dir"))
    if "inner holdout" in str(conf.get("data_origin", "")):
        ds = holdout_dataset(ds)
    sealed = SealedDataset(ds, cfg.seed)
    ctx = make_context(sealed, cfg)
    train = final_train(sealed, cfg)
    members = []
    for line in open(run / "candidates.jsonl"):
        rec = json.loads(line)
        members.append(Member(S.from_tree(rec["tree"]), rec["key"], rec, rec.get("origin", "")))
    full = sealed.unseal()
    metrics = json.loads((run / "metrics.json").read_text())
    out = {"dataset": conf["dataset"], "seed": cfg.seed, "run": run.name,
           "recorded": {"law": json.loads((run / "law.json").read_text()).get("form"), "test_r2": metrics.get("test_r2")}}
    for name, c in (("own", cfg), ("replay", _with(cfg, overrides))):
        ch = choose(members, ctx, ds.card, train, c)
        tm = test_metrics(ch.law, ch.fit.params(), full)
        out[name] = {"law": sp.sstr(ch.member.expr), "test_r2": tm["r2"], "n_params": ch.member.rec["n_params"],
                     "complexity": ch.member.rec["complexity"],
                     "contract": None if ch.contract is None else bool(ch.contract.ok)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", help="a campaign folder (run folders with candidates.jsonl) or one run folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a selection.* setting")
    ap.add_argument("--only", help="comma-separated dataset names")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        overrides = parse_settings(args.set)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    root = Path(args.runs)
    runs = [root] if (root / "candidates.jsonl").exists() else sorted(p.parent for p in root.glob("*/candidates.jsonl"))
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for run in runs:
        conf = json.loads((run / "config.json").read_text())
        if only and conf["dataset"] not in only:
            continue
        row = replay(run, overrides)
        rows.append(row)
        print(f"  {run.name}: recorded {row['recorded']['test_r2']:.4f}  own {row['own']['test_r2']:.4f} "
              f"[c {row['own']['complexity']}]  replay {row['replay']['test_r2']:.4f} [c {row['replay']['complexity']}, "
              f"{row['replay']['n_params']}p, contract {row['replay']['contract']}]  {row['replay']['law']}",
              file=sys.stderr, flush=True)
    if not rows:
        raise SystemExit(f"{args.runs}: no run folders")
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'dataset':32s}{'recorded':>10s}{'own':>10s}{'replay':>10s}{'c own':>7s}{'c repl':>7s}")
    for t in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == t]
        m = {k: float(np.mean([r[k]["test_r2"] for r in sub])) for k in ("recorded", "own", "replay")}
        c = {k: float(np.mean([r[k]["complexity"] for r in sub])) for k in ("own", "replay")}
        print(f"{t:32s}{m['recorded']:10.4f}{m['own']:10.4f}{m['replay']:10.4f}{c['own']:7.1f}{c['replay']:7.1f}")


if __name__ == "__main__":
    main()
