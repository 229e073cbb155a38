"""The Python API, in the scikit-learn style.

    from lawforge import LawSearch, fit_law

    est = LawSearch(max_evals=300, seed=0).fit(df[["N", "D"]], df["loss"], groups=df["model"])
    est.predict(new[["N", "D"]], groups=new["model"])
    est.laws_          # the Pareto front (pandas)
    est.best_law_.to_latex(), est.best_law_.to_sympy(), est.best_law_.to_torch()

    fitted = fit_law("E + A/N**alpha + B/D**beta", df, target="loss")
    fitted.params, fitted.predict(df)

``__init__`` only stores its arguments (so ``get_params``/``set_params`` and cloning work the
scikit-learn way); everything is checked and computed in ``fit``.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lawforge.errors import ConfigError, DatasetError, LawError
from lawforge.search.settings import FINAL_RESTARTS, SEARCH_RESTARTS, SearchConfig


class FittedLaw:
    """A law with its fitted constants per group (``params``: group -> name -> value)."""

    def __init__(self, law, params: Mapping[str, Mapping[str, float]], metrics: Mapping[str, Any] | None = None,
                 train=None, device: str = "cpu"):
        self.law = law
        self.params = {str(g): dict(v) for g, v in params.items()}
        self.metrics = dict(metrics or {})
        self.train = train      # the split the constants were fitted on (for intervals), if known
        self.device = device
        self._boot: dict = {}

    @property
    def groups(self) -> list[str]:
        return list(self.params)

    def to_sympy(self):
        """The expression (sympy); several targets give a dict target -> expression."""
        e = self.law.to_sympy()
        return next(iter(e.values())) if len(e) == 1 else e

    def to_latex(self) -> str:
        return self.law.to_latex()

    def to_string(self) -> str:
        return self.law.to_string()

    def to_torch(self, group: str | None = None):
        """A differentiable torch function ``f(X) -> Tensor (n, d)`` with ``group``'s constants
        bound (the only group when there is one)."""
        return self.law.to_torch(self.params[self._group(group)])

    def _group(self, group: str | None) -> str:
        if group is None:
            if len(self.params) != 1:
                raise ConfigError(f"this law has constants for {len(self.params)} groups; name one of "
                                  f"{self.groups[:5]}")
            return self.groups[0]
        if str(group) not in self.params:
            raise ConfigError(f"no fitted constants for group {group!r}; known groups: {self.groups[:10]}")
        return str(group)

    def predict(self, X, groups=None, interval: float | None = None, resamples: int | None = None,
                seed: int = 0):
        """Predictions, shape (n,) for one target or (n, d) for several.

        With ``interval`` (a level such as 0.9): a DataFrame with ``prediction``, ``low`` and
        ``high`` per row (per target, ``<target>_low`` ...), the band being the central
        ``interval`` of the law's predictions refit on ``resamples`` bootstrap resamples of its
        training design points (:mod:`lawforge.fitting.bootstrap`; parameter uncertainty only)."""
        frame = _frame(X, self.law.variables.values())
        n = len(frame)
        g = _groups(groups, n, self.groups)
        for name in np.unique(g):
            self._group(name)
        split = self._split(frame, g)
        from lawforge.fitting.lm import predict as _predict

        out = _predict(self.law, self.params, split)
        if interval is None:
            return out[:, 0] if out.shape[1] == 1 else out
        from lawforge.fitting.bootstrap import interval as _interval

        lo, hi = _interval(self.bootstrap(resamples, seed).predictions(split), interval)
        return _band_frame(list(self.law.target_names), out, lo, hi)

    def optimum(self, constraint: str, group: str | None = None, fixed: Mapping[str, float] | None = None,
                interval: float | None = None, resamples: int | None = None, seed: int = 0) -> dict:
        """The allocation minimising the law under ``constraint`` (``"6*N*D = 1e24"``, parsed
        with the whitelist): ``{"N": ..., "D": ..., target: ...}``; ``fixed`` gives any other
        feature. With ``interval``, ``"bands"`` holds each value's bootstrap interval. Raises
        :class:`~lawforge.laws.optimum.NoOptimum` when the law has no interior optimum."""
        from lawforge.laws.optimum import Constraint, minimise, optimum_with_bands, scan_range

        g = self._group(group)
        c = Constraint.parse(constraint, self.law)
        span = scan_range(self.train.X[self.law.variables[c.free]]) if self.train is not None else None
        if interval is None:
            return minimise(self.law, self.params[g], c, fixed, span)
        draws = [p[g] for p in self.bootstrap(resamples, seed).params]
        out = optimum_with_bands(self.law, self.params[g], draws, c, fixed, span, interval)
        return {**out.pop("optimum"), **out}

    def bootstrap(self, resamples: int | None = None, seed: int = 0):
        """The law's refits on bootstrap resamples of its training split (computed once per
        ``(resamples, seed)``); see :func:`lawforge.fitting.bootstrap.bootstrap`."""
        from lawforge.fitting.bootstrap import RESAMPLES, bootstrap

        if self.train is None:
            raise ConfigError("this law does not know the data it was fitted on, so it has no interval; "
                              "fit it with fit_law or LawSearch (or pass train= to FittedLaw)")
        key = (resamples or RESAMPLES, seed)
        if key not in self._boot:
            self._boot[key] = bootstrap(self.law, self.train, self.params, key[0], seed, device=self.device)
        return self._boot[key]

    def _split(self, frame: pd.DataFrame, g: np.ndarray):
        from lawforge.datasets.loader import DataSplit

        cols = {c: frame[c].to_numpy(dtype=np.float64) for c in self.law.variables.values()}
        return DataSplit("query", cols, np.zeros((len(frame), len(self.law.target_names))), np.asarray(g, dtype=object),
                         [x for x in self.groups if x in set(g)], list(self.law.target_names))

    def __repr__(self) -> str:
        return f"FittedLaw({self.law.to_string()!r}, groups={len(self.params)})"


def _band_frame(targets: Sequence[str], pred: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> pd.DataFrame:
    if len(targets) == 1:
        return pd.DataFrame({"prediction": pred[:, 0], "low": lo[:, 0], "high": hi[:, 0]})
    cols = {}
    for j, t in enumerate(targets):
        cols.update({t: pred[:, j], f"{t}_low": lo[:, j], f"{t}_high": hi[:, j]})
    return pd.DataFrame(cols)


def _frame(X, columns: Sequence[str] | None = None, feature_names: Sequence[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        frame = X
    elif isinstance(X, Mapping):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in X.items()})
    else:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DatasetError(f"X must be 2-D (rows x features), got shape {arr.shape}")
        names = list(feature_names) if feature_names is not None else (
            list(columns) if columns is not None and len(list(columns)) == arr.shape[1] else
            [f"x{i}" for i in range(arr.shape[1])])
        if len(names) != arr.shape[1]:
            raise DatasetError(f"X has {arr.shape[1]} columns but {len(names)} feature names")
        frame = pd.DataFrame(arr, columns=names)
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DatasetError(f"X has no column {missing[0]!r}; it has {list(frame.columns)}")
    return frame


def _groups(groups, n: int, known: Sequence[str]) -> np.ndarray:
    if groups is None:
        if len(known) != 1:
            raise ConfigError(f"the law was fitted per group ({len(known)} groups): pass groups=")
        return np.full(n, known[0], dtype=object)
    g = np.asarray(groups).astype(str)
    if g.shape != (n,):
        raise DatasetError(f"groups must have one label per row ({n}), got shape {g.shape}")
    return g


class LawSearch:
    """Discover a scaling law on a table (scikit-learn style estimator).

    Parameters mirror ``lawforge discover``: ``max_evals`` (or ``budget`` seconds) bounds the
    search; ``seed`` makes it reproducible (with ``max_evals``); ``validation_axis`` is the
    feature (or list of features) along which the largest train values are held out to rank
    candidates (default: the first feature); ``hyperparameters`` names features with an optimum
    (learning rate, batch size); ``param_limit`` caps parameters per group; ``device`` is where
    candidate fits run (``"cpu"``, ``"cuda"`` or ``"auto"``); ``ray`` (``"auto"`` or a cluster
    address) fits them on Ray actors instead of local worker processes (``workers=0``: one per
    CPU of the cluster).
    """

    def __init__(self, max_evals: int | None = 300, budget: float | None = None, seed: int = 0,
                 validation_axis: str | list[str] | None = None, hyperparameters: Sequence[str] = (),
                 param_limit: int | None = None, parsimony: float = 0.02, restarts: int = SEARCH_RESTARTS,
                 workers: int = 1, feature_names: Sequence[str] | None = None, target_name: str = "y",
                 out_dir: str | None = None, device: str = "cpu", ray: str | None = None):
        self.max_evals = max_evals
        self.budget = budget
        self.seed = seed
        self.validation_axis = validation_axis
        self.hyperparameters = hyperparameters
        self.param_limit = param_limit
        self.parsimony = parsimony
        self.restarts = restarts
        self.workers = workers
        self.feature_names = feature_names
        self.target_name = target_name
        self.out_dir = out_dir
        self.device = device
        self.ray = ray

    # -- scikit-learn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "LawSearch":
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for LawSearch; valid: {valid}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        default = inspect.signature(type(self).__init__).parameters
        changed = {k: v for k, v in self.get_params().items() if default[k].default != v}
        return "LawSearch(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    # -- fitting
    def fit(self, X, y, groups=None) -> "LawSearch":
        from lawforge.datasets.byo import frame_dataset
        from lawforge.outputs import run_hooks
        from lawforge.runs.discover import discover
        from lawforge.runs.folder import LAW, PARETO, RunFolder

        if self.max_evals is None and self.budget is None:
            raise ConfigError("LawSearch needs max_evals or budget")
        frame = _frame(X, feature_names=self.feature_names).reset_index(drop=True)
        features = [str(c) for c in frame.columns]
        yarr = np.asarray(y, dtype=np.float64)
        if yarr.ndim == 1:
            yarr = yarr[:, None]
        if yarr.shape[0] != len(frame):
            raise DatasetError(f"y has {yarr.shape[0]} rows but X has {len(frame)}")
        if isinstance(y, pd.DataFrame):
            tnames = [str(c) for c in y.columns]
        elif isinstance(y, pd.Series) and y.name is not None:
            tnames = [str(y.name)]
        else:
            tnames = [self.target_name] if yarr.shape[1] == 1 else [f"{self.target_name}{j}" for j in range(yarr.shape[1])]
        clash = set(tnames) & set(features)
        if clash:
            raise DatasetError(f"target name {sorted(clash)[0]!r} is also a feature name")
        data = frame.copy()
        for j, t in enumerate(tnames):
            data[t] = yarr[:, j]
        gcol = None
        if groups is not None:
            gcol = "__group__" if "group" in features else "group"
            g = np.asarray(groups)
            if g.shape != (len(frame),):
                raise DatasetError(f"groups must have one label per row ({len(frame)}), got shape {g.shape}")
            data[gcol] = g.astype(str)
        ds = frame_dataset(data, None, features, tnames, gcol, self.validation_axis, tuple(self.hyperparameters))
        if self.param_limit is not None:
            ds.card.param_limit = int(self.param_limit)
        cfg = SearchConfig.build(max_evals=self.max_evals, budget_s=self.budget, seed=self.seed,
                                 parsimony=self.parsimony, restarts=self.restarts, workers=self.workers,
                                 device=self.device, ray=self.ray)
        out = Path(self.out_dir) if self.out_dir else Path(tempfile.mkdtemp(prefix="lawforge-api-"))
        summary = discover(ds, cfg, out, report=False, hooks=run_hooks(report=False))
        run = RunFolder.open(out)
        lj = run.read_json(LAW)
        from lawforge.laws.law import law_from_text

        law = law_from_text(lj["expression"], ds.card.variables, ds.card.target_columns, name="best")
        from lawforge.datasets.loader import SealedDataset
        from lawforge.search.prepare import final_train

        self.best_law_ = FittedLaw(law, lj["params"], {"val_r2": summary["val_r2"], "train_r2": summary["train_r2"]},
                                   train=final_train(SealedDataset(ds, cfg.seed), cfg), device=self.device)
        pareto = pd.read_csv(run.file(PARETO))
        self.laws_ = pareto.sort_values("complexity").reset_index(drop=True)
        self.summary_ = summary
        self.run_dir_ = str(out)
        self.feature_names_in_ = np.array(features, dtype=object)
        self.n_features_in_ = len(features)
        self.groups_ = self.best_law_.groups
        return self

    def _check_fitted(self):
        if not hasattr(self, "best_law_"):
            raise ConfigError("this LawSearch is not fitted yet; call fit(X, y) first")

    def predict(self, X, groups=None, interval: float | None = None, resamples: int | None = None):
        """The best law's predictions; with ``interval``, a DataFrame with its bootstrap band
        (see :meth:`FittedLaw.predict`)."""
        self._check_fitted()
        frame = _frame(X, list(self.feature_names_in_), self.feature_names)
        return self.best_law_.predict(frame, groups, interval=interval, resamples=resamples)

    def optimum(self, constraint: str, group: str | None = None, fixed: Mapping[str, float] | None = None,
                interval: float | None = None, resamples: int | None = None) -> dict:
        """The best law's compute-optimal allocation (see :meth:`FittedLaw.optimum`)."""
        self._check_fitted()
        return self.best_law_.optimum(constraint, group, fixed, interval, resamples)

    def score(self, X, y, groups=None) -> float:
        """R² (SLDBench definition, pooled over groups) of the predictions on (X, y)."""
        from lawforge.laws.metrics import compute_metrics

        return compute_metrics(np.asarray(y, dtype=np.float64), self.predict(X, groups)).r2


