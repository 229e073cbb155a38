"""The search space: candidate law forms as sympy trees, seeds, mutation and crossover.

A form is one sympy expression over the dataset's variable symbols and parameter symbols
``p0, p1, ...`` (fitted per group) and ``s0, s1, ...`` (one value shared by all groups; the
``scope`` mutation moves a parameter between the two on datasets with several groups).
Multi-target datasets apply the same form to every target with its own parameters. Forms are canonicalised (variable-free parameter subtrees merged into
one parameter, parameters renamed in order of appearance) so duplicates are found by string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp

from lawforge.laws.expr import looks_like_param, make_symbol
from lawforge.errors import LawError
from lawforge.laws.law import Law
from lawforge.search.contract.form import exp_of_large, expr_issues, fractional

PARAM_PREFIX = "p"
SHARED_PREFIX = "s"
MAX_NODES = 40
# Fixed powers of a log beyond the square (log(N)**3, log(N)**(11/2)) are not scaling-law
# building blocks (the log-quadratic bowl is the highest order among them): with enough
# validation points they fit, and they bend freely outside the data.
MAX_LOG_POWER = 2


def is_param(s) -> bool:
    """A parameter symbol: ``p<k>`` (per group) or ``s<k>`` (shared by all groups)."""
    return isinstance(s, sp.Symbol) and looks_like_param(s.name)


def is_shared(s) -> bool:
    return is_param(s) and s.name[0] == SHARED_PREFIX


def P(i: int) -> sp.Symbol:
    return make_symbol(f"{PARAM_PREFIX}{i}")


def SP(i: int) -> sp.Symbol:
    """The shared parameter ``s<i>``."""
    return make_symbol(f"{SHARED_PREFIX}{i}")


@dataclass(frozen=True)
class VarInfo:
    symbol: str
    positive: bool      # all train values > 0: powers and logs allowed
    small: bool         # |values| <= 50: exp(p*x) is safe
    hyper: bool = False  # a training hyperparameter (lr, batch size): the loss has an optimum in it


class Space:
    """The variables of one dataset and the random generators over them."""

    def __init__(self, variables: Sequence[VarInfo], n_targets: int = 1, param_limit: int | None = None,
                 grouped: bool = False, readable: bool = False, unit_offset: bool = True, log_vars=()):
        self.vars = list(variables)
        self.grouped = grouped  # several groups: parameters may be shared across them
        self.n_targets = n_targets
        self.param_limit = param_limit
        self.syms = {v.symbol: make_symbol(v.symbol) for v in self.vars}
        self.max_nodes = MAX_NODES
        self.readable = readable  # forms with an excluded construct (contract.form.expr_issues) are not valid
        self.unit_offset = unit_offset  # an offset of 1 is a natural bound of the target (contract.unit_bounded)
        self.log_vars = tuple(log_vars)  # variables that hold a log already (a card's `log: 10` features)

    # ------------------------------------------------------------------ random pieces
    def atom(self, rng: np.random.Generator, k: int) -> sp.Expr:
        """A random unary building block of one variable, with fresh parameter ``p{k}``."""
        v = self.vars[rng.integers(len(self.vars))]
        x = self.syms[v.symbol]
        choices: list[Callable[[], sp.Expr]] = []
        if v.positive:
            choices += [lambda: x ** (-P(k)), lambda: x ** P(k), lambda: sp.log(x),
                        lambda: 1 / (x ** P(k) + 1)]
        if v.small:
            choices += [lambda: sp.exp(-P(k) * x), lambda: x, lambda: (x - P(k)) ** 2]
        if not choices:
            choices = [lambda: x]
        return choices[rng.integers(len(choices))]()

    def term(self, rng: np.random.Generator, k0: int) -> sp.Expr:
        """A coefficient times one or two atoms."""
        t = P(k0) * self.atom(rng, k0 + 1)
        if len(self.vars) > 1 and rng.random() < 0.4:
            t = t * self.atom(rng, k0 + 2)
        return t


# ---------------------------------------------------------------------- seeds
def generic_seeds(space: Space) -> list[sp.Expr]:
    """Generic scaling-law building blocks over the space's variables (no task answers)."""
    seeds: list[sp.Expr] = []
    pos = [space.syms[v.symbol] for v in space.vars if v.positive]
    small = [space.syms[v.symbol] for v in space.vars if v.small]
    for x in pos:
        seeds += [
            P(0) + P(1) * x ** (-P(2)),                                  # power law with offset
            P(0) + P(1) / (x ** P(2) + P(3)),                            # saturating (rectified)
            P(0) + P(1) / (1 + sp.exp(P(2) * (sp.log(x) - P(3)))),       # logistic in log
            P(0) + P(1) * sp.log(x) + P(2) * sp.log(x) ** 2,             # quadratic bowl in log
            P(0) + P(1) * sp.log(x),                                     # log-linear
        ]
    for i, x in enumerate(pos):
        for y in pos[i + 1:]:
            seeds += [
                P(0) + P(1) * x ** (-P(2)) + P(3) * y ** (-P(4)),        # sum of power laws
                P(0) + P(1) * x ** (-P(2)) * y ** (-P(3)),               # product of power laws
                (P(0) * x ** (-P(1)) + P(2) * y ** (-P(3))) ** P(4) + P(5),
                P(0) + P(1) * sp.log(x) + P(2) * sp.log(y) + P(3) * sp.log(x) * sp.log(y),
            ]
    if len(pos) >= 2:
        seeds.append(P(0) + sum((P(2 * i + 1) * x ** (-P(2 * i + 2)) for i, x in enumerate(pos)), sp.Integer(0)))
        seeds.append(P(0) + sum((P(i + 1) * sp.log(x) for i, x in enumerate(pos)), sp.Integer(0)))
    for x in small:
        seeds += [
            P(0) + P(1) * sp.exp(-P(2) * x),                              # exponential saturation
            P(0) + P(1) * x + P(2) * x ** 2,                              # quadratic bowl
            P(0) + P(1) * x + P(2) * x ** 2 + P(3) * x ** 3,
            P(0) + P(1) / (1 + sp.exp(-P(2) * (x - P(3)))),               # logistic
        ]
    if len(small) >= 2:
        seeds.append(P(0) + P(1) * sp.exp(sum((P(i + 2) * x for i, x in enumerate(small)), sp.Integer(0))))
        seeds.append(P(0) + sum((P(i + 1) * x for i, x in enumerate(small)), sp.Integer(0)))
    if len(pos) >= 2:  # quadratic bowl in the logs of all positive variables (hyperparameters)
        logs = [sp.log(x) for x in pos]
        bowl = sum((S_ * l for S_, l in zip([P(i + 1) for i in range(len(logs))], logs)), P(0))
        k = len(logs) + 1
        bowl_sq = bowl + sum((P(k + i) * l ** 2 for i, l in enumerate(logs)), sp.Integer(0))
        seeds.append(bowl_sq)
        if len(pos) >= 3:  # power laws in all variables plus the log bowl
            k2 = 2 * len(logs) + 1
            seeds.append(bowl_sq + sum((P(k2 + 2 * i) * x ** (-P(k2 + 2 * i + 1)) for i, x in enumerate(pos)),
                                       sp.Integer(0)))
    seeds += hyper_bowl_seeds(space)
    return [canonical(s) for s in seeds]


