"""PySR backend (extra ``pysr``): run PySR with per-group template parameters and translate its
equations and hall-of-fame tables into lawforge laws.

PySR needs Julia; on first import it installs Julia packages from the network. lawforge imports
it lazily and only after checking that a ``julia`` executable exists, so a machine without Julia
gets one clear message instead of a hang. The translation functions below are pure text
processing (tested on recorded PySR outputs); their results are parsed by lawforge's whitelist
parser like any other law.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from lawforge.errors import LawError, LawforgeError, MissingDependency
from lawforge.laws.law import Law

INSTALL_HINT = ("install Julia (https://julialang.org/downloads, e.g. juliaup) and then "
                "'pip install \"lawforge[pysr]\"'")


def require_pysr():
    """Return the ``pysr`` module, or raise :class:`MissingDependency` saying how to install it."""
    if shutil.which("julia") is None:
        raise MissingDependency(f"the pysr engine needs Julia, which is not installed here: {INSTALL_HINT}")
    try:
        import pysr  # noqa: F401  (lazy: heavy, starts Julia)
    except ImportError:
        raise MissingDependency(f"the pysr engine needs the 'pysr' package: {INSTALL_HINT}") from None
    except Exception as exc:  # juliacall failing to set up its environment
        raise MissingDependency(f"PySR could not start Julia ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    return pysr


# ------------------------------------------------------------------------------ translation
_JULIA_FLOAT = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)(?:([eEf])([-+]?\d+))?(?![\w.])")
_INDEXED = re.compile(r"\b([A-Za-z_]\w*)\s*\[\s*category\s*\]")
_PLACEHOLDER = re.compile(r"#(\d+)")


def normalise_numbers(text: str) -> str:
    """Julia literals to Python ones: ``1.5f0`` -> ``1.5``, ``2.0f-3`` -> ``2.0e-3``."""
    def rep(m: re.Match) -> str:
        mant, kind, exp = m.group(1), m.group(2), m.group(3)
        if kind is None:
            return mant
        if kind == "f" and int(exp) == 0:
            return mant
        return f"{mant}e{exp}"
    return _JULIA_FLOAT.sub(rep, text)


def equation_to_text(equation: str, var_map: Mapping[str, str]) -> str:
    """A PySR equation string to whitelist-parseable text over lawforge symbols."""
    if not isinstance(equation, str) or not equation.strip():
        raise LawError("empty PySR equation")
    text = normalise_numbers(equation.strip()).replace("^", "**")
    for name in sorted(var_map, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", var_map[name], text)
    return text


def constants_to_params(text: str, prefix: str = "c") -> tuple[str, dict[str, float]]:
    """Replace every numeric literal (but exponents that are small integers) by a parameter.

    PySR fits one constant set for all rows; lawforge refits each group, so its constants become
    per-group parameters initialised at PySR's values.
    """
    params: dict[str, float] = {}

    def rep(m: re.Match) -> str:
        start = m.start()
        before = text[:start].rstrip()
        val = float(m.group(0))
        if before.endswith("**") and val == int(val) and abs(val) <= 4:
            return m.group(0)
        name = f"{prefix}{len(params)}"
        params[name] = val
        return name

    out = re.sub(r"(?<![\w.])\d+(?:\.\d*)?(?:e[-+]?\d+)?(?![\w.])", rep, text)
    return out, params


def law_from_equation(equation: str, var_map: Mapping[str, str], variables: Mapping[str, str],
                      target: str, name: str = "pysr") -> Law:
    """One PySR equation as a law whose constants are per-group parameters."""
    text, inits = constants_to_params(equation_to_text(equation, var_map))
    if not inits:
        raise LawError(f"PySR equation {equation!r} has no constants to fit")
    law = Law({target: text}, variables, {k: {"init": v} for k, v in inits.items()}, name=name)
    if not any(s.name in law.variables for e in law.exprs.values() for s in e.free_symbols):
        raise LawError(f"PySR equation {equation!r} uses no variable: a constant is not a law")
    return law


def law_from_template(combine: str, expressions: Mapping[str, str], var_map: Mapping[str, str],
                      variables: Mapping[str, str], target: str,
                      parameters: Mapping[str, Sequence[float]] | None = None,
                      groups: Sequence[str] | None = None, name: str = "pysr-template") -> tuple[Law, dict]:
    """A PySR ``TemplateExpressionSpec`` result as a law with per-group parameters.

    ``combine`` is the template (e.g. ``"f(x1, x2) * p1[category] + p2[category]"``);
    ``expressions`` maps each sub-expression name to its fitted equation over placeholders
    ``#1, #2, ...``; ``parameters`` maps each indexed vector to its values in category order
    (Julia's 1-based category k is ``groups[k-1]``). Returns the law and the per-group values
    of its parameters (usable as a starting point).
    """
    body = _INDEXED.sub(lambda m: m.group(1), normalise_numbers(combine))
    for fname, eq in expressions.items():
        pattern = re.compile(rf"\b{re.escape(fname)}\s*\(")
        while True:
            m = pattern.search(body)
            if not m:
                break
            depth, i = 1, m.end()
            while i < len(body) and depth:
                depth += {"(": 1, ")": -1}.get(body[i], 0)
                i += 1
            if depth:
                raise LawError(f"unbalanced parentheses in template {combine!r}")
            args = _split_args(body[m.end():i - 1])
            inner = normalise_numbers(eq)

            def sub_ph(pm: re.Match) -> str:
                k = int(pm.group(1))
                if not 1 <= k <= len(args):
                    raise LawError(f"placeholder #{k} in {eq!r} has no argument")
                return f"({args[k - 1]})"
            inner = _PLACEHOLDER.sub(sub_ph, inner)
            body = body[:m.start()] + f"({inner})" + body[i:]
    text = equation_to_text(body, var_map)
    text, consts = constants_to_params(text, prefix="c")
    indexed = list(dict.fromkeys(_INDEXED.findall(combine)))
    spec: dict[str, Any] = {k: {"init": v} for k, v in consts.items()}
    per_group: dict[str, dict[str, float]] = {}
    for pname in indexed:
        vals = list((parameters or {}).get(pname, []))
        spec[pname] = {"init": float(vals[0]) if vals else 1.0}
        if groups is not None and vals:
            if len(vals) != len(groups):
                raise LawError(f"template parameter {pname!r} has {len(vals)} values for {len(groups)} groups")
            for g, v in zip(groups, vals):
                per_group.setdefault(g, {})[pname] = float(v)
    for g in per_group:
        per_group[g].update(consts)
    return Law({target: text}, variables, spec, name=name), per_group


def _split_args(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += {"(": 1, ")": -1, "[": 1, "]": -1}.get(ch, 0)
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def read_hall_of_fame(path: str | Path):
    """PySR's ``hall_of_fame.csv`` (``Complexity,Loss,Equation``) as a DataFrame with lower-case
    columns, checked."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise LawforgeError(f"hall of fame not found: {p}")
    df = pd.read_csv(p)
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("complexity", "loss", "equation") if c not in df.columns]
    if missing:
        raise LawforgeError(f"{p}: missing column {missing[0]!r} (PySR writes Complexity,Loss,Equation)")
    return df


