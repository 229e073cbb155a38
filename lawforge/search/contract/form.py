"""Form rules: the constructs a researcher would not publish, found in a law's expressions.

Sympy only (no fitted constants, no data): the grammar (``space.valid``), the screen (a candidate
form is ``invalid``) and the final check (:func:`~lawforge.search.contract.beyond.check_law`)
all call :func:`expr_issues`. A feature the card says holds a log already (``log: 10``) is read
as one. :func:`building_blocks` names what a law is made of, for reports.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from lawforge.search.contract.rules import Issue, rule

_ALL = ("grammar", "screen", "choice")

#: A literal exponent beyond +-5 or with a denominator above 3 (U**19, G**(17/2)).
MAX_FIXED_POWER = 5
#: How deep the curved functions of the variables may nest: a sigmoid in log C (an exp of a
#: log), a power of a sum of powers ((p + U**a)**b), a power of a sum with a log in it
#: ((k*log(P) + 1)**-a, ParScale) are the deepest any card's law goes.
MAX_DEPTH = 2

FRACTIONAL_LOG_POWER = rule(
    "fractional-log-power", "form", _ALL, "a non-integer or fitted power of a log",
    """A log of a feature is raised only to a whole power (a hyperparameter bowl is a square in logs).
    ``log(D)**1.5`` or ``log(D)**p`` is undefined below D = 1 and has no reading as a scaling law; under
    a power, ``(log(D)/N)**p`` is ``log(D)**p/N**p`` and ``(log(D)**-2)**p`` is ``log(D)**(-2*p)``.""",
    keeps="p0 + p1*log(D)**2", breaks="p0 + p1*log(D)**p2")
LOG_POWER_ABOVE_2 = rule(
    "log-power-above-2", "form", _ALL, "a power above 2 of a log or of a sum of logs",
    """Degree 2 in logs is a bowl in a hyperparameter; a cubic or higher in logs turns back outside the
    data and no card's law has one.""",
    keeps="p0 + p1*log(D)**2", breaks="p0 + p1*log(D)**3")
FRACTIONAL_POWER_OF_LOG_SUM = rule(
    "fractional-power-of-log-sum", "form", _ALL, "a fixed non-integer power of a sum of logs",
    """``(p + log(N)*log(P))**(5/2)``: a sum of logs is negative somewhere, where a non-integer power of it is
    undefined.""",
    keeps="p0 + p1*(p2 + log(N))**2", breaks="p0 + p1*(p2 + log(N)*log(P))**(5/2)")
FITTED_POWER_OF_LOG_SUM = rule(
    "fitted-power-of-log-sum", "form", _ALL, "a fitted power of a sum of logs",
    """``(p + log(N) + log(lr))**q`` is undefined where the sum is negative; a law in logs is a polynomial in
    them (a bowl) or a power of the quantity itself.""",
    keeps="p0 + p1*(p2 + log(N))**2", breaks="p0 + p1*(p2 + log(N) + log(lr))**p3")
BOWL_OFF_THE_LINE = rule(
    "bowl-off-the-line", "form", _ALL, "a bowl whose centre is not a line in the logs",
    """Every published hyperparameter law has its best setting move as ``log h* = c + a*log(N) + b*log(D)``
    (a power law in the scale), which keeps moving beyond the data. ``(p + p*D**q + log(bsz))**2`` stops
    moving (or explodes) there, and ``lr`` beside ``log(lr)`` makes the bowl lopsided in a way no sweep shows.""",
    keeps="p0 + p1*(p2 + p3*log(D) + log(bsz))**2", breaks="p0 + p1*(p2 + p3*D**p4 + log(bsz))**2")
BOWL_WITHOUT_INTERCEPT = rule(
    "bowl-without-intercept", "form", _ALL, "a bowl with no fitted constant in its centre",
    """``(p*log(D) + log(bsz))**2`` fixes the best setting at h* = 1 where D = 1: the scale of the best
    setting is in the feature's units, which a researcher fits as a constant.""",
    keeps="p0 + p1*(p2 + p3*log(D) + log(bsz))**2", breaks="p0 + p1*(p2*log(D) + log(bsz))**2")