def hyper_bowl_seeds(space: Space) -> list[sp.Expr]:
    """Power laws in the scale variables plus a quadratic bowl in the logs of the
    hyperparameters whose optimum moves with scale: sum_h a_h (log h)^2 + b_h log h +
    sum_s c_hs log h log s, with and without the hyperparameter cross terms. The bowl is
    linear in its coefficients (variable projection solves them exactly)."""
    hyp = [space.syms[v.symbol] for v in space.vars if v.hyper and v.positive]
    scale = [space.syms[v.symbol] for v in space.vars if not v.hyper and v.positive]
    if not hyp:
        return []
    k = [0]

    def p():
        k[0] += 1
        return P(k[0] - 1)

    base = p() + sum((p() * x ** (-p()) for x in scale), sp.Integer(0))
    lh = [sp.log(h) for h in hyp]
    bowl = sum((p() * l ** 2 + p() * l for l in lh), sp.Integer(0))
    shift = sum((p() * l * sp.log(x) for l in lh for x in scale), sp.Integer(0))
    cross = sum((p() * lh[i] * lh[j] for i in range(len(lh)) for j in range(i + 1, len(lh))), sp.Integer(0))
    seeds = [base + bowl, base + bowl + shift, base + bowl + shift + cross]
    # The bowl's width scales with the run too (the loss may grow less, or more, sensitive to its
    # hyperparameters at a larger scale): the whole bowl times a power law of the scale variables,
    # still linear in the bowl's coefficients, which variable projection solves. On lr_bsz's
    # inner holdout (train only) the fixed-width bowls predicted 1.5x the spread over (lr, bsz)
    # of the held-out cell; this one fitted train with 28% less squared error.
    widened = [base + sp.Mul(*(x ** p() for x in scale)) * (bowl + shift + cross)]
    # The same bowl in vertex form: each hyperparameter's optimum is a power law of the scale
    # variables (log h* = m0 + sum_s m_s log s) and the bowl is zero there, so the loss at the
    # best setting is the power-law base itself. (In the expanded form above the optimum's loss
    # also picks up -(b + c log s)^2 / 4a, which a fit can use to stand in for the base.)
    k[0] = 0
    base = p() + sum((p() * x ** (-p()) for x in scale), sp.Integer(0))
    dev = [l - p() - sum((p() * sp.log(x) for x in scale), sp.Integer(0)) for l in lh]
    vbowl = sum((p() * d ** 2 for d in dev), sp.Integer(0))
    vcross = sum((p() * dev[i] * dev[j] for i in range(len(dev)) for j in range(i + 1, len(dev))), sp.Integer(0))
    seeds += [base + vbowl] + ([base + vbowl + vcross] if len(dev) > 1 else [])
    return seeds + widened + [base + sp.Mul(*(x ** p() for x in scale)) * (vbowl + vcross)]


