"""Row-selection rules such as ``"N >= 1e9 or D >= 6e11"``, parsed with a whitelist.

A rule is parsed by :func:`ast.parse` and interpreted over the columns of a table; it is never
evaluated as Python. Allowed: column names, numbers, quoted strings (for group names),
arithmetic ``+ - * / **``, comparisons (chains too), ``and``, ``or``, ``not``, ``in [...]``,
``log``/``log10``/``exp``/``abs``.
"""

from __future__ import annotations

import ast
from typing import Mapping

import numpy as np

from lawforge.errors import DatasetError, did_you_mean

_CMP = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
        ast.Eq: np.equal, ast.NotEq: np.not_equal}
_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
          ast.Pow: np.power}
_FUNCS = {"log": np.log, "log10": np.log10, "exp": np.exp, "abs": np.abs}


def parse_rule(text: str, columns) -> ast.Expression:
    """Check ``text`` against the whitelist and the known ``columns``; return its tree."""
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"test rule must be a non-empty string, got {text!r}")
    if len(text) > 2000:
        raise DatasetError("test rule is longer than 2000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise DatasetError(f"test rule {text!r}: syntax error: {exc.msg}") from None
    cols = set(columns)
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
                               ast.USub, ast.UAdd, ast.Compare, ast.BinOp, ast.Constant, ast.Name,
                               ast.Load, ast.List, ast.Tuple, ast.In, ast.NotIn, ast.Call)) \
            or type(node) in _CMP or type(node) in _ARITH
        if not ok:
            raise DatasetError(f"test rule {text!r}: {type(node).__name__} is not allowed in a rule")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
                raise DatasetError(f"test rule {text!r}: only {', '.join(_FUNCS)} may be called")
        if isinstance(node, ast.Name) and node.id not in cols and node.id not in _FUNCS:
            raise DatasetError(f"test rule {text!r}: unknown column {node.id!r}"
                               f"{did_you_mean(node.id, cols)}; columns are {', '.join(sorted(cols))}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise DatasetError(f"test rule {text!r}: constant {node.value!r} is not allowed")
    return tree


def evaluate_rule(text: str, table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the rows of ``table`` (column -> array) that ``text`` selects."""
    tree = parse_rule(text, table.keys())
    n = len(next(iter(table.values())))

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return np.asarray(table[node.id])
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            vals = [np.asarray(ev(v), dtype=bool) for v in node.values]
            f = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = f(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return np.logical_not(np.asarray(v, dtype=bool))
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return _ARITH[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call):
            return _FUNCS[node.func.id](ev(node.args[0]))
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            out = np.ones(n, dtype=bool)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right, list):
                        raise DatasetError(f"test rule {text!r}: 'in' needs a list like [1, 2]")
                    res = np.isin(left, right)
                    if isinstance(op, ast.NotIn):
                        res = ~res
                else:
                    try:
                        res = _CMP[type(op)](left, right)
                    except TypeError:
                        raise DatasetError(f"test rule {text!r}: cannot compare {left!r:.40} with "
                                           f"{right!r:.40}") from None
                out = out & np.asarray(res, dtype=bool)
                left = right
            return out
        raise DatasetError(f"test rule {text!r}: cannot evaluate {type(node).__name__}")

    with np.errstate(all="ignore"):
        mask = np.broadcast_to(np.asarray(ev(tree), dtype=bool), (n,)).copy()
    return mask
