"""LaTeX for papers: a booktabs table of a run's top laws (``laws.tex``)."""

from __future__ import annotations

import math
from typing import Sequence


def _tex_escape(s: str) -> str:
    return (s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
            .replace("&", r"\&").replace("#", r"\#"))


def fmt_number(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    return f"{x:.{digits}f}"


def laws_table_tex(top: Sequence[dict], dataset: str) -> str:
    """A LaTeX table (booktabs) of the top laws: formula, parameters, validation and test R²."""
    lines = [
        "% lawforge: top laws for " + dataset + " (needs \\usepackage{booktabs})",
        "\\begin{table}[t]",
        "\\centering",
        "\\begin{tabular}{clccc}",
        "\\toprule",
        "Rank & Law & Params & Val. $R^2$ & Test $R^2$ \\\\",
        "\\midrule",
    ]
    for t in top:
        formula = t["latex"].replace(" \\\\\n", ",\\; ")
        mark = "$^\\ast$" if t.get("chosen") else ""
        lines.append(f"{t['rank'] + 1}{mark} & ${formula}$ & {t['n_params']} & {fmt_number(t.get('val_r2'))} & "
                     f"{fmt_number(t.get('test_r2'))} \\\\")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{Top laws found by lawforge on \\texttt{{{_tex_escape(dataset)}}}. Parameters are per group; "
        "validation $R^2$ ranks the laws (the test split is read once, after the search). "
        "$^\\ast$ the chosen law.}",
        "\\end{table}",
        "",
    ]
    return "\n".join(lines)