def laws_from_hall_of_fame(path: str | Path, var_map: Mapping[str, str], variables: Mapping[str, str],
                           target: str) -> list[tuple[int, float, Law | None, str | None]]:
    """Every row as (complexity, loss, law or None, error or None); rows that are not laws
    (constants only, unparseable) are kept with their error, never executed."""
    out = []
    for _, row in read_hall_of_fame(path).iterrows():
        try:
            law = law_from_equation(str(row["equation"]), var_map, variables, target,
                                    name=f"pysr-c{int(row['complexity'])}")
            out.append((int(row["complexity"]), float(row["loss"]), law, None))
        except LawError as exc:
            out.append((int(row["complexity"]), float(row["loss"]), None, str(exc)))
    return out


def pysr_candidates(sealed, cfg) -> list[tuple[Law, dict]]:  # pragma: no cover - needs Julia
    """Run PySR on the fit split with per-group template parameters and return its hall of
    fame as laws (with PySR's per-group values as starting points). Not exercised on machines
    without Julia; the translation it relies on is tested on recorded outputs."""
    import numpy as np

    pysr = require_pysr()
    card = sealed.card
    feats = [f.symbol for f in card.features]
    groups = sealed.fit.group_names
    cat = np.array([groups.index(g) + 1 for g in sealed.fit.groups], dtype=float)
    X = np.column_stack([sealed.fit.X[f.column] for f in card.features] + [cat])
    names = [f"x{i + 1}" for i in range(len(feats))]
    spec = pysr.TemplateExpressionSpec(
        expressions=["f"], variable_names=names + ["category"],
        parameters={"p1": len(groups), "p2": len(groups)},
        combine=f"f({', '.join(names)}) * p1[category] + p2[category]")
    model = pysr.PySRRegressor(expression_spec=spec, binary_operators=["+", "-", "*", "/", "^"],
                               unary_operators=["exp", "log"], maxsize=25, niterations=40,
                               random_state=cfg.seed, deterministic=True, parallelism="serial",
                               timeout_in_seconds=cfg.budget.seconds)
    model.fit(X, sealed.fit.y[:, 0])
    out = []
    var_map = {n: f for n, f in zip(names, feats)}
    for _, row in model.equations_.iterrows():
        try:
            eq = str(row["equation"])
            f_eq = eq.split("f =", 1)[-1].split(";", 1)[0] if "f =" in eq else eq
            law, starts = law_from_template("f(" + ", ".join(names) + ") * p1[category] + p2[category]",
                                            {"f": f_eq}, var_map, dict(card.variables),
                                            card.target_columns[0], groups=None)
            out.append((law, starts))
        except LawError:
            continue
    return out
