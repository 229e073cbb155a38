"""Checks a fitted candidate must pass beyond the data (train features only, never test).

The probe builders make feature-only point sets once per run: beyond the train range along the
scale axis (:func:`make_probe`), along each feature with a declared trend
(:func:`make_trend_probe`), between and across the measured points of
mixture-type data (:func:`make_between_probe`) and over their whole feature domain
(:func:`make_domain_probe`). :func:`passes_checks` tells whether a fitted law behaves there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lawforge.fitting.lm import predict
from lawforge.search.contract.push import BOX, BOX_LOG, BOX_SPAN, SCREEN, box_points, cell_index, on_simplex, push_values
from lawforge.search.contract.rules import rule

_BOTH = ("screen", "choice")
#: allowed distance of a between-points probe prediction from its group's train mean, in group
#: ranges. On domain_mixture's inner holdout (16 runs) the forms that extrapolated sanely stayed
#: within 3.9 ranges at these points and every form that blew up on held-out mixtures went past 10.
BETWEEN_TOL = 5.0
#: allowed distance of a prediction over the whole feature domain (make_domain_probe) from its
#: group's train mean, in group ranges: far looser than between the measured points (a vertex of
#: the simplex may never have been measured). On domain_mixture the sane laws of the 10-minute run
#: of 2026-12-05 (e1d50e5) stayed within 3 ranges there; seed 1's `exp(... + s*r3*r5)` reached 1e188.
DOMAIN_TOL = 20.0
#: allowed distance of a scale-axis probe prediction from its group's train mean, in group ranges.
PROBE_TOL = 2.0
#: allowed move against a declared trend at the screen's pushes, in group ranges.
TREND_TOL = 0.02

BOX_NOT_FINITE = rule(
    "box-not-finite", "probe", _BOTH, "not finite somewhere on the box around the data",
    f"""For every group's constants, the law is finite and real over the box around the train features: from
    1/{BOX:g} of each positive feature's smallest train value (not below 1 for a count: integer values) to
    {BOX:g}x its largest ({BOX_LOG:g} units either way
    for a feature that holds a log, {BOX_SPAN:g} train ranges for one that can be <= 0), at its corners and at
    {64} points of a Latin hypercube in log space. A user asks a law to predict below the train range along
    one feature as often as above it (a larger model trained on fewer tokens): ``p2 + D**p3`` with a fitted
    ``p2 < 0`` under a fractional power is undefined for small D. Not on a simplex (the domain rules hold
    there). A feature never above another in train (unique tokens, tokens) stays so.""",
    keeps="p0 + p1/N**p2 + p3/D**p4", breaks="p0 + p1*(p2 + D**p3)**p4  (p2 < 0)", setting="checks.finite_on_box")
DOMAIN_NOT_FINITE = rule(
    "domain-not-finite", "probe", _BOTH, "not finite somewhere on the feature domain (no scale axis)",
    """On a dataset without a scale axis (mixture-type), a law predicts finite values at points spread over
    the whole feature domain (uniform on the simplex when the features are proportions, else the box of
    their train ranges): ``log(p1 + exp(...))`` with a fitted ``p1 < 0`` is finite at every measured
    mixture and undefined at others.""",
    keeps="p0 + p1*exp(p2*r1)", breaks="p0*log(p1 + r1)  (p1 < 0)", setting="checks.finite_on_domain")
DOMAIN_FAR = rule(
    "domain-far", "probe", _BOTH, f"more than {DOMAIN_TOL:g} group ranges off on the feature domain",
    f"""Over the same points, predictions stay within {DOMAIN_TOL:g} group ranges of the group's train mean:
    ``exp(... + s*r3*r5)`` with a large ``s`` explodes at mixtures no run measured.""",
    keeps="p0 + p1*exp(p2*r1)", breaks="p0 + p1*exp(p2*r1*r2)  (p2 = 50)", setting="checks.finite_on_domain")
PROBE_NOT_FINITE = rule(
    "probe-not-finite", "probe", _BOTH, "not finite at the probe points",
    """The probe points are each group's rows at its largest scale pushed to x2 and x5 along the scale axis
    (a dataset without one: midpoints of pairs of measured points, and every group's measured points):
    the law is finite there.""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1*log(p2 - N)")
PROBE_FAR = rule(
    "probe-far", "probe", _BOTH, "far from the group's data at the probe points",
    f"""At the probe points, predictions stay within {PROBE_TOL:g} group ranges of the group's train mean
    ({BETWEEN_TOL:g} between measured points, where there is no scale axis): at 5x the largest model a law
    has not left the data's scale.""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1*N**p2  (p2 = 3)")
TREND_NOT_FINITE = rule(
    "trend-probe-not-finite", "probe", _BOTH, "not finite at x2 and x5 along a declared trend",
    """Per group, the rows at a trend feature's largest value pushed to x2 and x5 (by log 2 and log 5 for a
    feature that holds a log; half a range and a range for one that can be <= 0): the law is finite there.""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1*log(p2 - N)", setting="checks.follow_trends")
TREND_AGAINST = rule(
    "trend-probe-against", "probe", _BOTH, "moves against a declared trend at x2 and x5",
    f"""At the same points the law does not move against the card's trend by more than {TREND_TOL:g} of the
    group's range; with hyperparameters, each cell's best setting is compared (a too-large learning rate
    can make a larger model worse, the best run cannot).""",
    keeps="p0 + p1/N**p2", breaks="p0 + p1*N**p2  (a decreasing loss)", setting="checks.follow_trends")


def probe_stats(train, probe):
    """Per probe row, its group's train mean and range (computed once, not per candidate)."""
    center = np.zeros((probe.n, train.y.shape[1]))
    span = np.zeros_like(center)
    for g in probe.group_names:
        yg = train.y[train.groups == g]
        rows = probe.groups == g
        center[rows] = yg.mean(axis=0)
        span[rows] = np.ptp(yg, axis=0) + 1e-12
    return center, span


def _points_beyond(train, columns, include_base: bool, logs=None):
    """Per column and group: the group's train rows at the column's largest value, with the
    column pushed by the screen's pushes (:data:`~lawforge.search.contract.push.SCREEN`: x2 and x5
    of a positive column or of the quantity a ``logs`` {column: base} column is the log of; +0.5
    and +1 times its range otherwise), optionally preceded by the unpushed rows. Returns the points
    as a DataSplit (features only) and, per (column, group), the index arrays of its blocks in
    push order."""
    from lawforge.datasets.loader import DataSplit

    Xs = {k: [] for k in train.X}
    groups: list = []
    blocks = []
    n = 0
    logs = logs or {}
    for col in columns:
        pos = bool(np.all(train.X[col] > 0))
        for g in train.group_names:
            idx = train.group_rows(g)
            a = train.X[col][idx]
            top = idx[a == a.max()]
            rng_a = float(a.max() - a.min()) or abs(float(a.max())) or 1.0
            pushes = [(lambda v, f=f, o=o: push_values(v, f, o, log_base=logs.get(col), positive=pos, span=rng_a))
                      for f, o in zip(SCREEN.factors, SCREEN.offsets)]
            if include_base:
                pushes = [lambda v: v] + pushes
            starts = []
            for push in pushes:
                for k in train.X:
                    v = train.X[k][top]
                    Xs[k].append(push(v) if k == col else v)
                groups += [g] * len(top)
                starts.append(np.arange(n, n + len(top)))
                n += len(top)
            blocks.append((col, starts))
    X = {k: np.concatenate(v) for k, v in Xs.items()}
    groups = np.array(groups, dtype=object)
    split = DataSplit("probe", X, np.zeros((len(groups), len(train.target_columns))), groups,
                      list(dict.fromkeys(groups.tolist())), train.target_columns)
    return split, blocks


def _feature_matrix(train):
    """``train``'s feature columns and their values as one (rows, features) float array."""
    cols = list(train.X)
    return cols, np.stack([np.asarray(train.X[c], dtype=float) for c in cols], axis=1)


def _points_split(name, cols, blocks, train):
    """A feature-only DataSplit (zero targets) of per-group point blocks ``[(group, points)]``."""
    from lawforge.datasets.loader import DataSplit

    P = np.concatenate([pts for _, pts in blocks])
    groups = np.array([g for g, pts in blocks for _ in range(len(pts))], dtype=object)
    return DataSplit(name, {c: P[:, k] for k, c in enumerate(cols)},
                     np.zeros((len(groups), len(train.target_columns))), groups,
                     list(dict.fromkeys(groups.tolist())), train.target_columns)


def make_between_probe(train, max_pairs: int = 200, max_union: int = 500, seed: int = 0):
    """Probe points for datasets without a scale axis (mixture-type: the test asks for new
    combinations inside the measured region, not larger scale). Per group: the midpoints of
    pairs of the group's distinct train feature vectors (at most ``max_pairs``), and the feature
    vectors measured in any group's train rows (at most ``max_union``); subsets are drawn with a
    fixed seed. A law with a pole or an exponential blow-up between or next to the measured
    points fails here. Built from train features only."""
    cols, F_all = _feature_matrix(train)
    union = np.unique(F_all, axis=0)
    rng = np.random.default_rng(seed)
    if len(union) > max_union:
        union = union[np.sort(rng.choice(len(union), max_union, replace=False))]
    blocks = []
    for g in train.group_names:
        F = np.unique(F_all[train.group_rows(g)], axis=0)
        i, j = np.triu_indices(len(F), k=1)
        if len(i) > max_pairs:
            pick = np.sort(rng.choice(len(i), max_pairs, replace=False))
            i, j = i[pick], j[pick]
        blocks.append((g, np.concatenate([0.5 * (F[i] + F[j]), union])))
    return _points_split("probe", cols, blocks, train)


def make_domain_probe(train, n: int = 200, seed: int = 0):
    """Points spread over the whole feature domain, per group, for datasets without a scale axis:
    when the features are proportions (non-negative, the same sum on every train row, as
    mixture weights summing to 1), uniform draws from that simplex; otherwise uniform draws from
    the box of the train features' ranges. A law must predict finite values there, within
    :data:`DOMAIN_TOL` group ranges: a form such as ``log(p1 + exp(...))`` with a fitted
    ``p1 < 0`` is finite at every measured mixture and between them, and undefined at mixtures
    beyond them; ``exp(... + s*r3*r5)`` with a large ``s`` explodes there. Built from train
    features only."""
    cols, F = _feature_matrix(train)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4099]))
    total = F.sum(axis=1)
    simplex = on_simplex(train)
    lo, hi = F.min(axis=0), F.max(axis=0)
    blocks = []
    for g in train.group_names:
        if simplex:
            P = rng.dirichlet(np.ones(len(cols)), n) * float(total[0])
        else:
            P = lo + (hi - lo) * rng.random((n, len(cols)))
        blocks.append((g, P))
    return _points_split("domain", cols, blocks, train)


