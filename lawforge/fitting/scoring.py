"""Scoring laws on datasets: fit on train, predict test per group, SLDBench metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lawforge.errors import LawforgeError
from lawforge.fitting.defaults import FINAL_RESTARTS
from lawforge.fitting.lm import FitResult, fit_split, predict
from lawforge.laws.law import Law
from lawforge.laws.metrics import Metrics, compute_metrics

FIT_MODES = ("published", "refit")


@dataclass
class Score:
    dataset: str
    law: Law
    fit: str                                   # "published" or "refit" (or "given")
    params: dict[str, dict[str, float]]
    train: Metrics
    test: Metrics
    fit_result: FitResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "law": self.law.name, "expression": self.law.to_string(),
                "fit": self.fit, "r2": self.test.r2, "nmse": self.test.to_dict()["nmse"],
                "nmae": self.test.to_dict()["nmae"], "r2_raw": self.test.to_dict()["r2_raw"],
                "train_r2": self.train.r2, "n_params": self.law.n_params, **self.extra}


def metrics_for(law: Law, params: Mapping[str, Mapping[str, float]], split) -> Metrics:
    try:
        pred = predict(law, params, split)
    except (ArithmeticError, ValueError) as exc:
        raise LawforgeError(f"cannot evaluate {law.name}: {exc}") from None
    return compute_metrics(split.y[:, [split.target_columns.index(t) for t in law.target_names]], pred)


def score_given(dataset, law: Law, params: Mapping[str, Mapping[str, float]], fit: str = "published") -> Score:
    """Score fixed constants (e.g. published ones) on train and test."""
    missing = [g for g in dataset.test.group_names if g not in params]
    if missing:
        raise LawforgeError(f"{dataset.name}: no constants for group {missing[0]!r}")
    return Score(dataset.name, law, fit, {g: dict(v) for g, v in params.items()},
                 metrics_for(law, params, dataset.train), metrics_for(law, params, dataset.test))


def score_refit(dataset, law: Law, *, restarts: int = FINAL_RESTARTS, seed: int = 0, device: str = "cpu",
                extra_starts=None, **fit_kw) -> Score:
    """Fit ``law`` on the train split only, then score train and test."""
    law.check_limit(dataset.card.param_limit, dataset.name)
    res = fit_split(law, dataset.train, restarts=restarts, seed=seed, device=device,
                  extra_starts=extra_starts, **fit_kw)
    params = res.params()
    status = sorted({g.status for g in res.groups.values()})
    return Score(dataset.name, law, "refit", params, metrics_for(law, params, dataset.train),
                 metrics_for(law, params, dataset.test), res,
                 {"fit_status": ",".join(status), "fit_seconds": round(res.seconds, 3)})


def score_human(dataset, fit: str = "published", *, law_name: str | None = None,
                data_dir=None, restarts: int = FINAL_RESTARTS, seed: int = 0, device: str = "cpu", **fit_kw) -> Score:
    """Score a dataset's human law with its published constants, or refit on train.

    A refit starts from the card's init, random restarts and, when available, the published
    constants as one more start: the refit's train loss can only match or improve on them.
    """
    from lawforge.datasets.loader import load_published_constants

    if fit not in FIT_MODES:
        raise LawforgeError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    law, h = dataset.card.human_law(law_name)
    if fit == "published":
        consts = load_published_constants(dataset.card, law_name, data_dir)
        return score_given(dataset, law, consts, "published")
    extra = None
    if h.published:
        try:
            extra = load_published_constants(dataset.card, law_name, data_dir)
        except LawforgeError:
            extra = None
    return score_refit(dataset, law, restarts=restarts, seed=seed, device=device,
                       extra_starts=extra, **fit_kw)
