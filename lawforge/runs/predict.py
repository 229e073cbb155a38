"""Predictions and allocations from a finished run, with their uncertainty.

    lawforge predict RUN_DIR --at "N=7e10,D=1.4e12" [--group G] [--level 0.9]
    lawforge optimum RUN_DIR --constraint "6*N*D = 1e24" [--over 1e21:1e25]

Three kinds of band, reported side by side:

* **parameter** (``low``/``high``): the chosen law refit on bootstrap resamples of the run's
  final training split (:mod:`lawforge.fitting.bootstrap`, one batched fit);
* **model** (``model_low``/``model_high``): the range of the top laws' predictions (the chosen
  law and the runners-up of ``top_laws.json``, each fitted on the same split);
* **combined** (``combined_low``/``combined_high``): the central interval of every top law's
  bootstrap predictions pooled (each law weighted equally);
* **observed** (``observed_low``/``observed_high``): the combined draws each plus a residual of
  the chosen law on its training rows: where a new run's measured value may land (the other
  bands are about the law's mean, and a measurement carries its own noise).

Beside the chosen law's ``prediction``, ``ensemble`` is the run's model ensemble's point
prediction (``ensemble.json``: the top forms and the card's laws weighted by 1 / validation
NMSE), for runs that wrote one. On the catalogue's inner holdouts it extrapolated better than
the one chosen law (``benchmarks/RESULTS.md``).

The run's data is read again (its card and data folder, as ``lawforge resume`` does); the
training split is rebuilt from the recorded seed, so it is the one the law was fitted on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lawforge.errors import ConfigError, DatasetError, LawforgeError
from lawforge.fitting.bootstrap import RESAMPLES, Bootstrap, bootstrap, interval
from lawforge.fitting.lm import FitJob, FitResult, fit_many, predict
from lawforge.laws.law import Law, law_from_text
from lawforge.laws.optimum import Constraint, minimise, optimum_with_bands, scan_range, try_minimise
from lawforge.runs.folder import CARD, ENSEMBLE, LAW, TOP_LAWS, RunFolder


@dataclass
class RunLaws:
    """A finished run's chosen law and runners-up, fitted on its final training split."""

    run: RunFolder
    train: Any                               # DataSplit
    laws: list[Law]                          # laws[0] is the chosen one
    params: list[dict[str, dict[str, float]]]
    ranks: list[int]
    device: str = "cpu"
    boots: dict = field(default_factory=dict)
    ensemble: list = field(default_factory=list)   # [(law, params, weight)] from ensemble.json

    @property
    def law(self) -> Law:
        return self.laws[0]

    def bootstraps(self, resamples: int, seed: int, top: bool) -> list[Bootstrap]:
        """The bootstrap of the chosen law (``top=False``) or of every top law (paired: the same
        resamples for each), cached."""
        key = (resamples, seed, top)
        if key not in self.boots:
            n = len(self.laws) if top else 1
            self.boots[key] = [bootstrap(self.laws[i], self.train, self.params[i], resamples, seed, device=self.device)
                               for i in range(n)]
        return self.boots[key]


def load_run_laws(run_dir: str | Path, data_dir: str | None = None) -> RunLaws:
    """The run's laws and final training split; a clear error when the run has no law."""
    from lawforge.datasets import load_dataset
    from lawforge.datasets.card import read_card
    from lawforge.datasets.loader import SealedDataset
    from lawforge.fitting.lm import resolve_device
    from lawforge.search.prepare import final_train
    from lawforge.search.settings import config_of_run

    run = RunFolder.open(run_dir)
    if not run.has(LAW):
        raise ConfigError(f"{run.path}: this run has no law yet (no {LAW}); finish it with "
                          f"'lawforge resume {run.path}' first")
    conf = run.config()
    cfg = config_of_run(conf)
    ds = load_dataset(read_card(run.file(CARD)), data_dir or conf.get("data_dir"))
    train = final_train(SealedDataset(ds, cfg.seed), cfg)
    card = ds.card
    lj = run.read_json(LAW)
    laws = [law_from_text(lj["expression"], card.variables, card.target_columns, name="chosen")]
    params = [lj["params"]]
    ranks = [0]
    others = [t for t in run.read_json(TOP_LAWS, []) if not t.get("chosen")]
    extra = []
    for t in others:
        try:
            extra.append((t, law_from_text(t["expression"], card.variables, card.target_columns, name=f"rank{t['rank']}")))
        except LawforgeError:
            continue
    need = [(t, lw) for t, lw in extra if not t.get("params")]
    fits = fit_many([FitJob(lw, train, 8, cfg.seed) for _, lw in need], errors="return") if need else []
    refit = {id(lw): f for (_, lw), f in zip(need, fits)}
    for t, lw in extra:
        p = t.get("params") or (refit[id(lw)].params() if isinstance(refit.get(id(lw)), FitResult)
                                and refit[id(lw)].ok else None)
        if p:
            laws.append(lw)
            params.append(p)
            ranks.append(int(t["rank"]))
    ensemble = []
    for m in run.read_json(ENSEMBLE, {}).get("members", []):
        try:
            ensemble.append((law_from_text(m["expression"], card.variables, card.target_columns), m["params"],
                             float(m["weight"])))
        except (LawforgeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{run.file(ENSEMBLE)}: a member cannot be read ({exc}); rerun the choice with "
                              f"'lawforge resume {run.path}' or delete the file") from None
    return RunLaws(run, train, laws, params, ranks, resolve_device(cfg.fitting.device), ensemble=ensemble)