RESCALED_VARIABLE = rule(
    "rescaled-variable", "form", _ALL, "a variable rescaled by a bare number",
    """``(N/2)**p``, ``log(3*D)`` and ``1 - log(P)`` (which is ``-log(P/e)``): the number only shifts a fitted
    constant; the researcher's form fits that constant (``1 + k*log(P)``).""",
    keeps="p0 + p1*(N/p2)**p3", breaks="p0 + p1*log(3*D)")
VARIABLE_EXPONENT = rule(
    "variable-exponent", "form", _ALL, "a power whose exponent depends on a variable",
    """``D**(p*log(lr))``, and the same written as an exp (``exp(U**p*log(U))`` is ``U**(U**p)``): a scaling
    exponent is a constant. ``exp`` of a variable is kept, and so are products of logs in an exp
    (``exp(c*log(N)*log(E))``, the MoE law's interaction) and bowls in logs.""",
    keeps="p0*D**p1", breaks="p0*D**(p1*log(lr))")
ODD_FIXED_EXPONENT = rule(
    "odd-fixed-exponent", "form", _ALL, "a fixed exponent no researcher would write",
    f"""A literal exponent beyond +-{MAX_FIXED_POWER} or with a denominator above 3 (``U**19``, ``G**(17/2)``): a
    researcher fits it.""",
    keeps="p0 + p1/N**2", breaks="p0 + p1/U**7")
FIXED_POWER_OF_SUM = rule(
    "fixed-power-of-sum", "form", _ALL, "a fixed power of a sum other than 1, 2 or 1/2",
    """``(1 + D**p)**(9/2)``: the power of a compound is a rate the data should set; fit it.""",
    keeps="p0*(1 + D**p1)**p2", breaks="p0*(1 + D**p1)**(9/2)")
POWER_OF_POWER = rule(
    "power-of-power", "form", _ALL, "a power of a power",
    """``(N**p)**q``: one exponent is enough; two are not identifiable.""",
    keeps="p0*N**p1", breaks="p0*(N**p1)**p2")
FIXED_POWER_UNDER_FITTED = rule(
    "fixed-power-under-fitted", "form", _ALL, "a fixed power under a fitted one",
    """``(p0/D**4)**p1`` is ``c*D**(-4*p1)``: the exponent of D is tied to the other factors'; a researcher
    writes the variable's own fitted power.""",
    keeps="(p0/D)**p1", breaks="(p0/D**4)**p1")
ABS_OF_VARIABLE = rule(
    "abs-of-variable", "form", _ALL, "an absolute value of a variable",
    """``Abs(N)`` (from ``sqrt(N**2)``) is N for a positive feature: the form says nothing the plain feature
    does not.""",
    keeps="p0 + p1*N**p2", breaks="p0 + p1*Abs(N)**p2")
NUMBER_IN_LOG = rule(
    "number-in-log", "form", _ALL, "a bare number hidden in a log",
    """``log(x**k)`` is ``k*log(x)`` and ``log(N*P**2)`` is ``log(N) + 2*log(P)``: the number fixes a ratio of
    rates that the data should set. ``log(N*D)`` and ``log(D/N)`` (a compute, a ratio) are kept.""",
    keeps="p0 + p1*log(N*D)", breaks="p0 + p1*log(N*P**2)")
LOG_OF_LOG = rule(
    "log-of-log", "form", _ALL, "a log of a log",
    """No scaling law takes a log of a log: it flattens so slowly that the data cannot tell it from a
    constant, and it is undefined below the feature's unit.""",
    keeps="p0 + p1*log(D)", breaks="p0 + p1*log(p2 + log(D))")
EXP_OF_EXP = rule(
    "exp-of-exp", "form", _ALL, "an exp of an exp",
    """A double exponential is flat on the data and a cliff beyond it.""",
    keeps="p0*exp(p1*x)", breaks="p0*exp(p1*exp(p2*x))")
