"""The readable-law contract: what a law lawforge returns must satisfy, on every dataset.

Two parts, both generic (no rule names a dataset):

- **Form** (:func:`form_issues`): none of the constructs a researcher would not publish: a
  variable rescaled by a bare number (``(N/2)**p``, ``log(3*D)``: the number only shifts a fitted
  constant), a non-integer or fitted power of a logarithm (``log(D)**1.5``), a polynomial of
  degree above 2 in logarithms (degree 2 is a hyperparameter bowl), a log of a log, a power
  whose exponent depends on a variable (``D**(p*log(lr))``; ``exp`` of a variable is kept), an
  exp of an exp, curved functions (exp, log, powers other than whole numbers) nested more than
  two deep (``sqrt(p0/sqrt(p1 + D**p2*log(D)))``; no card's law goes deeper), a fitted power of
  a fitted power, a fixed exponent beyond 5 in size or with a denominator above 3 (``U**19``: a
  researcher fits it), a bare number as the law's offset or as a coefficient (``2 + A/N**a``,
  ``2*N**p``: they carry the target's units; an offset of 1 only where the target lies within
  [-1, 1]), a bare number inside a compound (``1 + 2*G**p``, ``log(P)/2 + 1``: it fixes a rate
  the data should set), an
  absolute value of a variable (``Abs(N)``, from ``sqrt(N**2)``), a fixed power under a fitted
  one (``(p0/D**4)**p1``, ``(log(N)/N**(7/2))**p``), a term with no fitted coefficient (``S**p``)
  or no fitted scale at all where the target is not within [-1, 1] (``exp(p*U**q)``,
  ``(U**p - 1)**(-3/2)``), a fixed non-integer power of a sum of logs (``(p + log N*log P)**(5/2)``),
  a fixed power of a sum other than 1, 2 or 1/2 (``(1 + D**p)**(9/2)``: fit it), a fitted power
  of a sum of logs (``(p + log(N) + log(lr))**q``: undefined where the sum is negative) and a
  bowl whose centre is not a line in the logs (``(p + p*D**q + log(bsz))**2``: a best setting
  moves as ``log h* = c + a*log(N) + b*log(D)``), a log factor under a non-integer power
  (``(log(D)/N)**p`` is ``log(D)**p/N**p``), a product of logs of degree above 2 as a divisor,
  a fixed multiple of logs beside a bare number in a sum (``1 - log(P)`` is ``-log(P/e)``) and
  a bowl with no fitted constant in its centre (``(p*log(D) + log(bsz))**2``). A feature the
  card says holds a log already (``log: 10``) is read as one.
- **Behaviour beyond the data** (:func:`check_law`): for each group and each feature with a
  declared trend, the law is evaluated at the group's train rows with that feature pushed from
  its largest train value out to ``reach`` (1,000x) times it, and with all trend features pushed
  together. It must stay finite, move with the trend (never against it by more than ``tol`` of
  the group's target range), not accelerate (its gain per decade may not grow ``ACCEL``-fold: a
  term linear in N does; targets within [-1, 1] are bounded by their range instead), stay within
  the target's natural range (non-negative when every train value is positive, within [0, 1]
  when every train value is). Pushed further still (to
  the factors in ``FAR``, up to 1e30x), it must stay finite and keep that range: a loss law has a
  finite floor (``E + A/N**a`` with any ``a > 0`` keeps it, ``E - b*log N`` does not), an accuracy
  law a ceiling (a sigmoid keeps it, a line in ``log C`` does not). Only the range is checked
  there: a hyperparameter optimum that moves with scale leaves any fixed grid of settings. A
  target with no natural range (some train value <= 0: a loss less a baseline) needs its floor
  all the same: from 1e12x to 1e30x the law may not move by more than a tenth of its train
  range while still gaining per decade half of what it gains near the data (:func:`_no_floor`;
  a log in N does, a power law does not).
  A feature the card declares a hyperparameter needs a best setting in the law: at every train
  setting of the other features, the law's best value of it lies inside its train range widened
  1000x each way (a law without it, or with the loss falling all the way to lr -> 0, fails).

:func:`building_blocks` names what a law is made of, for reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import sympy as sp

REACH = 1000.0
TOL = 1e-3        # of the group's target range
_STEPS = 13       # points from 1x to REACH (quarter decades)
FAR = (1e6, 1e12, 1e30)   # further pushes where only the range rules apply (a floor, a ceiling)


@dataclass
class ContractResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reasons": list(self.reasons), "blocks": list(self.blocks)}


def _variables(law) -> set[sp.Symbol]:
    names = set(law.variables)
    return {s for e in law.exprs.values() for s in e.free_symbols if s.name in names}


def _has_var(e: sp.Expr, vars_: set[sp.Symbol]) -> bool:
    return bool(e.free_symbols & vars_)


def _is_log_of_var(e, vars_) -> bool:
    return isinstance(e, sp.log) and _has_var(e, vars_)


def form_issues(law, unit_offset: bool = True, log_vars=()) -> list[str]:
    """The excluded constructs found in ``law``'s expressions (empty when it has none).
    ``unit_offset``: whether an offset of 1 is a natural bound of the target (:func:`unit_bounded`);
    where it is not, a bare 1 as the law's offset is a bare number like any other. ``log_vars``:
    the variables that hold a log already (a card's ``log: 10`` features, as log10 FLOPs)."""
    return list(dict.fromkeys(i for e in law.exprs.values()
                              for i in expr_issues(e, law.variables, unit_offset, log_vars)))


def unit_bounded(y) -> bool:
    """Whether every target value lies within [-1, 1] (a probability, an accuracy, an error rate,
    a log-probability of a likely answer): only then is 1 a natural floor or ceiling of the law.
    A loss in nats or bits (2.6 to 8.1) is not: its floor is a fitted constant."""
    y = np.asarray(y, dtype=float)
    return bool(y.size) and bool(np.all(np.abs(y[np.isfinite(y)]) <= 1.0))


def expr_issues(expr: sp.Expr, variables, unit_offset: bool = True, log_vars=()) -> list[str]:
    """:func:`form_issues` of one expression over the variable names ``variables``."""
    names = set(variables)
    vars_ = {s for s in expr.free_symbols if s.name in names}
    logs = {s for s in vars_ if s.name in set(log_vars)}
    if logs:
        expr, back = _as_logs(expr, logs)
        vars_ = (vars_ - logs) | set(back)
        return [_named_back(i, back) for i in _expr_issues(expr, vars_, unit_offset)]
    return _expr_issues(expr, vars_, unit_offset)


def _as_logs(expr: sp.Expr, logs) -> tuple[sp.Expr, dict]:
    """``expr`` with each variable ``x`` that holds a log written as ``log(X)`` of a positive
    quantity ``X``, and ``exp(c*x)`` as ``X**c``: ``(p + x)**q`` is then a fitted power of a
    sum of logs and ``x**3`` a cubic in a log, as they are. Also the map back to names."""
    big = {x: sp.Symbol(f"{x.name}__exp", positive=True) for x in logs}
    e = expr.xreplace({x: sp.log(X) for x, X in big.items()})
    inv = {X: x for x, X in big.items()}

    def power(node):
        c, rest = node.args[0].as_independent(*big.values(), as_Add=False)
        return rest.args[0] ** c if isinstance(rest, sp.log) and rest.args[0] in inv else node

    e = e.replace(lambda n: isinstance(n, sp.exp), power)
    return e, inv


def _named_back(issue: str, back: dict) -> str:
    for X, x in back.items():
        issue = issue.replace(f"log({X.name})", x.name).replace(X.name, f"exp({x.name})")
    return issue


def _expr_issues(expr: sp.Expr, vars_, unit_offset: bool) -> list[str]:
    out: list[str] = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Pow):
            base, ex = node.args
            if _log_like(base, vars_):
                if not (ex.is_Integer or (ex.is_Number and float(ex).is_integer())):
                    out.append(f"a non-integer or fitted power of a log: {node}")
                elif abs(int(ex)) > 2:
                    out.append(f"a power above 2 of a log: {node}")
            elif _fractional(ex) and _log_factor(base, vars_):
                out.append(f"a non-integer or fitted power of a log (under the power, (log(D)/N)**p is "
                           f"log(D)**p/N**p and (log(D)**-2)**p is log(D)**(-2*p)): {node}")
            elif ex.is_Number and _log_polynomial(base, vars_):
                if not float(ex).is_integer():
                    out.append(f"a non-integer power of a sum of logs: {node}")
                elif abs(int(ex)) > 2:
                    out.append(f"a power above 2 of a log: {node}")
            elif ex.free_symbols and not _has_var(ex, vars_) and _log_sum(_inner(base), vars_):
                out.append(f"a fitted power of a sum of logs (undefined where the sum is negative): {node}")
            if ex == 2 and _off_the_line(base, vars_):
                out.append(f"{OFF_THE_LINE}: {node}")
            if (ex == 2 and isinstance(base, sp.Add) and all(_has_var(a, vars_) for a in base.args)
                    and any(_log_like(a, vars_) or _fixed_log_monomial(a, vars_) for a in base.args)):
                out.append(f"a bowl with no fitted intercept (its centre, log h* = a*log(N) + b*log(D), is fixed "
                           f"at h* = 1 where N = D = 1: a researcher fits the constant): {node}")
            if _rescaled(base, vars_):
                out.append(f"a variable rescaled by a number: {node}")
            if _has_var(ex, vars_):
                out.append(f"a power whose exponent depends on a variable: {node}")
            if ex.is_Rational and _has_var(base, vars_) and (abs(ex) > MAX_FIXED_POWER or ex.q > 3):
                out.append(f"a fixed exponent no researcher would write (fit it instead): {node}")
            if (isinstance(base, sp.Add) and _has_var(base, vars_) and ex.is_Number
                    and abs(float(ex)) not in (0.5, 1.0, 2.0)):
                out.append(f"a fixed power of a sum other than 1, 2 or 1/2 (fit it): {node}")
            if isinstance(base, sp.Pow) and _fractional(ex) and _fractional(base.exp) and _has_var(base.base, vars_):
                out.append(f"a power of a power (one exponent is enough): {node}")
            elif ex.free_symbols and not _has_var(ex, vars_) and _fixed_monomial(base, vars_):
                out.append(f"a fixed power under a fitted one ((c/D**4)**p is c'*D**(-4*p): one exponent is enough): {node}")
        elif isinstance(node, sp.Add) and any(_num(a) for a in node.args) and any(
                _fixed_log_monomial(a, vars_) for a in node.args):
            out.append(f"a variable rescaled by a number (1 - log(P) is -log(P/e): fit the log's coefficient, "
                       f"as in 1 + k*log(P)): {node}")
        elif isinstance(node, sp.Abs) and node.args[0] in vars_:
            out.append(f"an absolute value of a variable (|x| is x for a positive feature): {node}")
        elif isinstance(node, sp.log) and _rescaled(node.args[0], vars_):
            out.append(f"a variable rescaled by a number: {node}")
        elif isinstance(node, sp.log) and _hidden_weight(node.args[0], vars_):
            out.append(f"a bare number hidden in a log (log(x**k) is k*log(x), log(N*P**2) is "
                       f"log(N) + 2*log(P)): {node}")
        elif isinstance(node, sp.log) and any(isinstance(a, sp.log) and _has_var(a, vars_)
                                              for a in sp.preorder_traversal(node.args[0])):
            out.append(f"a log of a log: {node}")
        elif isinstance(node, sp.exp) and any(isinstance(a, sp.exp) and _has_var(a, vars_)
                                              for a in sp.preorder_traversal(node.args[0])):
            out.append(f"an exp of an exp: {node}")
        elif isinstance(node, sp.exp) and _variable_exponent(node.args[0], vars_):
            out.append(f"a power whose exponent depends on a variable, as an exp (exp(U**p*log(U)) is U**(U**p)): {node}")
        elif isinstance(node, sp.Mul):
            logs, inverse = 0, 0
            for f in node.args:
                b, e = f.as_base_exp()
                if _is_log_of_var(b, vars_) and e.is_Integer:
                    if e > 0:
                        logs += int(e)
                    else:
                        inverse -= int(e)
            if logs > 2:
                out.append(f"a polynomial of degree {logs} in logs: {node}")
            if inverse > 2:
                out.append(f"a polynomial of degree {inverse} in logs, as a divisor: {node}")
            sums = [f for f in node.args if isinstance(f, sp.Add) and any(_log_like(a, vars_) for a in f.args)]
            if len(sums) >= 2 and any(_off_the_line(f, vars_) for f in sums):
                out.append(f"{OFF_THE_LINE}: {node}")
    if _depth(expr, vars_) > MAX_DEPTH:
        out.append(f"exp, log and powers nested more than {MAX_DEPTH} deep: {expr}")
    out += _bare_numbers(expr, vars_, unit_offset)
    return list(dict.fromkeys(out))


