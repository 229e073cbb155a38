"""Fitting and scoring one candidate form on the fit/validation parts of train (never on test)."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from lawforge.errors import LawforgeError
from lawforge.fitting.lm import fit_split, predict
from lawforge.laws.metrics import compute_metrics
from lawforge.search.checks import passes_checks
from lawforge.fitting.defaults import SEARCH_RESTARTS
from lawforge.search.space import complexity, to_law

log = logging.getLogger(__name__)

STATUSES = ("ok", "nan", "unstable", "failed", "error", "invalid")


@dataclass
class CandidateContext:
    """What a worker needs to score candidates: variables, targets, and the two train parts."""

    variables: dict[str, str]
    targets: list[str]
    fit: Any       # DataSplit
    val: Any       # DataSplit
    restarts: int = SEARCH_RESTARTS
    max_iter: int = 60
    device: str = "cpu"
    probe: Any = None          # DataSplit of extrapolation probe points (features only), or None
    probe_tol: float = 2.0     # allowed |prediction - group mean| in units of the group's y range
    probe_center: Any = None   # (n_probe, d) train mean of each probe row's group
    probe_span: Any = None     # (n_probe, d) train range of each probe row's group
    folds: Any = None          # extra (fit, val) rolling-origin folds; val NMSE is averaged over all
    trend: Any = None          # (DataSplit, [(sign, i0, i1, i2, gap1, gap2, cells)]) from make_trend_probe, or None
    trend_tol: float = 0.02    # allowed move against the trend, in units of the group's y range
    trend_span: Any = None     # (n_trend, d) train range of each trend row's group
    returns: bool = False      # diminishing returns: along trend features, the gain per log-step must not grow beyond the data
    returns_tol: float = 0.1   # allowed relative growth of that gain
    scale_starts: bool = True  # scale parameters start at the fit data's scale (space.scale_specs)
    cross_trend: Any = None    # [(sign, [chain of trend-row index arrays])] from cross_trend_chains, or None
    domain: Any = None         # DataSplit of points spread over the feature domain (make_domain_probe): finite there

    @property
    def checks(self) -> bool:
        """Whether a fitted law must pass :func:`~lawforge.search.checks.passes_checks` (some probe is set)."""
        return self.probe is not None or self.trend is not None or self.domain is not None


def score_candidate(expr_text: str, ctx: CandidateContext, inits: dict[str, float] | None = None) -> dict:
    """Fit ``expr_text`` on ``ctx.fit`` and score it on ``ctx.val``.

    Returns a record with a typed ``status``: ``ok`` (finite validation predictions), ``nan``
    (the fit worked but validation predictions are not finite), ``failed`` (every restart of
    some group diverged), ``error`` (an exception while fitting) or ``invalid`` (not a law).
    Failed candidates carry no made-up score (``val_nmse`` is None).
    """
    from lawforge.laws.expr import parse_expression

    rec: dict[str, Any] = {"expr": expr_text, "status": "invalid", "val_r2": None, "val_nmse": None,
                           "fit_r2": None, "n_params": None, "complexity": None, "params": None}
    try:
        expr = parse_expression(expr_text, None, what="candidate")
        law = to_law(expr, ctx.variables, ctx.targets, inits=inits, data=ctx.fit if ctx.scale_starts else None)
        rec["n_params"] = law.n_params
        rec["complexity"] = complexity(expr)
    except LawforgeError as exc:
        rec["error"] = str(exc)
        return rec
    seed = zlib.crc32(expr_text.encode())
    try:
        res = fit_split(law, ctx.fit, restarts=ctx.restarts, seed=seed, max_iter=ctx.max_iter, device=ctx.device)
    except (LawforgeError, RuntimeError, ValueError, ArithmeticError) as exc:
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return rec
    if not res.ok:
        rec["status"] = "failed"
        return rec
    params = res.params()
    rec["params"] = params
    tcols = [ctx.val.target_columns.index(t) for t in law.target_names]
    with np.errstate(all="ignore"):
        pv = predict(law, params, ctx.val)
        pf = predict(law, params, ctx.fit)
    mv = compute_metrics(ctx.val.y[:, tcols], pv)
    if mv.status != "ok":
        rec["status"] = "nan"
        return rec
    if ctx.checks and not passes_checks(law, params, ctx, tcols):
        rec["status"] = "unstable"
        return rec
    mf = compute_metrics(ctx.fit.y[:, tcols], pf)
    nmse = [mv.nmse]
    for fit2, val2 in ctx.folds or []:
        nmse.append(_fold_nmse(law, fit2, val2, tcols, ctx, seed, mv.nmse))
    val_nmse = float(np.mean(nmse))
    rec.update(status="ok", val_r2=1.0 - val_nmse, val_nmse=val_nmse, val_nmae=mv.nmae,
               fit_r2=mf.r2_raw if mf.status == "ok" else None)
    if len(nmse) > 1:
        rec["fold_nmse"] = [float(x) for x in nmse]
    return rec


def _fold_nmse(law, fit, val, tcols, ctx: CandidateContext, seed: int, primary: float) -> float:
    """Validation NMSE of ``law`` refit on an extra fold; a fold it cannot fit or predict
    counts as at least as bad as predicting the mean (NMSE 1)."""
    try:
        res = fit_split(law, fit, restarts=ctx.restarts, seed=seed, max_iter=ctx.max_iter, device=ctx.device)
    except (LawforgeError, RuntimeError, ValueError, ArithmeticError):
        return max(1.0, primary)
    if not res.ok:
        return max(1.0, primary)
    with np.errstate(all="ignore"):
        m = compute_metrics(val.y[:, tcols], predict(law, res.params(), val))
    return m.nmse if m.status == "ok" and np.isfinite(m.nmse) else max(1.0, primary)


