"""What a search starts from, all from train: the grammar's space, the seed forms, and the
context every candidate is scored with (fit/validation parts, folds, probe points)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from lawforge.datasets.loader import SealedDataset
from lawforge.fitting.lm import resolve_device
from lawforge.search import space as S
from lawforge.search.candidates import CandidateContext
from lawforge.search.contract import unit_bounded
from lawforge.search.checks import (BETWEEN_TOL, PROBE_TOL, Screen, make_between_probe, make_domain_probe,
                                    make_box_probe, make_probe, make_trend_probe, probe_stats)
from lawforge.search.settings import SearchConfig

# Shared parameters (``s0``...) are searched on datasets with 2..MAX_SHARED_GROUPS groups. A law
# with a shared parameter is fitted as one dense problem over all groups: on sft's 42 groups one
# such fit took 1.25 s against 0.24 s per group, and the 60 s sft search fell from 741 to 261
# evaluations; with 2 to 9 groups (parallel, easy_question) it costs about the same.
MAX_SHARED_GROUPS = 16


def build_space(ds: SealedDataset, cfg: SearchConfig | None = None) -> S.Space:
    infos = []
    for f in ds.card.features:
        v = ds.train.X[f.column]
        infos.append(S.VarInfo(f.symbol, bool(np.all(v > 0)), bool(np.max(np.abs(v)) <= 50),
                               f.role == "hyperparameter"))
    grouped = (cfg is None or cfg.grammar.shared_params) and 1 < len(np.unique(ds.train.groups)) <= MAX_SHARED_GROUPS
    return S.Space(infos, n_targets=len(ds.card.targets), param_limit=ds.card.param_limit, grouped=grouped,
                   readable=cfg is None or cfg.checks.readable_form, unit_offset=unit_bounded(ds.train.y),
                   log_vars=sorted(ds.card.log_variables))


def seeds_for(ds: SealedDataset, space: S.Space) -> list[tuple[sp.Expr, str]]:
    """The card's human laws (as forms over p* parameters) and the generic building blocks."""
    out: list[tuple[sp.Expr, str]] = []
    for h in ds.card.human_laws:
        law, _ = ds.card.human_law(h.name)
        e = S.from_law(law)
        if e is not None:
            out.append((e, f"human:{h.name}"))
        elif len(law.exprs) > 1:  # per-target law: seed with its first target's form
            first = next(iter(law.exprs.values()))
            names = [p.name for p in law.params if any(s.name == p.name for s in first.free_symbols)]
            ren = {sp.Symbol(n, real=True): S.P(i) for i, n in enumerate(names)}
            out.append((first.xreplace(ren), f"human:{h.name}"))
    out += [(e, "seed:generic") for e in S.generic_seeds(space)]
    return out


def human_forms(card) -> list[tuple[str, sp.Expr, dict[str, dict]]]:
    """The card's single-target human laws as ``(name, form over p-names, parameter specs)``
    (:func:`~lawforge.search.space.from_law_specs`), computed once per card object."""
    hit = _HUMAN_FORMS.get(id(card))
    if hit is not None and hit[0] is card:
        return hit[1]
    out = []
    for h in card.human_laws:
        got = S.from_law_specs(card.human_law(h.name)[0])
        if got is not None:
            out.append((h.name, got[0], got[1]))
    _HUMAN_FORMS[id(card)] = (card, out)
    return out


_HUMAN_FORMS: dict[int, tuple] = {}


def seed_specs(card) -> dict[str, dict[str, dict]]:
    """The card's single-target human laws as ``{form text: {p-name: parameter spec}}``: the
    search and the final choice fit these forms with the law's own inits and bounds."""
    return {sp.sstr(e): specs for _, e, specs in human_forms(card)}


def make_context(sealed: SealedDataset, cfg: SearchConfig) -> CandidateContext:
    """What every candidate is scored with: the fit/validation parts, the rolling-origin folds,
    and the probe and trend points beyond the train range (all from train)."""
    card, checks = sealed.card, cfg.checks
    axis = card.validation.get("axis")
    # scale datasets: points beyond the train range; mixture-type (no axis): points between and
    # across the groups' measured points, with a wider band (BETWEEN_TOL)
    logs = card.log_bases
    probe = make_probe(sealed.train, axis, logs) if axis else \
        make_between_probe(sealed.train) if checks.sane_between_points else None
    probe_tol = PROBE_TOL if axis else BETWEEN_TOL
    domain = make_domain_probe(sealed.train) if not axis and checks.finite_on_domain else None
    box = make_box_probe(sealed.train, logs) if checks.finite_on_box else None
    center, span = probe_stats(sealed.train, probe) if probe is not None else (None, None)
    dcenter, dspan = probe_stats(sealed.train, domain) if domain is not None else (None, None)
    hyper = [f.column for f in card.features if f.role == "hyperparameter"] if checks.trend_at_best_setting else []
    trends = card.trends
    trend = make_trend_probe(sealed.train, trends, hyper, logs) if checks.follow_trends else None
    tspan = probe_stats(sealed.train, trend[0])[1] if trend is not None else None
    folds = sealed.extra_folds(max(0, cfg.validation.folds - 1))
    fit, val = sealed.fit, sealed.val
    if replicate_means(cfg):
        fit, val = fit.cell_means(), val.cell_means()
        folds = [(f.cell_means(), v.cell_means()) for f, v in folds]
    return CandidateContext(dict(card.variables), card.target_columns, fit, val,
                            restarts=cfg.fitting.restarts, max_iter=cfg.fitting.max_iter,
                            batch=cfg.fitting.batch, device=resolve_device(cfg.fitting.device),
                            screen=Screen(probe=probe, probe_tol=probe_tol, probe_center=center, probe_span=span,
                                          trend=trend, trend_span=tspan, domain=domain, domain_center=dcenter,
                                          domain_span=dspan, box=box),
                            folds=folds, scale_starts=cfg.grammar.scale_starts,
                            readable_form=checks.readable_form, unit_offset=unit_bounded(sealed.train.y),
                            log_vars=tuple(sorted(card.log_variables)),
                            seed_specs=seed_specs(card),
                            contract_card=card if checks.contract else None,
                            contract_train=sealed.train if checks.contract else None)


def final_train(sealed: SealedDataset, cfg: SearchConfig):
    """The split the chosen law is refit on after the search: all of train, as cell means when
    replicates are averaged (``validation.replicates``)."""
    return sealed.train.cell_means() if replicate_means(cfg) else sealed.train


def replicate_means(cfg: SearchConfig) -> bool:
    """Whether replicate rows are averaged into one per design point."""
    return cfg.validation.replicates == "mean"