def _bare_numbers(expr: sp.Expr, vars_, unit_offset: bool = True) -> list[str]:
    """Bare numbers where a law has fitted constants: the law's offset (its floor, ``2 + ...``)
    and the coefficient of the law or of one of its terms (``2*N**p``, ``1/(2*w)``). They carry
    the target's units (nats, bits, percent): a researcher fits them. A sign is kept, and so is an
    offset of 1 where the target lies within [-1, 1] (``unit_offset``: the ceiling of an accuracy,
    the floor of an error rate). A term that is only a variable's power or
    log (``S**p``, ``log(D)``) has no fitted coefficient at all: the same issue."""
    out: list[str] = _inner_bare_numbers(expr, vars_)
    if not unit_offset and not isinstance(expr, sp.Add) and _has_var(expr, vars_) and not _scaled(expr, vars_):
        out.append(f"a law without a fitted scale (its size is fixed in the target's units): {expr}")
    if isinstance(expr, sp.Mul):
        nums = [a for a in expr.args if _num(a)]
        if nums and abs(float(sp.Mul(*nums))) != 1.0:
            out.append(f"a bare number as the law's coefficient (fit it): {sp.Mul(*nums)}")
        return out
    if not isinstance(expr, sp.Add):
        return out
    for t in expr.args:
        if _num(t):
            if abs(float(t)) != 1.0 or not unit_offset:
                out.append(f"a bare number as the law's offset (fit it): {t}")
            continue
        if not _has_var(t, vars_):
            continue
        rest = [f for f in sp.Mul.make_args(t) if not _num(f)]
        if _bare_coefficient(t):
            out.append(f"a bare number as a term's coefficient (fit it): {t}")
        elif (len(rest) == 1 and _bare_var_term(rest[0], vars_)) or not (unit_offset or _scaled(t, vars_)):
            out.append(f"a term without a fitted coefficient: {t}")
    return out


