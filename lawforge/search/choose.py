"""The final choice among the searched forms (train only): re-ranking the top forms by how much
their extrapolation moves when the validation rows join their fit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from lawforge.errors import ConfigError
from lawforge.fitting.lm import FitJob, FitResult, fit_many, fit_split, predict
from lawforge.laws.law import Law
from lawforge.laws.metrics import compute_metrics
from lawforge.search import space as S
from lawforge.search.candidates import CandidateContext
from lawforge.search.checks import box_issue, passes_checks
from lawforge.search.contract import check_law
from lawforge.search.prepare import human_forms, seed_specs
from lawforge.search.settings import RANK_RESTARTS, SearchConfig


def extrapolation_shift(law, ctx: CandidateContext, train, restarts: int = RANK_RESTARTS) -> float | None:
    """How much ``law``'s extrapolation moves when its largest-scale train rows are added: the
    law is fitted on ``ctx.fit`` (train without the validation carve) and on ``train``, and the
    two fits' predictions at the probe points (beyond the train range along the scale axis) are
    compared, as the mean squared difference in units of each probe row's group range. A form
    whose long-range prediction is pinned down by the data moves little; one that bends freely
    beyond the data moves a lot. None when the context has no probe points or either fit fails
    or predicts non-finite values. Train features and targets only."""
    return extrapolation_shifts([law], ctx, train, restarts)[0]


def extrapolation_shifts(laws: list, ctx: CandidateContext, train, restarts: int = RANK_RESTARTS,
                         deadline: float | None = None) -> list:
    """:func:`extrapolation_shift` of many laws, their fits on each split batched together.
    With a ``deadline`` (a :func:`time.perf_counter` value) the laws are fitted
    :data:`CHUNK` at a time, in order, and those not reached by then are None (not measured);
    none is measured when it has already passed."""
    if ctx.screen.probe is None or not laws:
        return [None] * len(laws)
    if deadline is not None:
        out = by_chunks(laws, lambda chunk: extrapolation_shifts(chunk, ctx, train, restarts), deadline)
        return out + [None] * (len(laws) - len(out))
    fits = [_fit_each(laws, split, restarts, ctx.device) for split in (ctx.fit, train)]
    out = []
    for law, a, b in zip(laws, *fits):
        if a is None or b is None:
            out.append(None)
            continue
        with np.errstate(all="ignore"):
            preds = [predict(law, f.params(), ctx.screen.probe) for f in (a, b)]
        if not all(np.all(np.isfinite(p)) for p in preds):
            out.append(None)
            continue
        d = preds[0].shape[1]
        tcols = [ctx.fit.target_columns.index(t) for t in law.target_names][:d]
        out.append(float(np.mean(((preds[0] - preds[1]) / ctx.screen.probe_span[:, tcols]) ** 2)))
    return out


def _fit_each(laws: list, split, restarts: int, device: str) -> list:
    """Each law fitted on ``split`` (one batched fit); None where a fit fails."""
    fits = fit_many([FitJob(law, split, restarts, 0) for law in laws], device=device, errors="return")
    return [f if isinstance(f, FitResult) and f.ok else None for f in fits]


def order_by_shift(members: list, scores: list[float], law_of, ctx: CandidateContext, train, k: int = 20,
                   within: float = 2.0, restarts: int = RANK_RESTARTS,
                   deadline: float | None = None) -> tuple[list, dict]:
    """``members`` (ranked by validation score, ``scores``, lower is better) with those of the
    first ``k`` whose score is within ``within`` times the best re-ranked by their
    :func:`extrapolation_shift`, smallest first; the forms whose shift cannot be measured follow
    them in score order, then the rest. Returns the order and the shifts by position in
    ``members``. Past the ``deadline`` no more forms are measured (see :func:`extrapolation_shifts`)."""
    eligible = [i for i in range(min(k, len(members))) if scores[i] <= within * scores[0]]
    measured = extrapolation_shifts([law_of(members[i]) for i in eligible], ctx, train, restarts, deadline)
    shifts = {i: s for i, s in zip(eligible, measured) if s is not None}
    head = sorted(shifts, key=lambda i: shifts[i])
    rest = [i for i in range(len(members)) if i not in shifts]
    return [members[i] for i in head + rest], shifts


def shift_measurable(ctx: CandidateContext, axis) -> bool:
    """Whether an extrapolation shift means something here: there are probe points, and the fit
    part (train without the validation carve) holds at least three values of every scale axis.
    With one value a form's trend along the axis is not fitted at all, and with two any
    two-parameter curve passes through them; forms flat along the axis would then look the most
    stable."""
    if ctx.screen.probe is None or not axis:
        return False
    axes = axis if isinstance(axis, list) else [axis]
    return all(len(np.unique(ctx.fit.X[a])) >= 3 for a in axes)


@dataclass
class Choice:
    """The chosen form refit on all of train, and the ranking it was chosen from."""

    member: Any                # the search's Member
    law: Law
    fit: FitResult
    ranked: list               # ok members, best first (after the shift re-ranking when it applies)
    shift: dict[str, float]    # member key -> extrapolation shift (the re-ranked ones)
    fallbacks: int             # forms skipped because their refit failed the checks
    contract: Any = None       # the chosen law's ContractResult (None when the contract is off)
    incumbent: dict | None = None  # the comparison with the card's own law (selection.incumbent)
    reference: dict | None = None  # the comparison with the reference law (selection.reference)


def law_of(member, card, train, cfg: SearchConfig, name: str = "discovered") -> Law:
    """A searched form as a law over the card's variables, its scale parameters started on
    ``train``; a human law's own form keeps its inits and bounds (:func:`seed_specs`)."""
    return S.to_law(member.expr, dict(card.variables), card.target_columns, name=name,
                    data=train if cfg.grammar.scale_starts else None,
                    specs=seed_specs(card).get(sp.sstr(member.expr)))


