"""Fitting and scoring one candidate form on the fit/validation parts of train (never on test)."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lawforge.errors import LawforgeError
from lawforge.fitting.lm import FitJob, fit_many, predict
from lawforge.laws.metrics import compute_metrics
from lawforge.search.checks import Screen, screen_issue
from lawforge.search.contract import check_law, form_issues
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
    batch: int = 16            # candidate forms fitted together in one batched fit
    screen: Screen = field(default_factory=Screen)   # the probes a fitted law must pass (checks.screen_issue)
    folds: Any = None          # extra (fit, val) rolling-origin folds; val NMSE is averaged over all
    scale_starts: bool = True  # scale parameters start at the fit data's scale (space.scale_specs)
    readable_form: bool = False  # forms with an excluded construct (contract.form_issues) are 'invalid'
    unit_offset: bool = True     # an offset of 1 is a natural bound of the target (contract.unit_bounded)
    log_vars: tuple = ()         # variables that hold a log already (a card's `log: 10` features)
    contract_card: Any = None    # a DatasetCard: a fitted form must keep the readable-law contract (contract.check_law)
    contract_train: Any = None   # the DataSplit the contract pushes beyond (train)
    seed_specs: Any = None       # {form text: {param: spec}}: human-law seeds keep their own inits and bounds

    @property
    def checks(self) -> bool:
        """Whether a fitted law must pass the probe rules (some probe is set)."""
        return self.screen.active


def score_candidate(expr_text: str, ctx: CandidateContext, inits: dict[str, float] | None = None) -> dict:
    """Fit ``expr_text`` on ``ctx.fit`` and score it on ``ctx.val``.

    Returns a record with a typed ``status``: ``ok`` (finite validation predictions), ``nan``
    (the fit worked but validation predictions are not finite), ``failed`` (every restart of
    some group diverged), ``error`` (an exception while fitting) or ``invalid`` (not a law).
    Failed candidates carry no made-up score (``val_nmse`` is None).
    """
    return score_candidates([expr_text], ctx, inits)[0]


def score_candidates(texts: list[str], ctx: CandidateContext, inits: dict[str, float] | None = None) -> list[dict]:
    """:func:`score_candidate` for many forms at once: every form's fit on ``ctx.fit`` is one
    batched fit (:func:`~lawforge.fitting.lm.fit_many`), and so are the refits on the extra
    folds of the forms that pass; records in the order of ``texts``."""
    recs, todo = [], []
    for text in texts:
        rec, law = _prepare(text, ctx, inits)
        recs.append(rec)
        if law is not None:
            todo.append((len(recs) - 1, law, zlib.crc32(text.encode())))
    results = _fit_all([(law, ctx.fit, seed) for _i, law, seed in todo], ctx)
    passed = []
    for (i, law, seed), res in zip(todo, results):
        if _finish_primary(recs[i], law, res, ctx):
            passed.append((i, law, seed))
    folds = list(ctx.folds or [])
    fold_jobs = [(law, fit2, seed) for _i, law, seed in passed for fit2, _val2 in folds]
    fold_results = iter(_fit_all(fold_jobs, ctx))
    for i, law, seed in passed:
        rec = recs[i]
        nmse = [rec["val_nmse"]]
        for _fit2, val2 in folds:
            nmse.append(_fold_nmse(law, next(fold_results), val2, rec["_tcols"], rec["val_nmse"]))
        val_nmse = float(np.mean(nmse))
        rec.update(val_r2=1.0 - val_nmse, val_nmse=val_nmse)
        if len(nmse) > 1:
            rec["fold_nmse"] = [float(x) for x in nmse]
    for rec in recs:
        rec.pop("_tcols", None)
    return recs


def _prepare(text: str, ctx: CandidateContext, inits) -> tuple[dict, Any]:
    """The candidate's empty record and its law, or the ``invalid`` record and None."""
    from lawforge.laws.expr import parse_expression

    rec: dict[str, Any] = {"expr": text, "status": "invalid", "val_r2": None, "val_nmse": None,
                           "fit_r2": None, "n_params": None, "complexity": None, "params": None}
    try:
        expr = parse_expression(text, None, what="candidate")
        law = to_law(expr, ctx.variables, ctx.targets, inits=inits, data=ctx.fit if ctx.scale_starts else None,
                     specs=(ctx.seed_specs or {}).get(text))
        rec["n_params"] = law.n_params
        rec["complexity"] = complexity(expr)
    except LawforgeError as exc:
        rec["error"] = str(exc)
        return rec, None
    if ctx.readable_form:
        issues = form_issues(law, ctx.unit_offset, ctx.log_vars)
        if issues:
            rec.update(error=f"not a readable law: {issues[0]}", rule=issues[0].rule)
            return rec, None
    return rec, law


def _fit_all(jobs: list[tuple[Any, Any, int]], ctx: CandidateContext) -> list:
    """One batched fit of (law, split, seed) jobs; a job that cannot be fitted yields its error."""
    if not jobs:
        return []
    fit_jobs = [FitJob(law, split, ctx.restarts, seed) for law, split, seed in jobs]
    return fit_many(fit_jobs, max_iter=ctx.max_iter, device=ctx.device, errors="return")


def _finish_primary(rec: dict, law, res, ctx: CandidateContext) -> bool:
    """Fill ``rec`` from the fit on ``ctx.fit``; True when the form passes and its extra folds
    are to be fitted."""
    if isinstance(res, BaseException):
        rec.update(status="error", error=f"{type(res).__name__}: {res}")
        return False
    if not res.ok:
        rec["status"] = "failed"
        return False
    params = res.params()
    rec["params"] = params
    tcols = [ctx.val.target_columns.index(t) for t in law.target_names]
    with np.errstate(all="ignore"):
        pv = predict(law, params, ctx.val)
        pf = predict(law, params, ctx.fit)
    mv = compute_metrics(ctx.val.y[:, tcols], pv)
    if mv.status != "ok":
        rec["status"] = "nan"
        return False
    broken = screen_issue(law, params, ctx.screen, tcols) if ctx.checks else None
    if broken is not None:
        rec.update(status="unstable", rule=broken)
        return False
    if ctx.contract_card is not None:
        broken = _contract_rule(law, params, ctx)
        rec["contract"] = broken is None
        if broken is not None:
            rec["contract_rule"] = broken
    mf = compute_metrics(ctx.fit.y[:, tcols], pf)
    rec.update(status="ok", val_r2=1.0 - mv.nmse, val_nmse=mv.nmse, val_nmae=mv.nmae,
               fit_r2=mf.r2_raw if mf.status == "ok" else None, _tcols=tcols)
    return True


def _contract_rule(law, params, ctx: CandidateContext) -> str | None:
    """The id of the first contract rule the fitted law breaks, or None."""
    with np.errstate(all="ignore"):
        res = check_law(law, params, ctx.contract_train, ctx.contract_card, hyper_values=SEARCH_HYPER_VALUES,
                        first_only=True)
    return None if res.ok else res.issues[0].rule


SEARCH_HYPER_VALUES = 13  # settings per hyperparameter when the search checks the contract (49 at the choice)


def _fold_nmse(law, res, val, tcols, primary: float) -> float:
    """Validation NMSE of ``law`` refit on an extra fold; a fold it cannot fit or predict
    counts as at least as bad as predicting the mean (NMSE 1)."""
    if isinstance(res, BaseException) or not res.ok:
        return max(1.0, primary)
    with np.errstate(all="ignore"):
        m = compute_metrics(val.y[:, tcols], predict(law, res.params(), val))
    return m.nmse if m.status == "ok" and np.isfinite(m.nmse) else max(1.0, primary)