def _scaled(t: sp.Expr, vars_) -> bool:
    """The term ``t`` carries a fitted scale: a factor of fitted constants alone (``A/N**a``,
    ``exp(c)*w**-a``, ``(1 - h)/(1 + exp(...))``), a fitted constant in an exp's sum
    (``exp(d + a*log N)``), or a fitted power of a base with a fitted constant (``(A/N)**a``).
    ``exp(p*U**q)``, ``(U**p - 1)**(-3/2)`` and ``log(p + N)`` have none: their size is fixed in
    the target's units."""
    def fitted(e):
        return bool(e.free_symbols) and not _has_var(e, vars_)

    if isinstance(t, sp.Add):   # a sum is scaled where each of its terms is (p1 + sqrt(p2*N)), not 1 + k*log(P)
        return all(fitted(a) if not _has_var(a, vars_) else _scaled(a, vars_) for a in t.args)
    for f in sp.Mul.make_args(t):
        if fitted(f) or (isinstance(f, sp.Add) and _scaled(f, vars_)):
            return True
        if isinstance(f, sp.exp) and any(fitted(a) for a in sp.Add.make_args(f.args[0])):
            return True
        if isinstance(f, sp.log) and all(isinstance(a, sp.exp) and _scaled(a.args[0], vars_)
                                         for a in sp.Add.make_args(f.args[0])):
            return True   # a smooth maximum, log(exp(a*D**p) + exp(b*N**q)), has its terms' scales
        if isinstance(f, sp.Pow):
            base, ex = f.args
            if fitted(ex) and base.free_symbols - vars_:
                return True
            if ex.is_Number and _scaled(base, vars_):
                return True
    return False