# ---------------------------------------------------------------------- canonical form
def n_params(expr: sp.Expr) -> int:
    return sum(1 for s in expr.free_symbols if is_param(s))


def complexity(expr: sp.Expr) -> int:
    return sum(1 for _ in sp.preorder_traversal(expr))


def _merge_param_subtrees(expr: sp.Expr, counter: list[int], memo: dict | None = None) -> sp.Expr:
    """Replace every maximal subtree with parameters but no variables by one fresh parameter;
    in a sum or product, all parameter-only terms together become one parameter. Identical
    subtrees become the same parameter (a law that uses one derived constant twice, as Clark's
    saturating expert count does, keeps one parameter for it, not two)."""
    memo = {} if memo is None else memo

    def fresh(k: str, sub: sp.Expr) -> sp.Symbol:
        # the merged constant is shared only when every parameter in it is shared
        if k not in memo:
            counter[0] += 1
            shared = all(is_shared(s) for s in sub.free_symbols if is_param(s))
            memo[k] = make_symbol(f"{'qs' if shared else 'qp'}{counter[0]}")
        return memo[k]

    free = expr.free_symbols
    if free and all(is_param(s) for s in free) and not is_param(expr):
        return fresh(sp.srepr(expr), expr)
    if not expr.args:
        return expr
    args = list(expr.args)
    if isinstance(expr, (sp.Add, sp.Mul)):
        pure = [a for a in args if a.free_symbols and all(is_param(s) for s in a.free_symbols)]
        nums = [a for a in args if not a.free_symbols]   # 2, pi, log(2)**2: fixed numbers
        if len(pure) >= 2 or (pure and nums):
            rest = [a for a in args if a not in pure and a.free_symbols]
            merged = expr.func(*(pure + nums))
            q = fresh(sp.srepr(merged), merged)
            args = rest + [q]
            return expr.func(*[_merge_param_subtrees(a, counter, memo) for a in args])
    new_args = [_merge_param_subtrees(a, counter, memo) for a in args]
    return expr.func(*new_args) if any(n is not o for n, o in zip(new_args, args)) else expr


