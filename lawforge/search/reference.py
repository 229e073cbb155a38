"""The contract's whole rule table, as ``lawforge rules`` and ``docs/rules.md`` show it: the form,
constant and beyond-the-data rules (:mod:`lawforge.search.contract`), the search's probe rules
(:mod:`lawforge.search.checks`) and the retired settings (:data:`~lawforge.search.settings.RETIRED`)."""

from __future__ import annotations

from lawforge.search import checks  # noqa: F401  (registers the probe rules)
from lawforge.search.contract.rules import Rule, rules_markdown, rules_table
from lawforge.search.settings import RETIRED


def all_rules() -> list[Rule]:
    """Every rule, by kind then id."""
    return rules_table()


def rules_doc() -> str:
    """``docs/rules.md``."""
    return rules_markdown(RETIRED)