def _inner_bare_numbers(expr: sp.Expr, vars_) -> list[str]:
    """Bare numbers inside a compound: a sum within the law (``1 + 2*G**p``, ``log(P)/2 + 1``,
    ``exp(p - 3*x/2)``, ``D**p + 2``) with an offset or a term's coefficient that is a number other
    than 1. The number fixes a scale or a rate the data should set: a researcher writes
    ``1 + k*log(P)`` with ``k`` fitted. Signs and the 1 of ``1 + x`` are kept."""
    for node in sp.preorder_traversal(expr):
        if node is expr or not isinstance(node, sp.Add) or not _has_var(node, vars_):
            continue
        for t in node.args:
            if (abs(float(t)) != 1.0) if _num(t) else (_has_var(t, vars_) and _bare_coefficient(t)):
                return [f"a bare number inside a compound (fit it): {node}"]
    return []


def _bare_coefficient(t: sp.Expr) -> bool:
    """The term ``t`` has a number other than +-1 among its factors (``2*G**p``, ``log(P)/2``)."""
    nums = [f for f in sp.Mul.make_args(t) if _num(f)]
    return bool(nums) and abs(float(sp.Mul(*nums))) != 1.0


def _fixed_monomial(base: sp.Expr, vars_) -> bool:
    """A factor of ``base`` is a variable's fixed power other than +-1 (``p0/D**4``, ``N**2``,
    ``log(N)/N**(7/2)``): under a fitted power ``p`` its exponent becomes ``k*p``, tied to the
    other factors' exponent; a researcher writes the variable's own fitted power instead."""
    for f in sp.Mul.make_args(base):
        if isinstance(f, sp.Pow) and f.args[0] in vars_ and f.args[1].is_Number and abs(float(f.args[1])) != 1.0:
            return True
    return False


