"""SLDBench metrics, in the one module everything else uses.

Predictions of all groups are pooled into one (n, d) array. For each target j:
``NMSE_j = mean((y - yhat)^2) / Var(y)`` with the population variance of the evaluated targets
only, ``NMAE_j = mean|y - yhat| / mean|y - mean(y)|``. ``NMSE`` and ``NMAE`` are means over
targets and ``R2 = 1 - NMSE``. A failed law (any non-finite prediction) scores R2 = -1, and the
reported R2 is clipped below at -1.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np

from lawforge.errors import LawforgeError

FAILED_R2 = -1.0


@dataclass(frozen=True)
class Metrics:
    r2: float          # reported: max(raw R2, -1); -1 on failure
    r2_raw: float      # unclipped (NaN on failure)
    nmse: float        # NaN on failure
    nmae: float        # NaN on failure
    n: int
    status: str        # "ok" or "failed"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def compute_metrics(y_true, y_pred) -> Metrics:
    """Metrics of pooled predictions ``y_pred`` against ``y_true`` (arrays (n,) or (n, d))."""
    y = _as2d(y_true)
    p = _as2d(y_pred)
    if y.shape != p.shape:
        raise LawforgeError(f"metrics: prediction shape {p.shape} differs from target shape {y.shape}")
    if y.shape[0] == 0:
        raise LawforgeError("metrics: no rows to score")
    if not np.all(np.isfinite(y)):
        raise LawforgeError("metrics: the true targets contain NaN or inf")
    if not np.all(np.isfinite(p)):
        return Metrics(FAILED_R2, float("nan"), float("nan"), float("nan"), y.shape[0], "failed")
    var = y.var(axis=0)  # population variance (ddof=0)
    if np.any(var <= 0):
        raise LawforgeError("metrics: a target is constant on the evaluated rows; R2 is undefined")
    with np.errstate(over="ignore"):  # a finite but huge prediction scores NMSE inf (R2 -1), silently
        err = y - p
        nmse_j = np.mean(err**2, axis=0) / var
        nmae_j = np.mean(np.abs(err), axis=0) / np.mean(np.abs(y - y.mean(axis=0)), axis=0)
    nmse = float(np.mean(nmse_j))
    r2_raw = 1.0 - nmse
    return Metrics(max(r2_raw, FAILED_R2), r2_raw, nmse, float(np.mean(nmae_j)), y.shape[0], "ok")
