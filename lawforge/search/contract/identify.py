"""Rules on a law's fitted constants at the data: constants the law cannot tell apart, terms that
vanish on the data. Also the unit-covariance measurement (:func:`unit_residuals`), a retired
rule that ``benchmarks/unit_covariance.py`` still reports."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import sympy as sp

from lawforge.search.contract.form import _has_var, _num
from lawforge.search.contract.push import on_simplex
from lawforge.search.contract.rules import Issue, rule

REDUNDANT_CONSTANTS = rule(
    "redundant-constants", "constants", ("screen", "choice"), "fitted constants the law cannot tell apart",
    """The law's Jacobian in its constants loses rank at the fit and around it, on the train features with
    each column shuffled on its own (so that only what the law itself ties counts, not what the data happen
    to): ``p1*(p2*x)**p3``, where ``p1*p2**p3`` is one constant. A researcher merges them.""",
    keeps="p0 + p1*N**p2", breaks="p0 + p1*(p3*N)**p2")
VANISHING_TERM = rule(
    "vanishing-term", "constants", ("screen", "choice"), "a term with no fitted constant that vanishes on the data",
    """Two terms of a sum with no fitted constant, one below 1e-3 of the other on every train row: ``1 + N``
    is N where N is 1e8 or more, ``1 + 1/V`` is 1. The smaller term means nothing there and says nothing
    beyond the data; a researcher drops it or gives it a fitted scale (``1 + k/V``).""",
    keeps="p0*(1 + p1/V)", breaks="p0*(1 + N)")
def redundant_issues(law, params, train) -> list[Issue]:
    """Rule ``redundant-constants``: :func:`redundant_constants` as issues."""
    k = redundant_constants(law, params, train)
    return [Issue(REDUNDANT_CONSTANTS, f"{k} fitted constant{'s' if k > 1 else ''} the law cannot tell apart "
                  f"from the others (as p1*(p2*x)**p3, where p1*p2**p3 is one constant): merge them")] if k else []


VANISH = 1e-3   # a term with no fitted constant below this fraction of another one in its sum vanishes


def vanishing_numbers(law, train) -> list[Issue]:
    """Terms with no fitted constant, a bare number among them, that vanish beside another such
    term of the same sum: on every train row one is below :data:`VANISH` times the other (in
    absolute value). ``1 + N`` is ``N`` on data where N is 1e8 or more, ``1 + 1/V`` is ``1``,
    and in ``p*log(N) + log(N)**(-2) + N**(-4)`` the ``N**(-4)`` is nothing beside
    ``log(N)**(-2)``. The smaller term means nothing there and says nothing beyond the data: a
    researcher writes the sum without it, or gives it a fitted scale (``1 + k/V``). Terms with a
    fitted constant are not compared: what they weigh depends on the fit."""
    names = set(law.variables)
    out = []
    for expr in law.exprs.values():
        vars_ = {s for s in expr.free_symbols if s.name in names}
        for node in sp.preorder_traversal(expr):
            if not isinstance(node, sp.Add):
                continue
            nums = [t for t in node.args if _num(t)]
            bare = ([sp.Add(*nums)] if nums else []) + \
                [t for t in node.args if not _num(t) and _has_var(t, vars_) and not t.free_symbols - vars_]
            if len(bare) < 2:
                continue
            sizes = [_abs_values(t, law, train) for t in bare]
            for i, j in ((i, j) for i in range(len(bare)) for j in range(len(bare)) if i != j):
                if sizes[i] is None or sizes[j] is None:
                    continue
                ok = np.isfinite(sizes[i]) & np.isfinite(sizes[j]) & (sizes[j] > 0)
                if ok.any() and np.all(sizes[i][ok] < VANISH * sizes[j][ok]):
                    what = "a bare number that vanishes beside its variable" if _num(bare[i]) else \
                        "a term with no fitted constant that vanishes beside another"
                    out.append(Issue(VANISHING_TERM, f"{what} on the data ({bare[i]} is below {VANISH:g} of "
                                     f"{bare[j]} on every train row)", node))
                    break
    return list(dict.fromkeys(out))


def _abs_values(term: sp.Expr, law, train) -> np.ndarray | None:
    """``|term|`` on every train row (a number broadcast), or None where it cannot be evaluated
    (a sum the data cannot evaluate is the other rules' business)."""
    if _num(term):
        return np.full(train.n, abs(float(term)))
    syms = sorted(term.free_symbols, key=lambda s: s.name)
    try:
        with np.errstate(all="ignore"):
            v = sp.lambdify(syms, term, "numpy")(*[np.asarray(train.X[law.variables[s.name]], dtype=float)
                                                   for s in syms])
        return np.abs(np.broadcast_to(np.asarray(v, dtype=float), (train.n,)))
    except Exception:
        return None


REDUNDANT_ROWS = 128     # feature rows the identifiability check evaluates the Jacobian on
REDUNDANT_GROUPS = 3     # groups whose fitted constants it checks (a majority must be redundant)
REDUNDANT_TOL = 1e-7     # singular value, relative to the largest, below which a direction is lost


def redundant_constants(law, params: Mapping[str, Mapping[str, float]], train, seed: int = 0) -> int:
    """How many of the law's fitted constants are redundant: the rank deficit of its Jacobian
    (columns scaled to unit norm) at the fitted constants and at two points around them
    (each constant times ``exp(0.3 z)``), the smallest of the three. It is evaluated on the train
    features with each column shuffled on its own, so that what the data happen to tie together
    (mixture weights that sum to 1, a feature constant within a group) does not count, only what
    the law itself ties (``p1*(p2*x)**p3``, ``s1*(s2*log(N)**2)**s3``) or a regime where a term
    cannot matter (``(D**p + 2)`` with D ~ 1e10). Counted when a majority of the first
    :data:`REDUNDANT_GROUPS` groups show it; a single degenerate group's fit does not."""
    names = law.param_names
    groups = [g for g in train.group_names if g in params][:REDUNDANT_GROUPS]
    if not names or not groups:
        return 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6007]))
    n = min(train.n, REDUNDANT_ROWS)
    rows = rng.choice(train.n, n, replace=False) if train.n > n else np.arange(train.n)
    env0 = {sym: rng.permutation(np.asarray(train.X[col], dtype=np.float64)[rows])
            for sym, col in law.variables.items()}
    found = []
    for g in groups:
        base = np.array([float(params[g][p]) for p in names])
        lost = None
        for jitter in (0.0, 0.3, 0.3):
            theta = base * np.exp(jitter * rng.standard_normal(len(names)))
            J = _jacobian(law, env0, dict(zip(names, theta)), n)
            J = J[np.isfinite(J).all(axis=1)]
            if len(J) < len(names):
                continue
            norms = np.linalg.norm(J, axis=0)
            if not np.isfinite(norms).all():
                continue
            if (norms == 0).any():
                d = int((norms == 0).sum())
            else:
                s = np.linalg.svd(J / norms, compute_uv=False)
                d = int(len(names) - (s > REDUNDANT_TOL * s[0]).sum())
            lost = d if lost is None else min(lost, d)
            if lost == 0:
                break
        found.append(lost or 0)
    found.sort()
    return found[len(found) // 2] if 2 * sum(1 for f in found if f) > len(found) else 0


def _jacobian(law, env: dict, theta: Mapping[str, float], n: int) -> np.ndarray:
    """The law's Jacobian in its fitted constants, (n rows x targets, constants), at the features
    ``env`` (symbol -> n values) and the constants ``theta``."""
    from lawforge.laws.expr import numpy_backend

    prog, pairs = law.jacobian_program
    T = len(law.targets)
    env = dict(env, **{p: np.float64(theta[p]) for p in law.param_names})
    with np.errstate(all="ignore"):
        outs = prog.run(numpy_backend(), env)
    J = np.zeros((n * T, len(law.param_names)))
    for i, (t, k) in enumerate(pairs):
        J[t * n:(t + 1) * n, k] += np.broadcast_to(np.asarray(outs[T + i], dtype=np.float64), (n,))
    return J


UNIT_TOL = 1e-3    # relative residual above which a change of units is not absorbed (covariant laws: 1e-11
                   # to 6e-4, the latter from the conditioning of a 16-constant law)
UNIT_EPS = 1e-4    # relative step of the rescaling's central difference


def unit_classes(card, train, used: set[str]) -> dict[str, list[str]]:
    """Features that a change of units rescales together, ``{label: [columns]}``: the law's
    positive features (or ``log:`` features, shifted) grouped by the card's ``unit`` (tokens and
    unique tokens share one), each feature with no unit on its own. A feature with
    ``natural_unit: true`` (experts, parallel streams: one means something) is left out, and so
    are features on a simplex (mixture proportions) and features with values <= 0."""
    if on_simplex(train):
        return {}
    logs = card.log_bases
    cols = [c for c in train.X if c in used]
    feats = {f.column: f for f in card.features}
    out: dict[str, list[str]] = {}
    for c in cols:
        f = feats.get(c)
        if f is not None and f.natural_unit or not (c in logs or (np.asarray(train.X[c]) > 0).all()):
            continue
        out.setdefault(f.unit if f is not None and f.unit else c, []).append(c)
    return out


def unit_residuals(law, params: Mapping[str, Mapping[str, float]], train, card) -> dict[str, float]:
    """How far a change of units is from being absorbed by the law's fitted constants, per class
    of :func:`unit_classes`: rescaling ``x -> k*x`` changes the law by ``v = x*df/dx`` (summed
    over the class), which a covariant law (``E + A/N**a``, ``(A/(N*(1 + k*log P)))**a``)
    absorbs in its constants: ``v`` lies in the span of the Jacobian. The relative residual of that
    least-squares projection on a group's train rows spread 1000x each way (:func:`_spread`;
    rows where the law is not finite left out), the median over the first
    :data:`REDUNDANT_GROUPS` groups. ``1 + N**p`` or a bare ``log(V)`` fix a scale by the data's
    units (N counted in units, not millions) and have a residual far above :data:`UNIT_TOL`."""
    used = {law.variables[s.name] for e in law.exprs.values() for s in e.free_symbols if s.name in law.variables}
    classes = unit_classes(card, train, used)
    groups = [g for g in train.group_names if g in params][:REDUNDANT_GROUPS]
    logs = card.log_bases
    out = {}
    for label, cols in classes.items():
        found = []
        for g in groups:
            X = _spread(train, train.group_rows(g), cols, logs)
            n = len(next(iter(X.values())))
            up, dn = dict(X), dict(X)
            for c in cols:
                d = UNIT_EPS / np.log(logs[c]) if c in logs else None
                up[c] = X[c] + d if d else X[c] * (1 + UNIT_EPS)
                dn[c] = X[c] - d if d else X[c] * (1 - UNIT_EPS)
            with np.errstate(all="ignore"):
                v = ((law.predict(up, params[g]) - law.predict(dn, params[g])) / (2 * UNIT_EPS)).T.ravel()
            J = _jacobian(law, {s: X[c] for s, c in law.variables.items() if c in X}, params[g], n)
            ok = np.isfinite(v) & np.isfinite(J).all(axis=1)
            v, J = v[ok], J[ok]
            nv = np.linalg.norm(v)
            if not ok.any() or nv <= 1e-12 * np.linalg.norm(np.nan_to_num(law.predict(X, params[g]))):
                found.append(0.0)   # the law does not depend on the class here
                continue
            norms = np.linalg.norm(J, axis=0)
            Jn = J[:, norms > 0] / norms[norms > 0]
            coef = np.linalg.lstsq(Jn, v, rcond=None)[0] if Jn.shape[1] else np.zeros(0)
            found.append(float(np.linalg.norm(v - Jn @ coef) / nv))
        if found:
            out[label] = float(np.median(found))
    return out


UNIT_SPREAD = (1e-3, 1e-1, 1.0, 1e1, 1e3)   # factors on a class's features where the identity is checked


def _spread(train, rows, cols, logs) -> dict[str, np.ndarray]:
    """A group's train rows, repeated with the class's features times each of
    :data:`UNIT_SPREAD` (a ``log:`` feature shifted by the factor's log): covariance is an
    identity in x, and over the train range alone (log N from 16 to 21) a missing ``log(N)`` term
    is nearly a combination of the others."""
    X = {c: np.asarray(v, dtype=np.float64)[rows] for c, v in train.X.items()}
    out = {c: [] for c in X}
    for k in UNIT_SPREAD:
        for c, v in X.items():
            out[c].append(v if c not in cols else v + np.log(k) / np.log(logs[c]) if c in logs else v * k)
    return {c: np.concatenate(v) for c, v in out.items()}