def _scope_of(sym: sp.Symbol) -> str | None:
    """'p' or 's' for a parameter or a merged constant (``qp<k>``/``qs<k>``), else None."""
    n = sym.name
    if is_param(sym):
        return n[0]
    if n[:2] in ("qp", "qs") and n[2:].isdigit():
        return n[1]
    return None


def _merge_powers(expr: sp.Expr) -> sp.Expr:
    """Powers of one base in one product as one power (``S*S**p`` -> ``S**(p + 1)``, whose
    exponent then merges into one parameter; ``exp(a)*exp(b)`` -> ``exp(a + b)``). Only
    exponents are combined (``powsimp(combine='exp')``), never bases (``N**p*D**p`` stays)."""
    def repeats(node) -> bool:
        if not isinstance(node, sp.Mul):
            return False
        bases = [f.as_base_exp()[0] for f in node.args if not f.is_Number]
        return len(bases) != len(set(bases))

    # node by node, bottom up: a product inside a power's base or a function's argument too
    # (``(p + p*D*D**q + log(b))**2``), which ``powsimp`` of the whole tree leaves alone
    if not any(repeats(node) for node in sp.preorder_traversal(expr)):   # the usual case: nothing to do
        return expr
    return expr.replace(repeats, lambda node: sp.powsimp(node, combine="exp"))


def _merge_like_terms(expr: sp.Expr) -> sp.Expr:
    """Terms of one sum that differ only by constant factors, one of them a parameter found
    nowhere else in the law, as one term: ``p*T - T`` -> ``p*T`` (``p - 1`` is a fitted
    constant like ``p``), ``p*T + q*T`` -> ``p*T``."""
    def var_sets(node):
        return [frozenset(s for s in t.free_symbols if not _scope_of(s)) for t in node.args]

    def alike(sets):   # only terms in the same variables can be alike
        return {vs for vs in sets if vs and sets.count(vs) > 1}

    if not any(isinstance(n, sp.Add) and alike(var_sets(n)) for n in sp.preorder_traversal(expr)):
        return expr   # the usual case: nothing to merge
    count: dict = {}
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Symbol) and _scope_of(node):
            count[node] = count.get(node, 0) + 1

    def anchor(c):
        c = c.as_coeff_Mul()[1]
        return c if isinstance(c, sp.Symbol) and count.get(c) == 1 else None

    def pick(ts):
        """The parameter that takes over the group's coefficients: a per-group one when any
        coefficient varies by group (a shared one cannot absorb it)."""
        found = [a for a in (anchor(c) for _, c in ts) if a is not None]
        per_group = [a for a in found if _scope_of(a) == PARAM_PREFIX]
        if per_group:
            return per_group[0]
        varies = any(_scope_of(s) == PARAM_PREFIX for _, c in ts for s in c.free_symbols)
        return found[0] if found and not varies else None

    def groups(node):
        sets = var_sets(node)
        shared = alike(sets)
        out: dict = {}
        for t, vs in zip(node.args, sets):
            if vs in shared:
                c, v = t.as_independent(*vs, as_Add=False)
                out.setdefault(v, []).append((t, c))
        return {v: ts for v, ts in out.items() if len(ts) > 1 and pick(ts) is not None}

    def merge(node):
        args = list(node.args)
        for v, ts in groups(node).items():
            a = pick(ts)
            gone = {t for t, _ in ts}
            args = [t for t in args if t not in gone] + [a * v]
        return sp.Add(*args)

    return expr.replace(lambda n: isinstance(n, sp.Add) and bool(groups(n)), merge)


def canonical(expr: sp.Expr) -> sp.Expr:
    """Merge powers of one base, like terms of a sum and parameter-only subtrees, and rename
    parameters in order of appearance: per-group ones p0, p1, ..., shared ones s0, s1, ..."""
    expr = _merge_like_terms(_merge_param_subtrees(_merge_powers(sp.sympify(expr)), [0]))
    for _ in range(3):
        order: list[sp.Symbol] = []
        for node in sp.preorder_traversal(expr):
            if isinstance(node, sp.Symbol) and _scope_of(node) and node not in order:
                order.append(node)
        tmp = {s: make_symbol(f"_t{i}") for i, s in enumerate(order)}
        final, n = {}, {PARAM_PREFIX: 0, SHARED_PREFIX: 0}
        for i, s in enumerate(order):
            sc = _scope_of(s)
            final[make_symbol(f"_t{i}")] = make_symbol(f"{sc}{n[sc]}")
            n[sc] += 1
        expr = expr.xreplace(tmp).xreplace(final)
    return expr


