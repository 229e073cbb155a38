"""Outputs for people and papers: HTML/Markdown reports with plots, and LaTeX tables.

:func:`run_hooks` gives the functions a discovery calls when it ends (``lawforge.runs.discover``
takes them as hooks, so that runs never import this layer).
"""

from lawforge.outputs.latex import laws_table_tex
from lawforge.outputs.report import write_report
from lawforge.runs.folder import LAWS_TEX, RunFolder


def write_laws_tex(run: RunFolder, dataset, top: list) -> None:
    """Run hook: ``laws.tex``, the LaTeX table of the top laws."""
    run.write_text(LAWS_TEX, laws_table_tex(top, dataset.name))


def write_report_files(run: RunFolder, dataset, top: list) -> None:
    """Run hook: ``report.html`` and ``report.md`` (by the run's deadline, where it has one)."""
    write_report(run.path, dataset=dataset, deadline=run.deadline)


def run_hooks(report: bool = True) -> list:
    """The outputs a discovery writes when it ends: ``laws.tex``, and the report unless ``report`` is false."""
    return [write_laws_tex] + ([write_report_files] if report else [])
