"""The law zoo: scaling datasets simulated from published law families, for judging lawforge on
data no rule was shaped on.

Each task is drawn from a seed: a family (below, each with its citation), constants drawn from
ranges around the published ones (each group its own), a design (a grid, IsoFLOP ladders, an
over-training ladder, an irregular sweep), multiplicative noise of 0.3% to 3%, and in a quarter
of the tasks two outliers among the train rows. The test rows are the largest scale (the rows at
or above the 80th percentile of the split column: the largest model sizes), so a test row may lie
below the train range along another feature (a large model on few tokens).

Per task, three test R^2 on the same split:
- ``lawforge``: ``discover`` on the task as a user would run it (an in-memory dataset, the test
  rule's column as the validation axis, ``--hyperparameters`` for a learning rate), with
  ``--max-evals``;
- ``oracle``: the generating family refit on train with the project's refit, each group alone,
  started from its true constants (bounded at 0 where the published form's constant is positive);
- ``reference``: the generic reference law (an additive power law in each scale feature with a
  floor, or a ceiling for a rising target, plus a bowl in the log of each hyperparameter whose
  centre moves with the first scale feature), refit the same way. It is built here, from the
  project's refit alone, so that this script runs unchanged on code from before lawforge had a
  reference law of its own.

Summary: the catastrophe rate (test R^2 below 0 where the oracle scores at least 0.5, or a
non-finite test prediction), the median gap to the oracle (oracle minus lawforge), and the share of
tasks where lawforge scores at least the reference - 0.01; then the same by family.

Two sets: ``--suite dev`` (seeds from 0) is for development; ``--suite confirm`` (seeds from
1,000,000 plus 1,000 times ``--attempt``) is run to report, never to choose anything. A
confirmation set that led to a change is no longer unseen: the next attempt draws fresh seeds.

    python benchmarks/zoo.py --suite dev --tasks 30 --max-evals 150 --out zoo_dev.jsonl [--set selection.reference=true]
    python benchmarks/zoo.py --suite confirm --attempt 0 --tasks 100 --max-evals 150 --out zoo_confirm0.jsonl

Run it on another checkout with ``PYTHONPATH=/path/to/checkout python benchmarks/zoo.py ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Family:
    name: str
    citation: str
    law: str                       # lawforge law text over the features and the constants
    ranges: dict                   # constant -> (low, high, "log" | "lin")
    features: list                 # column names
    designs: tuple                 # the designs it is drawn with
    hyper: tuple = ()              # hyperparameter columns
    rising: bool = False           # the target rises with scale (an accuracy)
    split: str = "N"               # the column whose largest values are held out
    fixed: dict = field(default_factory=dict)   # constants fixed across groups


FAMILIES = [
    Family("chinchilla", "Hoffmann et al. 2022, Training Compute-Optimal LLMs, Eq. 2 (approach 3)",
           "E0 + A/N**a + B/D**b",
           {"E0": (1.5, 2.5, "lin"), "A": (200, 800, "log"), "a": (0.28, 0.4, "lin"), "B": (200, 2000, "log"),
            "b": (0.25, 0.37, "lin")}, ["N", "D"], ("grid", "isoflop", "overtrain", "irregular")),
    Family("data_power", "Hestness et al. 2017, Deep Learning Scaling is Predictable; Kaplan et al. 2020, L(D)",
           "E0 + B/D**b", {"E0": (1.0, 3.0, "lin"), "B": (50, 500, "log"), "b": (0.2, 0.45, "lin")},
           ["D"], ("sweep",), split="D"),
    Family("kaplan_nd", "Kaplan et al. 2020, Scaling Laws for Neural Language Models, Eq. 1.5",
           "((Nc/N)**(aN/aD) + Dc/D)**aD",
           {"Nc": (3e13, 2e14, "log"), "Dc": (2e13, 1e14, "log"), "aN": (0.06, 0.09, "lin"), "aD": (0.08, 0.11, "lin")},
           ["N", "D"], ("grid", "isoflop", "overtrain", "irregular")),
    Family("broken_power", "Caballero et al. 2023, Broken Neural Scaling Laws, Eq. 1 (one break)",
           "a0 + b0*D**(-c0)*(1 + (D/d1)**(1/f1))**(-c1*f1)",
           {"a0": (0.5, 2.0, "lin"), "b0": (5, 50, "log"), "c0": (0.05, 0.2, "lin"), "c1": (0.15, 0.4, "lin"),
            "d1": (1e7, 1e8, "log"), "f1": (0.3, 1.0, "lin")}, ["D"], ("sweep",), split="D"),
    Family("lr_bowl", "Porian et al. 2024 and DeepSeek-AI 2024: a loss bowl in log learning rate whose optimum "
           "falls with model size", "E0 + A/N**a + B/D**b + k*(log(lr) - m0 + g*log(N))**2",
           {"E0": (1.5, 2.5, "lin"), "A": (200, 800, "log"), "a": (0.28, 0.4, "lin"), "B": (200, 2000, "log"),
            "b": (0.25, 0.37, "lin"), "k": (0.01, 0.04, "log"), "g": (0.15, 0.35, "lin"), "m0": (-2.5, 0.5, "lin")},
           ["N", "D", "lr"], ("lr_grid",), hyper=("lr",)),
    Family("sigmoid_compute", "Ruan et al. 2024, Observational Scaling Laws; Owen 2024: a sigmoid in log compute",
           "lo + (hi - lo)/(1 + (C0/C)**k)",
           {"lo": (0.0, 0.25, "lin"), "hi": (0.75, 0.95, "lin"), "C0": (1e21, 1e23, "log"), "k": (0.4, 1.2, "lin")},
           ["C"], ("sweep_c",), rising=True, split="C"),
    Family("data_constrained", "Muennighoff et al. 2023, Scaling Data-Constrained Language Models, Eq. 5",
           "E0 + A/N**a + B/(U + U*Rs*(1 - exp(-(D/U - 1)/Rs)))**b",
           {"E0": (1.5, 2.5, "lin"), "A": (200, 800, "log"), "a": (0.28, 0.4, "lin"), "B": (200, 2000, "log"),
            "b": (0.25, 0.37, "lin"), "Rs": (5, 30, "log")}, ["N", "D", "U"], ("epochs",)),
    Family("moe_clark", "Clark et al. 2022, Unified Scaling Laws for Routed Language Models, Eq. 7",
           "exp(d0 + a1*log(N) + b1*log(X) + c1*log(N)*log(X))",
           {"d0": (2.2, 2.8, "lin"), "a1": (-0.09, -0.06, "lin"), "b1": (-0.1, -0.05, "lin"), "c1": (0.001, 0.002, "lin")},
           ["N", "X"], ("experts",)),
    Family("parscale", "Chen et al. 2025, Parallel Scaling Law for Language Models, L(N, P)",
           "E0 + (A/(N*(k*log(P) + 1)))**a",
           {"E0": (0.7, 1.5, "lin"), "A": (1e7, 2e8, "log"), "k": (0.2, 0.5, "lin"), "a": (0.15, 0.3, "lin")},
           ["N", "P"], ("streams",)),
    Family("rectified_sft", "Lin et al. 2024, Selecting LLM to Fine-tune via Rectified Scaling Law",
           "E0 + B/(Dl + D**b)", {"E0": (0.5, 1.5, "lin"), "B": (20, 200, "log"), "Dl": (10, 300, "log"),
                                   "b": (0.3, 0.6, "lin")}, ["D"], ("sweep_small",), split="D"),
    Family("kaplan_ns", "Kaplan et al. 2020, Scaling Laws for Neural Language Models, Eq. 1.6 (L(N, S))",
           "(Nc/N)**aN + (Sc/S)**aS",
           {"Nc": (3e13, 2e14, "log"), "aN": (0.06, 0.09, "lin"), "Sc": (1e3, 5e3, "log"), "aS": (0.6, 0.9, "lin")},
           ["N", "S"], ("steps",)),
]
BY_NAME = {f.name: f for f in FAMILIES}


def _draw(rng, ranges: dict) -> dict:
    out = {}
    for k, (lo, hi, kind) in ranges.items():
        out[k] = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if kind == "log" else float(rng.uniform(lo, hi))
    return out


def _design(rng, kind: str) -> pd.DataFrame:
    """The design's feature rows (no target)."""
    if kind == "grid":
        N = np.geomspace(rng.uniform(1e7, 3e7), rng.uniform(2e9, 8e9), int(rng.integers(5, 8)))
        D = np.geomspace(rng.uniform(1e9, 4e9), rng.uniform(1e11, 4e11), int(rng.integers(4, 7)))
        g = np.meshgrid(N, D, indexing="ij")
        return pd.DataFrame({"N": g[0].ravel(), "D": g[1].ravel()})
    if kind == "isoflop":
        rows = []
        for C in np.geomspace(1e17, 1e17 * 10 ** rng.uniform(2.5, 3.5), int(rng.integers(4, 7))):
            nopt = np.sqrt(C / 120)
            for N in nopt * np.geomspace(1 / 8, 8, int(rng.integers(5, 8))):
                rows.append({"N": N, "D": C / (6 * N)})
        return pd.DataFrame(rows)
    if kind == "overtrain":
        rows = [{"N": N, "D": r * N} for N in np.geomspace(2e7, 10 ** rng.uniform(9.3, 9.9), int(rng.integers(5, 8)))
                for r in (5, 10, 20, 40, 80, 160, 320)[: int(rng.integers(4, 8))]]
        return pd.DataFrame(rows)
    if kind == "irregular":
        n = int(rng.integers(25, 60))
        return pd.DataFrame({"N": np.exp(rng.uniform(np.log(1e7), np.log(5e9), n)),
                             "D": np.exp(rng.uniform(np.log(1e9), np.log(5e11), n))})
    if kind == "sweep":
        n = int(rng.integers(12, 30))
        return pd.DataFrame({"D": np.sort(np.exp(rng.uniform(np.log(1e6), np.log(1e10), n)))})
    if kind == "sweep_small":
        n = int(rng.integers(10, 20))
        return pd.DataFrame({"D": np.geomspace(200, 10 ** rng.uniform(5.5, 6.5), n) * np.exp(rng.normal(0, 0.05, n))})
    if kind == "lr_grid":
        N = np.geomspace(3e7, rng.uniform(2e9, 6e9), int(rng.integers(4, 6)))
        rows = []
        for n in N:
            for r in (10, 20, 40):
                for lr in np.geomspace(1e-4, 3e-2, int(rng.integers(5, 8))):
                    rows.append({"N": n, "D": r * n, "lr": lr})
        return pd.DataFrame(rows)
    if kind == "epochs":
        rows = [{"N": N, "U": U, "D": U * e} for N in np.geomspace(1e8, 10 ** rng.uniform(9.3, 9.8), 5)
                for U in np.geomspace(1e9, 1e11, 3) for e in (1, 2, 4, 8, 16, 32)[: int(rng.integers(4, 7))]]
        return pd.DataFrame(rows)
    if kind == "experts":
        rows = [{"N": N, "X": float(x)} for N in np.geomspace(2e7, 10 ** rng.uniform(9.2, 9.8), int(rng.integers(5, 7)))
                for x in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)[: int(rng.integers(6, 11))]]
        return pd.DataFrame(rows)
    if kind == "streams":
        rows = [{"N": N * (1 + 0.004 * P), "P": float(P)}
                for N in np.geomspace(5e8, 10 ** rng.uniform(9.5, 9.9), 6) for P in (1, 2, 4, 8)]
        return pd.DataFrame(rows)
    if kind == "steps":
        rows = [{"N": N, "S": S} for N in np.geomspace(1e6, 10 ** rng.uniform(8.5, 9.3), int(rng.integers(5, 8)))
                for S in np.geomspace(1e3, 10 ** rng.uniform(5, 5.5), int(rng.integers(5, 9)))]
        return pd.DataFrame(rows)
    if kind == "sweep_c":
        n = int(rng.integers(20, 50))
        return pd.DataFrame({"C": np.sort(np.exp(rng.uniform(np.log(1e19), np.log(1e25), n)))})
    raise ValueError(kind)