def key(expr: sp.Expr) -> str:
    return sp.srepr(expr)


# ---------------------------------------------------------------------- tree editing
def _paths(expr: sp.Expr, path=()):
    yield path, expr
    for i, a in enumerate(expr.args):
        yield from _paths(a, path + (i,))


def _replace(expr: sp.Expr, path: tuple, new: sp.Expr) -> sp.Expr:
    if not path:
        return new
    args = list(expr.args)
    args[path[0]] = _replace(args[path[0]], path[1:], new)
    return expr.func(*args)


def _fresh(expr: sp.Expr, prefix: str = PARAM_PREFIX) -> int:
    """The next free index of a per-group (or, with ``prefix='s'``, shared) parameter."""
    return max([int(s.name[1:]) for s in expr.free_symbols if is_param(s) and s.name[0] == prefix] + [-1]) + 1


def _pick(rng, items):
    return items[rng.integers(len(items))]


def mutate_subtree(expr, space: Space, rng) -> sp.Expr:
    """Replace a random subtree with a random term."""
    paths = [p for p, _ in _paths(expr) if p]
    if not paths:
        return expr + space.term(rng, _fresh(expr))
    return _replace(expr, _pick(rng, paths), space.term(rng, _fresh(expr)))


def mutate_insert(expr, space: Space, rng) -> sp.Expr:
    """Wrap a random subtree in a new operation."""
    path, node = _pick(rng, list(_paths(expr)))
    k = _fresh(expr)
    ops = [lambda s: s + space.term(rng, k), lambda s: s * space.atom(rng, k),
           lambda s: s ** P(k), lambda s: P(k) * s + P(k + 1), lambda s: s / (1 + P(k) * space.atom(rng, k + 1)),
           lambda s: sp.exp(-P(k) * s), lambda s: sp.log(s + P(k))]
    return _replace(expr, path, _pick(rng, ops)(node))


def mutate_remove(expr, space: Space, rng) -> sp.Expr:
    """Replace a random operation by one of its operands."""
    inner = [(p, n) for p, n in _paths(expr) if n.args]
    if not inner:
        return expr
    path, node = _pick(rng, inner)
    return _replace(expr, path, _pick(rng, list(node.args)))


def mutate_const_param(expr, space: Space, rng) -> sp.Expr:
    """Turn a numeric constant into a parameter, or fix a parameter to a simple constant."""
    nums = [(p, n) for p, n in _paths(expr) if n.is_Number and p]
    params = sorted((s for s in expr.free_symbols if is_param(s)), key=lambda s: s.name)
    if nums and (not params or rng.random() < 0.5):
        path, _ = _pick(rng, nums)
        return _replace(expr, path, P(_fresh(expr)))
    if params:
        return expr.xreplace({_pick(rng, params): sp.Rational(int(_pick(rng, [0, 1, 1, 2, -1])), 1)
                              if rng.random() < 0.7 else sp.Rational(1, 2)})
    return expr


def mutate_exponent(expr, space: Space, rng) -> sp.Expr:
    """Change the exponent of a random power: nudge a number, or swap number <-> parameter."""
    pows = [(p, n) for p, n in _paths(expr) if isinstance(n, sp.Pow)]
    if not pows:
        return mutate_insert(expr, space, rng)
    path, node = _pick(rng, pows)
    base, ex = node.args
    if ex.is_Number:
        new_ex = P(_fresh(expr)) if rng.random() < 0.5 else ex + _pick(rng, [sp.Rational(1, 2), -sp.Rational(1, 2), 1, -1])
    else:
        new_ex = _pick(rng, [sp.Rational(1, 2), sp.Integer(1), sp.Integer(2), sp.Integer(-1), -ex])
    return _replace(expr, path, base ** new_ex)


