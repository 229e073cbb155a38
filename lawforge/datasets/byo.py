"""Bring your own data: a card made from a CSV file or an in-memory table.

``lawforge discover --csv FILE --features N,D --target loss --test "N >= 1e9"`` builds the same
:class:`DatasetCard` a bundled dataset has (data source ``path``, the test rule parsed with the
whitelist) and writes it into the run folder, so the run can be repeated from the card alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from lawforge.datasets.card import LOG_BASES, DatasetCard, parse_card
from lawforge.datasets.loader import Dataset, check_header, load_dataset, validate_frame
from lawforge.datasets.rules import parse_rule
from lawforge.errors import DatasetError, did_you_mean
from lawforge.laws.expr import looks_like_param


def _symbol(column: str, taken: set[str]) -> str:
    sym = re.sub(r"\W", "_", column)
    if not sym or sym[0].isdigit() or sym.startswith("_") or looks_like_param(sym):
        sym = "x_" + sym.lstrip("_")  # p0.., s0.. are reserved for law parameters
    base, i = sym, 2
    while sym in taken:
        sym, i = f"{base}_{i}", i + 1
    taken.add(sym)
    return sym


def _split_list(text: str | Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    items = [t for t in items if t]
    if not items:
        raise DatasetError(f"{what} is empty")
    if len(set(items)) != len(items):
        raise DatasetError(f"{what} names a column twice: {items}")
    return items


def rule_columns(rule: str, columns: Sequence[str]) -> list[str]:
    """The columns a (whitelisted) rule reads, in order of first appearance."""
    tree = parse_rule(rule, columns)
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in columns and node.id not in out:
            out.append(node.id)
    return out


def card_dict(name: str, features: Sequence[str], targets: Sequence[str], group: str | None,
              split: dict[str, str], data: dict[str, str], validation_axis: str | list[str] | None,
              roles: dict[str, str] | None = None, param_limit: int | None = None,
              description: str = "", trends: dict[str, str] | None = None,
              logs: dict[str, str] | None = None) -> dict[str, Any]:
    taken: set[str] = set()
    feats = []
    for c in features:
        f = {"column": c, "symbol": _symbol(c, taken)}
        if roles and c in roles:
            f["role"] = roles[c]
        if trends and c in trends:
            f["trend"] = trends[c]
        if logs and c in logs:
            f["log"] = logs[c]
        feats.append(f)
    val: dict[str, Any] = {"axis": validation_axis, "fraction": 0.2}
    if isinstance(validation_axis, list):
        val["combine"] = "any"
    return {"name": name, "description": description, "features": feats,
            "targets": [{"column": t} for t in targets], "group": group, "split": split, "data": data,
            "param_limit": param_limit, "validation": val}


def csv_card(path: str | Path, features: str | Sequence[str], target: str | Sequence[str], test: str,
             group: str | None = None, validation_axis: str | Sequence[str] | None = None,
             hyperparameters: str | Sequence[str] | None = None, name: str | None = None,
             param_limit: int | None = None, decreasing: str | Sequence[str] | None = None,
             increasing: str | Sequence[str] | None = None,
             log_features: str | Sequence[str] | None = None) -> DatasetCard:
    """A card for one CSV file: ``test`` is a row rule over its columns (e.g. ``"N >= 1e9"``).

    ``log_features``: features that already hold a log, as ``COLUMN:BASE`` (base 10, 2 or e;
    ``"log_flops:10"``), the CSV form of a card's ``log: 10``. The form rules then read such a
    feature as the log of a quantity, and checks beyond the data push it by the log of a factor.

    The validation axis defaults to the features the test rule reads (the search then holds out
    the largest train values of each, the way the test extrapolates), else the first feature.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--csv: file not found: {p}")
    try:
        header = list(pd.read_csv(p, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    check_header(header, p)
    feats = _split_list(features, "--features")
    targets = _split_list(target, "--target")
    for c in feats + targets + ([group] if group else []):
        if c not in header:
            raise DatasetError(f"{p}: no column {c!r}{did_you_mean(c, header)}; the file has {', '.join(header)}")
    clash = set(feats) & set(targets)
    if clash:
        raise DatasetError(f"{p}: column {sorted(clash)[0]!r} is both a feature and a target")
    if group and group in feats + targets:
        raise DatasetError(f"{p}: the group column {group!r} is also a feature or target")
    if not test or not str(test).strip():
        raise DatasetError("--test is required: a rule over the columns selecting the held-out rows, "
                           "e.g. \"N >= 1e9\"")
    used = rule_columns(test, header)
    if validation_axis is None:
        axis_cols = [c for c in used if c in feats] or [feats[0]]
    else:
        axis_cols = _split_list(validation_axis, "--validation-axis")
    for c in axis_cols:
        if c not in feats:
            raise DatasetError(f"--validation-axis: {c!r} is not one of the features {feats}")
    roles = {c: "hyperparameter" for c in (_split_list(hyperparameters, "--hyperparameters")
                                              if hyperparameters else [])}
    for c in roles:
        if c not in feats:
            raise DatasetError(f"--hyperparameters: {c!r} is not one of the features {feats}")
    trends: dict[str, str] = {}
    for flag, cols, kind in (("--decreasing", decreasing, "decreasing"), ("--increasing", increasing, "increasing")):
        for c in (_split_list(cols, flag) if cols else []):
            if c not in feats:
                raise DatasetError(f"{flag}: {c!r} is not one of the features {feats}")
            if c in trends:
                raise DatasetError(f"{c!r} is given both --decreasing and --increasing")
            trends[c] = kind
    logs = parse_log_features(log_features, feats) if log_features else {}
    raw = card_dict(name or re.sub(r"\W", "_", p.stem), feats, targets, group,
                    {"file": str(p.resolve()), "test": str(test)}, {"source": "path"},
                    axis_cols[0] if len(axis_cols) == 1 else axis_cols, roles, param_limit,
                    f"user data from {p.name}", trends, logs)
    return parse_card(raw, None)


def parse_log_features(text: str | Sequence[str], features: Sequence[str]) -> dict[str, str]:
    """``--log-features`` (``"log_flops:10,log_n:e"``) as {column: base}; each column must be a
    feature and name its base, since a log of unknown base cannot be pushed by a factor."""
    out: dict[str, str] = {}
    for item in _split_list(text, "--log-features"):
        col, sep, base = item.rpartition(":")
        if not sep:
            raise DatasetError(f"--log-features: give the base of the log {item!r} holds, "
                               f"as {item}:10, {item}:2 or {item}:e")
        col, base = col.strip(), base.strip()
        if col not in features:
            raise DatasetError(f"--log-features: {col!r} is not one of the features {list(features)}")
        if base not in LOG_BASES:
            raise DatasetError(f"--log-features: the base of {col!r} must be 10, 2 or e, got {base!r}")
        out[col] = base
    return out


def load_csv_dataset(path, features, target, test, group=None, validation_axis=None, hyperparameters=None,
                     name=None, param_limit=None, decreasing=None, increasing=None, log_features=None) -> Dataset:
    card = csv_card(path, features, target, test, group, validation_axis, hyperparameters, name, param_limit,
                    decreasing, increasing, log_features)
    ds = load_dataset(card)
    check_target_variation(ds)
    return ds


def check_target_variation(ds: Dataset) -> None:
    """A constant target or a single train point cannot support a law."""
    tr = ds.train
    if tr.n < 2:
        raise DatasetError(f"{ds.name}: the train split has {tr.n} row(s); a law needs several points")
    for j, t in enumerate(tr.target_columns):
        if np.ptp(tr.y[:, j]) == 0:
            raise DatasetError(f"{ds.name}: target column {t!r} is constant on the train rows "
                               f"({float(tr.y[0, j]):g}); there is nothing to fit")


def frame_dataset(train: pd.DataFrame, test: pd.DataFrame | None, features: Sequence[str],
                  targets: Sequence[str], group: str | None, validation_axis=None, hyperparameters=(),
                  name: str = "user_data") -> Dataset:
    """An in-memory dataset (for the Python API); ``test`` may be None (no held-out rows)."""
    axis = validation_axis if validation_axis is not None else list(features)[0]
    raw = card_dict(name, list(features), list(targets), group, {"file": "<memory>", "test": "False"},
                    {"source": "path"}, axis, {h: "hyperparameter" for h in hyperparameters})
    card = parse_card(raw, None)
    tr = validate_frame(train, card, f"{name} (train)")
    te = validate_frame(test, card, f"{name} (test)") if test is not None and len(test) else tr.iloc[:0]
    ds = Dataset(card, tr, te, "memory")
    check_target_variation(ds)
    return ds


def card_yaml(card: DatasetCard) -> str:
    """The card as YAML, readable by :func:`~lawforge.datasets.card.read_card`."""
    return yaml.safe_dump(card.to_dict(), sort_keys=False)