def _fixed_log_monomial(e: sp.Expr, vars_) -> bool:
    """``e`` is a number times logs of variables to whole powers, with no fitted constant
    (``-log(P)``, ``log(N)*log(P)``)."""
    if not _has_var(e, vars_) or any(s not in vars_ for s in e.free_symbols):
        return False
    for f in sp.Mul.make_args(e):
        b, k = f.as_base_exp()
        if not (_num(f) or (_is_log_of_var(b, vars_) and k.is_Integer)):
            return False
    return True


def _log_factor(base: sp.Expr, vars_) -> bool:
    """A factor of ``base`` is a log of a variable or a fixed power of one (``log(D)/N``,
    ``p*log(D)**-2``): a non-integer power of ``base`` is then a non-integer power of that log."""
    for f in sp.Mul.make_args(base):
        b, e = f.as_base_exp()
        if isinstance(b, sp.Abs):
            b = b.args[0]
        if _is_log_of_var(b, vars_) and e.is_Number:
            return True
    return False


def _variable_exponent(arg: sp.Expr, vars_) -> bool:
    """A term of an exp's argument is a log of a variable times a factor that depends on a
    variable other than through its log: ``exp(U**p*log(U))`` is ``U**(U**p)`` and
    ``exp(N**q*log(D))`` is ``D**(N**q)``, the exponent that a power may not have. Products of
    logs alone (``exp(c*log(N)*log(E))``, ``N**(c*log(E))``) and bowls in logs are kept."""
    z = sp.Dummy("z")
    for t in sp.Add.make_args(sp.expand_mul(arg)):
        bare = t.replace(lambda e: _is_log_of_var(e, vars_), lambda e: z)
        if bare != t and _has_var(bare, vars_):
            return True
    return False


def _hidden_weight(arg: sp.Expr, vars_) -> bool:
    """``arg``, under a log, is a product of variables' fixed powers that hides a bare number:
    ``x**k`` (``log(x**k)`` is ``k*log(x)``) or, over several variables, a power other than +-1
    (``log(N*P**2)`` is ``log(N) + 2*log(P)``: the 2 fixes a ratio of rates the data should
    set). ``log(N*D)`` and ``log(D/N)`` (a compute, a ratio) are kept."""
    factors = [f.as_base_exp() for f in sp.Mul.make_args(arg)]
    if not factors or not all(b in vars_ and e.is_Number for b, e in factors):
        return False
    if len(factors) == 1:
        return arg is not factors[0][0]
    return any(abs(float(e)) != 1.0 for _, e in factors)


def _log_polynomial(e: sp.Expr, vars_) -> bool:
    """``e`` depends on the variables only through logs of them, as a polynomial in those logs
    (``p2 + log(N)*log(P)``, ``1 + k*log(P)``); a sigmoid in ``log C`` (an exp of them) is not."""
    if not _has_var(e, vars_) or _log_like(e, vars_):
        return False
    logs = {a: sp.Dummy() for a in e.atoms(sp.log) if _has_var(a, vars_)}
    if not logs:
        return False
    r = e.xreplace(logs)
    return not _has_var(r, vars_) and r.is_polynomial(*logs.values())


def _num(e: sp.Expr) -> bool:
    """A number, or an expression of numbers alone (``log(2)**2``, ``sqrt(2)``, ``pi``)."""
    return bool(e.is_Number or (e.is_number and not e.free_symbols))


def _bare_var_term(f: sp.Expr, vars_) -> bool:
    """``x``, ``x**k``, ``x**p`` or ``log(x)`` of one variable, nothing else."""
    if f in vars_:
        return True
    if isinstance(f, sp.log):
        return f.args[0] in vars_
    return isinstance(f, sp.Pow) and f.args[0] in vars_


