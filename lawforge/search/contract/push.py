"""Pushing features beyond the data: the one primitive both the search's screen and the contract
use, and the two point sets they push to.

A positive feature is pushed by factors of the quantity (x2, x1000); a feature that holds a log
already (a card's ``log: 10``) by the log of the same factors, so that it moves as the quantity it
is the log of; a feature with values <= 0 by offsets in units of its train range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lawforge.datasets.trends import on_simplex as simplex_features

#: How far the contract pushes along a trend: every rule of :mod:`.beyond` holds out to here.
REACH = 1000.0
#: Points from 1x to :data:`REACH` (quarter decades).
STEPS = 13
#: Further pushes where only the range rules apply (a floor, a ceiling).
FAR = (1e6, 1e12, 1e30)


@dataclass(frozen=True)
class Push:
    """A set of pushes: ``factors`` of a positive quantity, and for a feature that can be <= 0
    the ``offsets`` in train ranges used instead (one per factor)."""

    factors: tuple[float, ...]
    offsets: tuple[float, ...]


def push_values(v, factor, offset, *, log_base: float | None = None, positive: bool = True, span=1.0):
    """``v`` pushed by one step: ``v * factor`` for a positive feature, ``v + log(factor)/log(base)``
    for one that holds a log in ``log_base``, ``v + offset * span`` otherwise."""
    if log_base is not None:
        return v + np.log(factor) / np.log(log_base)
    if positive:
        return v * factor
    return v + offset * span


#: The screen's pushes (:func:`lawforge.search.checks.make_probe`, ``make_trend_probe``): x2 and x5,
#: or half a range and a range.
SCREEN = Push((2.0, 5.0), (0.5, 1.0))


@functools.lru_cache(maxsize=8)
def contract_push(reach: float = REACH) -> Push:
    """The contract's pushes: quarter decades from 1x to ``reach`` (3 ranges for a feature that can be
    <= 0), then the :data:`FAR` factors (10, 100 and 1000 ranges)."""
    factors = np.concatenate([np.logspace(0, np.log10(reach), STEPS), FAR])
    k = np.arange(len(factors))
    offsets = np.where(k < STEPS, 3 * k / (STEPS - 1), 10.0 ** (k - STEPS + 1.0))
    return Push(tuple(factors), tuple(offsets))


#: The box a law must be finite on: from 1/BOX of each positive feature's smallest train value
#: (but not below 1 for a count: integer values) to BOX times its largest; a feature that holds a log, BOX_LOG of its own units either way; one that
#: can be <= 0, BOX_SPAN train ranges either way.
BOX, BOX_LOG, BOX_SPAN = 1000.0, 3.0, 3.0
#: Space-filling points of the box (a Latin hypercube in log space) beside its corners; the corners
#: are left out past BOX_MAX_CORNERS (more than 6 features).
BOX_POINTS, BOX_MAX_CORNERS = 64, 64


def box_points(X: dict, logs: dict | None = None, seed: int = 0) -> dict:
    """Points over the box around the features ``X`` (column -> train values; ``logs`` {column:
    base} for features that hold a log): its corners and a Latin hypercube, in log space for a
    positive feature. A feature never above another on any train row, and equal to it on some
    (unique tokens and tokens), is kept at most that other feature. Column -> values."""
    from scipy.stats import qmc

    cols = list(X)
    logs = logs or {}
    lo, hi, positive = [], [], []
    for c in cols:
        v = np.asarray(X[c], dtype=float)
        pos = c not in logs and bool((v > 0).all())
        if pos:   # a count (integer values: experts, parallel streams) is at least 1
            floor = 1.0 if np.all(v == np.round(v)) else 0.0
            a, b = np.log(max(v.min() / BOX, floor)), np.log(v.max() * BOX)
        elif c in logs:
            a, b = v.min() - BOX_LOG, v.max() + BOX_LOG
        else:
            span = float(np.ptp(v)) or abs(float(v.max())) or 1.0
            a, b = v.min() - BOX_SPAN * span, v.max() + BOX_SPAN * span
        lo.append(a), hi.append(b), positive.append(pos)
    d = len(cols)
    unit = qmc.LatinHypercube(d=d, seed=np.random.default_rng(np.random.SeedSequence([seed, 2029]))).random(BOX_POINTS)
    if 2 ** d <= BOX_MAX_CORNERS:
        corners = (np.arange(2 ** d)[:, None] >> np.arange(d)[None, :]) & 1
        unit = np.concatenate([corners.astype(float), unit])
    P = np.asarray(lo) + unit * (np.asarray(hi) - np.asarray(lo))
    out = {c: (np.exp(P[:, k]) if positive[k] else P[:, k]) for k, c in enumerate(cols)}
    for c in cols:
        for e in cols:
            if e != c and (X[c] <= X[e]).all() and (X[c] == X[e]).any():
                out[c] = np.minimum(out[c], out[e])
    return out


def on_simplex(train) -> bool:
    """Whether ``train``'s features are proportions (:func:`lawforge.datasets.trends.on_simplex`)."""
    return simplex_features(train.X)


def cell_index(X: dict, hyper) -> tuple[np.ndarray, np.ndarray]:
    """The cells of rows ``X`` (column -> values) that share every feature but the hyperparameters
    ``hyper``: where a trend is a statement about the best setting, each cell's best is compared.
    Returns the first row of each distinct cell and each row's cell (as ``np.unique`` numbers them)."""
    others = [c for c in X if c not in set(hyper)]
    n = len(next(iter(X.values())))
    keys = np.stack([np.asarray(X[c]) for c in others], axis=1) if others else np.zeros((n, 1))
    _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inv.ravel()