def make_box_probe(train, logs=None):
    """The points of :func:`~lawforge.search.contract.push.box_points` around ``train``'s features,
    once per group (features only); None on a simplex, whose domain probe covers it."""
    if on_simplex(train):
        return None
    cols = list(train.X)
    pts = box_points(train.X, logs)
    P = np.stack([pts[c] for c in cols], axis=1)
    return _points_split("box", cols, [(g, P) for g in train.group_names], train)


def make_probe(train, axis, logs=None):
    """Probe points beyond the train range along the scale axis (each axis of a list), per
    group: the group's rows at its largest axis value, with the axis pushed to x2 and x5
    (positive axis, or by log 2 and log 5 where it holds a log, ``logs`` {column: base}) or by
    +0.5 and +1 times its range (otherwise). Built from train only; targets are not used."""
    if not axis:
        return None
    return _points_beyond(train, axis if isinstance(axis, list) else [axis], include_base=False, logs=logs)[0]


class TrendSlice(NamedTuple):
    """One pushed block of a trend probe: the trend's sign (-1 decreasing), the row indices of the
    unpushed rows and of their x2 and x5 pushes, and (with hyperparameters) each cell's positions
    within the block, or None."""

    sign: float
    base: np.ndarray
    x2: np.ndarray
    x5: np.ndarray
    cells: list | None