@dataclass
class Task:
    seed: int
    family: str
    design: str
    groups: int
    noise: float
    outliers: int
    constants: dict      # group -> constants
    train: pd.DataFrame
    test: pd.DataFrame


def make_task(seed: int) -> Task:
    """The task of ``seed`` (the same on every machine and every version of the code)."""
    from lawforge.laws.law import law_from_text

    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    fam = FAMILIES[seed % len(FAMILIES)]          # every family equally often
    design = fam.designs[int(rng.integers(len(fam.designs)))]
    n_groups = int(rng.choice([1, 1, 2, 3]))
    noise = float(np.exp(rng.uniform(np.log(0.003), np.log(0.03))))
    outliers = 2 if rng.random() < 0.25 else 0
    X = _design(rng, design)
    law = law_from_text(fam.law, {c: c for c in fam.features}, ["y"])
    frames, constants = [], {}
    for gi in range(n_groups):
        c = _draw(rng, fam.ranges)
        g = f"g{gi}"
        constants[g] = c
        y = law.predict({k: X[k].to_numpy(float) for k in fam.features}, c)[:, 0]
        df = X.copy()
        df["group"] = g
        df["y"] = y * np.exp(rng.normal(0, noise, len(df)))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    s = df[fam.split]
    cut = float(np.quantile(s, 0.8))      # the largest fifth (or so) of the scale held out
    test = df[s >= cut].reset_index(drop=True)
    train = df[s < cut].reset_index(drop=True)
    if outliers:
        idx = rng.choice(len(train), outliers, replace=False)
        train.loc[idx, "y"] *= 1 + rng.choice([-1, 1], outliers) * rng.uniform(0.05, 0.1, outliers)
    return Task(seed, fam.name, design, n_groups, noise, outliers, constants, train, test)


