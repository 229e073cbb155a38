"""Error types. Every error a user can cause is a :class:`LawforgeError` with one clear line."""


class LawforgeError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero, without a traceback."""


class DatasetError(LawforgeError):
    """A dataset card or its data is missing, malformed or inconsistent."""


class LawError(LawforgeError):
    """A law cannot be parsed, uses unknown symbols or functions, or breaks the parameter limit."""


class FitError(LawforgeError):
    """Data given to the fitter cannot be fitted (NaN, too few points, ...)."""


class ConfigError(LawforgeError):
    """An option or config key is unknown or has an invalid value."""


class MissingDependency(LawforgeError):
    """An optional dependency is not installed; the CLI exits with code 2."""

    exit_code = 2


def did_you_mean(name: str, options) -> str:
    """Return ``" (did you mean 'x'?)"`` for a close match, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def yaml_problem(exc: Exception) -> str:
    """A YAML parser's error in one line: where and what (``line 2, column 11: expected ',' or
    ']', but got '<stream end>'``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())
