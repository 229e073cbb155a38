"""Unit covariance (the contract's opt-in unit rule, ``checks.unit_covariance``): can a change
of a feature's units, x -> k*x, be absorbed by the law's fitted constants? Printed is the
relative residual per class of features rescaled together (``contract.unit_residuals``): about
1e-11 where the law is covariant, flagged above ``contract.UNIT_TOL``.

    python benchmarks/unit_covariance.py cards            # every card's human law, refit on train
    python benchmarks/unit_covariance.py runs DIR [DIR]   # the chosen law (law.json) of each run folder

See docs/history.md ("unit covariance") and docs/rules.md ("Retired")."""
import glob
import json
import os
import sys

from lawforge.datasets import bundled_card_paths, load_dataset
from lawforge.fitting.scoring import score_human
from lawforge.laws.law import law_from_text
from lawforge.search.contract import UNIT_TOL, unit_residuals


def _row(res: dict) -> str:
    return " ".join(f"{k}={v:.0e}" for k, v in res.items())


def cards() -> None:
    for name in bundled_card_paths():
        try:
            ds = load_dataset(name)
        except Exception:   # a card whose data is not in the data directory
            continue
        for h in ds.card.human_laws:
            sc = score_human(ds, "refit", law_name=h.name)
            res = unit_residuals(sc.law, sc.params, ds.train, ds.card)
            bad = any(v > UNIT_TOL for v in res.values())
            print(f"{'BAD' if bad else 'ok ':3s} {name:28s} {h.name:24s} {_row(res)}", flush=True)


def runs(roots: list[str]) -> None:
    cache: dict = {}
    for root in roots:
        for f in sorted(glob.glob(f"{root}/**/law.json", recursive=True)):
            run = os.path.dirname(f)
            name = os.path.basename(run).rsplit("-s", 1)[0]
            try:
                ds = cache[name] if name in cache else cache.setdefault(name, load_dataset(name))
            except Exception:
                continue
            lj = json.load(open(f))
            law = law_from_text(lj["expression"], ds.card.variables, ds.card.target_columns)
            res = unit_residuals(law, lj["params"], ds.train, ds.card)
            mp = os.path.join(run, "metrics.json")
            r2 = json.load(open(mp)).get("test_r2", float("nan")) if os.path.exists(mp) else float("nan")
            bad = any(v > UNIT_TOL for v in res.values())
            print(f"{'BAD' if bad else 'ok ':3s} {r2:8.4f} {run:45s} {_row(res)}  {lj['expression'][:90]}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "runs":
        runs(sys.argv[2:])
    else:
        cards()