def dataset_of(task: Task):
    from lawforge.datasets.byo import frame_dataset

    fam = BY_NAME[task.family]
    return frame_dataset(task.train, task.test, fam.features, ["y"], "group" if task.groups > 1 else None,
                         validation_axis=fam.split, hyperparameters=list(fam.hyper), name=f"zoo_{task.seed}")


def reference_law_text(fam: Family, train: pd.DataFrame) -> tuple[str, dict]:
    """The generic reference law for the family's features (not its form): per scale feature
    ``a_i*(x/x_ref)**(-b_i)`` with ``a_i, b_i >= 0`` beside a free floor (less them, for a rising
    target), plus ``k_j*(log(h/h_ref) - m_j - g_j*log(x_1/x_1ref))**2`` per hyperparameter."""
    scale = [c for c in fam.features if c not in fam.hyper]
    terms, params = [], {"c0": {"init": float(train["y"].median())}}
    for i, c in enumerate(scale):
        ref = float(np.exp(np.log(train[c]).mean()))
        terms.append(f"a{i}*({c}/{ref:.6g})**(-b{i})")
        params[f"a{i}"] = {"init": 0.1 * float(np.ptp(train["y"])) + 1e-3, "bounds": [0, None]}
        params[f"b{i}"] = {"init": 0.3, "bounds": [0, 3]}
    text = "c0 " + ("- " if fam.rising else "+ ") + (" - " if fam.rising else " + ").join(terms)
    x1 = scale[0]
    x1ref = float(np.exp(np.log(train[x1]).mean()))
    for j, h in enumerate(fam.hyper):
        href = float(np.exp(np.log(train[h]).mean()))
        text += f" + k{j}*(log({h}/{href:.6g}) - m{j} - g{j}*log({x1}/{x1ref:.6g}))**2"
        params.update({f"k{j}": {"init": 0.01, "bounds": [0, None]}, f"m{j}": {"init": 0.0},
                       f"g{j}": {"init": 0.0}})
    return text, params


