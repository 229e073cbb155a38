"""Symbolic search engines: the native evolutionary engine (default) and the PySR backend."""

import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