LOG_DEGREE_ABOVE_2 = rule(
    "log-degree-above-2", "form", _ALL, "a product of more than two logs",
    """A product of logs of degree above 2, as a factor or as a divisor: degree 2 is a bowl or an
    interaction (``log(N)*log(E)``); beyond it the law turns back outside the data.""",
    keeps="p0 + p1*log(N)*log(D)", breaks="p0 + p1*log(N)*log(D)*log(P)")
NESTED_TOO_DEEP = rule(
    "nested-too-deep", "form", _ALL, f"curved functions nested more than {MAX_DEPTH} deep",
    f"""exp, log and powers other than whole numbers nested more than {MAX_DEPTH} deep
    (``sqrt(p0/sqrt(p1 + D**p2*log(D)))``): a sigmoid in log C, a power of a sum of powers and a power of a
    sum with a log in it are the deepest any published law goes.""",
    keeps="p0*exp(p1*D**p2)", breaks="p0*exp(p1*sqrt(p2 + D**p3))")
BARE_OFFSET = rule(
    "bare-offset", "form", _ALL, "a bare number as the law's offset",
    """``2 + A/N**a``: the floor of a loss carries the target's units (nats, bits, percent) and is fitted. An
    offset of 1 is kept where the target lies within [-1, 1] (the ceiling of an accuracy, the floor of an
    error rate).""",
    keeps="p2 + p0/N**p1", breaks="2 + p0/N**p1")
BARE_COEFFICIENT = rule(
    "bare-coefficient", "form", _ALL, "a bare number as the law's or a term's coefficient",
    """``2*p0*N**p`` or ``p0 + 2*N**p``: a coefficient carries the target's units; a researcher fits it. A sign
    is kept.""",
    keeps="p0 + p1*N**p2", breaks="p0 + 2*N**p2")
TERM_WITHOUT_COEFFICIENT = rule(
    "term-without-coefficient", "form", _ALL, "a term with no fitted coefficient",
    """``p0 + N**p``, ``p0 + log(D)``: the term's size is fixed in the target's units.""",
    keeps="p0 + p1*N**p2", breaks="p0 + N**p2")
NO_FITTED_SCALE = rule(
    "no-fitted-scale", "form", _ALL, "a law without a fitted scale",
    """``exp(p*U**q)``, ``(U**p - 1)**(-3/2)``: where the target is not within [-1, 1] (a loss in nats) a law
    needs a fitted constant that sets its size.""",
    keeps="p2*exp(p0*U**p1)", breaks="exp(p0*U**p1)")
BARE_NUMBER_IN_COMPOUND = rule(
    "bare-number-in-compound", "form", _ALL, "a bare number inside a compound",
    """``1 + 2*G**p``, ``log(P)/2 + 1``, ``D**p + 2``: the number fixes a scale or a rate the data should set;
    a researcher writes ``1 + k*log(P)`` with k fitted. Signs and the 1 of ``1 + x`` are kept.""",
    keeps="p0*(1 + p2*G**p1)", breaks="p0*(1 + 2*G**p1)")
EXP_OF_RAW_VARIABLE = rule(
    "exp-of-raw-variable", "form", ("grammar",), "an exp of a raw large-valued variable",
    """``exp(p*D)`` with D ~ 1e10 is flat across the data and a cliff beyond it. Variables with small values
    (``exp(-p*x)``, |x| <= 50), logs, power laws (``exp(p*D**q)``) and ratios of variables in the exponent
    stay.""",
    keeps="p0*exp(p1*D**p2)", breaks="p0*exp(p1*D)")

def _variables(law) -> set[sp.Symbol]:
    names = set(law.variables)
    return {s for e in law.exprs.values() for s in e.free_symbols if s.name in names}


def _has_var(e: sp.Expr, vars_: set[sp.Symbol]) -> bool:
    return bool(e.free_symbols & vars_)


def _is_log_of_var(e, vars_) -> bool:
    return isinstance(e, sp.log) and _has_var(e, vars_)


def form_issues(law, unit_offset: bool = True, log_vars=()) -> list[Issue]:
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