def _refit_r2(text: str, params, task: Task, restarts: int) -> float | None:
    """Test R^2 of ``text`` refit on the task's train rows, or None if a fit fails. ``params``:
    the law's parameter specs, or a function group -> specs (each group then fitted alone)."""
    from lawforge.fitting.lm import fit_split, predict
    from lawforge.laws.law import law_from_text
    from lawforge.laws.metrics import compute_metrics

    fam = BY_NAME[task.family]
    ds = dataset_of(task)
    per_group = callable(params)
    fitted, law = {}, None
    for g in (ds.train.group_names if per_group else [None]):
        law = law_from_text(text, {c: c for c in fam.features}, ["y"], params(g) if per_group else params)
        split = ds.train.select(ds.train.groups == g) if per_group else ds.train
        fit = fit_split(law, split, restarts=restarts, seed=0)
        if not fit.ok:
            return None
        fitted.update(fit.params())
    with np.errstate(all="ignore"):
        return float(compute_metrics(ds.test.y, predict(law, fitted, ds.test)).r2)


def oracle_specs(task: Task):
    """Group -> the family's constants started at that group's true values, bounded to >= 0 where
    the family's range is positive (as the published forms state)."""
    fam = BY_NAME[task.family]
    names = {g: g for g in task.constants} if task.groups > 1 else {"all": "g0"}

    def specs(group):
        true = task.constants[names[group]]
        return {k: ({"init": v, "bounds": [0, None]} if fam.ranges[k][0] > 0 else {"init": v})
                for k, v in true.items()}
    return specs


def _settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        low = value.strip().lower()
        out[key.strip()] = True if low == "true" else False if low == "false" else float(value)
    return out


