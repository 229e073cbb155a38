"""Laws printed the way researchers write them: the floor first, then the terms, and in each
term its coefficient first (``p0 + p1*D**p2 + p3/N**p4``, not ``D**p2*p1 + p0 + p3/N**p4``).

Only the order of the printed operands changes: the text parses back to the same expression.
"""

from __future__ import annotations

from typing import Iterable

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter


class _ReadingOrder:
    """Reorders a sum's terms and a product's factors before the base printer prints them."""

    def __init__(self, variables: Iterable[str]):
        super().__init__({"order": "none"})
        self._vars = frozenset(variables)

    def _has_var(self, e: sp.Expr) -> bool:
        return any(s.name in self._vars for s in e.free_symbols)

    def _print_Add(self, expr, order=None):
        terms = expr.as_ordered_terms()          # sympy's own order, then the floor moved first
        ordered = [t for t in terms if not self._has_var(t)] + [t for t in terms if self._has_var(t)]
        return super()._print_Add(sp.Add._from_args(ordered), order="none")

    def _print_Mul(self, expr):
        factors = expr.as_ordered_factors()
        nums = [f for f in factors if f.is_Number]
        consts = [f for f in factors if not f.is_Number and not self._has_var(f)]
        rest = [f for f in factors if not f.is_Number and self._has_var(f)]
        return super()._print_Mul(sp.Mul._from_args(nums + consts + rest) if consts and rest else expr)


class _Text(_ReadingOrder, StrPrinter):
    pass


class _Latex(_ReadingOrder, LatexPrinter):
    pass


def law_str(expr: sp.Expr, variables: Iterable[str]) -> str:
    """``expr`` as text in reading order (see the module doc); parses back to ``expr``."""
    return _Text(variables).doprint(expr)


def law_latex(expr: sp.Expr, variables: Iterable[str]) -> str:
    """``expr`` as LaTeX in reading order."""
    return _Latex(variables).doprint(expr)