def expr_issues(expr: sp.Expr, variables, unit_offset: bool = True, log_vars=()) -> list[Issue]:
    """:func:`form_issues` of one expression over the variable names ``variables``."""
    names = set(variables)
    vars_ = {s for s in expr.free_symbols if s.name in names}
    logs = {s for s in vars_ if s.name in set(log_vars)}
    if logs:
        expr, back = _as_logs(expr, logs)
        vars_ = (vars_ - logs) | set(back)
        return list(dict.fromkeys(_named_back(i, back) for i in _expr_issues(expr, vars_, unit_offset)))
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


def _named_back(issue: Issue, back: dict) -> Issue:
    """``issue`` with the node it names written in the card's variables again (``log(X)`` is the
    feature ``x`` that holds it, ``X`` is ``exp(x)``)."""
    node = issue.where
    if isinstance(node, sp.Basic):
        node = node.xreplace({sp.log(X): x for X, x in back.items()}).xreplace({X: sp.exp(x) for X, x in back.items()})
    return Issue(issue.rule, issue.detail, node)


def _expr_issues(expr: sp.Expr, vars_, unit_offset: bool) -> list[Issue]:
    out: list[Issue] = []
    for node in sp.preorder_traversal(expr):
        out += _pow_issues(node, vars_) if isinstance(node, sp.Pow) else _node_issues(node, vars_)
    if _depth(expr, vars_) > MAX_DEPTH:
        out.append(Issue(NESTED_TOO_DEEP, f"exp, log and powers nested more than {MAX_DEPTH} deep", expr))
    out += _bare_numbers(expr, vars_, unit_offset)
    return list(dict.fromkeys(out))


def _pow_issues(node: sp.Pow, vars_) -> list[Issue]:
    """The form rules that look at a power ``node``."""
    out: list[Issue] = []
    base, ex = node.args
    if _log_like(base, vars_):
        if not (ex.is_Integer or (ex.is_Number and float(ex).is_integer())):
            out.append(Issue(FRACTIONAL_LOG_POWER, "a non-integer or fitted power of a log", node))
        elif abs(int(ex)) > 2:
            out.append(Issue(LOG_POWER_ABOVE_2, "a power above 2 of a log", node))
    elif fractional(ex) and _log_factor(base, vars_):
        out.append(Issue(FRACTIONAL_LOG_POWER, "a non-integer or fitted power of a log (under the power, "
                         "(log(D)/N)**p is log(D)**p/N**p and (log(D)**-2)**p is log(D)**(-2*p))", node))
    elif ex.is_Number and _log_polynomial(base, vars_):
        if not float(ex).is_integer():
            out.append(Issue(FRACTIONAL_POWER_OF_LOG_SUM, "a non-integer power of a sum of logs", node))
        elif abs(int(ex)) > 2:
            out.append(Issue(LOG_POWER_ABOVE_2, "a power above 2 of a log", node))
    elif ex.free_symbols and not _has_var(ex, vars_) and _log_sum(_inner(base), vars_):
        out.append(Issue(FITTED_POWER_OF_LOG_SUM,
                         "a fitted power of a sum of logs (undefined where the sum is negative)", node))
    if ex == 2 and _off_the_line(base, vars_):
        out.append(Issue(BOWL_OFF_THE_LINE, OFF_THE_LINE, node))
    if (ex == 2 and isinstance(base, sp.Add) and all(_has_var(a, vars_) for a in base.args)
            and any(_log_like(a, vars_) or _fixed_log_monomial(a, vars_) for a in base.args)):
        out.append(Issue(BOWL_WITHOUT_INTERCEPT, "a bowl with no fitted intercept (its centre, log h* = "
                         "a*log(N) + b*log(D), is fixed at h* = 1 where N = D = 1: a researcher fits the "
                         "constant)", node))
    if _rescaled(base, vars_):
        out.append(Issue(RESCALED_VARIABLE, "a variable rescaled by a number", node))
    if _has_var(ex, vars_):
        out.append(Issue(VARIABLE_EXPONENT, "a power whose exponent depends on a variable", node))
    if ex.is_Rational and _has_var(base, vars_) and (abs(ex) > MAX_FIXED_POWER or ex.q > 3):
        out.append(Issue(ODD_FIXED_EXPONENT, "a fixed exponent no researcher would write (fit it instead)",
                         node))
    if (isinstance(base, sp.Add) and _has_var(base, vars_) and ex.is_Number
            and abs(float(ex)) not in (0.5, 1.0, 2.0)):
        out.append(Issue(FIXED_POWER_OF_SUM, "a fixed power of a sum other than 1, 2 or 1/2 (fit it)", node))
    if isinstance(base, sp.Pow) and fractional(ex) and fractional(base.exp) and _has_var(base.base, vars_):
        out.append(Issue(POWER_OF_POWER, "a power of a power (one exponent is enough)", node))
    elif ex.free_symbols and not _has_var(ex, vars_) and _fixed_monomial(base, vars_):
        out.append(Issue(FIXED_POWER_UNDER_FITTED, "a fixed power under a fitted one ((c/D**4)**p is "
                         "c'*D**(-4*p): one exponent is enough)", node))
    return out


