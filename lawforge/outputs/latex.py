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


def predictions_table_tex(rows: Sequence[dict], dataset: str, axis: str, level: float) -> str:
    """A LaTeX table (booktabs) of the chosen law's predictions beyond the data, with bands."""
    pct = f"{level:.0%}".replace("%", r"\%")
    lines = ["% lawforge: predictions beyond the data for " + dataset + " (needs \\usepackage{booktabs})",
             "\\begin{table}[t]", "\\centering", "\\begin{tabular}{llrrr}", "\\toprule",
             f"Group & {_tex_escape(axis)} & Prediction & \\multicolumn{{2}}{{c}}{{{pct} interval}} \\\\",
             "\\midrule"]
    for r in rows:
        lines.append(f"{_tex_escape(str(r['group']))} & {r['point'][axis]:.3g} ({r['where']}) & {r['prediction']:.4g} & "
                     f"{r['low']:.4g} & {r['high']:.4g} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{Predictions of the law found by lawforge on \\texttt{{{_tex_escape(dataset)}}} at 10 and 100 "
              f"times the largest training value of {_tex_escape(axis)} (other features at their largest training "
              f"values), with {pct} bootstrap intervals (refits on resampled training points).}}",
              "\\end{table}", ""]
    return "\n".join(lines)
