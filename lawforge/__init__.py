"""lawforge: automated scaling-law discovery.

The import is light: torch, sympy and the optional extras are imported where used.
``LawSearch`` (scikit-learn style search) and ``fit_law`` (fit a given law in one call) are
loaded on first use.
"""

from lawforge._version import __version__

__all__ = ["__version__", "LawSearch", "FittedLaw", "fit_law"]


def __getattr__(name):
    if name in ("LawSearch", "FittedLaw", "fit_law"):
        from lawforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'lawforge' has no attribute {name!r}")