def choose(members: list, ctx: CandidateContext, card, train, cfg: SearchConfig,
           deadline: float | None = None) -> Choice:
    """Rank the ok members by validation score, re-rank the top ones by extrapolation shift
    (``selection.rule == "shift"``, where measurable), then refit the first on all of ``train``;
    a refit that fails or breaks the checks falls back to the next (up to 10). Train only.
    ``deadline`` (a :func:`time.perf_counter` value, from a time budget): the re-ranking measures
    the forms in score order until then, and re-ranks those it measured."""
    parsimony = cfg.evolution.parsimony if cfg.selection.parsimony_choice is None else cfg.selection.parsimony_choice
    ranked = sorted((m for m in members if m.ok), key=lambda m: m.score(parsimony))
    if not ranked:
        raise ConfigError(f"{card.name}: no candidate could be fitted")
    shift: dict[str, float] = {}
    if cfg.selection.rule == "shift" and shift_measurable(ctx, card.validation.get("axis")):
        by_score = ranked
        ranked, by_pos = order_by_shift(by_score, [m.score(parsimony) for m in by_score],
                                        lambda m: law_of(m, card, train, cfg), ctx, train,
                                        restarts=cfg.fitting.rank_restarts, deadline=deadline)
        shift = {by_score[i].key: s for i, s in by_pos.items()}
    fallback, first = 0, None
    contract, screened = None, set()
    if cfg.checks.contract:
        ranked, screened = _contract_first(ranked, card, train, cfg)
    for best in ranked[:10]:
        law = law_of(best, card, train, cfg)
        fit = fit_split(law, train, restarts=cfg.fitting.final_restarts, seed=cfg.seed, device=ctx.device)
        first = first or (best, law, fit)
        tcols = [train.target_columns.index(t) for t in law.target_names]
        if fit.ok and (not ctx.checks or passes_checks(law, fit.params(), ctx.screen, tcols)):
            if cfg.checks.contract:
                contract = check_law(law, fit.params(), train, card)
                if not contract.ok and best.key in screened:
                    fallback += 1   # kept it on the search fit, not on the refit: the next
                    continue
            break
        fallback += 1
    else:  # none passes: keep the top-ranked form (already refit)
        best, law, fit = first
        contract = check_law(law, fit.params(), train, card) if cfg.checks.contract and fit.ok else None
    incumbent = None
    if cfg.selection.incumbent > 0 and not _is_human(best):
        swap, incumbent = _incumbent(best, members, ctx, card, train, cfg)
        if swap is not None:
            best, law, fit, contract = swap
    reference = None
    if cfg.selection.reference:
        swap, reference = _against_reference(best, ctx, card, train, cfg)
        if swap is not None:
            best, law, fit, contract = swap
    return Choice(best, law, fit, ranked, shift, fallback, contract, incumbent, reference)


