"""The protocol through which forms from outside the engine (an LLM) join the search.

The search defines it and takes an object that follows it; it never imports a proposer. Each
generation the loop shows the proposer a :class:`SearchView` (the best forms so far, the
features' ranges, the group count) and later takes the forms it queued. The proposer's state
(its budget ledger and queued forms) is saved with every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import sympy as sp

Form = tuple[sp.Expr, str]   # (canonical expression over p*/s* parameters, origin)


@dataclass(frozen=True)
class SearchView:
    """What a proposer may read of the search: no engine internals."""

    best: list[tuple[sp.Expr, float, int]]     # the best forms: (form, validation R², parameters per group)
    ranges: dict[str, tuple[float, float]]     # feature column -> (min, max) over the fit rows
    n_groups: int
    offspring: int                             # forms proposed per generation
    admit: Callable[[list[Form]], list[Form]]  # keeps the valid forms the search has not seen


class Proposer(Protocol):
    def maybe_propose(self, view: SearchView) -> int:
        """Queue new forms (at the proposer's own rate and budget); return how many."""

    def take_pending(self) -> list[Form]:
        """The queued forms, emptying the queue."""

    def state(self) -> dict:
        """``{"ledger": ..., "llm_pending": [[tree, origin], ...]}`` for the checkpoint."""

    def restore(self, ledger: dict, pending: list) -> None:
        """Continue from a checkpoint's state."""

    def usage(self) -> dict:
        """The budget ledger (calls, tokens, cost) for summaries."""

    def spend_text(self) -> str:
        """One line of spend for the progress display."""