def final_split(ds, conf: dict):
    """The split a run's chosen law was refit on, rebuilt from the dataset and the run's config."""
    from lawforge.datasets.loader import SealedDataset
    from lawforge.search.prepare import final_train
    from lawforge.search.settings import config_of_run

    cfg = config_of_run(conf)
    return final_train(SealedDataset(ds, cfg.seed), cfg)


def beyond_points(train, axis: str, factors=(10, 100)) -> list[tuple[str, dict[str, float]]]:
    """Points ``factors`` times beyond the largest train value of ``axis`` (the other features at
    their largest train values): what a reader of a scaling law asks next."""
    top = {c: float(np.max(v)) for c, v in train.X.items()}
    return [(f"{k}x", {**top, axis: top[axis] * k}) for k in factors if top[axis] > 0]


def prediction_table(law: Law, params: dict, boot: Bootstrap, train, axis: str, level: float,
                     max_groups: int = 6) -> list[dict]:
    """Rows (group, where, point, prediction, low, high) at :func:`beyond_points`, per group."""
    from lawforge.datasets.loader import DataSplit

    rows = []
    pts = beyond_points(train, axis)
    if not pts:
        return rows
    for g in list(train.group_names)[:max_groups]:
        X = {c: np.array([p[c] for _, p in pts]) for c in train.X}
        split = DataSplit("beyond", X, np.zeros((len(pts), len(law.target_names))), np.full(len(pts), g, dtype=object),
                          [g], list(law.target_names))
        pred = predict(law, params, split)
        lo, hi = interval(boot.predictions(split), level)
        for i, (where, p) in enumerate(pts):
            rows.append({"group": g, "where": where, "point": p, "target": law.target_names[0],
                         "prediction": float(pred[i, 0]), "low": float(lo[i, 0]), "high": float(hi[i, 0])})
    return rows