def _is_human(member) -> bool:
    return str(getattr(member, "origin", "")).startswith("human:")


def _fold_fits(laws: list, ctx: CandidateContext, restarts: int, seed: int) -> list[list]:
    """Per law, ``(fit result, validation split)`` for the validation carve and each extra fold,
    each fit made on that fold's fit part (one batched fit over all laws and folds)."""
    splits = [(ctx.fit, ctx.val)] + list(ctx.folds or [])
    jobs = [FitJob(law, f, restarts, seed) for law in laws for f, _ in splits]
    fits = iter(fit_many(jobs, max_iter=ctx.max_iter, device=ctx.device, errors="return"))
    return [[(next(fits), v) for _f, v in splits] for _ in laws]


def validation_nmse(laws: list, ctx: CandidateContext, restarts: int, seed: int = 0) -> list[list[float]]:
    """Per law, its validation NMSE on the validation carve and on each extra fold, each fit
    made on that fold's fit part with ``restarts`` restarts (one batched fit); inf where a fit
    fails or predicts non-finite values. Train only."""
    out = []
    for law, folds in zip(laws, _fold_fits(laws, ctx, restarts, seed)):
        row = []
        for res, v in folds:
            nmse = np.inf
            if isinstance(res, FitResult) and res.ok:
                tcols = [v.target_columns.index(t) for t in law.target_names]
                with np.errstate(all="ignore"):
                    m = compute_metrics(v.y[:, tcols], predict(law, res.params(), v))
                if m.status == "ok" and np.isfinite(m.nmse):
                    nmse = float(m.nmse)
            row.append(nmse)
        out.append(row)
    return out


def _incumbent(best, members: list, ctx: CandidateContext, card, train, cfg: SearchConfig):
    """The card's own (human) law is the incumbent: the discovered law replaces it only when
    its validation NMSE (mean over the validation carve and the extra folds, both laws refit
    there with ``fitting.final_restarts``) is at most ``selection.incumbent`` times the human
    law's. Otherwise the human law, refit on all of train, is chosen, provided it passes the
    checks and the contract there. Returns ``(swap or None, record)``; train only."""
    parsimony = cfg.evolution.parsimony
    humans = sorted((m for m in members if m.ok and _is_human(m)), key=lambda m: m.score(parsimony))
    if not humans:
        return None, None
    h = humans[0]
    laws = [law_of(best, card, train, cfg), law_of(h, card, train, cfg, name=h.origin.split(":", 1)[1])]
    ev = validation_nmse(laws, ctx, cfg.fitting.final_restarts, cfg.seed)
    chosen_nmse, human_nmse = (float(np.mean(r)) for r in ev)
    rec = {"human": laws[1].name, "human_nmse": human_nmse, "discovered_nmse": chosen_nmse,
           "margin": cfg.selection.incumbent, "folds": len(ev[0]), "chosen": "discovered"}
    if not np.isfinite(human_nmse) or chosen_nmse <= cfg.selection.incumbent * human_nmse:
        return None, rec
    law = laws[1]
    fit = fit_split(law, train, restarts=cfg.fitting.final_restarts, seed=cfg.seed, device=ctx.device)
    tcols = [train.target_columns.index(t) for t in law.target_names]
    if not fit.ok or (ctx.checks and not passes_checks(law, fit.params(), ctx.screen, tcols)):
        rec["why_not"] = "its refit on train fails the checks"
        return None, rec
    contract = check_law(law, fit.params(), train, card) if cfg.checks.contract else None
    if contract is not None and not contract.ok:
        rec["why_not"] = "its refit on train breaks the contract"
        return None, rec
    rec["chosen"] = "human"
    return (h, law, fit, contract), rec


def validation_errors(laws: list, ctx: CandidateContext, restarts: int, seed: int = 0) -> list[np.ndarray]:
    """Per law, its squared error on each validation row of the carve and the extra folds (each
    fit made on that fold's fit part), in units of that fold's target variance, averaged over
    the targets: one array over all the folds' rows, inf where a fit fails. Train only."""
    out = []
    for law, folds in zip(laws, _fold_fits(laws, ctx, restarts, seed)):
        rows = []
        for res, v in folds:
            tcols = [v.target_columns.index(t) for t in law.target_names]
            yv = v.y[:, tcols]
            if isinstance(res, FitResult) and res.ok:
                with np.errstate(all="ignore"):
                    e = (predict(law, res.params(), v) - yv) ** 2 / np.maximum(np.var(yv, axis=0), 1e-300)
                e = np.where(np.isfinite(e), e, np.inf).mean(axis=1)
            else:
                e = np.full(len(yv), np.inf)
            rows.append(e)
        out.append(np.concatenate(rows))
    return out


