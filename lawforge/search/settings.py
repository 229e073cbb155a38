"""Search settings: nested typed dataclasses, the one place where their defaults live.

Every setting is named after what it does and documents itself (the ``doc`` of its field);
``lawforge settings`` and ``docs/settings.md`` are generated from these classes. ``--set KEY=VALUE``
takes a dotted key (``checks.finite_on_domain=false``), the field's own name when it is unique
(``finite_on_domain=false``), or the name a setting had before it was renamed (``domain=false``).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from lawforge.errors import ConfigError, did_you_mean
from lawforge.fitting.defaults import FINAL_RESTARTS, RANK_RESTARTS, SEARCH_RESTARTS

__all__ = ["FINAL_RESTARTS", "RANK_RESTARTS", "SEARCH_RESTARTS", "SearchConfig", "parse_settings", "parse_budget",
           "config_of_run", "settings_markdown"]

def _doc(default, doc: str, **kw):
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class Budget:
    max_evals: int | None = _doc(600, "stop after this many candidate evaluations")
    seconds: float | None = _doc(None, "stop the search after this many seconds of wall time")


@dataclass
class Evolution:
    population: int = _doc(32, "forms kept between generations (plus the Pareto front)")
    offspring: int = _doc(32, "new forms proposed per generation")
    tournament: int = _doc(3, "forms drawn per tournament when choosing a parent")
    crossover_rate: float = _doc(0.2, "share of children made by crossover rather than mutation")
    parsimony: float = _doc(0.02, "score = validation NMSE x (1 + parsimony x complexity)")


@dataclass
class Fitting:
    restarts: int = _doc(SEARCH_RESTARTS, "fit restarts per candidate during the search")
    max_iter: int = _doc(60, "Levenberg-Marquardt iterations per candidate fit")
    final_restarts: int = _doc(FINAL_RESTARTS, "restarts of the chosen law's refit on all of train")
    rank_restarts: int = _doc(RANK_RESTARTS, "restarts of the runners-up refit and the extrapolation-shift fits")
    batch: int = _doc(16, "candidate forms fitted together in one batched fit (a generation is split into "
                          "batches of this size, shared out among the workers)")
    device: str = _doc("cpu", "where fits run: 'cpu', 'cuda' (a GPU, error if none) or 'auto' (a GPU when torch "
                              "sees one)", choices=("cpu", "cuda", "auto"))


@dataclass
class Validation:
    folds: int = _doc(2, "validation folds along the scale axis (rolling origin); their NMSE is averaged")
    replicates: str = _doc("mean", "rows with the same group and features: 'mean' (one per design point) "
                                   "or 'rows' (every row)", choices=("mean", "rows"))


@dataclass
class Grammar:
    shared_params: bool = _doc(True, "search parameters shared by all groups (s0, s1, ...) beside per-group "
                                     "ones, on datasets with 2 to 16 groups")
    scale_starts: bool = _doc(True, "scale parameters start where their product with the data is of order one")


@dataclass
class Checks:
    infer_trends: bool = _doc(True, "a feature whose trend the card leaves unstated (a --csv without "
                                    "--decreasing/--increasing) gets the trend of its train rows: the sign of "
                                    "the median Spearman correlation within cells of the other features, when "
                                    "at least 0.5 (datasets.trends); recorded in the run's card")
    follow_trends: bool = _doc(True, "reject forms that move against the card's feature trends beyond the data")
    trend_at_best_setting: bool = _doc(True, "with hyperparameter features, the trend must hold for each cell's "
                                             "best setting (not for every setting)")
    sane_between_points: bool = _doc(True, "no scale axis: predictions between and across the groups' measured "
                                           "points stay within a few group ranges")
    finite_on_domain: bool = _doc(True, "no scale axis: predictions are finite over the whole feature domain "
                                        "(simplex or box), and within 20 group ranges of the group's train mean")
    finite_on_box: bool = _doc(True, "predictions are finite for every group's constants over the box from "
                                     "1/1000 of each feature's smallest train value to 1000x its largest "
                                     "(corners and a Latin hypercube); not on a simplex")
    readable_form: bool = _doc(True, "forms with a construct researchers do not publish are not fitted: a "
                                     "variable rescaled by a number, a non-integer or fitted power of a log, a "
                                     "polynomial of degree above 2 in logs")
    contract: bool = _doc(True, "laws keep the readable-law contract: along each trend, finite and monotone "
                                "out to 1000x the data and in the target's range out to 1e30x (a floor, a "
                                "ceiling); a form that breaks "
                                "it ranks with 3x its validation error, and the choice prefers forms that keep it")


@dataclass
class Selection:
    rule: str = _doc("shift", "final choice: 'shift' (among the top 20 forms within 2x the best validation "
                              "score, the one whose extrapolation moves least when the validation rows join "
                              "its fit) or 'score' (the best validation score)", choices=("shift", "score"))
    parsimony_choice: float | None = _doc(None, "when set, the final choice ranks the forms by validation NMSE "
                                                "x (1 + this x complexity) before the shift re-ranking; None: "
                                                "evolution.parsimony, as the search (a stronger one gave simpler "
                                                "laws and a lower mean R2 on the catalogue's inner holdouts, see "
                                                "docs/search-design.md)")
    top_k: int = _doc(5, "runners-up refit and scored for the top-laws table")
    incumbent: float = _doc(0.0, "when > 0, the card's own (human) law is kept unless the discovered law's "
                                 "validation NMSE (mean over the folds, both refit with final_restarts) is at "
                                 "most this fraction of the human law's (off by default: on the catalogue's "
                                 "inner holdouts it lowered the mean R2, see benchmarks/RESULTS.md)")
    reference: bool = _doc(False, "(not yet judged on the zoo, so off) every discovery also fits a reference law (a power law with a floor per scale "
                                 "feature, a moving bowl per hyperparameter; search.reference_law); the chosen "
                                 "law is kept only where its validation error is lower in 84% of paired "
                                 "bootstrap resamples of the validation rows, else the reference is returned")
    ensemble: bool = _doc(True, "also write a model ensemble (ensemble.json): the chosen form, the top_k "
                                "runners-up and the card's laws that keep the readable-law contract, weighted "
                                "by 1 / validation NMSE; predict reports its point prediction beside the "
                                "chosen law's")


@dataclass
class SearchConfig:
    """All settings of one discovery. Build it from flat or dotted overrides with :meth:`build`."""

    seed: int = 0
    workers: int = 1
    ray: str | None = None  # a Ray cluster for the candidate fits ("auto" or an address); None: local
    budget: Budget = field(default_factory=Budget)
    evolution: Evolution = field(default_factory=Evolution)
    fitting: Fitting = field(default_factory=Fitting)
    validation: Validation = field(default_factory=Validation)
    grammar: Grammar = field(default_factory=Grammar)
    checks: Checks = field(default_factory=Checks)
    selection: Selection = field(default_factory=Selection)

    @classmethod
    def build(cls, **overrides) -> "SearchConfig":
        """``SearchConfig.build(max_evals=40, seed=3, **{"checks.finite_on_domain": False})``: every key
        a dotted path, a unique field name or a former name (see :data:`RENAMED`)."""
        cfg = cls()
        for key, value in overrides.items():
            cfg.set(key, value)
        return cfg

    def set(self, key: str, value: Any) -> None:
        path = resolve_key(key)
        target = self
        for part in path[:-1]:
            target = getattr(target, part)
        if path == ("selection", "rule") and value == "stable":
            value = "shift"   # the rule's former name
        if path == ("seed",) and not _whole(value, 0):
            raise ConfigError(f"seed must be a whole number >= 0, got {value!r}")
        if path == ("budget", "max_evals") and value is not None and not _whole(value, 1):
            raise ConfigError(f"max_evals (--max-evals) must be a whole number >= 1, got {value!r}")
        if path == ("budget", "seconds") and value is not None and not (
                isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0):
            raise ConfigError(f"the time budget (--budget) must be more than 0 seconds, got {value!r}")
        f = next(f for f in dataclasses.fields(target) if f.name == path[-1])
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{'.'.join(path)} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        setattr(target, path[-1], value)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        """The inverse of :meth:`to_dict`; unknown keys are errors."""
        flat = {}
        for k, v in d.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
            else:
                flat[k] = v
        return cls.build(**flat)


def _whole(value, least: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


#: Settings as they were named before they were named after what they do (old ``--set`` keys,
#: old ``config.json`` files).
RENAMED = {
    "budget_s": ("budget", "seconds"), "val_folds": ("validation", "folds"),
    "trend": ("checks", "follow_trends"), "trend_best": ("checks", "trend_at_best_setting"),
    "between": ("checks", "sane_between_points"), "domain": ("checks", "finite_on_domain"),
    "scope": ("grammar", "shared_params"), "select": ("selection", "rule"),
}
#: Settings that were measured, not adopted and removed, with their former names and why: a run
#: folder that names one still reads (the setting is dropped; each was off unless a run set it),
#: and ``--set`` refuses it, saying why. ``docs/rules.md`` lists them too.
RETIRED = {
    "checks.diminishing_returns": ("returns", "reject forms whose gain along a trend grows beyond the data: on the "
                                   "inner holdouts it moved no task beyond seed noise; the contract's "
                                   "'accelerates' rule holds the same property out to 1000x"),
    "checks.trends_across_features": ("cross_trend", "each feature's trend checked at points pushed along another: "
                                      "on 4 inner moe seeds it changed nothing (0.633 with it, 0.635 without)"),
    "checks.unit_covariance": ("", "a change of units must be absorbed by the fitted constants: on SLDBench at 10 "
                               "minutes (2026-12-05, f8f6074) the mean fell from 0.7908 to 0.7217 and the laws "
                               "read no better; benchmarks/unit_covariance.py still measures it"),
}


def _retired(key: str) -> str | None:
    """The dotted name of a retired setting ``key`` names (dotted, bare or former), or None."""
    for dotted, (former, _why) in RETIRED.items():
        if key in (dotted, dotted.split(".")[-1]) or (former and key == former):
            return dotted
    return None


#: Settings a campaign or the benchmark sets itself, not through ``--set``.
NOT_SETTABLE = ("seed", "workers", "ray", "budget.max_evals", "budget.seconds")


def _leaves() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(SearchConfig):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            for g in dataclasses.fields(f.default_factory):
                out[f"{f.name}.{g.name}"] = (f.name, g.name)
        else:
            out[f.name] = (f.name,)
    return out


def resolve_key(key: str) -> tuple[str, ...]:
    """A setting's path from a dotted key, a unique field name or a former name."""
    leaves = _leaves()
    if key in leaves:
        return leaves[key]
    if key in RENAMED:
        return RENAMED[key]
    if (gone := _retired(key)) is not None:
        raise ConfigError(f"search setting {key!r} was retired ({gone}: {RETIRED[gone][1]})")
    by_name = [p for p in leaves.values() if p[-1] == key]
    if len(by_name) == 1:
        return by_name[0]
    raise ConfigError(f"unknown search setting {key!r}{did_you_mean(key, list(leaves) + [p[-1] for p in leaves.values()])}; "
                      f"'lawforge settings' lists them")


