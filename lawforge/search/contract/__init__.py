"""The readable-law contract: what a law lawforge returns must satisfy, on every dataset.

Each rule is one :class:`~.rules.Rule` in :data:`~.rules.RULES` (id, stages, the property it
protects, examples); checks return :class:`~.rules.Issue` objects carrying the rule's id. The
reference, ``docs/rules.md``, is generated from the table (``lawforge rules --markdown``).

- :mod:`.form`: the written form (sympy only; the grammar, the screen and the choice use it);
- :mod:`.identify`: the fitted constants at the data;
- :mod:`.push`: pushing features beyond the data (one primitive, two point sets);
- :mod:`.beyond`: behaviour along declared trends out to 1000x and further, and :func:`check_law`;
- :mod:`lawforge.search.checks` registers the search's probe rules (the screen).
"""

from lawforge.search.contract.beyond import TOL, ContractResult, check_law
from lawforge.search.contract.form import building_blocks, expr_issues, form_issues, unit_bounded
from lawforge.search.contract.identify import redundant_constants, unit_residuals, vanishing_numbers
from lawforge.search.contract.push import FAR, REACH, STEPS, on_simplex
from lawforge.search.contract.rules import RULES, Issue, Rule, rules_markdown, rules_table

__all__ = ["FAR", "REACH", "RULES", "STEPS", "TOL", "ContractResult", "Issue", "Rule", "building_blocks",
           "check_law", "expr_issues", "form_issues", "on_simplex", "redundant_constants", "rules_markdown",
           "rules_table", "unit_bounded", "unit_residuals", "vanishing_numbers"]
