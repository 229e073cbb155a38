"""How sure a fitted law is: refits on bootstrap resamples of its training design points.

Each resample draws, within each group, as many design points as the group has, with
replacement; the law is refit on every resample in one batched program (:func:`fit_many`),
starting from the fitted constants and a few random starts. The spread of the refits'
predictions (or of anything computed from their constants, such as an optimum) is the
parameter uncertainty of the law: percentile intervals over the refits.

This is the nonparametric (pairs) bootstrap, as Epoch AI used to re-examine the Chinchilla fit
(Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"); its coverage is measured
in ``benchmarks/calibration.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from lawforge.errors import FitError
from lawforge.fitting.lm import FitJob, FitResult, fit_many, predict
from lawforge.laws.law import Law

#: Resamples by default: enough for stable 90% percentile limits (the 5th and 95th percentiles
#: of 200 draws move by about a tenth of the band between seeds).
RESAMPLES = 200
#: Starts per refit: the fitted constants, the law's own start and random draws.
RESTARTS = 4
#: With a deadline, the refits run this many at a time; the first batch always runs, and a
#: further one starts only where it should end (at the last batch's pace) by the deadline.
CHUNK = 20


@dataclass
class Bootstrap:
    """The refits of one law: ``params[i]`` is resample ``i``'s constants (group -> name ->
    value); resamples whose refit failed are left out and counted in ``failed``. ``requested``
    counts the resamples refit, which a deadline can make fewer than were asked for."""

    law: Law
    params: list[dict[str, dict[str, float]]]
    requested: int
    failed: int
    seed: int
    notes: list[str] = field(default_factory=list)

    def predictions(self, split) -> np.ndarray:
        """Every refit's predictions on ``split``'s rows: shape (refits, rows, targets)."""
        return np.stack([predict(self.law, p, split) for p in self.params])

    def to_dict(self) -> dict:
        return {"resamples": self.requested, "refits": len(self.params), "failed": self.failed, "seed": self.seed}


def resample(split, rng: np.random.Generator):
    """A bootstrap resample of ``split``: within each group, its rows drawn with replacement."""
    from lawforge.datasets.loader import DataSplit

    idx = np.concatenate([rng.choice(split.group_rows(g), size=len(split.group_rows(g)), replace=True)
                          for g in split.group_names])
    idx.sort()
    return DataSplit(split.name, {k: v[idx] for k, v in split.X.items()}, split.y[idx], split.groups[idx],
                     list(split.group_names), split.target_columns)


def bootstrap(law: Law, split, params: Mapping[str, Mapping[str, float]], resamples: int = RESAMPLES,
              seed: int = 0, restarts: int = RESTARTS, device: str = "cpu",
              deadline: float | None = None) -> Bootstrap:
    """Refit ``law`` (fitted constants ``params``) on ``resamples`` bootstrap resamples of
    ``split``, all in one batched fit. With ``deadline`` (a :func:`time.perf_counter` time), in
    batches of :data:`CHUNK` that stop where the next would end past it (the first always runs);
    the resamples refit are the first ones an unlimited run draws."""
    if resamples < 2:
        raise FitError(f"bootstrap: at least 2 resamples are needed, got {resamples}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    jobs = [FitJob(law, resample(split, rng), restarts=restarts, seed=seed + i, extra_starts=params)
            for i in range(resamples)]
    results = fit_many(jobs, device=device, errors="return") if deadline is None else \
        _until(jobs, device, deadline)
    done = len(results)
    ok = [r.params() for r in results if isinstance(r, FitResult) and r.ok]
    b = Bootstrap(law, ok, done, done - len(ok), seed)
    if len(ok) < max(2, done // 2):
        raise FitError(f"bootstrap: only {len(ok)} of {done} refits succeeded; the law is not determined "
                       f"well enough by this data for an interval")
    if done < resamples:
        b.notes.append(f"{done} of {resamples} bootstrap refits ran before the time budget ran out")
    if b.failed:
        b.notes.append(f"{b.failed} of {done} bootstrap refits failed and are left out")
    return b


def _until(jobs: list[FitJob], device: str, deadline: float) -> list:
    """``fit_many`` on ``jobs`` in batches of :data:`CHUNK` while the next batch should end by
    ``deadline`` (at the pace of the batch before it)."""
    results: list = []
    for start in range(0, len(jobs), CHUNK):
        t = time.perf_counter()
        results += fit_many(jobs[start:start + CHUNK], device=device, errors="return")
        took = time.perf_counter() - t
        if time.perf_counter() + took > deadline:
            break
    return results


def interval(samples: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of ``samples`` along ``axis`` (NaNs ignored)."""
    if not 0 < level < 1:
        raise FitError(f"the interval level must be between 0 and 1 (e.g. 0.9), got {level}")
    lo = (1 - level) / 2
    return np.nanquantile(samples, lo, axis=axis), np.nanquantile(samples, 1 - lo, axis=axis)
