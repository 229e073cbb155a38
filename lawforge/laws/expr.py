"""Whitelisted expression parsing (text -> sympy) and compilation (sympy -> numpy/torch).

Text is never executed: it is parsed by :func:`ast.parse` into a syntax tree whose node types
are checked against a fixed whitelist and translated node by node into sympy objects. Compiled
expressions are lists of instructions run by a small interpreter, so no generated source code
is executed either (``sympy.lambdify`` would ``exec`` generated code).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import sympy as sp

from lawforge.errors import LawError, did_you_mean

MAX_EXPR_CHARS = 4000
MAX_EXPR_NODES = 600

#: Functions a law may call, by name, and the sympy function each maps to.
FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "ln": sp.log,
    "log10": lambda x: sp.log(x) / sp.log(10),
    "log2": lambda x: sp.log(x) / sp.log(2),
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "Abs": sp.Abs,
    "tanh": sp.tanh,
    "sigmoid": lambda x: 1 / (1 + sp.exp(-x)),
    "softplus": lambda x: sp.log(1 + sp.exp(x)),
    "min": sp.Min,
    "max": sp.Max,
    "Min": sp.Min,
    "Max": sp.Max,
    "pow": lambda a, b: a**b,
}
_ARITY = {"min": None, "max": None, "Min": None, "Max": None, "pow": 2}

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.BitXor: lambda a, b: a**b,  # '^' means power, as in PySR and in papers
}


def make_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def looks_like_param(name: str) -> bool:
    """Whether a name is one the search gives its parameters (``p3`` per group, ``s0`` shared);
    a dataset variable may not carry one."""
    return name[:1] in ("p", "s") and name[1:].isdigit()


def parse_expression(text: str, allowed: Iterable[str] | None = None, *, what: str = "law",
                     definitions: dict[str, sp.Expr] | None = None) -> sp.Expr:
    """Parse ``text`` into a sympy expression using the whitelist.

    ``allowed``: if given, the only names that may appear (besides functions and
    ``definitions``); any other name raises :class:`LawError` naming it.
    ``definitions``: names bound to already-parsed sub-expressions (``where`` clauses).
    """
    tree, src = _parse_tree(text, what)
    conv = _Converter(what, None if allowed is None else set(allowed), definitions or {})
    try:
        expr = conv(tree)
    except RecursionError:
        raise LawError(f"{what}: expression is nested too deeply") from None
    if not isinstance(expr, sp.Basic):
        expr = sp.sympify(expr)
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise LawError(f"{what}: expression {src!r} simplifies to an infinite or undefined value")
    return expr


def _parse_tree(text, what: str) -> tuple[ast.Expression, str]:
    """The Python syntax tree of ``text``, within the size limits."""
    if not isinstance(text, str):
        raise LawError(f"{what}: expression must be a string, got {type(text).__name__}")
    src = text.strip()
    if not src:
        raise LawError(f"{what}: empty expression")
    if len(src) > MAX_EXPR_CHARS:
        raise LawError(f"{what}: expression is {len(src)} characters long (limit {MAX_EXPR_CHARS})")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as exc:
        raise LawError(f"{what}: syntax error in {src!r}: {exc.msg} at column {exc.offset}") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_EXPR_NODES:
        raise LawError(f"{what}: expression has {n_nodes} syntax nodes (limit {MAX_EXPR_NODES})")
    return tree, src


class _Converter:
    """Whitelisted syntax nodes -> sympy; anything else is a :class:`LawError` naming it."""

    def __init__(self, what: str, allowed_set: set[str] | None, defs: dict[str, sp.Expr]):
        self.what, self.allowed_set, self.defs = what, allowed_set, defs

    def __call__(self, node: ast.AST) -> sp.Expr:
        what = self.what
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise LawError(f"{what}: only numeric constants are allowed, got {node.value!r}")
            if not math.isfinite(node.value):
                raise LawError(f"{what}: non-finite constant {node.value!r}")
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](self(node.left), self(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            val = self(node.operand)
            return -val if isinstance(node.op, ast.USub) else val
        if isinstance(node, ast.Call):
            return self.call(node)
        raise LawError(f"{what}: '{ast.unparse(node)[:60]}' uses syntax that is not allowed in a law "
                       f"({type(node).__name__}); use numbers, names, + - * / ** and whitelisted functions")

    def name(self, name: str) -> sp.Expr:
        what, defs, allowed_set = self.what, self.defs, self.allowed_set
        if name.startswith("_"):
            raise LawError(f"{what}: name {name!r} is not allowed (names may not start with '_')")
        if name in defs:
            return defs[name]
        if name in FUNCTIONS:
            raise LawError(f"{what}: function {name!r} used without a call")
        if allowed_set is not None and name not in allowed_set:
            raise LawError(f"{what}: unknown symbol {name!r}"
                           f"{did_you_mean(name, sorted(allowed_set | set(defs)))}: it is neither a "
                           f"variable nor a declared parameter")
        return make_symbol(name)

    def call(self, node: ast.Call) -> sp.Expr:
        what = self.what
        if not isinstance(node.func, ast.Name):
            raise LawError(f"{what}: {ast.unparse(node.func)[:40]!r} is not allowed: only whitelisted functions "
                           f"may be called, by name")
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise LawError(f"{what}: unknown function {fname!r}{did_you_mean(fname, FUNCTIONS)}; "
                           f"allowed: {', '.join(sorted(set(FUNCTIONS) - {'Min', 'Max', 'Abs'}))}")
        if node.keywords:
            raise LawError(f"{what}: function {fname!r} takes no keyword arguments")
        args = [self(a) for a in node.args]
        arity = _ARITY.get(fname, 1)
        if arity is None:
            if len(args) < 2:
                raise LawError(f"{what}: {fname}() needs at least 2 arguments")
        elif len(args) != arity:
            raise LawError(f"{what}: {fname}() takes {arity} argument(s), got {len(args)}")
        return FUNCTIONS[fname](*args)


# --------------------------------------------------------------------------------------------
# Compilation: sympy -> instruction list -> interpreter over a numeric backend.


@dataclass(frozen=True)
class Program:
    """A compiled set of expressions: SSA instructions over named inputs.

    ``instructions`` is a list of ``(op, args)`` where each arg is ``("r", i)`` (register),
    ``("in", name)`` (input) or ``("c", value)`` (constant). ``outputs`` are args too.
    ``static[i]`` is true when instruction ``i`` depends only on the static inputs (the data);
    ``frontier`` lists the static registers that dynamic instructions or outputs read, which
    :meth:`static_values` computes once so :meth:`run` can skip all static work.
    """

    inputs: tuple[str, ...]
    instructions: tuple[tuple[str, tuple], ...]
    outputs: tuple[tuple, ...]
    static: tuple[bool, ...] = ()
    frontier: tuple[int, ...] = ()

    def static_values(self, backend: "Backend", env: dict[str, Any]) -> dict[int, Any]:
        regs: dict[int, Any] = {}
        for i, (op, args) in enumerate(self.instructions):
            if self.static[i]:
                regs[i] = backend.ops[op](*[_get(a, regs, env) for a in args])
        return {i: regs[i] for i in self.frontier}

    def run(self, backend: "Backend", env: dict[str, Any], static: dict[int, Any] | None = None) -> list[Any]:
        regs: dict[int, Any] = {}
        if static is not None:
            regs.update(static)
        for i, (op, args) in enumerate(self.instructions):
            if static is not None and self.static[i]:
                continue
            regs[i] = backend.ops[op](*[_get(a, regs, env) for a in args])
        return [_get(o, regs, env) for o in self.outputs]


def _get(a, regs, env):
    kind, v = a
    if kind == "r":
        return regs[v]
    if kind == "in":
        return env[v]
    return v


def compile_exprs(exprs: Sequence[sp.Expr], inputs: Sequence[str],
                  static_inputs: Iterable[str] = ()) -> Program:
    """Compile expressions (after common-subexpression elimination) into a :class:`Program`.

    ``static_inputs`` name the inputs that stay fixed across calls (the data): work that depends
    only on them is marked static, and ``x**p`` with static ``x`` and non-static ``p`` becomes
    ``exp(p*log(x))`` so that ``log(x)`` is static too.
    """
    c, values = _compile_values(exprs, inputs, static_inputs)
    return _program(c, inputs, values)


def _compile_values(exprs, inputs, static_inputs) -> tuple["_Compiler", list[tuple]]:
    """The expressions' instructions after common-subexpression elimination, and their outputs."""
    c = _Compiler(set(inputs), set(static_inputs))
    replacements, reduced = sp.cse(list(exprs), optimizations="basic")
    for sym, sub in replacements:
        c.cse_map[sym] = c.walk(sub)
    return c, [c.walk(e) for e in reduced]