def crossover(a, b, space: Space, rng) -> sp.Expr:
    """Put a random subtree of ``b`` (its parameters renumbered) at a random place in ``a``."""
    k, ks = _fresh(a), _fresh(a, SHARED_PREFIX)
    shift = {s: (SP(int(s.name[1:]) + ks) if is_shared(s) else P(int(s.name[1:]) + k))
             for s in b.free_symbols if is_param(s)}
    donor = _pick(rng, [n for _, n in _paths(b.xreplace(shift))])
    path, _ = _pick(rng, list(_paths(a)))
    return _replace(a, path, donor)


def mutate_scope(expr, space: Space, rng) -> sp.Expr:
    """Move a random parameter between per-group and shared by all groups."""
    params = sorted((s for s in expr.free_symbols if is_param(s)), key=lambda s: s.name)
    if not params:
        return expr
    s = _pick(rng, params)
    new = P(_fresh(expr)) if is_shared(s) else SP(_fresh(expr, SHARED_PREFIX))
    return expr.xreplace({s: new})


MUTATIONS = {
    "subtree": mutate_subtree,
    "insert": mutate_insert,
    "remove": mutate_remove,
    "const_param": mutate_const_param,
    "exponent": mutate_exponent,
}
GROUP_MUTATIONS = {**MUTATIONS, "scope": mutate_scope}


def mutations_for(space: Space) -> dict:
    """The mutation operators of a space: ``scope`` only where there are several groups (on one
    group a shared parameter is a per-group one, and the operator list, hence the random
    stream, stays what it was)."""
    return GROUP_MUTATIONS if space.grouped else MUTATIONS


def valid(expr: sp.Expr, space: Space) -> bool:
    """Structural checks: finite, has a variable and a parameter, only whitelisted node kinds
    (simplification can bring in others, such as ``re``), within size and the limit."""
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        return False
    try:
        to_tree(expr)
    except ValueError:
        return False
    syms = expr.free_symbols
    if not any(not is_param(s) for s in syms) or not any(is_param(s) for s in syms):
        return False
    if complexity(expr) > space.max_nodes:
        return False
    if any(isinstance(n, sp.Pow) and isinstance(n.base, sp.log) and n.exp.is_Number
           and abs(n.exp) > MAX_LOG_POWER for n in sp.preorder_traversal(expr)):
        return False
    if space.param_limit is not None and n_params(expr) * space.n_targets > space.param_limit:
        return False
    if space.readable and (expr_issues(expr, space.syms, space.unit_offset, space.log_vars)
                           or exp_of_large(expr, {space.syms[v.symbol] for v in space.vars if not v.small})):
        return False
    return True


def to_law(expr: sp.Expr, variables: dict[str, str], targets: Sequence[str], name: str = "candidate",
           inits: dict[str, float] | None = None, data=None, specs: dict[str, dict] | None = None) -> Law:
    """A :class:`Law` applying ``expr`` to every target with its own parameters.

    With ``data`` (the split it will be fitted on), scale parameters start at the data's scale
    (see :func:`scale_specs`); ``specs`` (name -> full parameter spec: a human law's own inits and
    bounds, see :func:`from_law_specs`) take precedence over that, and ``inits`` (name -> value)
    over both."""
    params = sorted((s.name for s in expr.free_symbols if is_param(s)), key=lambda n: (n[0], int(n[1:])))
    text = sp.sstr(expr)
    scaled = scale_specs(expr, data, variables) if data is not None else {}

    def spec_of(p: str) -> dict:
        if specs and p in specs:
            spec = dict(specs[p])
            if inits and p in inits:
                spec["init"] = inits[p]
            return spec
        spec = {"init": inits[p]} if inits and p in inits else dict(scaled.get(p) or {"init": _default_init(expr, p)})
        if p[0] == SHARED_PREFIX:
            spec["shared"] = True
        return spec

    if len(targets) == 1:
        spec = {p: spec_of(p) for p in params}
        return Law({targets[0]: text}, variables, spec, name=name)
    tmap, spec = {}, {}
    for j, t in enumerate(targets):
        ren = {make_symbol(p): make_symbol(f"{p}_{j + 1}") for p in params}
        tmap[t] = sp.sstr(expr.xreplace(ren))
        for p in params:
            spec[f"{p}_{j + 1}"] = spec_of(p)
    return Law(tmap, variables, spec, name=name)