def _node_issues(node: sp.Expr, vars_) -> list[Issue]:
    """The form rules that look at a node other than a power (the first that applies)."""
    out: list[Issue] = []
    if isinstance(node, sp.Add) and any(_num(a) for a in node.args) and any(
            _fixed_log_monomial(a, vars_) for a in node.args):
        out.append(Issue(RESCALED_VARIABLE, "a variable rescaled by a number (1 - log(P) is -log(P/e): fit the "
                         "log's coefficient, as in 1 + k*log(P))", node))
    elif isinstance(node, sp.Abs) and node.args[0] in vars_:
        out.append(Issue(ABS_OF_VARIABLE, "an absolute value of a variable (|x| is x for a positive feature)",
                         node))
    elif isinstance(node, sp.log) and _rescaled(node.args[0], vars_):
        out.append(Issue(RESCALED_VARIABLE, "a variable rescaled by a number", node))
    elif isinstance(node, sp.log) and _hidden_weight(node.args[0], vars_):
        out.append(Issue(NUMBER_IN_LOG, "a bare number hidden in a log (log(x**k) is k*log(x), log(N*P**2) "
                         "is log(N) + 2*log(P))", node))
    elif isinstance(node, sp.log) and any(isinstance(a, sp.log) and _has_var(a, vars_)
                                          for a in sp.preorder_traversal(node.args[0])):
        out.append(Issue(LOG_OF_LOG, "a log of a log", node))
    elif isinstance(node, sp.exp) and any(isinstance(a, sp.exp) and _has_var(a, vars_)
                                          for a in sp.preorder_traversal(node.args[0])):
        out.append(Issue(EXP_OF_EXP, "an exp of an exp", node))
    elif isinstance(node, sp.exp) and _variable_exponent(node.args[0], vars_):
        out.append(Issue(VARIABLE_EXPONENT, "a power whose exponent depends on a variable, as an exp "
                         "(exp(U**p*log(U)) is U**(U**p))", node))
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
            out.append(Issue(LOG_DEGREE_ABOVE_2, f"a polynomial of degree {logs} in logs", node))
        if inverse > 2:
            out.append(Issue(LOG_DEGREE_ABOVE_2, f"a polynomial of degree {inverse} in logs, as a divisor", node))
        sums = [f for f in node.args if isinstance(f, sp.Add) and any(_log_like(a, vars_) for a in f.args)]
        if len(sums) >= 2 and any(_off_the_line(f, vars_) for f in sums):
            out.append(Issue(BOWL_OFF_THE_LINE, OFF_THE_LINE, node))
    return out