def _program(c: "_Compiler", inputs, outputs: list[tuple]) -> Program:
    """The compiler's instructions as a :class:`Program`, with the static registers that
    dynamic work reads (the frontier) marked."""
    flags = c.static_flags
    frontier = set()
    for i, (_op, args) in enumerate(c.instructions):
        if not flags[i]:
            frontier.update(v for k, v in args if k == "r" and flags[v])
    frontier.update(v for k, v in outputs if k == "r" and flags[v])
    return Program(tuple(inputs), tuple(c.instructions), tuple(outputs), tuple(flags), tuple(sorted(frontier)))


def compile_with_jacobian(exprs: Sequence[sp.Expr], inputs: Sequence[str], params: Sequence[str],
                          static_inputs: Iterable[str] = ()) -> tuple[Program, list[tuple[int, int]], list[frozenset]]:
    """Compile ``exprs`` and their partial derivatives by every parameter into one :class:`Program`.

    The values are compiled as in :func:`compile_exprs`; the partials are then produced by
    forward-mode differentiation of the instruction list itself (each instruction's partials
    from its arguments' partials, structural zeros skipped, constants folded), so no symbolic
    derivative is taken. Returns ``(program, pairs, deps)``: outputs are the values, then one
    output per non-zero partial, ``pairs[i] = (expr_index, param_index)`` for output
    ``len(exprs) + i``, and ``deps[i]`` the parameter indices that partial depends on.
    """
    c, values = _compile_values(exprs, inputs, static_inputs)
    d = _ForwardDiff(c, list(params))
    pairs, partials, deps = [], [], []
    for ti, v in enumerate(values):
        for k, dv in sorted(d.partials(v).items()):
            pairs.append((ti, k))
            partials.append(dv)
            deps.append(d.depends(dv))
    return _program(c, inputs, values + partials), pairs, deps


