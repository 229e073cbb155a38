"""Behaviour beyond the data: the contract's rules on a fitted law, and :func:`check_law`, which
applies every rule of the contract to a fitted law.

For each group and each feature with a declared trend, the law is evaluated at the group's train
rows with that feature pushed from its largest train value out to :data:`REACH` (1,000x) times it,
and with all trend features pushed together (:mod:`.push`); further still, to the ``FAR`` factors
(up to 1e30x), only the range rules apply. With hyperparameter features (learning rate, batch
size), a trend is a statement about the best setting: each pushed point is scored at the best of a
grid of settings around the train range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from lawforge.search.contract.form import building_blocks, form_issues, unit_bounded
from lawforge.search.contract.identify import redundant_issues, vanishing_numbers
from lawforge.search.contract.push import FAR, REACH, STEPS, cell_index, contract_push, push_values
from lawforge.search.contract.rules import Issue, rule

#: Of the group's target range: how far a law may move against its trend out to :data:`REACH`.
TOL = 1e-3
_BOTH = ("screen", "choice")

NO_OPTIMUM = rule(
    "no-optimum", "beyond", _BOTH, "a declared hyperparameter without a best setting",
    """A card declares a hyperparameter (learning rate, batch size) because it has a best setting. At every
    train setting of the other features, the law's best value of it must lie inside its train range widened
    1000x each way: a law without the feature, or with the loss falling all the way to lr -> 0, says the
    opposite. A group whose train rows take fewer than 3 values of it is not checked.""",
    keeps="p0 + p1*(p2 + p3*log(N) + log(lr))**2", breaks="p0 + p1*N**p2 + p3*log(lr)")
NOT_FINITE_BEYOND = rule(
    "not-finite-beyond", "beyond", _BOTH, "not finite beyond the data",
    """Along each declared trend, out to 1000x the largest train value and further (to 1e30x), the law is
    finite: ``p2 + D**p3`` with a negative fitted ``p2`` under a fractional power is undefined there.""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1*log(p2 + N)  (p2 < 0 with N pushed down)")
AGAINST_TREND = rule(
    "against-trend", "beyond", _BOTH, "moves against its declared trend",
    f"""Out to 1000x along a declared trend, the law never moves against it by more than {TOL:g} of the
    group's train range (a loss that falls with N does not rise again at 10x N).""",
    keeps="p0 + p1/N**p2 (p1, p2 > 0)", breaks="p0 + p1*N**p2 (p1 > 0, p2 > 0 on a decreasing loss)")