def _against_reference(best, ctx: CandidateContext, card, train, cfg: SearchConfig):
    """The reference law (:mod:`~lawforge.search.reference_law`) against the chosen form: the
    chosen form is kept when its validation error (the carve and the extra folds, both laws
    refit there) is lower than the reference's in at least ``KEEP_SHARE`` of paired bootstrap
    resamples of the validation rows; otherwise the reference, refit on all of train, is chosen,
    provided it passes the checks and the contract there. Returns ``(swap or None, record)``;
    train only."""
    from lawforge.search.reference_law import KEEP_SHARE, beats, reference_law

    ref = reference_law(card, train)
    if ref is None:
        return None, {"chosen": "discovered", "why_not": "no reference for this data (shares on a simplex, "
                                                          "or several targets)"}
    found = law_of(best, card, train, cfg)
    ef, er = validation_errors([found, ref], ctx, cfg.fitting.final_restarts, cfg.seed)
    share = beats(ef, er, cfg.seed)
    rec = {"law": ref.to_string(), "found_error": float(np.mean(ef)), "reference_error": float(np.mean(er)),
           "rows": int(len(ef)), "found_better_share": share, "keep_share": KEEP_SHARE, "chosen": "discovered"}
    if share >= KEEP_SHARE:
        return None, rec
    fit = fit_split(ref, train, restarts=2 * cfg.fitting.final_restarts, seed=cfg.seed, device=ctx.device)
    tcols = [train.target_columns.index(t) for t in ref.target_names]
    if not fit.ok or (ctx.checks and not passes_checks(ref, fit.params(), ctx.screen, tcols)):
        rec["why_not"] = "its refit on train fails the checks"
        return None, rec
    contract = check_law(ref, fit.params(), train, card) if cfg.checks.contract else None
    if contract is not None and not contract.ok:
        rec["why_not"] = "its refit on train breaks the contract"
        return None, rec
    rec["chosen"] = "reference"
    with np.errstate(all="ignore"):
        m = compute_metrics(ctx.val.y[:, tcols], predict(ref, fit.params(), ctx.val))
    member = _Reference(S.from_law(ref), "reference", {"status": "ok", "val_r2": m.r2, "val_nmse": m.nmse,
                                                       "complexity": S.complexity(S.from_law(ref))}, "reference")
    return (member, ref, fit, contract), rec


@dataclass
class _Reference:
    """The reference law in the place of a searched member."""

    expr: Any
    key: str
    rec: dict
    origin: str


CONTRACT_TOP = 30
#: Forms fitted together between looks at the clock when the final stages run under a deadline.
CHUNK = 2


def by_chunks(items: list, run, deadline: float | None) -> list:
    """``run`` (a list in, a list out) over ``items``: in one call without a ``deadline``; with
    one (a :func:`time.perf_counter` value), :data:`CHUNK` items at a time while it has not
    passed, returning the results of the items reached."""
    if deadline is None:
        return run(items) if items else []
    out = []
    for i in range(0, len(items), CHUNK):
        if time.perf_counter() > deadline:
            break
        out += run(items[i:i + CHUNK])
    return out


def _contract_first(ranked: list, card, train, cfg: SearchConfig) -> tuple[list, set]:
    """``ranked`` with the forms that keep the readable-law contract on their search fit moved
    ahead of those that do not (each group in rank order), and the keys of those that keep it.
    The search recorded the check on each form's fit (``rec["contract"]``); forms of the first
    :data:`CONTRACT_TOP` without it (fitted with the contract off) are checked here, and further
    down only the recorded checks count. So where none of the first forms keeps the contract, a
    form further down that does comes first. No refit: the choice checks the refit again."""
    keep, drop = [], []
    for pos, m in enumerate(ranked):
        params = m.rec.get("params")
        ok = m.rec.get("contract")
        if ok is None and params and pos < CONTRACT_TOP:
            try:
                ok = check_law(law_of(m, card, train, cfg), params, train, card).ok
            except Exception:  # a law that cannot be evaluated does not keep the contract
                ok = False
        (keep if ok is True else drop).append(m)
    return keep + drop, {m.key for m in keep}