_ZERO, _ONE = ("c", 0.0), ("c", 1.0)


class _ForwardDiff:
    """Partials of compiled registers by parameters, emitted as more instructions (memoised)."""

    def __init__(self, c: "_Compiler", params: list[str]):
        self.c = c
        self.pidx = {p: k for k, p in enumerate(params)}
        self.memo: dict[int, dict[int, tuple]] = {}
        self.dep_memo: dict[tuple, frozenset] = {}

    # constant-folding emitters
    def add(self, a, b):
        if a == _ZERO:
            return b
        if b == _ZERO:
            return a
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] + b[1])
        return self.c.emit("add", a, b)

    def mul(self, a, b):
        if a == _ZERO or b == _ZERO:
            return _ZERO
        if a == _ONE:
            return b
        if b == _ONE:
            return a
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] * b[1])
        return self.c.emit("mul", a, b)

    def neg(self, a):
        return ("c", -a[1]) if a[0] == "c" else self.c.emit("neg", a)

    def div(self, a, b):
        if a == _ZERO:
            return _ZERO
        if b == _ONE:
            return a
        return self.c.emit("div", a, b)

    def partials(self, a) -> dict[int, tuple]:
        kind, v = a
        if kind == "c":
            return {}
        if kind == "in":
            return {self.pidx[v]: _ONE} if v in self.pidx else {}
        if v not in self.memo:
            self.memo[v] = self._rule(v)
        return self.memo[v]

    def depends(self, a) -> frozenset:
        """Parameter indices a compiled value depends on."""
        kind, v = a
        if kind == "c":
            return frozenset()
        if kind == "in":
            return frozenset([self.pidx[v]]) if v in self.pidx else frozenset()
        if a not in self.dep_memo:
            _op, args = self.c.instructions[v]
            self.dep_memo[a] = frozenset().union(*(self.depends(x) for x in args))
        return self.dep_memo[a]

    def _rule(self, i: int) -> dict[int, tuple]:
        op, args = self.c.instructions[i]
        v = ("r", i)
        ds = [self.partials(a) for a in args]
        keys = sorted(set().union(*ds)) if ds else []
        if not keys or op in ("sign", "heaviside", "gt", "lt"):
            return {}
        if op in ("add", "neg", "mul", "div", "where", "minimum", "maximum"):
            return self._rule2(op, v, args, ds, keys)
        (a,), (da,) = args[:1], ds[:1]
        if op == "pow":
            return self._pow(v, args, ds, keys)
        if op == "exp":
            factor = v
        elif op == "log":
            return {k: self.div(da[k], a) for k in keys}
        elif op == "square":
            factor = self.mul(("c", 2.0), a)
        elif op == "sqrt":
            factor = self.div(("c", 0.5), v)
        elif op == "abs":
            factor = self.c.emit("sign", a)
        elif op == "tanh":
            factor = self.add(_ONE, self.neg(self.c.emit("square", v)))
        elif op == "cosh":
            factor = self.c.emit("sinh", a)
        elif op == "sinh":
            factor = self.c.emit("cosh", a)
        else:
            raise LawError(f"cannot differentiate instruction {op!r}")
        return {k: self.mul(factor, da[k]) for k in keys}

    def _rule2(self, op, v, args, ds, keys) -> dict[int, tuple]:
        if op == "add":
            return {k: self.add(ds[0].get(k, _ZERO), ds[1].get(k, _ZERO)) for k in keys}
        if op == "neg":
            return {k: self.neg(ds[0][k]) for k in keys}
        if op == "mul":
            a, b = args
            return {k: self.add(self.mul(ds[0].get(k, _ZERO), b), self.mul(a, ds[1].get(k, _ZERO))) for k in keys}
        if op == "div":  # d(a/b) = (da - v db) / b
            b = args[1]
            return {k: self.div(self.add(ds[0].get(k, _ZERO), self.neg(self.mul(v, ds[1].get(k, _ZERO)))), b)
                    for k in keys}
        if op == "where":
            cond = args[0]
            return {k: self.c.emit("where", cond, ds[1].get(k, _ZERO), ds[2].get(k, _ZERO)) for k in keys}
        cond = self.c.emit("lt" if op == "minimum" else "gt", args[0], args[1])
        return {k: self.c.emit("where", cond, ds[0].get(k, _ZERO), ds[1].get(k, _ZERO)) for k in keys}

    def _pow(self, v, args, ds, keys) -> dict[int, tuple]:
        a, b = args
        da, db = ds
        out = {}
        if da:  # b * a**(b-1) = b * v / a
            fa = self.c.emit("mul", b, self.c.emit("pow", a, self.add(b, ("c", -1.0)))) if b[0] == "c" \
                else self.div(self.mul(b, v), a)
        if db:
            fb = self.mul(v, self.c.emit("log", a))
        for k in keys:
            out[k] = self.add(self.mul(fa, da[k]) if k in da else _ZERO, self.mul(fb, db[k]) if k in db else _ZERO)
        return out


