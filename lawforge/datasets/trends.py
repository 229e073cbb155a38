"""Each feature's trend, inferred from the train rows when the card does not state it.

A trend (``decreasing``: the target falls as the feature grows) is what the checks beyond the
data hold a law to. A card may state it per feature (``trend: decreasing``, or ``trend: none``
for a feature without one); a CSV brought with ``--csv`` states none unless the user passes
``--decreasing``/``--increasing``. For every feature left unstated, :func:`infer_trends` reads
the trend off the train rows:

- **Cells.** The rows of one group with every other feature at one setting form a cell; values
  within :data:`SAME_SETTING` of each other count as one setting (a model's parameter count moves
  a little with the parallel streams it is trained with). Features that are a product of others
  (compute, ``C = 6ND``: its log is a positive combination of theirs) are not held fixed, since
  fixing the product moves the others against each other (an IsoFLOP slice). Where no cell
  varies the feature alone (model width and depth fix the parameter count), the fewest other
  features are released, keeping the choice with the most cells.
- **Statistic.** In each cell with at least :data:`MIN_VALUES` distinct values of the feature, the
  Spearman rank correlation between the feature and the target (each target, for several). The
  trend is the sign of the median over cells when its size is at least :data:`MIN_RHO` (a large
  correlation in Cohen's convention) and the cells together show it beyond chance: Kendall's S
  (concordant less discordant pairs) summed over the cells, against its variance with no trend,
  is at least :data:`MIN_Z` in size (two-sided 5%). With three values a cell's Spearman
  correlation is +-0.5 or +-1 whatever the data, so the median alone would find trends in noise.
- **No trend by construction**: a hyperparameter (learning rate, batch size: the target has an
  optimum, not a direction) and a share on a simplex (mixture proportions).

The result is recorded in the run's card, so a repeat or a resume reads the same trends.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

#: Settings of another feature within this factor of each other are one setting.
SAME_SETTING = 1.05
#: A cell votes when it holds at least this many distinct values of the feature.
MIN_VALUES = 3
#: The median within-cell Spearman correlation that makes a trend (Cohen's "large": 0.5).
MIN_RHO = 0.5
#: The size of the cells' summed Kendall S over its standard deviation with no trend.
MIN_Z = 1.96
#: A feature is a product of others when their logs fit its log with R^2 at least this (a
#: parameter count is close to, not exactly, a product of width and depth: embeddings).
PRODUCT_R2 = 0.99


@dataclass(frozen=True)
class Inferred:
    """One feature's inferred trend (None: no trend) and the evidence for it."""

    column: str
    trend: str | None
    rho: float | None        # the median within-cell Spearman correlation (None: no cell)
    cells: int               # the cells that voted
    released: tuple = ()     # other features not held fixed in the cells
    why: str = ""
    z: float | None = None   # the cells' summed Kendall S over its standard deviation with no trend

    def text(self) -> str:
        if self.rho is None:
            return f"{self.column}: none ({self.why})"
        held = f", not holding {', '.join(self.released)} fixed" if self.released else ""
        return (f"{self.column}: {self.trend or 'none'} (median Spearman {self.rho:+.2f}, z {self.z:+.1f}, "
                f"over {self.cells} cell{'s' * (self.cells != 1)}{held})")


def on_simplex(X: dict) -> bool:
    """Whether the features ``X`` (column -> values) are proportions: two or more, non-negative,
    with the same sum on every row (mixture weights summing to 1)."""
    cols = list(X)
    if len(cols) < 2:
        return False
    F = np.stack([np.asarray(X[c], dtype=float) for c in cols], axis=1)
    total = F.sum(axis=1)
    return bool(np.all(F >= 0)) and np.ptp(total) <= 1e-6 * max(1.0, abs(float(total[0])))


def infer_trends(split, card) -> dict[str, Inferred]:
    """The inferred trend of each feature of ``card`` whose trend the card leaves unstated, from
    the rows of ``split`` (a :class:`~lawforge.datasets.loader.DataSplit`; train only)."""
    todo = [f for f in card.features if f.trend is None]
    if not todo:
        return {}
    if on_simplex(split.X):
        return {f.column: Inferred(f.column, None, None, 0, why="a share on a simplex") for f in todo}
    logs = {f.column: _log_values(split.X[f.column], f.log) for f in card.features}
    settings = {f.column: _settings(logs[f.column], _width(split.X[f.column], f.log)) for f in card.features}
    products = _products(logs)
    out = {}
    for f in todo:
        if f.role == "hyperparameter":
            out[f.column] = Inferred(f.column, None, None, 0, why="a hyperparameter")
            continue
        out[f.column] = _infer_one(split, f.column, settings, products)
    return out


