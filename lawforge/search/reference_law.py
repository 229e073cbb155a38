"""The reference law every discovery competes with, and the train-only test of whether the
discovered law beats it by more than the noise of the evidence.

The reference's form follows the data's shape, not any dataset:

- each scale feature: a power law toward a floor, ``a_i*x**(-b_i)`` with ``a_i >= 0``
  and ``0 <= b_i <= 3`` beside a free constant ``c0``; less them (a ceiling) for a target that
  rises with scale; a feature without a known trend keeps ``a_i`` of either sign;
- a feature that holds a log (``log: 10``): the same power of the quantity it is the log of,
  ``a_i*exp(-b_i*x)`` (``b_i`` of either sign without a trend);
- a feature that can be <= 0: a line ``a_i*x``;
- each hyperparameter: a bowl in its log whose centre moves with the first scale feature,
  ``k_j*(log(h) - m_j - g_j*log(x_1))**2`` with ``k_j >= 0``;
- features that are shares on a simplex alone: no reference (the output says so).

Each ``a_i`` starts where its term is half the target's train range at the train values' geometric
mean (no number rescales a variable: the form rules would refuse it).
"""

from __future__ import annotations

import numpy as np

from lawforge.datasets.trends import on_simplex
from lawforge.laws.law import Law, law_from_text

#: Bootstrap resamples of the validation rows in :func:`beats`.
RESAMPLES = 2000
#: The discovered law is kept when its validation error is lower than the reference's in at least
#: this share of the resamples: one standard error (the normal's 84th percentile).
KEEP_SHARE = 0.84


def reference_law(card, train) -> Law | None:
    """The reference law for ``card``'s features, its constants started on ``train``; None when
    the features are shares on a simplex and nothing else."""
    if on_simplex(train.X):
        return None
    trends = card.trends
    rising = bool(trends) and all(t == "increasing" for t in trends.values())
    hyper = [f for f in card.features if f.role == "hyperparameter"]
    scale = [f for f in card.features if f.role != "hyperparameter"]
    if not scale:
        return None
    y = train.y[:, 0]
    terms: list[str] = []
    params: dict[str, dict] = {"c0": {"init": float(np.max(y) if rising else np.min(y))}}
    amp = float(np.ptp(y)) or 1.0
    first = None
    for i, f in enumerate(scale):
        x = np.asarray(train.X[f.column], dtype=float)
        known = f.column in trends
        a_bounds = [0, None] if known else [None, None]
        if f.log:    # a power of the quantity it is the log of (in natural units of x)
            terms.append(f"a{i}*exp(-b{i}*{f.symbol})")
            params[f"b{i}"] = {"init": 0.5, "bounds": [0, 3] if known else [-3, 3]}
            scale_at_ref = float(np.exp(0.5 * np.mean(x)))
        elif np.all(x > 0):
            terms.append(f"a{i}*{f.symbol}**(-b{i})")
            params[f"b{i}"] = {"init": 0.3, "bounds": [0, 3]}
            scale_at_ref = float(np.exp(0.3 * np.mean(np.log(x))))
            first = first or (f.symbol, x)
        else:
            terms.append(f"a{i}*{f.symbol}")
            a_bounds, scale_at_ref = [None, None], 0.0
        params[f"a{i}"] = {"init": 0.5 * amp * scale_at_ref if a_bounds[0] == 0 else 0.0, "bounds": a_bounds}
    text = "c0 " + ("- " if rising else "+ ") + (" - " if rising else " + ").join(terms)
    for j, h in enumerate(hyper):
        v = np.asarray(train.X[h.column], dtype=float)
        if not np.all(v > 0):
            continue
        move = f" - g{j}*log({first[0]})" if first else ""
        text += f" + k{j}*(log({h.symbol}) - m{j}{move})**2"
        params.update({f"k{j}": {"init": 0.1 * amp, "bounds": [0, None]},
                       f"m{j}": {"init": float(np.mean(np.log(v)))}})
        if first:
            params[f"g{j}"] = {"init": 0.0}
    variables = {f.symbol: f.column for f in card.features}
    return law_from_text(text, variables, card.target_columns[:1], params, name="reference") \
        if len(card.target_columns) == 1 else None


def beats(errors_found: np.ndarray, errors_ref: np.ndarray, seed: int = 0) -> float:
    """The share of bootstrap resamples of the validation rows (paired) in which the discovered
    law's mean error is below the reference's: 1 where it is lower on every resample."""
    d = np.asarray(errors_found, dtype=float) - np.asarray(errors_ref, dtype=float)
    if not np.all(np.isfinite(d)) or len(d) == 0:
        return 0.0 if not np.all(np.isfinite(errors_found)) else 1.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(RESAMPLES, len(d)))
    return float(np.mean(d[idx].mean(axis=1) < 0))