class TrendProbe(NamedTuple):
    """The points of :func:`make_trend_probe` (features only) and their blocks."""

    split: Any
    slices: list[TrendSlice]


def make_trend_probe(train, trends: dict[str, str], hyper: tuple[str, ...] | list[str] = (), logs=None):
    """Points beyond the data along each feature with a known trend (the card's ``trend``:
    ``decreasing`` loss in model size or data, say): per group, the rows at the feature's largest
    value, then x2 and x5 (positive feature) or +0.5 and +1 ranges. A form whose prediction moves
    against the trend there (by more than ``trend_tol`` of the group's range) is ``unstable``.

    ``hyper``: the hyperparameter columns (learning rate, batch size). The trend is a statement
    about the *best* run at a scale, not about every setting: at a fixed, too-large learning rate a
    larger model can do worse. With hyperparameters, the rows are grouped into cells (same values
    of every other feature) and the check is on each cell's best prediction over its
    hyperparameter settings (the lowest for a decreasing trend, the highest for an increasing one).
    Built from train features only."""
    if not trends:
        return None
    logs = logs or {}
    split, blocks = _points_beyond(train, list(trends), include_base=True, logs=logs)
    slices = []
    for col, starts in blocks:
        block_cells = None
        if hyper:  # positions (into the block) of each cell's rows
            _, inv = cell_index({k: v[starts[0]] for k, v in split.X.items()}, hyper)
            block_cells = [np.flatnonzero(inv == c) for c in range(int(inv.max()) + 1)]
        slices.append(TrendSlice(-1.0 if trends[col] == "decreasing" else 1.0, *starts, block_cells))
    return TrendProbe(split, slices)