def with_trends(card, inferred: dict[str, Inferred]):
    """``card`` with the ``inferred`` trends written in (``none`` where there is none)."""
    feats = [dataclasses.replace(f, trend=(inferred[f.column].trend or "none"))
             if f.column in inferred else f for f in card.features]
    return dataclasses.replace(card, features=feats)


def with_inferred_trends(dataset):
    """``dataset`` with its card's unstated trends inferred from its train rows (a copy; the
    dataset itself is unchanged), and what was inferred (column -> :class:`Inferred`)."""
    inferred = infer_trends(dataset.train, dataset.card)
    if not inferred:
        return dataset, inferred
    out = copy.copy(dataset)
    out.card = with_trends(dataset.card, inferred)
    return out, inferred


def _log_values(x, log_base) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if log_base or not np.all(x > 0):
        return x        # already a log (``log: 10``), or not a positive quantity
    return np.log(x)


def _width(x, log_base) -> float:
    """How far apart, in the units of :func:`_log_values`, two values of one setting may be."""
    if log_base:
        return float(np.log(SAME_SETTING) / np.log(log_base))
    return float(np.log(SAME_SETTING)) if np.all(np.asarray(x) > 0) else 0.0


def _settings(v: np.ndarray, width: float) -> np.ndarray:
    """Each row's setting number: sorted values merge while within ``width`` of the first value
    of their setting."""
    order = np.argsort(v, kind="stable")
    ids = np.empty(len(v), dtype=int)
    cur, start = -1, None
    for i in order:
        if start is None or v[i] - start > width:
            cur, start = cur + 1, v[i]
        ids[i] = cur
    return ids


def _products(logs: dict[str, np.ndarray]) -> set[str]:
    """The features whose log is a positive combination of the others' (compute from N and D;
    a feature with a coefficient within 0.05 of 0 does not take part)."""
    cols = list(logs)
    out = set()
    if len(cols) < 3:
        return out
    for c in cols:
        others = [o for o in cols if o != c]
        A = np.column_stack([logs[o] for o in others] + [np.ones(len(logs[c]))])
        y = logs[c]
        if np.ptp(y) == 0:
            continue
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        r2 = 1.0 - np.sum((y - A @ coef) ** 2) / np.sum((y - y.mean()) ** 2)
        if r2 >= PRODUCT_R2 and np.all(coef[:-1] > -0.05) and np.any(coef[:-1] > 0.05):
            out.add(c)
    return out


def _infer_one(split, col: str, settings: dict, products: set[str]) -> Inferred:
    others = [c for c in settings if c != col]
    base = [c for c in others if c not in products]
    first = tuple(c for c in others if c in products)
    for k in range(len(base) + 1):
        best = None
        for released in itertools.combinations(base, k):
            fixed = [c for c in base if c not in released]
            cells = _cell_stats(split, col, fixed, settings)
            if cells and (best is None or len(cells) > len(best[1])):
                best = (first + released, cells)
        if best is not None:
            released, cells = best
            rho = float(np.median([c[0] for c in cells]))
            z = float(sum(c[1] for c in cells) / np.sqrt(sum(c[2] for c in cells)))
            trend = None
            if abs(rho) >= MIN_RHO and abs(z) >= MIN_Z and np.sign(z) == np.sign(rho):
                trend = "decreasing" if rho < 0 else "increasing"
            return Inferred(col, trend, rho, len(cells), tuple(released), z=z)
    return Inferred(col, None, None, 0, why=f"fewer than {MIN_VALUES} distinct values in every group")


def _cell_stats(split, col: str, fixed: list[str], settings: dict) -> list[tuple[float, float, float]]:
    """Per cell and target: the Spearman correlation, Kendall's S and its variance with no trend."""
    keys = pd.DataFrame({"__g": pd.factorize(np.asarray(split.groups).astype(str))[0],
                         **{c: settings[c] for c in fixed}})
    x = np.asarray(split.X[col], dtype=float)
    out = []
    for rows in keys.groupby(list(keys.columns), sort=False).indices.values():
        if len(np.unique(x[rows])) < MIN_VALUES:
            continue
        for j in range(split.y.shape[1]):
            y = split.y[rows, j]
            if np.ptp(y) == 0:
                continue
            r = spearmanr(x[rows], y).statistic
            if np.isfinite(r):
                n = len(rows)
                S = np.sum(np.triu(np.sign(x[rows][:, None] - x[rows][None, :])
                                   * np.sign(y[:, None] - y[None, :]), 1))
                out.append((float(r), float(S), n * (n - 1) * (2 * n + 5) / 18.0))
    return out
