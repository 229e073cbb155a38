"""Live progress of a discovery: generation, best validation R², candidates/s, LLM spend, time left.

On a terminal the line is redrawn in place (rich); when output is not a terminal it stays quiet,
unless ``verbose`` asks for one plain line per generation (for logs).
"""

from __future__ import annotations

import sys
from typing import Any


def format_progress(info: dict[str, Any], budget_s: float | None = None, max_evals: int | None = None) -> str:
    parts = [f"gen {info.get('generation', 0):3d}", f"evals {info.get('evaluations', 0):5d}"]
    r2 = info.get("best_val_r2")
    parts.append(f"best val R2 {r2:.5f}" if r2 is not None else "best val R2 -")
    parts.append(f"{info.get('cand_per_s', 0.0):6.1f} cand/s")
    spend = info.get("llm_spend")
    parts.append("LLM: off" if spend is None else f"LLM: {spend}")
    secs = float(info.get("seconds", 0.0))
    if budget_s:
        parts.append(f"{max(budget_s - secs, 0):5.0f}s left")
    elif max_evals:
        parts.append(f"{max(max_evals - info.get('evaluations', 0), 0)} evals left")
    parts.append(f"{secs:6.1f}s")
    return "  ".join(parts)


class Progress:
    """Context manager; ``update(info)`` takes the dict the search reports each generation."""

    def __init__(self, budget_s=None, max_evals=None, verbose: bool = False, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.budget_s, self.max_evals = budget_s, max_evals
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = None
        self.mode = "off" if quiet and not verbose else ("live" if self.tty and not verbose else
                                                         ("lines" if verbose else "off"))
        self.last = ""

    def __enter__(self):
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._text = Text
            self.live = Live(Text("starting..."), console=Console(file=self.stream), refresh_per_second=4,
                             transient=False)
            self.live.__enter__()
        return self

    def update(self, info) -> None:
        line = info if isinstance(info, str) else format_progress(info, self.budget_s, self.max_evals)
        self.last = line
        if self.mode == "live":
            self.live.update(self._text(line))
        elif self.mode == "lines":
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
        return False
