"""lawforge: automated scaling-law discovery.

The import is light: torch, sympy and the optional extras are imported where used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
