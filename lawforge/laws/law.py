"""Laws as data: expressions per target over named variables and named parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import sympy as sp

from lawforge.errors import LawError, did_you_mean
from lawforge.laws.printing import law_latex, law_str
from lawforge.laws.expr import (FUNCTIONS, Program, compile_exprs, compile_with_jacobian, make_symbol,
                                      numpy_backend, parse_expression)

_PARAM_KEYS = {"init", "lower", "upper", "bounds", "shared", "scale"}


@dataclass
class Param:
    """A fitted constant: per group unless ``shared``; ``init`` and ``[lower, upper]`` bounds."""

    name: str
    init: float = 1.0
    lower: float = -math.inf
    upper: float = math.inf
    shared: bool = False
    scale: float | None = None  # spread of random restarts for an unbounded parameter

    def __post_init__(self):
        self.init = float(self.init)
        self.lower = -math.inf if self.lower is None else float(self.lower)
        self.upper = math.inf if self.upper is None else float(self.upper)
        if not self.lower < self.upper:
            raise LawError(f"parameter {self.name!r}: lower bound {self.lower} is not below upper {self.upper}")
        if not math.isfinite(self.init):
            raise LawError(f"parameter {self.name!r}: init must be finite, got {self.init}")
        if not (self.lower <= self.init <= self.upper):
            raise LawError(f"parameter {self.name!r}: init {self.init} is outside its bounds "
                           f"[{self.lower}, {self.upper}]")

    @classmethod
    def from_spec(cls, name: str, spec: Any) -> "Param":
        """Build from a number (init), a dict (init/lower/upper/bounds/shared/scale) or a Param."""
        if isinstance(spec, Param):
            return spec
        if spec is None:
            return cls(name)
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls(name, init=float(spec))
        if not isinstance(spec, Mapping):
            raise LawError(f"parameter {name!r}: spec must be a number or a mapping, got {spec!r}")
        unknown = set(spec) - _PARAM_KEYS
        if unknown:
            k = sorted(unknown)[0]
            raise LawError(f"parameter {name!r}: unknown key {k!r}{did_you_mean(k, _PARAM_KEYS)}; "
                           f"valid keys are {', '.join(sorted(_PARAM_KEYS))}")
        lower, upper = spec.get("lower"), spec.get("upper")
        if "bounds" in spec:
            b = spec["bounds"]
            if not isinstance(b, Sequence) or len(b) != 2:
                raise LawError(f"parameter {name!r}: bounds must be [lower, upper], got {b!r}")
            lower, upper = b
        try:
            lower = _num(lower, -math.inf)
            upper = _num(upper, math.inf)
            init = spec.get("init")
            if init is None:
                init = _default_init(lower, upper)
            return cls(name, init=float(init), lower=lower, upper=upper,
                       shared=bool(spec.get("shared", False)),
                       scale=None if spec.get("scale") is None else float(spec["scale"]))
        except (TypeError, ValueError) as exc:
            raise LawError(f"parameter {name!r}: invalid spec {dict(spec)!r}: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("name")
        for k in ("lower", "upper"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


def _num(v, default):
    if v is None:
        return default
    if isinstance(v, str):
        v = v.strip().lower()
        if v in ("inf", "+inf", "infinity"):
            return math.inf
        if v in ("-inf", "-infinity"):
            return -math.inf
    return float(v)


def _default_init(lower: float, upper: float) -> float:
    if math.isfinite(lower) and math.isfinite(upper):
        return 0.5 * (lower + upper)
    if math.isfinite(lower):
        return lower + 1.0
    if math.isfinite(upper):
        return upper - 1.0
    return 1.0


class Law:
    """One functional form, shared by all groups, with one expression per target.

    ``variables`` maps each symbol usable in the expressions to a data column (a list means
    symbol == column). ``where`` holds named sub-expressions, in order. ``params`` maps
    parameter names to specs; when omitted, every name that is neither a variable nor a
    definition becomes a per-group parameter with init 1 (as lmfit infers from a function).
    """

    def __init__(self, targets: Mapping[str, str] | str, variables: Mapping[str, str] | Sequence[str],
                 params: Mapping[str, Any] | Sequence[Param] | None = None,
                 where: Mapping[str, str] | None = None, name: str = "law",
                 citation: str | None = None, target_names: Sequence[str] | None = None):
        self.name = name
        self.citation = citation
        if isinstance(variables, Mapping):
            self.variables = {str(k): str(v) for k, v in variables.items()}
        else:
            self.variables = {str(v): str(v) for v in variables}
        for sym in self.variables:
            if not sym.isidentifier() or sym.startswith("_") or sym in FUNCTIONS:
                raise LawError(f"variable symbol {sym!r} is not a valid name")
        if isinstance(targets, str):
            if not target_names or len(target_names) != 1:
                raise LawError("a single expression needs exactly one target name; "
                               "give targets as {target: expression} for several targets")
            targets = {target_names[0]: targets}
        if not targets:
            raise LawError("a law needs at least one target expression")
        self.targets = {str(k): str(v) for k, v in targets.items()}
        self.where = {str(k): str(v) for k, v in (where or {}).items()}
        self._parse(params)

    # ---------------------------------------------------------------- parsing
    def _parse(self, params) -> None:
        var_names = set(self.variables)
        explicit = params is not None
        if explicit:
            if isinstance(params, Mapping):
                plist = [Param.from_spec(str(k), v) for k, v in params.items()]
            else:
                plist = [p if isinstance(p, Param) else Param.from_spec(str(p), None) for p in params]
            names = [p.name for p in plist]
            if len(set(names)) != len(names):
                raise LawError(f"{self.name}: duplicate parameter names in {names}")
            for n in names:
                if n in var_names:
                    raise LawError(f"{self.name}: {n!r} is both a variable and a parameter")
                if not n.isidentifier() or n.startswith("_") or n in FUNCTIONS:
                    raise LawError(f"{self.name}: {n!r} is not a valid parameter name")
            allowed = var_names | set(names)
        else:
            plist, allowed = [], None
        defs: dict[str, sp.Expr] = {}
        for dname, text in self.where.items():
            if not dname.isidentifier() or dname.startswith("_") or dname in var_names or dname in FUNCTIONS:
                raise LawError(f"{self.name}: definition name {dname!r} is not valid or shadows a variable")
            defs[dname] = parse_expression(text, allowed, what=f"{self.name}: definition {dname}",
                                           definitions=defs)
        exprs: dict[str, sp.Expr] = {}
        for tname, text in self.targets.items():
            exprs[tname] = parse_expression(text, allowed, what=f"{self.name}: target {tname}",
                                            definitions=defs)
        used = set().union(*[{s.name for s in e.free_symbols} for e in exprs.values()])
        if not explicit:
            inferred = sorted(used - var_names)
            for n in inferred:
                close = did_you_mean(n, var_names)
                if close:
                    raise LawError(f"{self.name}: unknown symbol {n!r}{close}; declare it in the "
                                   f"parameters if it is meant to be a fitted constant")
            plist = [Param(n) for n in inferred]
        else:
            unused = [p.name for p in plist if p.name not in used]
            if unused:
                raise LawError(f"{self.name}: parameter(s) {', '.join(unused)} do not appear in the law")
        if not plist:
            raise LawError(f"{self.name}: the law has no parameters to fit")
        self.params = plist
        self.exprs = exprs

    # ---------------------------------------------------------------- properties
    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def n_params(self) -> int:
        """Parameters a group's prediction uses (shared ones included once)."""
        return len(self.params)

    @property
    def target_names(self) -> list[str]:
        return list(self.targets)

    def check_limit(self, limit: int | None, dataset: str = "dataset") -> None:
        if limit is not None and self.n_params > limit:
            raise LawError(f"{self.name} has {self.n_params} parameters per group; {dataset} allows "
                           f"at most {limit}")

    def with_params(self, params: Mapping[str, Any]) -> "Law":
        """A copy with parameter specs replaced (names must already be parameters)."""
        current = {p.name: p for p in self.params}
        for k in params:
            if k not in current:
                raise LawError(f"{self.name}: no parameter {k!r}{did_you_mean(k, current)}")
        merged = {n: (Param.from_spec(n, params[n]) if n in params else p) for n, p in current.items()}
        return Law(self.targets, self.variables, merged, self.where, self.name, self.citation)

    # ---------------------------------------------------------------- compilation
    @cached_property
    def value_program(self) -> Program:
        return compile_exprs([self.exprs[t] for t in self.targets], self._inputs)

    @cached_property
    def _jacobian(self):
        exprs = [self.exprs[t] for t in self.targets]
        return compile_with_jacobian(exprs, self._inputs, self.param_names, static_inputs=list(self.variables))

    @cached_property
    def domain(self) -> list[tuple[str, bool, str]]:
        """Where the law is defined only for some values of a variable: ``(symbol, strict,
        term)`` for ``log(x)`` (x > 0, strict) and a power of ``x`` other than a whole number
        (``x**a``, ``sqrt(x)``: x >= 0)."""
        out = {}
        for e in self.exprs.values():
            for node in sp.preorder_traversal(e):
                if isinstance(node, sp.log) and node.args[0].is_Symbol and node.args[0].name in self.variables:
                    out.setdefault((node.args[0].name, True), str(node))
                elif (isinstance(node, sp.Pow) and node.base.is_Symbol and node.base.name in self.variables
                      and not (node.exp.is_Number and float(node.exp).is_integer())):
                    out.setdefault((node.base.name, False), str(node))
        return [(sym, strict, term) for (sym, strict), term in out.items()]

    @property
    def jacobian_program(self) -> tuple[Program, list[tuple[int, int]]]:
        """Program whose outputs are every target value, then the non-zero partials.

        Returns ``(program, pairs)`` where ``pairs[i] = (target_index, param_index)`` for output
        ``n_targets + i``.
        """
        prog, pairs, _deps = self._jacobian
        return prog, pairs

    @cached_property
    def linear_params(self) -> list[int]:
        """Indices of the parameters the law is jointly affine in and that carry no bounds
        (the ones the fitter can solve exactly by linear least squares)."""
        _prog, pairs, deps = self._jacobian
        by_param: dict[int, frozenset] = {}
        for (_t, k), dep in zip(pairs, deps):
            by_param[k] = by_param.get(k, frozenset()) | dep
        lin = [k for k, p in enumerate(self.params)
               if not (math.isfinite(p.lower) or math.isfinite(p.upper)) and k not in by_param.get(k, frozenset())]
        joint: list[int] = []
        for k in lin:
            if not (by_param.get(k, frozenset()) & set(joint)):
                joint.append(k)
        return joint

    @property
    def _inputs(self) -> list[str]:
        return list(self.variables) + self.param_names

    def predict(self, X: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
        """Evaluate with numpy. ``X`` maps column names to arrays; ``params`` maps parameter
        names to scalars or per-row arrays. Returns an (n, n_targets) array."""
        env = {}
        n = None
        for sym, col in self.variables.items():
            if col not in X:
                raise LawError(f"{self.name}: data has no column {col!r} for variable {sym!r}")
            env[sym] = np.asarray(X[col], dtype=np.float64)
            n = len(env[sym])
        for p in self.params:
            if p.name not in params:
                raise LawError(f"{self.name}: no value for parameter {p.name!r}")
            env[p.name] = np.asarray(params[p.name], dtype=np.float64)
        with np.errstate(all="ignore"):
            outs = self.value_program.run(numpy_backend(), env)
        n = n if n is not None else 1
        return np.stack([np.broadcast_to(np.asarray(o, dtype=np.float64), (n,)) for o in outs], axis=1)

    # ---------------------------------------------------------------- export
    def to_sympy(self) -> dict[str, sp.Expr]:
        return dict(self.exprs)

    def to_latex(self) -> str:
        lines = []
        for t, e in self.exprs.items():
            lines.append(f"{sp.latex(make_symbol(t))} = {law_latex(e, self.variables)}")
        return " \\\\\n".join(lines)

    def to_torch(self, params: Mapping[str, Any] | None = None):
        """A differentiable torch function of the law: ``f(X, params=None) -> Tensor (n, d)``,
        ``X`` mapping column names to tensors; ``params`` (names -> tensors or floats) defaults
        to the ones given here. Gradients flow to tensor inputs and parameters."""
        import torch

        from lawforge.laws.expr import torch_backend

        prog, bound = self.value_program, dict(params or {})

        def f(X: Mapping[str, Any], params: Mapping[str, Any] | None = None):
            env = {}
            n = 1
            for sym, col in self.variables.items():
                if col not in X:
                    raise LawError(f"{self.name}: data has no column {col!r} for variable {sym!r}")
                env[sym] = torch.as_tensor(X[col], dtype=torch.float64)
                n = env[sym].shape[0] if env[sym].ndim else n
            vals = {**bound, **dict(params or {})}
            for p in self.params:
                if p.name not in vals:
                    raise LawError(f"{self.name}: no value for parameter {p.name!r}")
                env[p.name] = torch.as_tensor(vals[p.name], dtype=torch.float64)
            outs = prog.run(torch_backend(), env)
            return torch.stack([torch.broadcast_to(torch.as_tensor(o, dtype=torch.float64), (n,)) for o in outs], dim=1)

        return f

    def to_python(self) -> str:
        """A plain-Python (numpy) function definition as text, for copying into other code."""
        from sympy.printing.numpy import NumPyPrinter

        printer = NumPyPrinter({"fully_qualified_modules": False, "inline": True})
        args = ", ".join(self.variables)
        kw = ", ".join(self.param_names)
        body = [f"    {t} = {printer.doprint(e)}" for t, e in self.exprs.items()]
        ret = ", ".join(self.exprs)
        return "import numpy\n\ndef law(" + args + ", *, " + kw + "):\n" + "\n".join(body) + f"\n    return {ret}\n"

    def to_string(self) -> str:
        """Expressions as whitelist-parseable text (definitions substituted), in reading order:
        the floor first, each term's coefficient first (:func:`lawforge.laws.printing.law_str`)."""
        if len(self.exprs) == 1:
            return law_str(next(iter(self.exprs.values())), self.variables)
        return "; ".join(f"{t} = {law_str(e, self.variables)}" for t, e in self.exprs.items())

    def to_dict(self) -> dict:
        return {"name": self.name, "targets": dict(self.targets), "where": dict(self.where),
                "variables": dict(self.variables),
                "params": {p.name: p.to_dict() for p in self.params}, "citation": self.citation}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Law":
        return cls(d["targets"], d["variables"], d.get("params"), d.get("where"),
                   d.get("name", "law"), d.get("citation"))

    def __repr__(self) -> str:
        return f"Law({self.name!r}: {self.to_string()}, params={self.param_names})"


def law_from_text(text: str, variables: Mapping[str, str], target_names: Sequence[str],
                  params: Mapping[str, Any] | None = None, name: str = "law") -> Law:
    """Build a law from one line of text.

    ``"E + A/N**alpha"`` for a single target, or ``;``-separated statements
    ``"name = expr; target = expr"`` where statements naming a target are its expression and
    the others are definitions usable by later statements.
    """
    if not isinstance(text, str) or not text.strip():
        raise LawError("empty law")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if len(parts) == 1 and "=" not in parts[0].replace("==", "").replace("<=", "").replace(">=", ""):
        return Law(parts[0], variables, params, None, name, target_names=list(target_names)[:1]
                   if len(target_names) == 1 else None)
    targets: dict[str, str] = {}
    where: dict[str, str] = {}
    for p in parts:
        if "=" not in p:
            raise LawError(f"statement {p!r} needs the form 'name = expression' when a law has "
                           f"several statements")
        lhs, rhs = p.split("=", 1)
        lhs = lhs.strip()
        if not lhs.isidentifier():
            raise LawError(f"left side {lhs!r} of {p!r} is not a name")
        (targets if lhs in target_names else where)[lhs] = rhs.strip()
    missing = [t for t in target_names if t not in targets]
    if missing:
        raise LawError(f"law gives no expression for target {missing[0]!r} (targets: "
                       f"{', '.join(target_names)})")
    return Law(targets, variables, params, where, name)
