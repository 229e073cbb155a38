"""Compute-optimal allocation: the point that minimises a law's prediction under a constraint.

    c = Constraint.parse("6*N*D = 1e24", law)            # parsed with the whitelist
    best = minimise(law, params, c, fixed={"U": 1e9})    # {"N": ..., "D": ..., "loss": ...}

The constraint ties two of the law's features (its variables or their columns); it is solved
for the second (sympy), and the law is minimised along the first in log space: a scan over
``SPAN`` decades around the training range, then a bounded refinement. A minimum at either end
of the scan is not an interior optimum, and is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import sympy as sp

from lawforge.errors import LawError
from lawforge.laws.expr import parse_expression
from lawforge.laws.law import Law

#: Decades scanned below and above the training range of the free feature.
SPAN = 12
SCAN_POINTS = 4001


class NoOptimum(LawError):
    """The law has no interior minimum under the constraint."""


@dataclass
class Constraint:
    """``lhs = rhs`` over two of a law's features: ``free`` is scanned, ``solved`` follows."""

    text: str
    free: str            # law symbol scanned
    solved: str          # law symbol solved for
    solution: sp.Expr    # solved as a function of free

    @classmethod
    def parse(cls, text: str, law: Law) -> "Constraint":
        """Parse ``"6*N*D = 1e24"``; names may be the law's variables or their columns."""
        if not isinstance(text, str) or text.count("=") != 1 or any(op in text for op in ("==", "<=", ">=")):
            raise LawError(f"constraint {text!r}: expected one equation 'EXPRESSION = VALUE', e.g. '6*N*D = 1e24'")
        col_to_sym = {col: sym for sym, col in law.variables.items()}
        allowed = set(law.variables) | set(col_to_sym)
        lhs_t, rhs_t = text.split("=")
        what = f"constraint {text!r}"
        try:
            lhs = parse_expression(lhs_t.strip(), allowed, what=what)
            rhs = parse_expression(rhs_t.strip(), allowed, what=what)
        except LawError as exc:
            known = ", ".join(sorted(law.variables))
            raise LawError(f"{exc} (the law's features: {known})") from None
        g = lhs - rhs
        rename = {s: sp.Symbol(col_to_sym[s.name], real=True) for s in g.free_symbols if s.name in col_to_sym}
        g = g.subs(rename)
        names = [s.name for s in g.free_symbols]
        feats = [v for v in law.variables if v in names]
        if len(feats) != 2:
            raise LawError(f"{what} must tie exactly two of the law's features ({', '.join(law.variables)}); "
                           f"it names {', '.join(feats) or 'none'}")
        free, solved = feats
        sol = _positive_solution(g, solved, free, what)
        return cls(text, free, solved, sol)

    def with_value(self, value: float, law: Law) -> "Constraint":
        """The same constraint with its right side set to ``value`` (for a frontier over budgets)."""
        return Constraint.parse(f"{self.text.split('=')[0].strip()} = {float(value)!r}", law)

    def solve(self, free_values: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_f"):
            self._f = sp.lambdify(sp.Symbol(self.free, real=True), self.solution, "numpy")
        with np.errstate(all="ignore"):
            return np.asarray(self._f(free_values), dtype=np.float64) * np.ones_like(free_values)


def _positive_solution(g: sp.Expr, solved: str, free: str, what: str) -> sp.Expr:
    s, f = sp.Symbol(solved, real=True), sp.Symbol(free, real=True)
    try:
        sols = sp.solve(sp.Eq(g, 0), s)
    except (NotImplementedError, ValueError):
        sols = []
    fp = sp.Symbol(free, positive=True)
    for sol in sols:
        probe = sol.subs(f, fp)
        if probe.is_positive is not False and not sol.has(sp.I):
            return sol
    raise LawError(f"{what}: cannot solve it for {solved} as a positive function of {free}")


def minimise(law: Law, params: Mapping[str, float], c: Constraint, fixed: Mapping[str, float] | None = None,
             train_range: tuple[float, float] | None = None) -> dict[str, float]:
    """The minimum of ``law`` (first target) under the constraint: ``{free: x, solved: y,
    target: value}``. ``fixed`` gives the law's other features (by symbol or column)."""
    env = _fixed(law, c, fixed)
    lo, hi = train_range or (1.0, 1.0)
    grid = np.logspace(math.log10(lo) - SPAN, math.log10(hi) + SPAN, SCAN_POINTS)
    vals = _loss(law, params, c, grid, env)
    ok = np.isfinite(vals)
    if not ok.any():
        raise NoOptimum(f"the law is not finite anywhere along {c.text!r}")
    i = int(np.nanargmin(np.where(ok, vals, np.nan)))
    first, last = np.flatnonzero(ok)[[0, -1]]
    if i in (first, last):
        side = "smaller" if i == first else "larger"
        raise NoOptimum(f"the law has no interior optimum under {c.text!r}: its prediction keeps falling "
                        f"toward ever {side} {c.free} (scanned {grid[first]:.3g} to {grid[last]:.3g})")
    from scipy.optimize import minimize_scalar

    a, b = math.log(grid[i - 1]), math.log(grid[i + 1])
    res = minimize_scalar(lambda t: float(_loss(law, params, c, np.array([math.exp(t)]), env)[0]),
                          bounds=(a, b), method="bounded", options={"xatol": 1e-10})
    x = math.exp(res.x) if res.fun <= vals[i] else grid[i]
    y = float(c.solve(np.array([x]))[0])
    return {c.free: x, c.solved: y, law.target_names[0]: float(min(res.fun, vals[i]))}


def scan_range(values: np.ndarray) -> tuple[float, float] | None:
    """The positive training range of the scanned feature (the scan spans ``SPAN`` decades
    around it); None when it has no positive value."""
    x = np.asarray(values, dtype=np.float64)
    x = x[x > 0]
    return (float(x.min()), float(x.max())) if x.size else None


def try_minimise(law: Law, params: Mapping[str, float], c: Constraint, fixed: Mapping[str, float] | None,
                 train_range: tuple[float, float] | None) -> dict[str, float] | None:
    """:func:`minimise`, or None where the law has no interior optimum (a bootstrap draw)."""
    try:
        return minimise(law, params, c, fixed, train_range)
    except NoOptimum:
        return None


def optimum_with_bands(law: Law, params: Mapping[str, float], draws: list[Mapping[str, float]], c: Constraint,
                       fixed: Mapping[str, float] | None, train_range: tuple[float, float] | None,
                       level: float) -> dict:
    """:func:`minimise` for ``params``, and the central ``level`` interval of each value over the
    ``draws`` (bootstrap constants) that have an interior optimum; the others are counted."""
    best = minimise(law, params, c, fixed, train_range)
    found = [d for d in (try_minimise(law, p, c, fixed, train_range) for p in draws) if d is not None]
    q = (1 - level) / 2
    bands = {k: [float(np.quantile([d[k] for d in found], q)), float(np.quantile([d[k] for d in found], 1 - q))]
             for k in best} if found else {}
    return {"optimum": best, "bands": bands, "refits": len(draws), "refits_without_optimum": len(draws) - len(found)}


def _fixed(law: Law, c: Constraint, fixed: Mapping[str, float] | None) -> dict[str, float]:
    col_to_sym = {col: sym for sym, col in law.variables.items()}
    env = {}
    for k, v in (fixed or {}).items():
        sym = col_to_sym.get(k, k)
        if sym not in law.variables:
            raise LawError(f"--fix {k}: not a feature of the law ({', '.join(law.variables)})")
        env[sym] = float(v)
    missing = [v for v in law.variables if v not in (c.free, c.solved) and v not in env]
    if missing:
        raise LawError(f"the law also depends on {', '.join(missing)}: give {'them' if len(missing) > 1 else 'it'} "
                       f"a value (e.g. --fix {missing[0]}=...)")
    return env


def _loss(law: Law, params, c: Constraint, free: np.ndarray, env: dict) -> np.ndarray:
    solved = c.solve(free)
    X = {law.variables[c.free]: free, law.variables[c.solved]: solved}
    X.update({law.variables[k]: np.full(free.shape, v) for k, v in env.items()})
    out = law.predict(X, params)[:, 0]
    out[~(solved > 0)] = np.nan
    return out