MAX_FIXED_POWER = 5   # a literal exponent beyond +-5 or with a denominator above 3 (U**19, G**(17/2))
#: How deep the curved functions of the variables may nest: a sigmoid in log C (an exp of a
#: log), a power of a sum of powers ((p + U**a)**b), a power of a sum with a log in it
#: ((k*log(P) + 1)**-a, ParScale) are the deepest any card's law goes.
MAX_DEPTH = 2


def _depth(e: sp.Expr, vars_) -> int:
    """How deep the curved functions of the variables nest in ``e``: ``exp``, ``log`` and
    powers other than whole numbers (``sqrt(x)``, ``x**p``). Whole powers (``x**2``, ``1/x``)
    are arithmetic and do not count."""
    inner = max((_depth(a, vars_) for a in e.args), default=0)
    if not _has_var(e, vars_):
        return inner
    if isinstance(e, (sp.exp, sp.log)):
        return inner + 1
    if isinstance(e, sp.Pow) and _fractional(e.exp):
        return inner + 1
    return inner


def _inner(e: sp.Expr) -> sp.Expr:
    """``e`` without whole-number powers around it: ``1/(a + x)`` is ``a + x`` (under a fitted
    power, ``(1/(a + x))**p`` is ``(a + x)**(-p)``)."""
    while isinstance(e, sp.Pow) and e.exp.is_Integer:
        e = e.base
    return e


def _log_sum(e: sp.Expr, vars_) -> bool:
    """``e`` is a polynomial in logs or a sum with a log among its terms."""
    return _log_polynomial(e, vars_) or (isinstance(e, sp.Add) and any(_log_like(a, vars_) for a in e.args))


def _fractional(e: sp.Expr) -> bool:
    return not (e.is_Number and float(e).is_integer())


def _log_like(e, vars_) -> bool:
    """A log of a variable, alone, in an absolute value or times constants (``log(D)``,
    ``Abs(log(D))``, ``s1*log(D)``)."""
    if _is_log_of_var(e, vars_):
        return True
    if isinstance(e, sp.Abs):
        return _log_like(e.args[0], vars_)
    if isinstance(e, sp.Mul):
        logs = [a for a in e.args if _is_log_of_var(a, vars_)]
        return len(logs) == 1 and all(a is logs[0] or not _has_var(a, vars_) for a in e.args)
    return False


OFF_THE_LINE = ("a bowl whose centre is not a line in the logs (a best setting moves as "
                "log h* = c + a*log(N) + b*log(D))")


def _off_the_line(e, vars_) -> bool:
    """``e`` is a sum with a log of a variable and another term in a variable that is no log
    (``p + p*D**q + log(bsz)``, ``p + p*lr + log(lr)``). Squared, or times another sum of logs,
    it is a bowl whose centre, the best setting, is not a line in the logs: every card's law and
    every published hyperparameter law has ``log h* = c + a*log(N) + b*log(D)`` (a power law in
    the scale), which keeps moving beyond the data; ``D**q`` there stops (or explodes), and
    ``lr`` beside ``log(lr)`` makes the bowl lopsided in a way no sweep shows."""
    if not isinstance(e, sp.Add):
        return False
    terms = [a for a in e.args if _has_var(a, vars_)]
    return any(_log_like(a, vars_) for a in terms) and not all(_log_like(a, vars_) for a in terms)


def _rescaled(e, vars_) -> bool:
    """``e`` is a single variable times a bare number other than 1 (``N/2``, ``3*D``)."""
    if not isinstance(e, sp.Mul):
        return False
    nums = [a for a in e.args if _num(a)]
    rest = [a for a in e.args if not _num(a)]
    return bool(nums) and len(rest) == 1 and rest[0] in vars_ and abs(float(sp.Mul(*nums))) != 1.0


def building_blocks(law) -> list[str]:
    """How each variable enters the law (``N^p``, ``log N``, ``(log N)^2``, ``exp``, a power or
    log of a compound of variables) and whether it has an additive constant (``floor``)."""
    vars_ = _variables(law)
    out = []
    for expr in law.exprs.values():
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Pow) and _has_var(node.args[0], vars_):
                base, ex = node.args
                if base in vars_:
                    out.append(f"{base}^{ex}" if ex.is_Integer else f"{base}^p")
                elif _is_log_of_var(base, vars_) and base.args[0] in vars_:
                    out.append(f"(log {base.args[0]})^{ex}")
                elif not ex.is_Integer or ex > 1:
                    out.append("power of a compound")
            elif isinstance(node, sp.log) and _has_var(node, vars_):
                out.append(f"log {node.args[0]}" if node.args[0] in vars_ else "log of a compound")
            elif isinstance(node, sp.exp) and _has_var(node, vars_):
                out.append("exp")
        if isinstance(expr, sp.Add) and any(not _has_var(a, vars_) for a in expr.args):
            out.append("floor")
        for v in sorted(vars_ & expr.free_symbols, key=str):
            if not any(v in b.free_symbols for b in _nonlinear_nodes(expr)):
                out.append(f"{v} (linear)")
    return sorted(dict.fromkeys(out))


