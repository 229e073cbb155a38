"""Dataset cards: YAML files describing a dataset, its split, its limit and its human laws."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from lawforge.errors import DatasetError, did_you_mean, yaml_problem
from lawforge.laws.expr import looks_like_param
from lawforge.laws.law import Law

_CARD_KEYS = {"name", "description", "source", "citation", "provenance", "features", "targets",
              "group", "split", "data", "param_limit", "validation", "human_laws", "notes"}
_FEATURE_KEYS = {"column", "symbol", "description", "unit", "natural_unit", "role", "trend", "log"}
LOG_BASES = {"10": 10.0, "2": 2.0, "e": 2.718281828459045}   # a feature's ``log:`` key -> its base
_TRENDS = ("decreasing", "increasing", "none")   # none: stated to have no trend
_ROLES = ("scale", "hyperparameter")
_TARGET_KEYS = {"column", "description", "unit", "higher_is_better"}
_SPLIT_KEYS = {"train", "test", "file", "keep"}
_DATA_KEYS = {"source", "task"}
_DATA_SOURCES = {"sldbench", "package", "path", "catalogue"}
_VALIDATION_KEYS = {"axis", "fraction", "combine"}
_HUMAN_KEYS = {"name", "citation", "expr", "targets", "where", "params", "published"}


def _check_keys(d: Mapping, allowed: set[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise DatasetError(f"{where}: expected a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise DatasetError(f"{where}: unknown key {k!r}{did_you_mean(k, allowed)}; "
                               f"valid keys are {', '.join(sorted(allowed))}")


@dataclass
class Feature:
    column: str
    symbol: str
    description: str = ""
    unit: str = ""
    role: str = "scale"    # 'scale' (N, D, compute...) or 'hyperparameter' (lr, batch size...)
    trend: str | None = None  # the target's direction beyond the data along this feature; 'none': stated
                              # to have none; None: unstated (a discovery infers it: datasets.trends)
    log: float | None = None  # the column is already a log (this base) of a positive quantity: log10 FLOPs
    natural_unit: bool = False  # a count whose unit means something (experts, parallel streams): 1 is special


@dataclass
class Target:
    column: str
    description: str = ""
    unit: str = ""
    higher_is_better: bool = False


@dataclass
class HumanLaw:
    name: str
    citation: str
    expr: str | None
    targets: dict[str, str] | None
    where: dict[str, str]
    params: dict[str, Any]
    published: dict[str, Any] | None


@dataclass
class DatasetCard:
    name: str
    description: str
    source: str
    citation: str
    features: list[Feature]
    targets: list[Target]
    group: str | None
    split: dict[str, str]
    data: dict[str, str]
    param_limit: int | None
    validation: dict[str, Any]
    human_laws: list[HumanLaw] = field(default_factory=list)
    provenance: str = ""
    notes: str = ""
    path: Path | None = None  # where the card was read from

    # ------------------------------------------------------------------ derived
    @property
    def feature_columns(self) -> list[str]:
        return [f.column for f in self.features]

    @property
    def target_columns(self) -> list[str]:
        return [t.column for t in self.targets]

    @property
    def variables(self) -> dict[str, str]:
        """Law symbol -> column. Column names work as symbols too when they are identifiers."""
        out = {f.symbol: f.column for f in self.features}
        for f in self.features:
            if f.column.isidentifier() and f.column not in out:
                out[f.column] = f.column
        return out

    @property
    def trends(self) -> dict[str, str]:
        """Column -> ``decreasing`` or ``increasing``: the features with a direction beyond the data."""
        return {f.column: f.trend for f in self.features if f.trend in ("decreasing", "increasing")}

    @property
    def log_variables(self) -> set[str]:
        """The law names (symbol, and column where it is a name) of the features that hold a log
        already (``log: 10``): the form rules treat them as logs of a variable."""
        return {n for f in self.features if f.log for n in (f.symbol, f.column) if n.isidentifier()}

    @property
    def log_bases(self) -> dict[str, float]:
        """Column -> base of the features that hold a log already (``log: 10``): pushed by the
        log of a factor beyond the data."""
        return {f.column: f.log for f in self.features if f.log}

    def human_law(self, name: str | None = None) -> tuple[Law, HumanLaw]:
        if not self.human_laws:
            raise DatasetError(f"dataset {self.name!r} has no human law in its card")
        if name is None:
            h = self.human_laws[0]
        else:
            match = [h for h in self.human_laws if h.name == name]
            if not match:
                raise DatasetError(f"dataset {self.name!r} has no human law {name!r}"
                                   f"{did_you_mean(name, [h.name for h in self.human_laws])}")
            h = match[0]
        targets = h.targets if h.targets else {self.target_columns[0]: h.expr}
        law = Law(targets, {f.symbol: f.column for f in self.features}, h.params, h.where,
                  name=h.name, citation=h.citation)
        return law, h

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "citation": self.citation, "provenance": self.provenance, "notes": self.notes,
            "features": [vars(f) for f in self.features], "targets": [vars(t) for t in self.targets],
            "group": self.group, "split": dict(self.split), "data": dict(self.data),
            "param_limit": self.param_limit, "validation": dict(self.validation),
            "human_laws": [{k: v for k, v in vars(h).items() if v is not None} for h in self.human_laws],
        }


def parse_card(raw: Mapping[str, Any], path: Path | None = None) -> DatasetCard:
    """A card from its YAML mapping; every malformed part is a :class:`DatasetError` naming it."""
    where = str(path) if path else "card"
    _check_keys(raw, _CARD_KEYS, where)
    for k in ("name", "features", "targets", "split", "data"):
        if k not in raw:
            raise DatasetError(f"{where}: missing required key {k!r}")
    feats = _parse_features(raw["features"] or [], where)
    targets = _parse_targets(raw["targets"] or [], where)
    split, data = _parse_split_and_data(raw["split"], raw["data"], where)
    limit = raw.get("param_limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"{where}: param_limit must be a positive integer or null, got {limit!r}")
    humans = []
    for i, h in enumerate(raw.get("human_laws") or []):
        _check_keys(h, _HUMAN_KEYS, f"{where}: human_laws[{i}]")
        if ("expr" in h) == ("targets" in h):
            raise DatasetError(f"{where}: human_laws[{i}] needs exactly one of 'expr' or 'targets'")
        humans.append(HumanLaw(str(h.get("name", f"human_{i}")), str(h.get("citation", "")),
                               h.get("expr"), h.get("targets"), dict(h.get("where") or {}),
                               dict(h.get("params") or {}), h.get("published")))
    card = DatasetCard(
        name=str(raw["name"]), description=str(raw.get("description", "")).strip(),
        source=str(raw.get("source", "")).strip(), citation=str(raw.get("citation", "")).strip(),
        features=feats, targets=targets, group=raw.get("group"), split=split, data=data,
        param_limit=limit, validation=_parse_validation(raw.get("validation") or {}, feats, where), human_laws=humans,
        provenance=str(raw.get("provenance", "")).strip(), notes=str(raw.get("notes", "")).strip(),
        path=path)
    _check_human_laws(card, where)
    return card


def _parse_features(raw: list, where: str) -> list[Feature]:
    feats = []
    for i, f in enumerate(raw):
        if isinstance(f, str):
            f = {"column": f}
        _check_keys(f, _FEATURE_KEYS, f"{where}: features[{i}]")
        if "column" not in f:
            raise DatasetError(f"{where}: features[{i}] has no 'column'")
        sym = str(f.get("symbol", f["column"]))
        if not sym.isidentifier() or sym.startswith("_"):
            raise DatasetError(f"{where}: feature symbol {sym!r} is not a valid name")
        if looks_like_param(sym):
            raise DatasetError(f"{where}: feature symbol {sym!r} looks like a law parameter (p0.., s0.. are "
                               "reserved for fitted constants); give the feature another 'symbol'")
        role = str(f.get("role", "scale"))
        if role not in _ROLES:
            raise DatasetError(f"{where}: features[{i}] role must be one of {', '.join(_ROLES)}, got {role!r}")
        trend = f.get("trend")
        if trend is not None and trend not in _TRENDS:
            raise DatasetError(f"{where}: features[{i}] trend must be one of {', '.join(_TRENDS)}, got {trend!r}")
        log = f.get("log")
        if log is not None:
            base = LOG_BASES.get(str(log))
            if base is None and isinstance(log, (int, float)) and float(log) in LOG_BASES.values():
                base = float(log)   # a card written back from a run folder holds the number
            if base is None:
                raise DatasetError(f"{where}: features[{i}] log must be the base of the log the column holds, one of "
                                   f"{', '.join(LOG_BASES)}, got {log!r}")
            log = base
        natural = f.get("natural_unit", False)
        if not isinstance(natural, bool):
            raise DatasetError(f"{where}: features[{i}] natural_unit must be true or false, got {natural!r}")
        feats.append(Feature(str(f["column"]), sym, str(f.get("description", "")), str(f.get("unit", "")), role,
                             trend, log, natural))
    if not feats:
        raise DatasetError(f"{where}: 'features' is empty")
    syms = [f.symbol for f in feats]
    if len(set(syms)) != len(syms):
        raise DatasetError(f"{where}: duplicate feature symbols {syms}")
    return feats


def _parse_targets(raw: list, where: str) -> list[Target]:
    targets = []
    for i, t in enumerate(raw):
        if isinstance(t, str):
            t = {"column": t}
        _check_keys(t, _TARGET_KEYS, f"{where}: targets[{i}]")
        if "column" not in t:
            raise DatasetError(f"{where}: targets[{i}] has no 'column'")
        targets.append(Target(str(t["column"]), str(t.get("description", "")), str(t.get("unit", "")),
                              bool(t.get("higher_is_better", False))))
    if not targets:
        raise DatasetError(f"{where}: 'targets' is empty")
    return targets


def _parse_split_and_data(split: Mapping, data: Mapping, where: str) -> tuple[dict, dict]:
    _check_keys(split, _SPLIT_KEYS, f"{where}: split")
    if "file" in split:
        if "test" not in split or "train" in split:
            raise DatasetError(f"{where}: split with 'file' needs a 'test' rule and no 'train' file")
    elif not ("train" in split and "test" in split):
        raise DatasetError(f"{where}: split needs 'train' and 'test' files, or 'file' and a 'test' rule")
    _check_keys(data, _DATA_KEYS, f"{where}: data")
    src = data.get("source", "path")
    if src not in _DATA_SOURCES:
        raise DatasetError(f"{where}: data source {src!r} is not valid; valid sources are "
                           f"{', '.join(sorted(_DATA_SOURCES))}")
    if src in ("sldbench", "catalogue") and "task" not in data:
        raise DatasetError(f"{where}: data source {src!r} needs a 'task'")
    if "keep" in split and "file" not in split:
        raise DatasetError(f"{where}: split 'keep' (a rule for the rows used) needs a 'file' split")
    return ({k: str(v) for k, v in split.items()},
            {"source": src, **({"task": str(data["task"])} if "task" in data else {})})


def _parse_validation(val: Mapping, feats: list[Feature], where: str) -> dict:
    _check_keys(val, _VALIDATION_KEYS, f"{where}: validation")
    frac = float(val.get("fraction", 0.2))
    if not 0 < frac < 1:
        raise DatasetError(f"{where}: validation fraction must be in (0, 1), got {frac}")
    axis = val.get("axis")
    if isinstance(axis, list):  # a corner: the largest of axis[0], then of axis[1] among those...
        if not axis:
            raise DatasetError(f"{where}: validation axis list is empty")
        axis = [str(a) for a in axis] if len(axis) > 1 else str(axis[0])
    for a in ([] if axis is None else axis if isinstance(axis, list) else [axis]):
        if a not in [f.column for f in feats]:
            raise DatasetError(f"{where}: validation axis {a!r} is not a feature column"
                               f"{did_you_mean(a, [f.column for f in feats])}")
    combine = str(val.get("combine", "all"))
    if combine not in ("all", "any"):
        raise DatasetError(f"{where}: validation combine must be 'all' (the corner of the axes) or 'any' "
                           f"(the union of each axis's top fraction), got {combine!r}")
    return {"axis": axis, "fraction": frac, "combine": combine}


def _check_human_laws(card: DatasetCard, where: str) -> None:
    """The human laws parse against the card's variables and limit now, not after a fit."""
    for h in card.human_laws:
        law, _ = card.human_law(h.name)
        if h.targets and set(h.targets) - set(card.target_columns):
            raise DatasetError(f"{where}: human law {h.name!r} names unknown targets "
                               f"{sorted(set(h.targets) - set(card.target_columns))}")
        if card.param_limit is not None and law.n_params > card.param_limit:
            raise DatasetError(f"{where}: human law {h.name!r} has {law.n_params} parameters, above "
                               f"the card's limit {card.param_limit}")


def read_card(path: str | Path) -> DatasetCard:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"card file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(f"{p}: invalid YAML at {yaml_problem(exc)}") from None
    return parse_card(raw, p)


def bundled_card_paths() -> dict[str, Path]:
    root = resources.files("lawforge.datasets") / "cards"
    out = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out[entry.name[:-5]] = Path(str(entry))
    return out


def get_card(name_or_path: str | Path) -> DatasetCard:
    """A bundled card by name, or a card file by path."""
    s = str(name_or_path)
    cards = bundled_card_paths()
    if s in cards:
        return read_card(cards[s])
    p = Path(s)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return read_card(p)
    raise DatasetError(f"unknown dataset {s!r}{did_you_mean(s, cards)}; run 'lawforge datasets' "
                       f"for the list, or give the path of a card file (.yaml)")