_UNARY = {sp.Abs: "abs", sp.tanh: "tanh", sp.sign: "sign", sp.Heaviside: "heaviside", sp.cosh: "cosh", sp.sinh: "sinh"}


class _Compiler:
    """Turns sympy nodes into SSA instructions (memoised per node), marking static work."""

    def __init__(self, input_set: set[str], static_set: set[str]):
        self.input_set, self.static_set = input_set, static_set
        self.instructions: list[tuple[str, tuple]] = []
        self.static_flags: list[bool] = []
        self.memo: dict[sp.Basic, tuple] = {}
        self.cse_map: dict[sp.Symbol, tuple] = {}

    def is_static(self, a) -> bool:
        kind, v = a
        return kind == "c" or (kind == "in" and v in self.static_set) or (kind == "r" and self.static_flags[v])

    def emit(self, op: str, *args) -> tuple:
        self.instructions.append((op, tuple(args)))
        self.static_flags.append(all(self.is_static(a) for a in args))
        return ("r", len(self.instructions) - 1)

    def walk(self, e: sp.Basic) -> tuple:
        if e in self.memo:
            return self.memo[e]
        out = self._node(e)
        self.memo[e] = out
        return out

    def _chain(self, op: str, args: list) -> tuple:
        acc = args[0]
        for a in args[1:]:
            acc = self.emit(op, acc, a)
        return acc

    def _node(self, e: sp.Basic) -> tuple:
        if isinstance(e, sp.Symbol):
            if e in self.cse_map:
                return self.cse_map[e]
            if e.name not in self.input_set:
                raise LawError(f"internal: symbol {e.name!r} is not an input")
            return ("in", e.name)
        if e.is_Number or e is sp.pi or e is sp.E:
            return ("c", float(e))
        if isinstance(e, sp.Add):
            return self._chain("add", [self.walk(a) for a in e.args])
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, sp.exp):
            return self.emit("exp", self.walk(e.args[0]))
        if isinstance(e, sp.log):
            if len(e.args) != 1:
                return self.emit("div", self.emit("log", self.walk(e.args[0])), self.emit("log", self.walk(e.args[1])))
            return self.emit("log", self.walk(e.args[0]))
        for cls, op in _UNARY.items():
            if isinstance(e, cls):
                return self.emit(op, self.walk(e.args[0]))
        if isinstance(e, (sp.Min, sp.Max)):
            return self._chain("minimum" if isinstance(e, sp.Min) else "maximum", [self.walk(a) for a in e.args])
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e)
        raise LawError(f"cannot compile expression node {type(e).__name__}: {e}")

    def _mul(self, e: sp.Mul) -> tuple:
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            return self.emit("neg", self.walk(rest))
        num, den = [], []
        for a in e.args:
            if isinstance(a, sp.Pow) and a.exp.is_Number and a.exp < 0:
                den.append(self.walk(a.base ** (-a.exp)))
            else:
                num.append(self.walk(a))
        acc = self._chain("mul", num) if num else ("c", 1.0)
        if den:
            acc = self.emit("div", acc, self._chain("mul", den))
        return acc

    def _pow(self, e: sp.Pow) -> tuple:
        base, ex = e.args
        if ex == -1:
            return self.emit("div", ("c", 1.0), self.walk(base))
        if ex == 2:
            return self.emit("square", self.walk(base))
        if ex == sp.Rational(1, 2):
            return self.emit("sqrt", self.walk(base))
        if ex == -sp.Rational(1, 2):
            return self.emit("div", ("c", 1.0), self.emit("sqrt", self.walk(base)))
        if base is sp.E:
            return self.emit("exp", self.walk(ex))
        b, x = self.walk(base), self.walk(ex)
        if self.is_static(b) and not self.is_static(x) and b[0] != "c":
            return self.emit("exp", self.emit("mul", x, self.emit("log", b)))
        return self.emit("pow", b, x)

    def _piecewise(self, e: sp.Piecewise) -> tuple:
        # Only the (value, cond), (other, True) shape that sympy produces for Min/Max
        # derivatives is supported.
        (v1, c1), (v2, _c2) = e.args if len(e.args) == 2 else (None, None)
        if v1 is None or not isinstance(c1, sp.core.relational.Relational):
            raise LawError(f"cannot compile piecewise expression {e}")
        cond = self.emit("gt" if isinstance(c1, (sp.StrictGreaterThan, sp.GreaterThan)) else "lt",
                         self.walk(c1.lhs), self.walk(c1.rhs))
        return self.emit("where", cond, self.walk(v1), self.walk(v2))