def setting_fields() -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) of every setting ``--set`` takes, in class order."""
    cfg = SearchConfig()
    out = []
    for key, path in _leaves().items():
        if key in NOT_SETTABLE or len(path) == 1:
            continue
        group = getattr(cfg, path[0])
        f = next(f for f in dataclasses.fields(group) if f.name == path[1])
        out.append((key, str(f.type), getattr(group, path[1]), f.metadata.get("doc", "")))
    return out


def settings_markdown() -> str:
    """The table of ``--set`` settings (``docs/settings.md`` and ``lawforge settings``)."""
    former = {".".join(v): k for k, v in RENAMED.items()}
    lines = ["# Search settings", "",
             "Generated from `lawforge/search/settings.py` (`lawforge settings --markdown`). Set any of them with",
             "`--set KEY=VALUE` on `discover`, `campaign` and `benchmarks/sldbench.py`; KEY is the dotted name",
             "or, when unique, the last part.", "",
             "| setting | type | default | what it does | former name |", "|---|---|---|---|---|"]
    for key, kind, default, doc in setting_fields():
        lines.append(f"| `{key}` | {kind} | {json.dumps(default)} | {doc} | {former.get(key, '')} |")
    return "\n".join(lines) + "\n"


def parse_settings(pairs: list[str]) -> dict:
    """``["shared_params=false", "selection.rule=score", "val_folds=1"]`` -> typed overrides keyed
    by dotted name. The value is read by the field's type: booleans as true/false/1/0/yes/no,
    numbers as numbers, strings as they are (a JSON-quoted string is also accepted). An unknown
    key or a value of the wrong type is a :class:`~lawforge.errors.ConfigError` naming it."""
    types = {k: t for k, t, _, _ in setting_fields()}
    out: dict = {}
    for kv in pairs:
        key, sep, raw = kv.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE, e.g. --set shared_params=false")
        try:
            dotted = ".".join(resolve_key(key))
        except ConfigError as exc:
            raise ConfigError(f"--set {kv!r}: {exc}") from None
        if dotted not in types:
            raise ConfigError(f"--set {kv!r}: {dotted!r} is set by its own option, not --set")
        out[dotted] = _typed(raw, types[dotted], kv, key)
    SearchConfig.build(**out)   # checks choices now, with the key in the message
    return out


def _typed(raw: str, kind: str, kv: str, key: str):
    try:
        if kind.startswith("bool"):
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return json.loads(raw) if raw.startswith('"') else raw
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"--set {kv!r}: {raw!r} is not a valid {kind} for {key!r}") from None


def parse_budget(text: str | None) -> float | None:
    """'90s', '5m', '1h', '300' (seconds) -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget must look like 90s, 5m or 1h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def config_of_run(conf: dict) -> SearchConfig:
    """The search settings recorded in a run's ``config.json``. Runs written before the settings
    were nested recorded them flat under their former names; settings added after a run was
    started take the value that run used: every row (``replicates``), unit starts
    (``scale_starts``), the trend on every row (``trend_best``), the final choice by validation
    score (``select``), per-group parameters only (``scope``), no probe without a scale axis
    (``between``), no finiteness check over the feature domain (``domain``), no readable-law
    filter or contract (``checks.readable_form``, ``checks.contract``), no inferred trends
    (``checks.infer_trends``), no box check (``checks.finite_on_box``), no incumbent human law
    (``selection.incumbent``), no ensemble (``selection.ensemble``), no reference law (``selection.reference``). Retired settings
    (:data:`RETIRED`) are dropped."""
    if isinstance(conf.get("settings"), dict):
        settings = {k: dict(v) if isinstance(v, dict) else v for k, v in conf["settings"].items()}
        for dotted in RETIRED:
            section, name = dotted.split(".")
            if isinstance(settings.get(section), dict):
                settings[section].pop(name, None)
        checks = settings.setdefault("checks", {})
        for k in ("readable_form", "contract", "infer_trends", "finite_on_box"):   # added after such runs
            checks.setdefault(k, False)
        settings.setdefault("selection", {}).setdefault("incumbent", 0.0)
        settings["selection"].setdefault("ensemble", False)
        settings["selection"].setdefault("reference", False)
        return SearchConfig.from_dict(settings)
    legacy = {"replicates": "rows", "scale_starts": False, "trend_best": False, "select": "score", "scope": False,
              "between": False, "domain": False, "checks.readable_form": False, "checks.contract": False,
              "checks.infer_trends": False, "checks.finite_on_box": False, "selection.reference": False,
              "selection.incumbent": 0.0, "selection.ensemble": False, **conf}
    flat = {k: legacy[k] for k in _LEGACY_FLAT if k in legacy and _retired(k) is None}
    for k in ("final_restarts", "top_k"):
        if k in conf:
            flat[k] = conf[k]
    return SearchConfig.build(**flat)


_LEGACY_FLAT = ("max_evals", "budget_s", "seed", "population", "offspring", "tournament", "crossover_rate",
                "parsimony", "restarts", "max_iter", "workers", "val_folds", "trend", "returns", "cross_trend",
                "replicates", "scale_starts", "trend_best", "select", "scope", "between", "domain",
                "checks.readable_form", "checks.contract", "checks.infer_trends", "checks.finite_on_box", "selection.incumbent",
                "selection.ensemble", "selection.reference")