def fit_law(expr: str, data, target: str | Sequence[str] | None = None, group: str | None = None,
            params: Mapping[str, Any] | None = None, restarts: int = FINAL_RESTARTS, seed: int = 0,
            device: str = "cpu") -> FittedLaw:
    """Fit a given law to a table in one call: ``fit_law("E + A/N**alpha", df, target="loss")``.

    Names in ``expr`` that are columns of ``data`` are variables; the rest are parameters,
    fitted per value of the ``group`` column (or once). ``target`` defaults to the one column
    of ``data`` that is neither a variable nor the group column.
    """
    from lawforge.datasets.byo import frame_dataset
    from lawforge.laws.expr import parse_expression
    from lawforge.fitting.lm import fit_split as _fit, predict
    from lawforge.laws.law import law_from_text
    from lawforge.laws.metrics import compute_metrics

    frame = _frame(data)
    names = {s.name for s in parse_expression(expr, None, what="law").free_symbols} if ";" not in expr else set()
    cols = [str(c) for c in frame.columns]
    if ";" in expr:
        names = {n for n in cols if n in expr}
    features = [c for c in cols if c in names]
    if not features:
        raise LawError(f"law {expr!r} uses no column of the data ({cols})")
    if target is None:
        rest = [c for c in cols if c not in features and c != group]
        if len(rest) != 1:
            raise ConfigError(f"give target= (the data has {len(rest)} candidate target columns: {rest})")
        target = rest[0]
    targets = [target] if isinstance(target, str) else list(target)
    ds = frame_dataset(frame, None, features, targets, group)
    law = law_from_text(expr, {c: c for c in features}, targets, params, name="law")
    res = _fit(law, ds.train, restarts=restarts, seed=seed, device=device)
    p = res.params()
    m = compute_metrics(ds.train.y, predict(law, p, ds.train))
    return FittedLaw(law, p, {"train_r2": m.r2, "train_nmse": m.nmse,
                              "status": {g: gf.status for g, gf in res.groups.items()}}, train=ds.train, device=device)