class Backend:
    """Numeric operations used by :class:`Program`, for numpy or torch."""

    def __init__(self, ops: dict[str, Callable]):
        self.ops = ops


def numpy_backend() -> Backend:
    import numpy as np

    return Backend({
        "add": np.add, "mul": np.multiply, "div": np.divide, "neg": np.negative,
        "square": np.square, "sqrt": np.sqrt, "pow": np.power, "exp": np.exp, "log": np.log,
        "abs": np.abs, "tanh": np.tanh, "sign": np.sign, "cosh": np.cosh, "sinh": np.sinh,
        "heaviside": lambda x: np.heaviside(x, 0.5), "minimum": np.minimum,
        "maximum": np.maximum, "gt": np.greater, "lt": np.less, "where": np.where,
    })


def torch_backend() -> Backend:
    import torch

    def _bin(f):
        def g(a, b):
            if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
                return f(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
            if not isinstance(a, torch.Tensor):
                a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
            if not isinstance(b, torch.Tensor):
                b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
            return f(a, b)
        return g

    def _un(f):
        def g(a):
            if not isinstance(a, torch.Tensor):
                a = torch.tensor(a, dtype=torch.float64)
            return f(a)
        return g

    def _pow(a, b):
        if isinstance(b, float) and b == int(b) and abs(b) <= 4 and isinstance(a, torch.Tensor):
            return torch.pow(a, int(b))
        return _bin(torch.pow)(a, b)

    return Backend({
        "add": lambda a, b: a + b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
        "neg": lambda a: -a, "square": lambda a: a * a, "sqrt": _un(torch.sqrt), "pow": _pow,
        "exp": _un(torch.exp), "log": _un(torch.log), "abs": _un(torch.abs),
        "tanh": _un(torch.tanh), "sign": _un(torch.sign), "cosh": _un(torch.cosh),
        "sinh": _un(torch.sinh),
        "heaviside": _un(lambda x: torch.heaviside(x, torch.tensor(0.5, dtype=x.dtype, device=x.device))),
        "minimum": _bin(torch.minimum), "maximum": _bin(torch.maximum),
        "gt": _bin(torch.gt), "lt": _bin(torch.lt), "where": lambda c, a, b: torch.where(c, a, b),
    })