def _bare_numbers(expr: sp.Expr, vars_, unit_offset: bool = True) -> list[Issue]:
    """Bare numbers where a law has fitted constants: the law's offset (its floor, ``2 + ...``)
    and the coefficient of the law or of one of its terms (``2*N**p``, ``1/(2*w)``). They carry
    the target's units (nats, bits, percent): a researcher fits them. A sign is kept, and so is an
    offset of 1 where the target lies within [-1, 1] (``unit_offset``: the ceiling of an accuracy,
    the floor of an error rate). A term that is only a variable's power or
    log (``S**p``, ``log(D)``) has no fitted coefficient at all: the same issue."""
    out: list[Issue] = _inner_bare_numbers(expr, vars_)
    if not unit_offset and not isinstance(expr, sp.Add) and _has_var(expr, vars_) and not _scaled(expr, vars_):
        out.append(Issue(NO_FITTED_SCALE, "a law without a fitted scale (its size is fixed in the target's units)", expr))
    if isinstance(expr, sp.Mul):
        nums = [a for a in expr.args if _num(a)]
        if nums and abs(float(sp.Mul(*nums))) != 1.0:
            out.append(Issue(BARE_COEFFICIENT, "a bare number as the law's coefficient (fit it)", sp.Mul(*nums)))
        return out
    if not isinstance(expr, sp.Add):
        return out
    for t in expr.args:
        if _num(t):
            if abs(float(t)) != 1.0 or not unit_offset:
                out.append(Issue(BARE_OFFSET, "a bare number as the law's offset (fit it)", t))
            continue
        if not _has_var(t, vars_):
            continue
        rest = [f for f in sp.Mul.make_args(t) if not _num(f)]
        if _bare_coefficient(t):
            out.append(Issue(BARE_COEFFICIENT, "a bare number as a term's coefficient (fit it)", t))
        elif (len(rest) == 1 and _bare_var_term(rest[0], vars_)) or not (unit_offset or _scaled(t, vars_)):
            out.append(Issue(TERM_WITHOUT_COEFFICIENT, "a term without a fitted coefficient", t))
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


def _inner_bare_numbers(expr: sp.Expr, vars_) -> list[Issue]:
    """Bare numbers inside a compound: a sum within the law (``1 + 2*G**p``, ``log(P)/2 + 1``,
    ``exp(p - 3*x/2)``, ``D**p + 2``) with an offset or a term's coefficient that is a number other
    than 1. The number fixes a scale or a rate the data should set: a researcher writes
    ``1 + k*log(P)`` with ``k`` fitted. Signs and the 1 of ``1 + x`` are kept."""
    for node in sp.preorder_traversal(expr):
        if node is expr or not isinstance(node, sp.Add) or not _has_var(node, vars_):
            continue
        for t in node.args:
            if (abs(float(t)) != 1.0) if _num(t) else (_has_var(t, vars_) and _bare_coefficient(t)):
                return [Issue(BARE_NUMBER_IN_COMPOUND, "a bare number inside a compound (fit it)", node)]
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




def _depth(e: sp.Expr, vars_) -> int:
    """How deep the curved functions of the variables nest in ``e``: ``exp``, ``log`` and
    powers other than whole numbers (``sqrt(x)``, ``x**p``). Whole powers (``x**2``, ``1/x``)
    are arithmetic and do not count."""
    inner = max((_depth(a, vars_) for a in e.args), default=0)
    if not _has_var(e, vars_):
        return inner
    if isinstance(e, (sp.exp, sp.log)):
        return inner + 1
    if isinstance(e, sp.Pow) and fractional(e.exp):
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


def fractional(e: sp.Expr) -> bool:
    """An exponent that is not a whole number: a parameter, an expression, 1/2, 1.5 (``2`` and
    ``2.0`` are whole)."""
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


def exp_of_large(expr: sp.Expr, large: set) -> bool:
    """An ``exp`` whose exponent has a term growing like a raw large-valued variable (one of the
    symbols ``large``): ``exp(p*D)`` with D ~ 1e10 (rule ``exp-of-raw-variable``). Logs, power laws
    (``exp(p*D**q)``) and ratios of variables (``exp(-(D/U - 1)/p)``) in the exponent stay."""
    if not large:
        return False
    for n in sp.preorder_traversal(expr):
        if isinstance(n, sp.exp):
            for term in sp.Add.make_args(sp.expand_mul(n.args[0])):   # exp(s0*(C + s1)) holds s0*C
                pw = term.as_powers_dict()
                up = any(b in large and ex.is_Number and ex > 0 for b, ex in pw.items())
                down = any(ex.is_Number and ex < 0 and (b.free_symbols & large) for b, ex in pw.items())
                if up and not down:
                    return True
    return False
