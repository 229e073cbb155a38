"""Least-squares problems for the fitter: a law's data laid out as padded tensors, bounds as
transforms, start points, and the residual/Jacobian evaluator of one law.

A *problem* is one group when all parameters are per group, or the whole dataset when some are
shared across groups. Bounds are enforced by transforms (``lo + exp(u)``, ``hi - exp(u)``, a scaled
sigmoid). The Jacobian comes from the law's compiled program (values and partials, see
:func:`lawforge.laws.expr.compile_with_jacobian`), evaluated elementwise on tensors of shape
(rows of the batch, data rows): no autograd.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lawforge.errors import FitError
from lawforge.laws.expr import torch_backend
from lawforge.laws.law import Law

log = logging.getLogger(__name__)

_ID, _LO, _HI, _BOTH = 0, 1, 2, 3
_U_CLAMP = 300.0


# ------------------------------------------------------------------------------- problem setup
@dataclass
class _Problems:
    """Padded tensors describing Pb independent least-squares problems."""

    names: list[list[str]]          # groups in each problem
    X: dict[str, Any]               # symbol -> (Pb, n)
    y: Any                          # (Pb, d, n)
    mask: Any                       # (Pb, 1, n) bool
    row_group: np.ndarray           # (Pb, n) index of the group within the problem (-1 padding)
    rows: list[list[np.ndarray]]    # per problem, per group: row indices in the split
    n_local: int                    # parameters per problem
    col: Any | None                 # (Pb, K, n) column of law param k at each row (shared case)
    kind: Any                       # (P,) transform code per local column
    lo: Any
    hi: Any
    law_index: np.ndarray           # (P,) law-parameter index of each local column
    group_of_col: np.ndarray        # (P,) group index within problem (-1 if shared)
    padded: bool = True             # False when every problem has the same rows count


def _check_data(law: Law, split) -> None:
    for sym, col in law.variables.items():
        if col not in split.X:
            raise FitError(f"fit: data has no column {col!r} for variable {sym!r}")
        v = split.X[col]
        if not np.all(np.isfinite(v)):
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise FitError(f"fit: column {col!r} has a NaN or inf value (row {i})")
    for sym, strict, term in law.domain:
        v = split.X[law.variables[sym]]
        bad = v <= 0 if strict else v < 0
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise FitError(f"fit: column {law.variables[sym]!r} has the value {v[i]:g} (row {i}), where the "
                           f"law's {term} is not defined ({sym} must be {'> 0' if strict else '>= 0'})")
    y = split.y
    for j, t in enumerate(split.target_columns):
        col = y[:, j]
        if not np.any(np.isfinite(col)):
            raise FitError(f"fit: target {t!r} is all NaN/inf")
        if not np.all(np.isfinite(col)):
            i = int(np.flatnonzero(~np.isfinite(col))[0])
            raise FitError(f"fit: target {t!r} has a NaN or inf value (row {i})")
    missing = [t for t in law.target_names if t not in split.target_columns]
    if missing:
        raise FitError(f"fit: the law predicts {missing[0]!r}, which is not a target of the data "
                       f"({', '.join(split.target_columns)})")
    for g in split.group_names:
        n = int(np.sum(split.groups == g))
        if n < 2:
            raise FitError(f"fit: group {g!r} has {n} point(s); fitting needs at least 2 per group")
        if n * len(law.target_names) < law.n_params:
            log.warning("group %r has %d points for %d parameters: the fit is underdetermined",
                        g, n, law.n_params)


def _transform_kind(p) -> tuple[int, float, float]:
    lo, hi = p.lower, p.upper
    if math.isfinite(lo) and math.isfinite(hi):
        return _BOTH, lo, hi
    if math.isfinite(lo):
        return _LO, lo, 0.0
    if math.isfinite(hi):
        return _HI, 0.0, hi
    return _ID, 0.0, 0.0


def _build(law: Law, split, torch, device) -> _Problems:
    dt = torch.float64
    groups = list(split.group_names)
    shared = [i for i, p in enumerate(law.params) if p.shared]
    per = [i for i, p in enumerate(law.params) if not p.shared]
    K = law.n_params
    if shared and len(groups) > 1:
        problem_groups = [groups]
    else:
        problem_groups = [[g] for g in groups]
        shared, per = [], list(range(K))
    rows = [[split.group_rows(g) for g in pg] for pg in problem_groups]
    n_max = max(sum(len(r) for r in rr) for rr in rows)
    Pb = len(problem_groups)
    d = len(law.target_names)
    tcols = [split.target_columns.index(t) for t in law.target_names]
    Xs = {sym: np.zeros((Pb, n_max)) for sym in law.variables}
    y = np.zeros((Pb, d, n_max))
    mask = np.zeros((Pb, n_max), dtype=bool)
    row_group = np.full((Pb, n_max), -1)
    for b, rr in enumerate(rows):
        idx = np.concatenate(rr)
        gid = np.concatenate([np.full(len(r), i) for i, r in enumerate(rr)])
        m = len(idx)
        for sym, col in law.variables.items():
            v = split.X[col][idx]
            Xs[sym][b, :m] = v
            Xs[sym][b, m:] = v[0]  # pad with a real row so padded values stay finite
        y[b, :, :m] = split.y[idx][:, tcols].T
        mask[b, :m] = True
        row_group[b, :m] = gid
    n_groups = len(problem_groups[0])
    if shared:
        n_local = len(shared) + n_groups * len(per)
        law_index = np.array(shared + [k for _ in range(n_groups) for k in per])
        group_of_col = np.array([-1] * len(shared) + [g for g in range(n_groups) for _ in per])
        col = np.zeros((Pb, K, n_max), dtype=np.int64)
        for k in range(K):
            if k in shared:
                col[:, k, :] = shared.index(k)
            else:
                rg = np.where(row_group < 0, 0, row_group)
                col[:, k, :] = len(shared) + rg * len(per) + per.index(k)
        col_t = torch.as_tensor(col, device=device)
    else:
        n_local = K
        law_index = np.arange(K)
        group_of_col = np.zeros(K, dtype=int)
        col_t = None
    kinds = [_transform_kind(law.params[k]) for k in law_index]
    return _Problems(
        names=problem_groups,
        X={s: torch.as_tensor(v, dtype=dt, device=device) for s, v in Xs.items()},
        y=torch.as_tensor(y, dtype=dt, device=device),
        mask=torch.as_tensor(mask, device=device).view(Pb, 1, n_max),
        row_group=row_group, rows=rows, n_local=n_local, col=col_t,
        kind=torch.as_tensor([k[0] for k in kinds], device=device),
        lo=torch.as_tensor([k[1] for k in kinds], dtype=dt, device=device),
        hi=torch.as_tensor([k[2] for k in kinds], dtype=dt, device=device),
        law_index=law_index, group_of_col=group_of_col, padded=not bool(mask.all()))


def _transform(u, kind, lo, hi, torch):
    """Parameters from the unconstrained coordinates ``u``, and d(theta)/du (elementwise)."""
    uc = u.clamp(-_U_CLAMP, _U_CLAMP)  # only the exp/sigmoid branches need a finite range
    e = torch.exp(uc)
    s = torch.sigmoid(uc)
    theta = torch.where(kind == _ID, u,
                        torch.where(kind == _LO, lo + e,
                                    torch.where(kind == _HI, hi - e, lo + (hi - lo) * s)))
    inside = (u.abs() <= _U_CLAMP).to(u.dtype)
    dtheta = torch.where(kind == _ID, torch.ones_like(u),
                         torch.where(kind == _LO, e * inside,
                                     torch.where(kind == _HI, -e * inside, (hi - lo) * s * (1 - s))))
    return theta, dtheta


def _to_u(theta: np.ndarray, pr: _Problems) -> np.ndarray:
    kind = pr.kind.cpu().numpy()
    lo = pr.lo.cpu().numpy()
    hi = pr.hi.cpu().numpy()
    with np.errstate(all="ignore"):
        u = np.where(kind == _ID, theta,
                     np.where(kind == _LO, np.log(np.maximum(theta - lo, 1e-300)),
                              np.where(kind == _HI, np.log(np.maximum(hi - theta, 1e-300)),
                                       _logit(np.clip((theta - lo) / np.where(hi > lo, hi - lo, 1), 1e-12, 1 - 1e-12)))))
    return np.where(kind == _ID, u, np.clip(u, -_U_CLAMP, _U_CLAMP))


def _logit(p):
    return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------------------- evaluation
class _Evaluator:
    """Residuals and Jacobian of one law on its problems, for a flat batch of (problem, restart) rows."""

    def __init__(self, law: Law, pr: _Problems, torch):
        self.law, self.pr, self.torch = law, pr, torch
        self.program, self.pairs = law.jacobian_program
        self.backend = torch_backend()
        self.names = law.param_names
        self.d = len(law.target_names)
        self.single = len(pr.names) == 1   # one problem: data tensors broadcast, no gathers
        # data-only work (log(x) of every x**p, ...) is computed once per fit, per problem
        with np.errstate(all="ignore"):
            self.static = self.program.static_values(self.backend, dict(pr.X))

    def values(self, theta, pidx):
        """theta: (B, P), pidx: (B,) -> r (B, d*n), J (B, d*n, P) by theta."""
        torch, pr = self.torch, self.pr
        B, P = theta.shape
        n = pr.y.shape[-1]
        if self.single:
            env, static, y, mask = dict(pr.X), self.static, pr.y, pr.mask
        else:
            env = {s: v[pidx] for s, v in pr.X.items()}
            static = {i: (v[pidx] if isinstance(v, torch.Tensor) and v.dim() == 2 else v)
                      for i, v in self.static.items()}
            y, mask = pr.y[pidx], pr.mask[pidx]
        cols = None
        if pr.col is None:
            for k, name in enumerate(self.names):
                env[name] = theta[:, k:k + 1]
        else:
            K = len(self.names)
            cols = pr.col.expand(B, -1, -1) if self.single else pr.col[pidx]     # (B, K, n)
            gathered = torch.gather(theta.unsqueeze(1).expand(B, K, P), 2, cols)
            for k, name in enumerate(self.names):
                env[name] = gathered[:, k, :]
        outs = self.program.run(self.backend, env, static)
        zero = torch.zeros((), dtype=theta.dtype, device=theta.device)
        shape = (B, n)
        f = torch.stack([torch.as_tensor(o, dtype=theta.dtype, device=theta.device).expand(shape)
                         for o in outs[:self.d]], dim=1)                  # (B, d, n)
        r = f - y
        if pr.padded:
            r = torch.where(mask, r, zero)
        r = r.reshape(B, self.d * n)
        if cols is None and self.d == 1:
            by_param = {k: torch.as_tensor(o, dtype=theta.dtype, device=theta.device).expand(shape)
                        for (t, k), o in zip(self.pairs, outs[self.d:])}
            J = torch.stack([by_param[k] if k in by_param else zero.expand(shape) for k in range(P)], dim=-1)
            if pr.padded:
                J = torch.where(mask.reshape(-1, n, 1), J, zero)
            return r, J
        J = torch.zeros((B, self.d, n, P), dtype=theta.dtype, device=theta.device)
        for (t, k), o in zip(self.pairs, outs[self.d:]):
            o = torch.as_tensor(o, dtype=theta.dtype, device=theta.device).expand(shape)
            if cols is None:
                J[:, t, :, k] = o
            else:
                J[:, t].scatter_add_(2, cols[:, k, :].unsqueeze(-1), o.unsqueeze(-1))
        if pr.padded:
            J = torch.where(mask.unsqueeze(-1), J, zero)
        return r, J.reshape(B, self.d * n, P)


# ------------------------------------------------------------------------------- public API
def start_points(law: Law, split, restarts: int, seed: int = 0,
                 extra_starts: Mapping[str, Mapping[str, float]] | Sequence[Mapping[str, Mapping[str, float]]] | None = None,
                 device: str = "cpu"):
    """The starting points (in transformed space) the fitter uses, shape (Pb, R, P).

    Start 0 is the law's ``init``; then any ``extra_starts`` (group -> {param: value}, e.g.
    published constants); the rest are random draws around ``init`` from one seeded stream.
    """
    import torch

    pr = _build(law, split, torch, device)
    return _starts(law, pr, restarts, seed, extra_starts, torch, device), pr


def _starts(law, pr, restarts, seed, extra_starts, torch, device):
    Pb, P = len(pr.names), pr.n_local
    init = np.array([law.params[k].init for k in pr.law_index], dtype=np.float64)
    u0 = _to_u(init[None, :], pr)[0]
    sigma = np.empty(P)
    for j, k in enumerate(pr.law_index):
        p = law.params[k]
        kind = int(pr.kind[j])
        sigma[j] = 1.5 if kind != _ID else (p.scale if p.scale else max(abs(p.init), 1.0))
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    U = u0[None, None, :] + sigma[None, None, :] * rng.standard_normal((Pb, restarts, P))
    U[:, 0, :] = u0
    extras = [] if extra_starts is None else (
        [extra_starts] if isinstance(extra_starts, Mapping) else list(extra_starts))
    r = 1
    for ex in extras:
        if r >= restarts:
            break
        for b, pg in enumerate(pr.names):
            theta = init.copy()
            for j, k in enumerate(pr.law_index):
                gi = pr.group_of_col[j]
                g = pg[max(gi, 0)]
                if g in ex and law.params[k].name in ex[g]:
                    theta[j] = ex[g][law.params[k].name]
            U[b, r, :] = _to_u(theta[None, :], pr)[0]
        r += 1
    return torch.as_tensor(U, dtype=torch.float64, device=device)