@dataclass
class EnsembleMember:
    law: Law
    params: dict
    origin: str
    val_nmse: float   # mean over the validation carve and the extra folds (refit there)
    weight: float


def build_ensemble(choice: Choice, ctx: CandidateContext, card, train, cfg: SearchConfig,
                   deadline: float | None = None) -> list[EnsembleMember]:
    """A model ensemble beside the chosen law: the chosen form, the next ``selection.top_k``
    ranked forms and the card's own laws, weighted by 1 / validation NMSE (each refit on the
    validation carve and the extra folds with ``fitting.final_restarts``, as the incumbent
    comparison does), each refit on all of ``train``. Members whose evidence or refit fails are
    left out, and so are the others whose refit breaks the readable-law contract
    (``checks.contract``): one wild member beyond the data spoils the mean. Train only; empty
    when ``selection.ensemble`` is off. With a ``deadline`` (a :func:`time.perf_counter` value)
    the members are evaluated :data:`CHUNK` at a time, in order (the chosen law first), until
    then; empty when it has already passed."""
    if not cfg.selection.ensemble:
        return []
    members = [(choice.member.origin, choice.law, choice.fit)]
    seen = {S.key(choice.member.expr)}
    for m in choice.ranked:
        if len(members) > cfg.selection.top_k:
            break
        if m.key not in seen:
            seen.add(m.key)
            members.append((m.origin, law_of(m, card, train, cfg, f"member{len(members)}"), None))
    for name, e, _specs in human_forms(card):
        if S.key(e) not in seen:
            seen.add(S.key(e))
            members.append((f"human:{name}", law_of(_Form(e), card, train, cfg, name), None))
    return _normalised(by_chunks(members, lambda chunk: _members(chunk, ctx, card, train, cfg), deadline))


def _members(members: list, ctx: CandidateContext, card, train, cfg: SearchConfig) -> list[EnsembleMember]:
    """The candidate members ``(origin, law, fit or None)`` with their evidence and refit; those
    that fail, or break the contract (all but the chosen law, which comes first), left out."""
    laws = [lw for _, lw, _ in members]
    evidence = [float(np.mean(r)) for r in validation_nmse(laws, ctx, cfg.fitting.final_restarts, cfg.seed)]
    need = [i for i, (_, _, f) in enumerate(members) if f is None and np.isfinite(evidence[i])]
    fits = dict(zip(need, fit_many([FitJob(laws[i], train, cfg.fitting.final_restarts, cfg.seed) for i in need],
                                   device=ctx.device, errors="return")))
    out = []
    for i, (origin, law, given) in enumerate(members):
        fit = given if given is not None else fits.get(i)
        if not (isinstance(fit, FitResult) and fit.ok and np.isfinite(evidence[i]) and evidence[i] > 0):
            continue
        with np.errstate(all="ignore"):
            ok = np.isfinite(predict(law, fit.params(), train)).all()
        if ok and given is None and cfg.checks.contract:   # the chosen law is in whatever its contract says
            ok = _keeps_contract(law, fit.params(), train, card, cfg)
        if ok and given is None:   # nor is one member that is undefined where a user may ask
            ok = box_issue(law, fit.params(), ctx.screen) is None
        if ok:
            out.append(EnsembleMember(law, fit.params(), origin, evidence[i], 1.0 / evidence[i]))
    return out


def _normalised(out: list[EnsembleMember]) -> list[EnsembleMember]:
    total = sum(m.weight for m in out)
    for m in out:
        m.weight /= total
    return out


def _keeps_contract(law, params, train, card, cfg: SearchConfig) -> bool:
    try:
        return check_law(law, params, train, card, first_only=True).ok
    except Exception:  # a law that cannot be evaluated does not keep the contract
        return False


def ensemble_predict(members: list[EnsembleMember], split) -> np.ndarray:
    """The weighted mean of the members' predictions (rows, targets)."""
    with np.errstate(all="ignore"):
        return np.tensordot(np.array([m.weight for m in members]),
                            np.stack([predict(m.law, m.params, split) for m in members]), axes=1)


@dataclass
class _Form:
    expr: Any