def _nonlinear_nodes(expr):
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Pow, sp.Function)):
            yield node


def check_law(law, params: Mapping[str, Mapping[str, float]], train, card, *, reach: float = REACH,
              tol: float = TOL, hyper_values: int = 49, first_only: bool = False,
              units: float = 0.0) -> ContractResult:
    """Check ``law`` with fitted ``params`` (group -> name -> value) against the contract, on the
    card's declared trends beyond ``train`` (a :class:`~lawforge.datasets.DataSplit`).

    With hyperparameter features (learning rate, batch size), a trend is a statement about the
    best setting: each pushed point is scored at the best of the train grid's settings. A feature
    never larger than another on any train row, and equal to it on some (unique tokens and tokens),
    stays so when pushed. ``hyper_values``: settings per hyperparameter in the grid;
    ``first_only``: stop at the first broken rule (the search's screen; no building blocks);
    ``units``: when > 0, a change of units must be absorbed by the fitted constants, to this
    relative residual (:func:`unit_issues`; ``checks.unit_covariance``, off by default)."""
    reasons = _law_issues(law, params, train, card, first_only, units)
    if first_only and reasons:
        return ContractResult(False, reasons)
    trends = {f.column: f.trend for f in card.features if f.trend}
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
            reasons += [f"group {g!r}: {r}" for r in _no_optimum(law, params[g], X, hyper, better, hyper_values)]
            if first_only and reasons:
                return ContractResult(False, reasons)
        span = np.maximum(y.max(axis=0) - y.min(axis=0), 1e-12 * np.maximum(np.abs(y).max(axis=0), 1e-300))
        bounded = [unit_bounded(y[:, j]) for j in range(y.shape[1])]
        pushes = [[c] for c in trends] + ([list(trends)] if len(trends) > 1 else [])
        for cols in pushes:
            preds = _push(law, params[g], X, cols, reach, hyper, better, hyper_values, logs)  # (steps, points, targets)
            label = f"group {g!r}, pushing {' and '.join(cols)} to {reach:g}x"
            if not np.isfinite(preds[:_STEPS]).all():
                reasons.append(f"{label}: not finite")
                continue
            if not np.isfinite(preds).all():
                reasons.append(f"group {g!r}, pushing {' and '.join(cols)} further: not finite")
                continue
            sign = _sign(trends, cols)
            positive = all((X[c] > 0).all() or c in logs for c in cols)   # pushed by factors (decades), not ranges
            for j, tcol in enumerate(card.target_columns):
                p, far = preds[:_STEPS, :, j], preds[:, :, j]
                moves = np.diff(p, axis=0) * sign            # > 0: with the trend
                if sign and (moves < -tol * span[j]).any():
                    reasons.append(f"{label}: {tcol} moves against the trend")
                if sign and not hyper and (back := _turns_back(far * sign, span[j])):
                    reasons.append(f"{label[:label.rindex(' to ')]} further: {tcol} turns against the trend "
                                   f"by {back:.2g} of its train range out to {FAR[-1]:g}x (no floor: it goes back)")
                if sign and not bounded[j] and _accelerates(p * sign, span[j]):
                    reasons.append(f"{label}: {tcol} accelerates beyond the data (its gain per decade grows "
                                   f"{ACCEL:g}x or more: no floor or ceiling in sight)")
                if (y[:, j] > 0).all() and (p < -tol * span[j]).any():
                    reasons.append(f"{label}: {tcol} falls below 0")
                elif (y[:, j] > 0).all() and (far < -tol * span[j]).any():
                    reasons.append(f"{label[:label.rindex(' to ')]} further: {tcol} falls below 0 (no floor)")
                if (sign and not bounded[j] and not (y[:, j] > 0).all() and positive
                        and _no_floor(far * sign, reach, span[j])):
                    reasons.append(f"{label[:label.rindex(' to ')]} further: {tcol} moves by more than "
                                   f"{FLOOR_SPAN:g} of its train range from 1e12x to 1e30x, per decade as "
                                   f"fast as near the data (no floor or ceiling)")
                if ((y[:, j] >= 0) & (y[:, j] <= 1)).all() and (p > 1 + tol * span[j]).any():
                    reasons.append(f"{label}: {tcol} rises above 1")
                elif ((y[:, j] >= 0) & (y[:, j] <= 1)).all() and (far > 1 + tol * span[j]).any():
                    reasons.append(f"{label[:label.rindex(' to ')]} further: {tcol} rises above 1 (no ceiling)")
            if first_only and reasons:   # the search only needs to know that it fails
                return ContractResult(False, reasons)
    reasons = list(dict.fromkeys(reasons))
    return ContractResult(not reasons, reasons, building_blocks(law))