SCALE_BAND = (1e-2, 1e2)  # products whose median magnitude lies here keep the unit start


def scale_specs(expr: sp.Expr, data, variables: dict[str, str]) -> dict[str, dict]:
    """Starting values (and a sign) for *scale parameters*, read from the data's magnitudes.

    A scale parameter occurs once, as a factor ``p`` (or ``1/p``) of a product ``p*R`` that is
    the base of a fractional power, the argument of a log, or the argument of an exp. With unit
    starts such a parameter is hopeless when ``R`` is of order 1e9 (model sizes, tokens): the fit
    would have to walk ``p`` to 1e-9 or 1e9. Here ``p`` starts where ``p*R`` is of order one at
    the median row (``R`` evaluated on ``data`` with the other parameters at their defaults),
    when ``R`` is far from order one (its median magnitude outside ``SCALE_BAND``).
    Under a power or a log ``p*R`` must be positive anyway: when ``R`` holds no other parameter
    and has one sign on every row, ``p`` is bounded to that sign, which the fitter optimises on
    a log scale. Otherwise ``p`` only starts there (random restarts spread on its scale); under
    an exp the product starts at -1 (decay)."""
    out: dict[str, dict] = {}
    counts: dict[sp.Symbol, int] = {}
    for node in sp.preorder_traversal(expr):
        if is_param(node):
            counts[node] = counts.get(node, 0) + 1
    sites: list[tuple[sp.Symbol, int, sp.Expr, str]] = []

    def visit(node: sp.Expr, ctx: str | None) -> None:
        if isinstance(node, sp.Mul) and ctx is not None:
            for a in node.args:
                if is_param(a):
                    sites.append((a, 1, node, ctx))
                elif isinstance(a, sp.Pow) and is_param(a.base) and a.exp == -1:
                    sites.append((a.base, -1, node, ctx))
        if isinstance(node, sp.Pow):
            visit(node.base, "pow" if fractional(node.exp) else None)
            visit(node.exp, None)
            return
        for a in node.args:
            visit(a, "log" if isinstance(node, sp.log) else "exp" if isinstance(node, sp.exp) else None)

    visit(expr, None)
    for p, power, mul, ctx in sites:
        if counts.get(p) != 1:
            continue
        rest = mul / p ** power
        fixed = not any(is_param(s) for s in rest.free_symbols)  # its sign is the data's alone
        if not fixed:
            rest = rest.xreplace({s: sp.Float(_default_init(expr, s.name)) for s in rest.free_symbols if is_param(s)})
        try:
            with np.errstate(all="ignore"):
                v = np.asarray(_eval_np(rest, data, variables), dtype=float) * np.ones(data.n)
        except (LawError, KeyError, TypeError, ValueError, OverflowError):
            continue
        if not np.all(np.isfinite(v)):
            continue
        med = float(np.median(np.abs(v)))
        if not med > 0 or SCALE_BAND[0] <= med <= SCALE_BAND[1]:
            continue  # zero, or already of order one: the unit start is fine
        mag = 1.0 / med if power == 1 else med
        if ctx != "exp" and fixed and np.all(v > 0):
            out[p.name] = {"init": mag, "bounds": [0, None]}
        elif ctx != "exp" and fixed and np.all(v < 0):
            out[p.name] = {"init": -mag, "bounds": [None, 0]}
        else:  # random restarts spread on the same scale
            sign = -1.0 if (np.median(v) > 0) == (ctx == "exp") else 1.0
            out[p.name] = {"init": sign * mag, "scale": mag}
    return out


def _eval_np(e: sp.Expr, data, variables: dict[str, str]):
    """A parameter-free form's values on a split's columns (the project's compiled evaluator)."""
    from lawforge.laws.expr import compile_exprs, numpy_backend

    names = sorted(s.name for s in e.free_symbols)
    env = {n: np.asarray(data.X[variables[n]], dtype=np.float64) for n in names}
    return compile_exprs([e], names).run(numpy_backend(), env)[0]


