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
    allowed_set = None if allowed is None else set(allowed)
    defs = definitions or {}

    def conv(node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Expression):
            return conv(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise LawError(f"{what}: only numeric constants are allowed, got {node.value!r}")
            if not math.isfinite(node.value):
                raise LawError(f"{what}: non-finite constant {node.value!r}")
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            name = node.id
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
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](conv(node.left), conv(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            val = conv(node.operand)
            return -val if isinstance(node.op, ast.USub) else val
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise LawError(f"{what}: {ast.unparse(node.func)[:40]!r} is not allowed: only whitelisted functions may be called, by name")
            fname = node.func.id
            if fname not in FUNCTIONS:
                raise LawError(f"{what}: unknown function {fname!r}{did_you_mean(fname, FUNCTIONS)}; "
                               f"allowed: {', '.join(sorted(set(FUNCTIONS) - {'Min', 'Max', 'Abs'}))}")
            if node.keywords:
                raise LawError(f"{what}: function {fname!r} takes no keyword arguments")
            args = [conv(a) for a in node.args]
            arity = _ARITY.get(fname, 1)
            if arity is None:
                if len(args) < 2:
                    raise LawError(f"{what}: {fname}() needs at least 2 arguments")
            elif len(args) != arity:
                raise LawError(f"{what}: {fname}() takes {arity} argument(s), got {len(args)}")
            return FUNCTIONS[fname](*args)
        raise LawError(f"{what}: '{ast.unparse(node)[:60]}' uses syntax that is not allowed in a law "
                       f"({type(node).__name__}); use numbers, names, + - * / ** and whitelisted functions")

    try:
        expr = conv(tree)
    except RecursionError:
        raise LawError(f"{what}: expression is nested too deeply") from None
    if not isinstance(expr, sp.Basic):
        expr = sp.sympify(expr)
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise LawError(f"{what}: expression {src!r} simplifies to an infinite or undefined value")
    return expr


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
    input_set = set(inputs)
    static_set = set(static_inputs)
    static_flags: list[bool] = []
    replacements, reduced = sp.cse(list(exprs), optimizations="basic")
    instructions: list[tuple[str, tuple]] = []
    memo: dict[sp.Basic, tuple] = {}
    cse_map: dict[sp.Symbol, tuple] = {}

    def is_static(a) -> bool:
        kind, v = a
        return kind == "c" or (kind == "in" and v in static_set) or (kind == "r" and static_flags[v])

    def emit(op: str, *args) -> tuple:
        instructions.append((op, tuple(args)))
        static_flags.append(all(is_static(a) for a in args))
        return ("r", len(instructions) - 1)

    def walk(e: sp.Basic) -> tuple:
        if e in memo:
            return memo[e]
        out = _walk(e)
        memo[e] = out
        return out

    def _walk(e: sp.Basic) -> tuple:
        if isinstance(e, sp.Symbol):
            if e in cse_map:
                return cse_map[e]
            if e.name not in input_set:
                raise LawError(f"internal: symbol {e.name!r} is not an input")
            return ("in", e.name)
        if e.is_Number or e is sp.pi or e is sp.E:
            return ("c", float(e))
        if isinstance(e, sp.Add):
            args = [walk(a) for a in e.args]
            acc = args[0]
            for a in args[1:]:
                acc = emit("add", acc, a)
            return acc
        if isinstance(e, sp.Mul):
            coeff, rest = e.as_coeff_Mul()
            if coeff == -1:
                return emit("neg", walk(rest))
            num, den = [], []
            for a in e.args:
                if isinstance(a, sp.Pow) and a.exp.is_Number and a.exp < 0:
                    den.append(walk(a.base ** (-a.exp)))
                else:
                    num.append(walk(a))
            acc = num[0] if num else ("c", 1.0)
            for a in num[1:]:
                acc = emit("mul", acc, a)
            if den:
                d = den[0]
                for a in den[1:]:
                    d = emit("mul", d, a)
                acc = emit("div", acc, d)
            return acc
        if isinstance(e, sp.Pow):
            base, ex = e.args
            if ex == -1:
                return emit("div", ("c", 1.0), walk(base))
            if ex == 2:
                return emit("square", walk(base))
            if ex == sp.Rational(1, 2):
                return emit("sqrt", walk(base))
            if ex == -sp.Rational(1, 2):
                return emit("div", ("c", 1.0), emit("sqrt", walk(base)))
            if base is sp.E:
                return emit("exp", walk(ex))
            b, x = walk(base), walk(ex)
            if is_static(b) and not is_static(x) and b[0] != "c":
                return emit("exp", emit("mul", x, emit("log", b)))
            return emit("pow", b, x)
        if isinstance(e, sp.exp):
            return emit("exp", walk(e.args[0]))
        if isinstance(e, sp.log):
            if len(e.args) != 1:
                return emit("div", emit("log", walk(e.args[0])), emit("log", walk(e.args[1])))
            return emit("log", walk(e.args[0]))
        unary = {sp.Abs: "abs", sp.tanh: "tanh", sp.sign: "sign", sp.Heaviside: "heaviside",
                 sp.cosh: "cosh", sp.sinh: "sinh"}
        for cls, op in unary.items():
            if isinstance(e, cls):
                return emit(op, walk(e.args[0]))
        if isinstance(e, (sp.Min, sp.Max)):
            op = "minimum" if isinstance(e, sp.Min) else "maximum"
            args = [walk(a) for a in e.args]
            acc = args[0]
            for a in args[1:]:
                acc = emit(op, acc, a)
            return acc
        if isinstance(e, sp.Piecewise):
            # Only the (value, cond), (other, True) shape that sympy produces for Min/Max
            # derivatives is supported.
            (v1, c1), (v2, _c2) = e.args if len(e.args) == 2 else (None, None)
            if v1 is None or not isinstance(c1, sp.core.relational.Relational):
                raise LawError(f"cannot compile piecewise expression {e}")
            cond = emit("gt" if isinstance(c1, (sp.StrictGreaterThan, sp.GreaterThan)) else "lt",
                        walk(c1.lhs), walk(c1.rhs))
            return emit("where", cond, walk(v1), walk(v2))
        raise LawError(f"cannot compile expression node {type(e).__name__}: {e}")

    for sym, sub in replacements:
        cse_map[sym] = walk(sub)
    outputs = tuple(walk(e) for e in reduced)
    frontier = set()
    for i, (_op, args) in enumerate(instructions):
        if not static_flags[i]:
            frontier.update(v for k, v in args if k == "r" and static_flags[v])
    frontier.update(v for k, v in outputs if k == "r" and static_flags[v])
    return Program(tuple(inputs), tuple(instructions), outputs, tuple(static_flags), tuple(sorted(frontier)))


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
