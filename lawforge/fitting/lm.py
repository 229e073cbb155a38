"""Batched Levenberg–Marquardt fitting of one law, all groups and many restarts at once.

Design:

* The Jacobian is symbolic: sympy differentiates each target expression by each parameter once,
  the value and all partials are compiled together after common-subexpression elimination, and
  evaluated elementwise on tensors of shape (problems, restarts, rows). No autograd, no vmap.
* Each (problem, restart) pair runs its own damped Gauss–Newton (LM) iteration with its own
  damping; the linear systems are solved by a batched Cholesky. A problem is one group when all
  parameters are per group, or the whole dataset when some are shared across groups.
* Bounds are enforced by transforms (``lo + exp(u)``, ``hi - exp(u)``, a scaled sigmoid).
* Variable projection: parameters the law is jointly affine in and that carry no bounds are
  solved exactly by linear least squares at every evaluation, and LM runs over the nonlinear
  parameters only, with Kaufman's projected Jacobian ``(I - Phi Phi^+) J_nl``. A purely linear
  law is solved in one projection.
* Damping follows Nielsen's gain-ratio rule; a restart stops on small relative loss change
  (``ftol``), small steps (``xtol``), a vanishing gradient, or saturated damping.
* A trial step whose loss or Jacobian is not finite is rejected (damping goes up); a restart
  that is not finite at its start is dropped. NaN never spreads across the batch.
* Optional Huber loss via iteratively reweighted residuals.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import sympy as sp

from lawforge.errors import FitError
from lawforge.fitting.defaults import FINAL_RESTARTS
from lawforge.laws.expr import make_symbol, torch_backend
from lawforge.laws.law import Law

log = logging.getLogger(__name__)

_ID, _LO, _HI, _BOTH = 0, 1, 2, 3
_U_CLAMP = 300.0


@dataclass
class GroupFit:
    group: str
    params: dict[str, float]
    loss: float                # sum of squared residuals on the group's rows (nan if failed)
    status: str                # "converged", "max_iter" or "failed"
    restarts_ok: int           # restarts that stayed finite
    iterations: int

    def to_dict(self) -> dict:
        return {"group": self.group, "params": self.params,
                "loss": self.loss if math.isfinite(self.loss) else None, "status": self.status,
                "restarts_ok": self.restarts_ok, "iterations": self.iterations}


@dataclass
class FitResult:
    law: Law
    groups: dict[str, GroupFit]
    restarts: int
    n_fits: int
    seconds: float
    device: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(g.status != "failed" for g in self.groups.values())

    @property
    def total_loss(self) -> float:
        return float(sum(g.loss for g in self.groups.values()))

    def params(self) -> dict[str, dict[str, float]]:
        return {g: gf.params for g, gf in self.groups.items()}

    def to_dict(self) -> dict:
        return {"law": self.law.to_dict(), "restarts": self.restarts, "n_fits": self.n_fits,
                "seconds": self.seconds, "device": self.device, "options": self.options,
                "groups": {g: gf.to_dict() for g, gf in self.groups.items()}}


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


def _to_theta(u, pr: _Problems, torch):
    uc = u.clamp(-_U_CLAMP, _U_CLAMP)  # only the exp/sigmoid branches need a finite range
    e = torch.exp(uc)
    s = torch.sigmoid(uc)
    theta = torch.where(pr.kind == _ID, u,
                        torch.where(pr.kind == _LO, pr.lo + e,
                                    torch.where(pr.kind == _HI, pr.hi - e, pr.lo + (pr.hi - pr.lo) * s)))
    inside = (u.abs() <= _U_CLAMP).to(u.dtype)
    dtheta = torch.where(pr.kind == _ID, torch.ones_like(u),
                         torch.where(pr.kind == _LO, e * inside,
                                     torch.where(pr.kind == _HI, -e * inside, (pr.hi - pr.lo) * s * (1 - s))))
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
    """Residuals and Jacobian for a flat batch of (problem, restart) rows."""

    def __init__(self, law: Law, pr: _Problems, torch):
        self.law, self.pr, self.torch = law, pr, torch
        self.program, self.pairs = law.jacobian_program
        self.backend = torch_backend()
        self.names = law.param_names
        self.d = len(law.target_names)
        # data-only work (log(x) of every x**p, ...) is computed once per fit, per problem
        with np.errstate(all="ignore"):
            self.static = self.program.static_values(self.backend, dict(pr.X))

    def __call__(self, u, pidx):
        """u: (B, P), pidx: (B,) problem of each row -> r (B, d*n), J (B, d*n, P)."""
        torch, pr = self.torch, self.pr
        theta, dtheta = _to_theta(u, pr, torch)
        B, P = u.shape
        n = pr.y.shape[-1]
        env = {s: v[pidx] for s, v in pr.X.items()}
        if pr.col is None:
            for k, name in enumerate(self.names):
                env[name] = theta[:, k:k + 1]
            cols = None
        else:
            K = len(self.names)
            cols = pr.col[pidx]                                           # (B, K, n)
            gathered = torch.gather(theta.unsqueeze(1).expand(B, K, P), 2, cols)
            for k, name in enumerate(self.names):
                env[name] = gathered[:, k, :]
        static = {i: (v[pidx] if isinstance(v, torch.Tensor) and v.dim() == 2 else v)
                  for i, v in self.static.items()}
        outs = self.program.run(self.backend, env, static)
        zero = torch.zeros((), dtype=u.dtype, device=u.device)
        shape = (B, n)
        f = torch.stack([torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape)
                         for o in outs[:self.d]], dim=1) if self.d > 1 else \
            torch.as_tensor(outs[0], dtype=u.dtype, device=u.device).expand(shape).unsqueeze(1)  # (B, d, n)
        if pr.padded:
            mask = pr.mask[pidx]                                          # (B, 1, n)
            r = torch.where(mask, f - pr.y[pidx], zero).reshape(B, self.d * n)
        else:
            mask = None
            r = (f - pr.y[pidx]).reshape(B, self.d * n)
        if cols is None and self.d == 1:
            by_param: dict[int, Any] = {}
            for (t, k), o in zip(self.pairs, outs[self.d:]):
                by_param[k] = torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape) * dtheta[:, k:k + 1]
            J = torch.stack([by_param[k] if k in by_param else torch.zeros(shape, dtype=u.dtype, device=u.device)
                             for k in range(P)], dim=-1)                  # (B, n, P)
            if mask is not None:
                J = torch.where(mask.reshape(B, n, 1), J, zero)
            return r, J
        J = torch.zeros((B, self.d, n, P), dtype=u.dtype, device=u.device)
        for (t, k), o in zip(self.pairs, outs[self.d:]):
            o = torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape)
            if cols is None:
                J[:, t, :, k] = o * dtheta[:, k:k + 1]
            else:
                colk = cols[:, k, :]
                J[:, t].scatter_add_(2, colk.unsqueeze(-1), (o * torch.gather(dtheta, 1, colk)).unsqueeze(-1))
        if mask is not None:
            J = torch.where(mask.unsqueeze(-1), J, zero)
        return r, J.reshape(B, self.d * n, P)


def _linear_params(law: Law) -> list[int]:
    """Law-parameter indices the law is affine in, jointly, and that carry no bounds."""
    lin = []
    for k, p in enumerate(law.params):
        if math.isfinite(p.lower) or math.isfinite(p.upper):
            continue
        s = make_symbol(p.name)
        ok = True
        for e in law.exprs.values():
            de = sp.diff(e, s)
            if de == 0:
                continue
            if sp.diff(de, s) != 0:
                ok = False
                break
        if ok:
            lin.append(k)
    # jointly affine: no derivative by one linear parameter depends on another
    joint = []
    for k in lin:
        s = make_symbol(law.params[k].name)
        others = {make_symbol(law.params[j].name) for j in joint}
        if all(not (sp.diff(e, s).free_symbols & others) for e in law.exprs.values()):
            joint.append(k)
    return joint


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


def fit_split(law: Law, split, *, restarts: int = FINAL_RESTARTS, seed: int = 0, device: str = "cpu",
              max_iter: int = 200, ftol: float = 1e-10, xtol: float = 1e-10, loss: str = "l2",
              huber_delta: float | None = None,
              extra_starts: Mapping[str, Mapping[str, float]] | Sequence | None = None,
              project_linear: bool = True, chunk_elements: float = 4e6) -> FitResult:
    """Fit ``law`` on ``split`` (a :class:`~lawforge.datasets.DataSplit`), per group.

    Returns the best restart per group with its convergence status. Raises :class:`FitError`
    for data that cannot be fitted (NaN/inf, a group with fewer than 2 points, ...).
    """
    import torch

    _check_options(loss, restarts, device, torch)
    _check_data(law, split)
    t0 = time.perf_counter()
    pr = _build(law, split, torch, device)
    ev = _Evaluator(law, pr, torch)
    u = _starts(law, pr, restarts, seed, extra_starts, torch, device)
    Pb, R, P = u.shape
    B = Pb * R
    u = u.reshape(B, P)
    pidx_all = torch.arange(Pb, device=device).repeat_interleave(R)
    delta_h = huber_delta
    if loss == "huber" and delta_h is None:
        delta_h = 0.01 * float(np.std(split.y)) or 1e-8
    lin_cols: list[int] = []
    if project_linear and loss == "l2":
        lin_law = set(_linear_params(law))
        lin_cols = [j for j, k in enumerate(pr.law_index) if k in lin_law]
    lm = _LM(ev, torch, device, u.dtype, P, lin_cols, loss, delta_h, max_iter, ftol, xtol)
    # Chunk very large batches (many restarts x many rows) so the Jacobian stays ~32 MB.
    row_cost = pr.y.shape[-1] * len(law.target_names) * P
    chunk = max(1, int(chunk_elements // max(row_cost, 1)))
    with torch.no_grad():
        parts = [lm.run(u[i:i + chunk], pidx_all[i:i + chunk]) for i in range(0, B, chunk)]
        u, cur, converged, iters = (torch.cat(x) for x in zip(*parts))
        theta, _ = _to_theta(u, pr, torch)
        theta, cur, converged, iters = (theta.reshape(Pb, R, P), cur.reshape(Pb, R),
                                        converged.reshape(Pb, R), iters.reshape(Pb, R))
        best = torch.where(torch.isfinite(cur), cur, torch.full_like(cur, math.inf)).argmin(-1)
        r_best, _ = ev(u.reshape(Pb, R, P)[torch.arange(Pb, device=device), best],
                       torch.arange(Pb, device=device))
    groups = _best_per_group(law, pr, cur.cpu().numpy(), theta.cpu().numpy(), converged.cpu().numpy(),
                             iters.cpu().numpy(), r_best.cpu().numpy())
    ordered = {g: groups[g] for g in split.group_names}
    return FitResult(law, ordered, restarts, Pb * R, time.perf_counter() - t0, str(device),
                     {"max_iter": max_iter, "ftol": ftol, "loss": loss, "huber_delta": delta_h,
                      "seed": seed, "project_linear": project_linear})


def _check_options(loss: str, restarts: int, device: str, torch) -> None:
    if loss not in ("l2", "huber"):
        raise FitError(f"fit: loss must be one of 'l2', 'huber', got {loss!r}")
    if restarts < 1:
        raise FitError(f"fit: restarts must be at least 1, got {restarts}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise FitError(f"fit: device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FitError("fit: device 'cuda' was asked for but torch sees no CUDA device")


class _LM:
    """Batched Levenberg-Marquardt (Nielsen damping) over (problem, restart) rows, with the
    linear columns projected out (variable projection) and an L2 or Huber objective."""

    def __init__(self, ev, torch, device, dtype, P: int, lin_cols: list[int], loss: str, delta_h, max_iter: int,
                 ftol: float, xtol: float):
        self.ev, self.torch, self.device, self.dtype = ev, torch, device, dtype
        self.lin_cols = lin_cols
        self.nl_cols = [j for j in range(P) if j not in set(lin_cols)]
        self.Pn = len(self.nl_cols)
        self.loss, self.delta_h = loss, delta_h
        self.max_iter, self.ftol, self.xtol = max_iter, ftol, xtol
        self.zero = torch.zeros((), dtype=dtype, device=device)
        self.lin_t = torch.as_tensor(lin_cols, dtype=torch.long, device=device)
        self.nl_t = torch.as_tensor(self.nl_cols, dtype=torch.long, device=device)

    def objective(self, r):
        if self.loss == "l2":
            return (r * r).sum(-1)
        a, d = r.abs(), self.delta_h
        return self.torch.where(a <= d, r * r, 2 * d * a - d**2).sum(-1)

    def normal_eqs(self, r, J):
        torch = self.torch
        if self.loss == "huber":
            d = self.delta_h
            w = torch.where(r.abs() <= d, torch.ones_like(r), d / r.abs().clamp_min(1e-300)).sqrt()
            J, r = J * w.unsqueeze(-1), r * w
        Jt = J.transpose(-1, -2)
        return Jt @ J, (Jt @ r.unsqueeze(-1)).squeeze(-1)

    def evaluate(self, u, pidx):
        """Normal equations (J^T W J, J^T W r) over the nonlinear columns with the linear
        columns projected out (Kaufman's variable projection), and the objective.

        The full normal matrix is formed first (one pass over J); finiteness is checked on it,
        the projection is solved from its blocks, and only the projected nonlinear block of J
        is formed explicitly (forming it keeps full precision in near-collinear valleys)."""
        torch, zero = self.torch, self.zero
        r, J = self.ev(u, pidx)
        ok = torch.isfinite(r).all(-1)
        r = torch.where(ok[:, None], r, zero)
        N, b = self.normal_eqs(r, J)
        bad = ~(torch.isfinite(N).all(-1).all(-1) & torch.isfinite(b).all(-1))
        if bool(bad.any()):
            # A finite value with a non-finite partial (0*log(0) at x = 0, sqrt'(0)) has no usable
            # sensitivity there: that entry counts as 0. Rows whose value is not finite are dropped.
            J = torch.where(torch.isfinite(J) & ok[:, None, None], J, zero)
            N, b = self.normal_eqs(r, J)
        if self.lin_cols:
            u, r, J = self._project(u, r, J, N, b)
            A, g = self.normal_eqs(r, J)
        else:
            A, g = N, b
        obj = self.objective(r)
        ok = ok & torch.isfinite(obj) & torch.isfinite(A).all(-1).all(-1) & torch.isfinite(g).all(-1)
        return u, A, g, torch.where(ok, obj, torch.full_like(obj, math.inf)), ok

    def _project(self, u, r, J, N, b):
        """Solve the linear coefficients exactly; return them applied and the projected J."""
        torch, zero, lin_t, nl_t = self.torch, self.zero, self.lin_t, self.nl_t
        G = N[:, lin_t][:, :, lin_t]
        G = G + torch.diag_embed(1e-13 * G.diagonal(dim1=-2, dim2=-1) + 1e-300)
        chol, info = torch.linalg.cholesky_ex(G)
        good = info == 0
        chol = torch.where(good[:, None, None], chol, torch.eye(len(self.lin_cols), dtype=u.dtype, device=self.device))
        rhs = torch.cat([b[:, lin_t].unsqueeze(-1), N[:, lin_t][:, :, nl_t]], dim=-1)
        sol = torch.where(good[:, None, None], torch.cholesky_solve(rhs, chol), zero)
        dc = -sol[..., 0]
        Phi = J[..., lin_t]
        r = r + (Phi @ dc.unsqueeze(-1)).squeeze(-1)
        J = J[..., nl_t] - Phi @ sol[..., 1:]
        u = u.clone()
        u[:, self.lin_cols] = u[:, self.lin_cols] + dc
        return u, r, J

    def run(self, u, pidx):
        """LM on one chunk of (problem, restart) rows: (u, objective, converged, iterations)."""
        torch, device = self.torch, self.device
        u, A, g, cur, alive = self.evaluate(u, pidx)
        done = ~alive
        converged = torch.zeros_like(done)
        if self.Pn == 0:  # purely linear law: the projection is the exact least-squares solution
            converged, done = alive.clone(), torch.ones_like(done)
        s = {"u": u, "A": A, "g": g, "cur": cur,
             "lam": torch.full((len(u),), 1e-3, dtype=u.dtype, device=device),
             "nu": torch.full((len(u),), 2.0, dtype=u.dtype, device=device),
             "iters": torch.zeros(len(u), dtype=torch.int64, device=device),
             "stall": torch.zeros(len(u), dtype=torch.int64, device=device),
             "done": done, "converged": converged}
        eye = torch.eye(max(self.Pn, 1), dtype=u.dtype, device=device)
        for _ in range(self.max_iter if self.Pn else 0):
            act = torch.nonzero(~s["done"]).squeeze(1)
            if act.numel() == 0:
                break
            self._step(s, act, pidx, eye)
        return s["u"], s["cur"], s["converged"], s["iters"]

    def _step(self, s, act, pidx, eye) -> None:
        """One damped Gauss-Newton step for the active rows ``act`` (state ``s`` updated in place)."""
        torch, zero, nl_cols = self.torch, self.zero, self.nl_cols
        u, A, g, cur, lam, nu = s["u"], s["A"], s["g"], s["cur"], s["lam"], s["nu"]
        ua, Aa, ga, ca, la, na = u[act], A[act], g[act], cur[act], lam[act], nu[act]
        diag = Aa.diagonal(dim1=-2, dim2=-1)
        damp = diag.clamp_min(1e-12 * diag.amax(-1, keepdim=True) + 1e-300)
        chol, info = torch.linalg.cholesky_ex(Aa + torch.diag_embed(la.unsqueeze(-1) * damp))
        good = (info == 0) & torch.isfinite(chol).all(-1).all(-1)
        chol = torch.where(good[:, None, None], chol, eye)
        step = -torch.cholesky_solve(torch.where(good[:, None], ga, zero).unsqueeze(-1), chol).squeeze(-1)
        step = torch.where(good[:, None], step, zero)
        pred = -(ga * step).sum(-1) + la * (damp * step * step).sum(-1)
        u_try = ua.clone()
        u_try[:, nl_cols] = ua[:, nl_cols] + step
        u_new, A_new, g_new, new, ok_new = self.evaluate(u_try, pidx[act])
        accept = good & ok_new & (new < ca)
        rho = (ca - new) / pred.clamp_min(1e-300)
        rel = torch.where(accept, (ca - new) / ca.clamp_min(1e-300), torch.zeros_like(ca))
        u[act] = torch.where(accept[:, None], u_new, ua)
        A[act] = torch.where(accept[:, None, None], A_new, Aa)
        g[act] = torch.where(accept[:, None], g_new, ga)
        cur[act] = torch.where(accept, new, ca)
        shrink = torch.clamp(1 - (2 * rho.clamp(0, 1) - 1) ** 3, min=1 / 3)
        la = torch.where(accept, (la * shrink).clamp_min(1e-15), (la * na).clamp_max(1e16))
        lam[act] = la
        nu[act] = torch.where(accept, torch.full_like(na, 2.0), (na * 2).clamp_max(1e6))
        s["iters"][act] += 1
        small = accept & (rel < self.ftol)
        stall = s["stall"]
        st = torch.where(accept & ~small, torch.zeros_like(stall[act]), stall[act] + small.to(torch.int64))
        stall[act] = st
        un = u[act][:, nl_cols]
        tiny_step = accept & (step.abs() <= self.xtol * (un.abs() + self.xtol)).all(-1)
        gnorm = (ga.abs() * (1 + ua[:, nl_cols].abs())).amax(-1)
        conv_now = (st >= 2) | tiny_step | (la >= 1e15) | (gnorm <= 1e-14 * (1 + cur[act])) | (cur[act] <= 1e-30)
        s["converged"][act] = s["converged"][act] | conv_now
        s["done"][act] = s["done"][act] | conv_now


def _best_per_group(law: Law, pr, cur_np, theta_np, conv_np, it_np, r_np) -> dict[str, GroupFit]:
    """Each group's best restart (lowest finite objective) with its status."""
    alive_np = np.isfinite(cur_np)
    groups: dict[str, GroupFit] = {}
    names = law.param_names
    for b, pg in enumerate(pr.names):
        n_ok = int(alive_np[b].sum())
        if n_ok == 0:
            for g in pg:
                groups[g] = GroupFit(g, {n: float("nan") for n in names}, float("nan"), "failed", 0, 0)
            continue
        best = int(np.nanargmin(np.where(alive_np[b], cur_np[b], np.inf)))
        status = "converged" if conv_np[b, best] else "max_iter"
        n = pr.y.shape[-1]
        res = r_np[b].reshape(-1, n)
        for gi, g in enumerate(pg):
            vals = {}
            for j, k in enumerate(pr.law_index):
                if pr.group_of_col[j] in (-1, gi) or pr.col is None:
                    vals[names[k]] = float(theta_np[b, best, j])
            gl = float(np.sum(res[:, pr.row_group[b] == gi] ** 2))
            groups[g] = GroupFit(g, vals, gl, status, n_ok, int(it_np[b, best]))
    return groups


def predict(law: Law, params_by_group: Mapping[str, Mapping[str, float]], split) -> np.ndarray:
    """Predictions (n, d) for ``split`` with each row's group constants (numpy)."""
    out = np.full((split.n, len(law.target_names)), np.nan)
    for g in split.group_names:
        if g not in params_by_group:
            raise FitError(f"predict: no fitted constants for group {g!r}")
        idx = split.group_rows(g)
        out[idx] = law.predict({k: v[idx] for k, v in split.X.items()}, params_by_group[g])
    return out