def _default_init(expr: sp.Expr, p: str) -> float:
    s = make_symbol(p)
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Pow) and s in node.args[1].free_symbols:
            return 0.3  # exponents of scaling laws are mostly O(0.1-1)
    return 1.0


def from_law(law: Law) -> sp.Expr | None:
    """The single-target form of a law with its parameters renamed p0.. (s0.. for the ones it
    shares across groups), for seeding."""
    out = from_law_specs(law)
    return None if out is None else out[0]


def from_law_specs(law: Law) -> tuple[sp.Expr, dict[str, dict]] | None:
    """:func:`from_law` and the law's own parameter specs (init, bounds, restart scale, shared)
    under the new names: a human law seeded into the search is fitted with its published
    parameterisation, not the generic starts (a Chinchilla exponent bounded to [0, 3] cannot
    wander negative and bend the law upwards beyond the data)."""
    if len(law.exprs) != 1:
        return None
    e = next(iter(law.exprs.values()))
    ren = {make_symbol(p.name): make_symbol(f"_h{i}") for i, p in enumerate(law.params)}
    per = [p for p in law.params if not p.shared]
    shared = [p for p in law.params if p.shared]
    final = {make_symbol(f"_h{i}"): (SP(shared.index(p)) if p.shared else P(per.index(p)))
             for i, p in enumerate(law.params)}
    specs = {}
    for i, p in enumerate(law.params):
        spec: dict[str, Any] = {"init": p.init, "lower": None if math.isinf(p.lower) else p.lower,
                                "upper": None if math.isinf(p.upper) else p.upper}
        if p.scale is not None:
            spec["scale"] = p.scale
        if p.shared:
            spec["shared"] = True
        specs[final[make_symbol(f"_h{i}")].name] = spec
    return e.xreplace(ren).xreplace(final), specs


def finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------------- exact (de)serialisation
# Checkpoints store forms as JSON trees rebuilt from a whitelist of sympy classes with
# evaluate=False: the rebuilt tree is identical to the saved one (re-parsing printed text is
# not: printing and parsing can regroup constants), and nothing is ever evaluated as code.
_TREE_FUNCS = {"Add": sp.Add, "Mul": sp.Mul, "Pow": sp.Pow, "exp": sp.exp, "log": sp.log, "tanh": sp.tanh,
               "Abs": sp.Abs, "Max": sp.Max, "Min": sp.Min}
_TREE_CONSTS = {"E": sp.E, "pi": sp.pi}


def to_tree(expr: sp.Expr):
    if isinstance(expr, sp.Symbol):
        return ["S", expr.name]
    if isinstance(expr, sp.Integer):
        return ["I", int(expr)]
    if isinstance(expr, sp.Rational):
        return ["Q", int(expr.p), int(expr.q)]
    if isinstance(expr, sp.Float):
        return ["F", repr(float(expr))]
    for name, c in _TREE_CONSTS.items():
        if expr == c:
            return ["C", name]
    name = type(expr).__name__
    if name not in _TREE_FUNCS:
        raise ValueError(f"cannot serialise {name}")
    return [name] + [to_tree(a) for a in expr.args]


def from_tree(tree) -> sp.Expr:
    """Rebuild a form from :func:`to_tree`'s output (whitelisted node kinds only)."""
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise ValueError(f"not a form tree: {str(tree)[:80]}")
    kind, args = tree[0], tree[1:]
    if kind == "S":
        name = str(args[0])
        if not name.isidentifier():
            raise ValueError(f"bad symbol name {name!r}")
        return make_symbol(name)
    if kind == "I":
        return sp.Integer(int(args[0]))
    if kind == "Q":
        return sp.Rational(int(args[0]), int(args[1]))
    if kind == "F":
        return sp.Float(float(args[0]))
    if kind == "C":
        return _TREE_CONSTS[args[0]]
    if kind not in _TREE_FUNCS:
        raise ValueError(f"node kind {kind!r} is not allowed")
    return _TREE_FUNCS[kind](*[from_tree(a) for a in args], evaluate=False)
