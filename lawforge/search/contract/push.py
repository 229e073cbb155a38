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


def on_simplex(train) -> bool:
    """Whether ``train``'s features are proportions: two or more, non-negative, with the same sum
    on every row (mixture weights summing to 1)."""
    cols = list(train.X)
    F = np.stack([np.asarray(train.X[c], dtype=float) for c in cols], axis=1)
    total = F.sum(axis=1)
    return len(cols) > 1 and bool(np.all(F >= 0)) and np.ptp(total) <= 1e-6 * max(1.0, abs(float(total[0])))


def cell_index(X: dict, hyper) -> tuple[np.ndarray, np.ndarray]:
    """The cells of rows ``X`` (column -> values) that share every feature but the hyperparameters
    ``hyper``: where a trend is a statement about the best setting, each cell's best is compared.
    Returns the first row of each distinct cell and each row's cell (as ``np.unique`` numbers them)."""
    others = [c for c in X if c not in set(hyper)]
    n = len(next(iter(X.values())))
    keys = np.stack([np.asarray(X[c]) for c in others], axis=1) if others else np.zeros((n, 1))
    _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inv.ravel()