# ------------------------------------------------------------------------------ points
def parse_points(at: str | None, csv_path: str | None, law: Law) -> pd.DataFrame:
    """Query points from ``--at "N=7e10,D=1.4e12"`` (features by law symbol or column; several
    points separated by ';') or a CSV with a column per feature."""
    col_of = dict(law.variables)
    if (at is None) == (csv_path is None):
        raise ConfigError("give the points with --at \"N=...,D=...\" or --points FILE.csv (one of them)")
    if csv_path is not None:
        try:
            frame = pd.read_csv(csv_path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{csv_path}: cannot read it as CSV ({exc})") from None
        rename = {c: col_of[c] for c in frame.columns if c in col_of and col_of[c] not in frame.columns}
        frame = frame.rename(columns=rename)
        missing = [c for c in col_of.values() if c not in frame.columns]
        if missing:
            raise DatasetError(f"{csv_path}: no column {missing[0]!r} (the law needs {_features(col_of)})")
        return _checked(frame, csv_path)
    rows = []
    for part in [p for p in at.split(";") if p.strip()]:
        row = {}
        for item in [x for x in part.split(",") if x.strip()]:
            if "=" not in item:
                raise ConfigError(f"--at {at!r}: expected NAME=VALUE pairs, got {item.strip()!r}")
            k, v = (s.strip() for s in item.split("=", 1))
            col = col_of.get(k, k)
            if col not in col_of.values():
                raise ConfigError(f"--at: {k!r} is not a feature of the law (features: {_features(col_of)})")
            if col in row:
                raise ConfigError(f"--at {part.strip()!r}: {k} is given twice (points are separated by ';')")
            try:
                row[col] = float(v)
            except ValueError:
                raise ConfigError(f"--at: {k}={v!r} is not a number") from None
        missing = [_features(col_of, only=c) for c in dict.fromkeys(col_of.values()) if c not in row]
        if missing:
            raise ConfigError(f"--at {part.strip()!r}: no value for {', '.join(missing)}")
        rows.append(row)
    return _checked(pd.DataFrame(rows), "--at")


def _features(col_of: dict[str, str], only: str | None = None) -> str:
    """The law's features as a user may name them: each column once, with the law's symbol for
    it where that differs (``sft_data_size (D)``)."""
    out = []
    for c in dict.fromkeys(col_of.values()):
        if only is None or c == only:
            syms = [s for s, cc in col_of.items() if cc == c and s != c]
            out.append(f"{c} ({', '.join(syms)})" if syms else c)
    return ", ".join(out)


def _checked(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    for c in frame.columns:
        v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise DatasetError(f"{where}: column {c!r} has a value that is not a finite number")
    if frame.empty:
        raise DatasetError(f"{where}: no points")
    return frame


def _split(frame: pd.DataFrame, law: Law, group: str):
    from lawforge.datasets.loader import DataSplit

    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in law.variables.values()}
    n = len(frame)
    return DataSplit("query", cols, np.zeros((n, len(law.target_names))), np.full(n, group, dtype=object), [group],
                     list(law.target_names))


def resolve_group(rl: RunLaws, group: str | None) -> str:
    names = list(rl.params[0])
    if group is None:
        if len(names) != 1:
            raise ConfigError(f"this law is fitted per group ({len(names)} groups): give --group, one of "
                              f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
        return names[0]
    if group not in names:
        raise ConfigError(f"--group {group!r}: no such group; the run's groups: {', '.join(names[:8])}")
    return group


def outside_domain(frame: pd.DataFrame, rl: RunLaws) -> list[str]:
    """Features of the points outside the law's domain (a log or a fractional power of a
    non-positive value makes every prediction there meaningless)."""
    bad = []
    for col in dict.fromkeys(rl.law.variables.values()):
        train = rl.train.X[col]
        if np.all(train > 0) and np.any(frame[col].to_numpy(dtype=np.float64) <= 0):
            bad.append(_features(rl.law.variables, only=col))
    return bad


def predict_run(rl: RunLaws, frame: pd.DataFrame, group: str | None = None, level: float = 0.9,
                resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """The chosen law's predictions at ``frame``'s points with parameter, model and combined
    bands (see the module docstring); one row per point and target."""
    bad = outside_domain(frame, rl)
    if bad:
        raise DatasetError(f"points outside the law's domain: {', '.join(bad)} must be positive, as in the "
                           f"training data")
    g = resolve_group(rl, group)
    split = _split(frame, rl.law, g)
    point = np.stack([predict(lw, p, split) for lw, p in zip(rl.laws, rl.params)])       # (laws, rows, d)
    boots = rl.bootstraps(resamples, seed, top=True)
    samples = [b.predictions(split) for b in boots]                                      # each (B, rows, d)
    lo, hi = interval(samples[0], level)
    pooled = np.concatenate(samples, axis=0)
    clo, chi = interval(pooled, level)
    olo, ohi = interval(_with_noise(pooled, rl, seed), level)
    out = []
    for j, t in enumerate(rl.law.target_names):
        part = frame.reset_index(drop=True).copy()
        part.insert(0, "group", g)
        part["target"] = t
        part["prediction"] = point[0, :, j]
        if rl.ensemble:
            with np.errstate(all="ignore"):
                part["ensemble"] = sum(w * predict(lw, p, split)[:, j] for lw, p, w in rl.ensemble)
        part["low"], part["high"] = lo[:, j], hi[:, j]
        part["model_low"], part["model_high"] = np.nanmin(point[:, :, j], axis=0), np.nanmax(point[:, :, j], axis=0)
        part["combined_low"], part["combined_high"] = clo[:, j], chi[:, j]
        part["observed_low"], part["observed_high"] = olo[:, j], ohi[:, j]
        out.append(part)
    res = pd.concat(out, ignore_index=True)
    res.attrs.update(level=level, resamples=resamples, laws=len(rl.laws),
                     refits=[len(b.params) for b in boots], notes=[n for b in boots for n in b.notes])
    return res


def _with_noise(samples: np.ndarray, rl: RunLaws, seed: int) -> np.ndarray:
    """``samples`` (draws, rows, targets) each plus a residual of the chosen law on its training
    rows, drawn at random (per target, pooled over groups): where a new run's measurement may
    land, not only the law's mean."""
    resid = rl.train.y - predict(rl.law, rl.params[0], rl.train)                  # (n, d)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    idx = rng.integers(len(resid), size=samples.shape[:2])
    noise = np.stack([resid[idx, j] for j in range(samples.shape[2])], axis=-1)
    return samples + noise


# ------------------------------------------------------------------------------ optimum
def _train_range(rl: RunLaws, c: Constraint) -> tuple[float, float] | None:
    return scan_range(rl.train.X[rl.law.variables[c.free]])


def optimum_run(rl: RunLaws, constraint: str, group: str | None = None, fixed: Mapping[str, float] | None = None,
                level: float = 0.9, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The allocation that minimises the chosen law under ``constraint``, with bootstrap bands
    (refits with no interior optimum are counted, not used)."""
    g = resolve_group(rl, group)
    c = Constraint.parse(constraint, rl.law)
    boot = rl.bootstraps(resamples, seed, top=False)[0]
    out = optimum_with_bands(rl.law, rl.params[0][g], [p[g] for p in boot.params], c, fixed, _train_range(rl, c),
                             level)   # NoOptimum for the chosen law itself is the answer
    return {"constraint": constraint, "group": g, **out, "level": level, "free": c.free, "solved": c.solved,
            "law": rl.law.to_string()}


def parse_over(text: str) -> np.ndarray:
    """``--over 1e21:1e25[:9]``: budgets log-spaced between the two ends (9 by default)."""
    parts = text.split(":")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        n = int(parts[2]) if len(parts) > 2 else 9
    except (ValueError, IndexError):
        raise ConfigError(f"--over {text!r}: expected LOW:HIGH[:POINTS], e.g. 1e21:1e25") from None
    if not (0 < lo < hi) or n < 2:
        raise ConfigError(f"--over {text!r}: need 0 < LOW < HIGH and at least 2 points")
    return np.geomspace(lo, hi, n)


def frontier_run(rl: RunLaws, constraint: str, budgets: np.ndarray, group: str | None = None,
                 fixed: Mapping[str, float] | None = None, level: float = 0.9, resamples: int = RESAMPLES,
                 seed: int = 0) -> dict[str, Any]:
    """The optimum at each budget (the constraint's right side), and the fitted exponents of
    ``free*(C)`` and ``solved*(C)`` (log-log slopes), with bootstrap bands on the exponents."""
    g = resolve_group(rl, group)
    base = Constraint.parse(constraint, rl.law)
    cs = [base.with_value(b, rl.law) for b in budgets]
    rng_ = _train_range(rl, base)
    rows = []
    for b, c in zip(budgets, cs):
        rows.append({"budget": float(b), **minimise(rl.law, rl.params[0][g], c, fixed, rng_)})
    logc = np.log(budgets)

    def slopes(table: list[dict]) -> dict[str, float]:
        return {k: float(np.polyfit(logc, np.log([r[k] for r in table]), 1)[0]) for k in (base.free, base.solved)}

    exps = slopes(rows)
    boot = rl.bootstraps(resamples, seed, top=False)[0]
    draws = []
    for p in boot.params:
        t = [try_minimise(rl.law, p[g], c, fixed, rng_) for c in cs]
        if all(d is not None for d in t):
            draws.append(slopes(t))
    bands = {k: [float(x) for x in interval(np.array([d[k] for d in draws]), level)] for k in exps} if draws else {}
    return {"constraint": constraint, "group": g, "frontier": rows, "exponents": exps, "exponent_bands": bands,
            "level": level, "refits": len(boot.params), "refits_used": len(draws), "free": base.free,
            "solved": base.solved, "law": rl.law.to_string()}


def fmt(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"