def _law_issues(law, params, train, card, first_only: bool, units: float) -> list[str]:
    """The contract's rules at the data (form, identifiable constants, units, vanishing terms);
    with ``first_only``, those of the first rule that breaks."""
    checks = [lambda: form_issues(law, unit_bounded(train.y), card.log_variables),
              lambda: _redundant(law, params, train),
              lambda: unit_issues(law, params, train, card, units) if units else [],
              lambda: vanishing_numbers(law, train)]
    reasons: list[str] = []
    for check in checks:
        reasons += check()
        if first_only and reasons:
            break
    return reasons


def _redundant(law, params, train) -> list[str]:
    k = redundant_constants(law, params, train)
    return [f"{k} fitted constant{'s' if k > 1 else ''} the law cannot tell apart from the others "
            f"(as p1*(p2*x)**p3, where p1*p2**p3 is one constant): merge them"] if k else []


VANISH = 1e-3   # a term with no fitted constant below this fraction of another one in its sum vanishes


def vanishing_numbers(law, train) -> list[str]:
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
                    out.append(f"{what} on the data ({bare[i]} is below {VANISH:g} of {bare[j]} on every "
                               f"train row): {node}")
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
    from lawforge.search.checks import on_simplex

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


def unit_issues(law, params, train, card, tol: float = UNIT_TOL) -> list[str]:
    """The contract's unit rule (``checks.unit_covariance``): a class of :func:`unit_classes` whose
    change of units the law's constants cannot absorb (:func:`unit_residuals` above ``tol``)."""
    out = []
    for label, r in unit_residuals(law, params, train, card).items():
        if r > tol:
            out.append(f"the law fixes a scale in the units of {label} (a change of units, x -> k*x, is not "
                       f"absorbed by its fitted constants: residual {r:.1g}, as in 1 + N**p or a bare "
                       f"log(V)); give that scale a fitted constant")
    return out


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
    near = (q[_STEPS - 1] - q[0]) / np.log10(reach)
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
    steps = q[_STEPS - 1:]
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
    """The distinct train cells of the features other than the hyperparameters."""
    others = [c for c in X if c not in hyper]
    keys = np.stack([X[c] for c in others], axis=1) if others else np.zeros((len(next(iter(X.values()))), 1))
    _, first = np.unique(keys, axis=0, return_index=True)
    return {c: X[c][np.sort(first)] for c in others}


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


def _no_optimum(law, params, X, hyper, better, n_values: int = 49) -> list[str]:
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
            out.append(f"{h} has no best setting within 1000x of its train range at {int(edge.sum())} of {n} "
                       f"train settings of the other features (it is declared a hyperparameter: a law "
                       f"needs an optimum in it)")
    return out


def _push(law, params, X, cols, reach, hyper, better, n_values: int = 49, logs=None) -> np.ndarray:
    """Predictions at ``_STEPS`` points pushing ``cols`` from each one's largest value out to
    ``reach`` times it (a feature that holds a log, ``logs``: column -> base, by the log of the
    factor; a feature with non-positive values, by up to 3 train ranges),
    at the distinct train cells of the other features; with hyperparameters, at the best
    setting of the train grid for each cell."""
    factors = np.concatenate([np.logspace(0, np.log10(reach), _STEPS), FAR])
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
        if c in (logs or {}):
            Xk[c] = v.max() + np.log(factors[fk]) / np.log(logs[c])
        elif (v > 0).all():
            Xk[c] = v.max() * factors[fk]
        else:
            ranges = np.where(fk < _STEPS, 3 * fk / (_STEPS - 1), 10.0 ** (fk - _STEPS + 1.0))
            Xk[c] = v.max() + ranges * (v.max() - v.min() + 1e-12)
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