@dataclass
class Screen:
    """The search's probes of a fitted law (train features only): the points, each point's group
    train mean and range, and the tolerances. Built once per run (``prepare.make_context``)."""

    probe: Any = None          # DataSplit of extrapolation probe points (features only), or None
    probe_tol: float = PROBE_TOL
    probe_center: Any = None   # (n_probe, d) train mean of each probe row's group
    probe_span: Any = None     # (n_probe, d) train range of each probe row's group
    trend: TrendProbe | None = None   # from make_trend_probe
    trend_tol: float = TREND_TOL
    trend_span: Any = None     # (n_trend, d) train range of each trend row's group
    domain: Any = None         # DataSplit of points spread over the feature domain (make_domain_probe)
    domain_center: Any = None  # (n_domain, d) train mean of each domain row's group
    domain_span: Any = None    # (n_domain, d) train range of each domain row's group
    box: Any = None            # DataSplit of points over the box around the data (make_box_probe)

    @property
    def active(self) -> bool:
        """Whether some probe is set (a fitted law must then pass :func:`screen_issue`)."""
        return self.probe is not None or self.trend is not None or self.domain is not None or self.box is not None


def screen_issue(law, params, screen: Screen, tcols) -> str | None:
    """The id of the first probe rule ``law`` with ``params`` breaks, or None: over the feature
    domain (``screen.domain``) predictions are finite and within :data:`DOMAIN_TOL` group ranges of
    the group's train mean; at the probe points, finite and within ``probe_tol`` group ranges; along
    features with a declared trend, finite and not moving against it beyond ``trend_tol`` group
    ranges; over the box around the data (``screen.box``), finite."""
    if box_issue(law, params, screen) is not None:
        return BOX_NOT_FINITE
    if screen.domain is not None:
        with np.errstate(all="ignore"):
            pd = predict(law, params, screen.domain)
        if not np.all(np.isfinite(pd)):
            return DOMAIN_NOT_FINITE
        if screen.domain_span is not None and not np.all(
                np.abs(pd - screen.domain_center[:, tcols]) <= DOMAIN_TOL * screen.domain_span[:, tcols]):
            return DOMAIN_FAR
    if screen.probe is not None:
        with np.errstate(all="ignore"):
            pp = predict(law, params, screen.probe)
        if not np.all(np.isfinite(pp)):
            return PROBE_NOT_FINITE
        dev = np.abs(pp - screen.probe_center[:, tcols])
        if not np.all(dev <= screen.probe_tol * screen.probe_span[:, tcols] + 1e-12):
            return PROBE_FAR
    if screen.trend is not None:
        split, slices = screen.trend
        with np.errstate(all="ignore"):
            pt = predict(law, params, split)
        if not np.all(np.isfinite(pt)):
            return TREND_NOT_FINITE
        span = screen.trend_span[:, tcols]
        for sign, i0, i1, i2, cells in slices:
            v0, v1, v2, sp0 = pt[i0], pt[i1], pt[i2], span[i0]
            if cells is not None:  # each cell's best prediction over its hyperparameter settings
                best = np.min if sign < 0 else np.max
                v0, v1, v2 = (np.stack([best(v[c], axis=0) for c in cells]) for v in (v0, v1, v2))
                sp0 = np.stack([sp0[c[0]] for c in cells])
            for a, b in ((v0, v1), (v1, v2)):
                step = (b - a) * sign    # > 0: moves with the trend
                if np.any(step < -screen.trend_tol * sp0):
                    return TREND_AGAINST
    return None


def box_issue(law, params, screen: Screen) -> str | None:
    """:data:`BOX_NOT_FINITE` when ``law`` with ``params`` is not finite somewhere on the box
    (``screen.box``), else None."""
    if screen.box is None:
        return None
    with np.errstate(all="ignore"):
        pb = predict(law, params, screen.box)
    return None if np.all(np.isfinite(pb)) else BOX_NOT_FINITE


def passes_checks(law, params, screen: Screen, tcols) -> bool:
    """Whether ``law`` breaks none of the probe rules (:func:`screen_issue`)."""
    return screen_issue(law, params, screen, tcols) is None