def run_task(task: Task, max_evals: int, seed: int, restarts: int = 16, settings: dict | None = None) -> dict:
    from lawforge.runs.discover import discover
    from lawforge.search.settings import SearchConfig

    fam = BY_NAME[task.family]
    oracle = _refit_r2(fam.law, oracle_specs(task), task, restarts)
    ref_text, ref_params = reference_law_text(fam, task.train)
    reference = _refit_r2(ref_text, ref_params, task, restarts)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig.build(max_evals=max_evals, seed=seed, workers=1, **(settings or {}))
        s = discover(dataset_of(task), cfg, Path(tmp) / "run", report=False)
    raw = s.get("test_r2_raw")
    nonfinite = raw is None or not math.isfinite(raw)
    return {"seed": task.seed, "family": task.family, "design": task.design, "groups": task.groups,
            "noise": round(task.noise, 4), "outliers": task.outliers, "train_rows": len(task.train),
            "test_rows": len(task.test), "lawforge": s["test_r2"], "nonfinite": nonfinite, "law": s["law"],
            "n_params": s["n_params"], "oracle": oracle, "reference": reference,
            "incumbent": s.get("incumbent"), "seconds": round(time.perf_counter() - t0, 1)}


def summarise(rows: list[dict]) -> dict:
    def figures(rs):
        cat = [r for r in rs if r["nonfinite"] or ((r["lawforge"] if r["lawforge"] is not None else -1) < 0
                                                  and (r["oracle"] or -1) >= 0.5)]
        gaps = [(r["oracle"] - r["lawforge"]) for r in rs if r["oracle"] is not None and r["lawforge"] is not None]
        vs_ref = [r for r in rs if r["reference"] is None or (r["lawforge"] is not None
                                                              and r["lawforge"] >= r["reference"] - 0.01)]
        return {"tasks": len(rs), "catastrophes": len(cat), "catastrophe_rate": round(len(cat) / max(len(rs), 1), 4),
                "median_gap": round(float(np.median(gaps)), 4) if gaps else None,
                "at_least_reference": round(len(vs_ref) / max(len(rs), 1), 4),
                "median_lawforge": round(float(np.median([r["lawforge"] for r in rs])), 4),
                "median_oracle": round(float(np.median([r["oracle"] for r in rs if r["oracle"] is not None])), 4),
                "median_reference": round(float(np.median([r["reference"] for r in rs
                                                           if r["reference"] is not None] or [np.nan])), 4)}
    out = {"all": figures(rows)}
    for fam in sorted({r["family"] for r in rows}):
        out[fam] = figures([r for r in rows if r["family"] == fam])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=("dev", "confirm"), default="dev")
    ap.add_argument("--attempt", type=int, default=0, help="confirmation attempt (fresh seeds for each)")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--first", type=int, default=0, help="skip this many tasks of the set")
    ap.add_argument("--max-evals", type=int, default=150)
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--out", help="JSON lines: one row per task, then the summary")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a search setting for lawforge's runs (selection.reference=true); repeatable")
    args = ap.parse_args(argv)
    base = 0 if args.suite == "dev" else 1_000_000 + 1000 * args.attempt
    rows = []
    out = open(args.out, "a") if args.out else None
    for i in range(args.first, args.first + args.tasks):
        task = make_task(base + i)
        try:
            row = run_task(task, args.max_evals, args.search_seed, settings=_settings(args.suitetings))
        except Exception as exc:   # a crash is a catastrophe, recorded as such
            row = {"seed": task.seed, "family": task.family, "design": task.design, "groups": task.groups,
                   "lawforge": -1.0, "nonfinite": True, "oracle": None, "reference": None,
                   "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()
    summary = summarise(rows)
    print(json.dumps({"summary": summary, "set": args.suite, "attempt": args.attempt, "max_evals": args.max_evals}))
    print(f"{'family':18s} {'tasks':>5s} {'catastr':>7s} {'gap':>7s} {'>=ref':>6s} {'lawforge':>8s} {'oracle':>7s} "
          f"{'ref':>7s}")
    for k, v in summary.items():
        print(f"{k:18s} {v['tasks']:5d} {v['catastrophes']:7d} {v['median_gap'] if v['median_gap'] is not None else float('nan'):7.4f} "
              f"{v['at_least_reference']:6.2f} {v['median_lawforge']:8.4f} {v['median_oracle']:7.4f} {v['median_reference']:7.4f}")
    if out:
        out.write(json.dumps({"summary": summary, "set": args.suite, "attempt": args.attempt,
                              "max_evals": args.max_evals}) + "\n")
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