TURNS_BACK = rule(
    "turns-back", "beyond", _BOTH, "turns against its trend beyond 1000x",
    """Beyond 1000x, out to 1e30x, a law may not fall back by more than 0.1 of its train range: a loss that
    approaches a floor never rises again; ``p*D**-a*log(N)`` or ``p*log(N)`` beside a power does. Not with
    hyperparameters, whose best setting far out lies beyond any grid of settings.""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1/N**p2 + p3*log(N)")
ACCELERATES = rule(
    "accelerates", "beyond", _BOTH, "accelerates beyond the data",
    """Its gain over the push's last third (100x to 1000x) may not exceed 3 times its first third's (1x to
    10x) plus half a train range: a power law or a floor gains less and less, a log the same per decade, a
    term linear in N more and more. Not for targets within [-1, 1], which have a range instead.""",
    keeps="p0 + p1/N**p2", breaks="p0 - p1*N (p1 > 0)")
BELOW_ZERO = rule(
    "below-zero", "beyond", _BOTH, "falls below 0 (a positive target)",
    """Where every train value is positive (a loss), the law stays non-negative out to 1000x and further:
    a loss law has a finite floor (``E + A/N**a`` keeps it, ``E - b*log(N)`` does not).""",
    keeps="p0 + p1/N**p2", breaks="p0 - p1*log(N)")
NO_FLOOR = rule(
    "no-floor", "beyond", _BOTH, "no floor or ceiling far out (a target with no natural range)",
    """Where some train value is <= 0 (a loss less a baseline), the range rule cannot say that a loss law has
    a floor: from 1e12x to 1e30x the law may not move by more than 0.1 of its train range while still gaining
    per decade half of what it gains near the data (a log in N does, a power law does not).""",
    keeps="p0 + p1*N**p2 (p2 < 0)", breaks="p0 - p1*log(N)")
ABOVE_ONE = rule(
    "above-one", "beyond", _BOTH, "rises above 1 (a target within [0, 1])",
    """Where every train value lies in [0, 1] (an accuracy, an error rate), the law stays at most 1 out to
    1000x and further: a sigmoid keeps its ceiling, a line in log C does not.""",
    keeps="p0 + p1/(1 + exp(p2 - log(C)))", breaks="p0 + p1*log(C)")


@dataclass
class ContractResult:
    ok: bool
    issues: list[Issue] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """The issues as messages, for people."""
        return [str(i) for i in self.issues]

    @property
    def rules(self) -> list[str]:
        """The ids of the rules broken, each once, in order."""
        return list(dict.fromkeys(i.rule for i in self.issues))

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reasons": self.reasons, "rules": self.rules, "blocks": list(self.blocks)}


def check_law(law, params: Mapping[str, Mapping[str, float]], train, card, *, reach: float = REACH,
              tol: float = TOL, hyper_values: int = 49, first_only: bool = False) -> ContractResult:
    """Check ``law`` with fitted ``params`` (group -> name -> value) against the contract, on the
    card's declared trends beyond ``train`` (a :class:`~lawforge.datasets.DataSplit`).

    A feature never larger than another on any train row, and equal to it on some (unique tokens
    and tokens), stays so when pushed. ``hyper_values``: settings per hyperparameter in the grid;
    ``first_only``: stop at the first broken rule (the search's screen; no building blocks)."""
    issues = _law_issues(law, params, train, card, first_only)
    if first_only and issues:
        return ContractResult(False, issues)
    trends = card.trends
    hyper = [f.column for f in card.features if f.role == "hyperparameter"]
    logs = card.log_bases
    better = np.array([1.0 if t.higher_is_better else -1.0 for t in card.targets])
    for g in train.group_names:
        if g not in params:
            continue
        rows = train.group_rows(g)
        X = {c: v[rows] for c, v in train.X.items()}
        y = train.y[rows]
        if hyper:
            issues += [Issue(i.rule, f"group {g!r}: {i.detail}") for i in
                       _no_optimum(law, params[g], X, hyper, better, hyper_values)]
            if first_only and issues:
                return ContractResult(False, issues)
        span = np.maximum(y.max(axis=0) - y.min(axis=0), 1e-12 * np.maximum(np.abs(y).max(axis=0), 1e-300))
        bounded = [unit_bounded(y[:, j]) for j in range(y.shape[1])]
        pushes = [[c] for c in trends] + ([list(trends)] if len(trends) > 1 else [])
        for cols in pushes:
            preds = _push(law, params[g], X, cols, reach, hyper, better, hyper_values, logs)  # (steps, points, targets)
            where = f"group {g!r}, pushing {' and '.join(cols)}"
            near, further = f"{where} to {reach:g}x", f"{where} further"
            if not np.isfinite(preds[:STEPS]).all():
                issues.append(Issue(NOT_FINITE_BEYOND, f"{near}: not finite"))
                continue
            if not np.isfinite(preds).all():
                issues.append(Issue(NOT_FINITE_BEYOND, f"{further}: not finite"))
                continue
            sign = _sign(trends, cols)
            positive = all((X[c] > 0).all() or c in logs for c in cols)   # pushed by factors (decades), not ranges
            for j, tcol in enumerate(card.target_columns):
                p, far = preds[:STEPS, :, j], preds[:, :, j]
                moves = np.diff(p, axis=0) * sign            # > 0: with the trend
                if sign and (moves < -tol * span[j]).any():
                    issues.append(Issue(AGAINST_TREND, f"{near}: {tcol} moves against the trend"))
                if sign and not hyper and (back := _turns_back(far * sign, span[j])):
                    issues.append(Issue(TURNS_BACK, f"{further}: {tcol} turns against the trend by {back:.2g} of "
                                        f"its train range out to {FAR[-1]:g}x (no floor: it goes back)"))
                if sign and not bounded[j] and _accelerates(p * sign, span[j]):
                    issues.append(Issue(ACCELERATES, f"{near}: {tcol} accelerates beyond the data (its gain per "
                                        f"decade grows {ACCEL:g}x or more: no floor or ceiling in sight)"))
                if (y[:, j] > 0).all() and (p < -tol * span[j]).any():
                    issues.append(Issue(BELOW_ZERO, f"{near}: {tcol} falls below 0"))
                elif (y[:, j] > 0).all() and (far < -tol * span[j]).any():
                    issues.append(Issue(BELOW_ZERO, f"{further}: {tcol} falls below 0 (no floor)"))
                if (sign and not bounded[j] and not (y[:, j] > 0).all() and positive
                        and _no_floor(far * sign, reach, span[j])):
                    issues.append(Issue(NO_FLOOR, f"{further}: {tcol} moves by more than {FLOOR_SPAN:g} of its "
                                        f"train range from 1e12x to 1e30x, per decade as fast as near the data "
                                        f"(no floor or ceiling)"))
                if ((y[:, j] >= 0) & (y[:, j] <= 1)).all() and (p > 1 + tol * span[j]).any():
                    issues.append(Issue(ABOVE_ONE, f"{near}: {tcol} rises above 1"))
                elif ((y[:, j] >= 0) & (y[:, j] <= 1)).all() and (far > 1 + tol * span[j]).any():
                    issues.append(Issue(ABOVE_ONE, f"{further}: {tcol} rises above 1 (no ceiling)"))
            if first_only and issues:   # the search only needs to know that it fails
                return ContractResult(False, issues)
    issues = list(dict.fromkeys(issues))
    return ContractResult(not issues, issues, building_blocks(law))


def _law_issues(law, params, train, card, first_only: bool) -> list[Issue]:
    """The contract's rules at the data (form, identifiable constants, vanishing terms); with
    ``first_only``, those of the first rule that breaks."""
    checks = [lambda: form_issues(law, unit_bounded(train.y), card.log_variables),
              lambda: redundant_issues(law, params, train),
              lambda: vanishing_numbers(law, train)]
    issues: list[Issue] = []
    for check in checks:
        issues += check()
        if first_only and issues:
            break
    return issues


@functools.lru_cache(maxsize=8)
def _push_arrays(reach: float) -> tuple[np.ndarray, np.ndarray]:
    push = contract_push(reach)
    return np.asarray(push.factors), np.asarray(push.offsets)


def _push(law, params, X, cols, reach, hyper, better, n_values: int = 49, logs=None) -> np.ndarray:
    """Predictions at the contract's pushes (:func:`~.push.contract_push`) of ``cols`` from each
    one's largest value, at the distinct train cells of the other features; with hyperparameters,
    at the best setting of the train grid for each cell. (factors, cells, targets)."""
    factors, offsets = _push_arrays(reach)
    others = [c for c in X if c not in hyper]
    cells = _cells(X, hyper)
    n = len(next(iter(cells.values()))) if cells else 1
    axes, combos = _settings(X, hyper, n_values)
    m = len(combos)
    # a bound the data reach (unique tokens <= tokens, equal for single-epoch runs) is kept
    below = {c: [d for d in others if d != c and (X[c] <= X[d]).all() and (X[c] == X[d]).any()] for c in cols}
    # every factor's points in one evaluation: rows are (factor, cell), factor-major
    F = len(factors)
    fk = np.repeat(np.arange(F), n)
    Xk = {c: np.tile(v, F) for c, v in cells.items()}
    for c in cols:
        v = X[c]
        Xk[c] = push_values(v.max(), factors[fk], offsets[fk], log_base=(logs or {}).get(c),
                            positive=bool((v > 0).all()), span=v.max() - v.min() + 1e-12)
    for c in cols:
        for d in below[c]:
            Xk[d] = np.maximum(Xk[d], Xk[c])
    Xg = {c: np.repeat(v, m) for c, v in Xk.items()}
    for i, h in enumerate(hyper):
        Xg[h] = np.tile(combos[:, i], F * n)
    pk = law.predict(Xg, params).reshape(F * n, m, -1)      # (factor x cells, settings, targets)
    if m > 1:   # the best finite setting per cell (a non-finite law stays non-finite)
        score = np.where(np.isfinite(pk), pk * better, -np.inf)
        pick = np.argmax(score, axis=1)                     # (factor x cells, targets)
        best = np.take_along_axis(pk, pick[:, None, :], axis=1)[:, 0, :]
        pk = _refine(law, params, Xk, hyper, axes, score, pick, best, better)
    else:
        pk = pk[:, 0, :]
    return pk.reshape(F, n, -1)


ACCEL = 3.0        # a law's gain over the push's last third may be at most this times its first third's
ACCEL_TOL = 0.5    # ... plus this fraction of the group's target range


FLOOR_RATIO = 0.5   # far out, a law may gain at most this share per decade of what it gains near the data ...
FLOOR_SPAN = 0.1    # ... where it still moves by more than this share of the train range from 1e12x to 1e30x


def _no_floor(q: np.ndarray, reach: float, span: float) -> bool:
    """Whether predictions ``q`` (the push's steps then the ``FAR`` factors x points, signed so
    that the trend is up) still gain, from 1e12x to 1e30x, more than ``FLOOR_SPAN`` of the train
    range and per decade at least ``FLOOR_RATIO`` of their gain per decade from 1x to ``reach``: a log
    gains the same per decade (ratio 1), ``N**-a`` 10**(-21a) as much (below 0.5 for a > 0.015).
    For targets with no natural range (a loss less a baseline, negative), where the range rule
    cannot say that a loss law has a floor."""
    near = (q[STEPS - 1] - q[0]) / np.log10(reach)
    far = (q[-1] - q[-2]) / np.log10(FAR[-1] / FAR[-2])
    return bool(((far * np.log10(FAR[-1] / FAR[-2]) > FLOOR_SPAN * span) & (far >= FLOOR_RATIO * near)).any())


TURN_TOL = 0.1   # of the train range: how far a law may move against its trend beyond 1000x


def _turns_back(q: np.ndarray, span: float) -> float:
    """How far predictions ``q`` (the push's steps then the ``FAR`` factors x points, signed so
    that the trend is up) fall back from ``REACH`` out to 1e30x, in train ranges, where that is
    more than ``TURN_TOL`` (else 0). A loss that approaches a floor never rises again; one with a
    term that grows without bound (``p*D**-a*log(N)``, ``p*log(N)`` beside a power) does, past
    the reach of the monotone check. Not used with hyperparameters, whose best setting far out
    lies beyond the train grid (a bowl's centre moves with scale)."""
    steps = q[STEPS - 1:]
    drop = (np.maximum.accumulate(steps, axis=0) - steps).max() / span
    return float(drop) if drop > TURN_TOL else 0.0


def _accelerates(q: np.ndarray, span: float) -> bool:
    """Whether predictions ``q`` (steps x points, signed so that the trend is up) gain more over
    the last third of the push (100x to 1,000x) than ``ACCEL`` times the first third (1x to 10x)
    plus ``ACCEL_TOL`` ranges. A power law or a floor gains less and less, a log the same per
    decade, a linear or exponential term more and more (``p0 + p1*N``: 100x). The card's laws
    reach at most 1.9x (a rectified law's knee); targets within [-1, 1] have a range instead."""
    k = (len(q) - 1) // 3
    first, last = q[k] - q[0], q[-1] - q[-1 - k]
    return bool((last > ACCEL * np.maximum(first, 0.0) + ACCEL_TOL * span).any())


def _sign(trends, cols) -> int:
    dirs = {trends[c] for c in cols}
    if len(dirs) != 1:
        return 0
    return -1 if dirs == {"decreasing"} else 1


def _cells(X, hyper) -> dict[str, np.ndarray]:
    """The distinct train cells of the features other than the hyperparameters (:func:`~.push.cell_index`)."""
    first, _ = cell_index(X, hyper)
    return {c: X[c][np.sort(first)] for c in X if c not in hyper}


def _settings(X, hyper, n_values):
    """The hyperparameter settings the contract scores a law at: the train range widened 1000x
    each way (a law's optimum moves with scale), on a log grid for positive values (3 train
    ranges each way otherwise); (axes, every combination)."""
    axes = []
    for h in hyper:
        lo, hi = X[h].min(), X[h].max()
        axes.append(np.geomspace(lo / 1e3, hi * 1e3, n_values) if lo > 0
                    else np.linspace(lo - 3 * (hi - lo), hi + 3 * (hi - lo), n_values))
    combos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(hyper)) if hyper else np.zeros((1, 0))
    return axes, combos


def _no_optimum(law, params, X, hyper, better, n_values: int = 49) -> list[Issue]:
    """The hyperparameters along which the law has no optimum: at some train cell of the other
    features its best setting on the widened grid (:func:`_settings`) lies at an end of it. A
    card declares a hyperparameter because it has a best setting; a law without one (the
    feature absent, or the loss falling towards lr -> 0) says the opposite. A group whose train
    rows take fewer than 3 values of it has no sweep to show an optimum, and is not checked."""
    swept = [h for h in hyper if len(np.unique(X[h])) >= 3]   # fewer values: nothing shows an optimum
    if not swept:
        return []
    cells = _cells(X, hyper)
    n = len(next(iter(cells.values()))) if cells else 1
    axes, combos = _settings(X, hyper, n_values)
    m = len(combos)
    Xg = {c: np.repeat(v, m) for c, v in cells.items()}
    for i, h in enumerate(hyper):
        Xg[h] = np.tile(combos[:, i], n)
    with np.errstate(all="ignore"):
        pk = law.predict(Xg, params).reshape(n, m, -1)
    score = np.where(np.isfinite(pk), pk * better, -np.inf)
    idx = np.unravel_index(np.argmax(score, axis=1), tuple(len(a) for a in axes))   # per hyper: (cells, targets)
    out = []
    for h, i in zip(hyper, idx):
        if h not in swept:
            continue
        edge = ((i == 0) | (i == n_values - 1)).any(-1)
        if edge.any():
            out.append(Issue(NO_OPTIMUM, f"{h} has no best setting within 1000x of its train range at "
                             f"{int(edge.sum())} of {n} train settings of the other features (it is declared a "
                             f"hyperparameter: a law needs an optimum in it)"))
    return out


def _refine(law, params, Xk, hyper, axes, score, pick, best, better) -> np.ndarray:
    """The best grid setting of each cell moved to the vertex of the parabola through it and
    its grid neighbours along each hyperparameter (in grid steps, at most one), kept where it
    is better: the optimum between grid points, so that a moving optimum reads as smooth."""
    shape = tuple(len(a) for a in axes)
    strides = np.cumprod((1,) + shape[::-1])[:-1][::-1]
    out = best.copy()
    for j in range(best.shape[1]):
        b = pick[:, j]
        idx = np.stack(np.unravel_index(b, shape), axis=1)          # (cells, hypers)
        X = dict(Xk)
        for h, name in enumerate(hyper):
            i = idx[:, h]
            lo, hi = np.clip(i - 1, 0, shape[h] - 1), np.clip(i + 1, 0, shape[h] - 1)
            rows = np.arange(len(b))
            f0 = score[rows, b, j]
            fm = score[rows, b - (i - lo) * strides[h], j]
            fp = score[rows, b + (hi - i) * strides[h], j]
            curv = fm - 2 * f0 + fp                                   # < 0 at a maximum of the score
            ok = (i > 0) & (i < shape[h] - 1) & np.isfinite(fm) & np.isfinite(fp) & (curv < 0)
            delta = np.where(ok, np.clip(0.5 * (fm - fp) / np.where(ok, curv, -1.0), -1, 1), 0.0)
            a = axes[h]
            grid = np.log(a) if (a > 0).all() else a
            pos = np.interp(i + delta, np.arange(len(a)), grid)
            X[name] = np.exp(pos) if (a > 0).all() else pos
        with np.errstate(all="ignore"):
            ref = law.predict(X, params)[:, j]
        better_here = np.isfinite(ref) & (ref * better[j] > best[:, j] * better[j])
        out[:, j] = np.where(better_here, ref, best[:, j])
    return out
