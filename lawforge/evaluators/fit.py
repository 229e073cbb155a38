"""Batched Levenberg–Marquardt fitting of one law, all groups and many restarts at once.

Design (see ``docs/fitting-notes.md`` in shared for the measurements behind it):

* The Jacobian is symbolic: sympy differentiates each target expression by each parameter once,
  the value and all partials are compiled together after common-subexpression elimination, and
  evaluated elementwise on tensors of shape (problems, restarts, rows). No autograd, no vmap.
* Each (problem, restart) pair runs its own damped Gauss–Newton (LM) iteration with its own
  damping; the linear systems are solved by a batched Cholesky. A problem is one group when all
  parameters are per group, or the whole dataset when some are shared across groups.
* Bounds are enforced by transforms (``lo + exp(u)``, ``hi - exp(u)``, a scaled sigmoid).
* Linear coefficients (parameters the law is affine in, without bounds) are projected out at
  every start: they are solved exactly by least squares given the nonlinear ones (variable
  projection of the starting points), which removes most bad basins from random restarts.
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
from lawforge.evaluators.expr import make_symbol, torch_backend
from lawforge.evaluators.law import Law

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
    X: dict[str, Any]               # symbol -> (Pb, 1, n)
    y: Any                          # (Pb, 1, d, n)
    mask: Any                       # (Pb, 1, 1, n) bool
    row_group: np.ndarray           # (Pb, n) index of the group within the problem (-1 padding)
    rows: list[list[np.ndarray]]    # per problem, per group: row indices in the split
    n_local: int                    # parameters per problem
    col: Any | None                 # (Pb, 1, K, n) column of law param k at each row (shared case)
    kind: Any                       # (P,) transform code per local column
    lo: Any
    hi: Any
    law_index: np.ndarray           # (P,) law-parameter index of each local column
    group_of_col: np.ndarray        # (P,) group index within problem (-1 if shared)


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
        col = np.zeros((Pb, 1, K, n_max), dtype=np.int64)
        for k in range(K):
            if k in shared:
                col[:, 0, k, :] = shared.index(k)
            else:
                rg = np.where(row_group < 0, 0, row_group)
                col[:, 0, k, :] = len(shared) + rg * len(per) + per.index(k)
        col_t = torch.as_tensor(col, device=device)
    else:
        n_local = K
        law_index = np.arange(K)
        group_of_col = np.zeros(K, dtype=int)
        col_t = None
    kinds = [_transform_kind(law.params[k]) for k in law_index]
    return _Problems(
        names=problem_groups,
        X={s: torch.as_tensor(v, dtype=dt, device=device).unsqueeze(1) for s, v in Xs.items()},
        y=torch.as_tensor(y, dtype=dt, device=device).unsqueeze(1),
        mask=torch.as_tensor(mask, device=device).view(Pb, 1, 1, n_max),
        row_group=row_group, rows=rows, n_local=n_local, col=col_t,
        kind=torch.as_tensor([k[0] for k in kinds], device=device),
        lo=torch.as_tensor([k[1] for k in kinds], dtype=dt, device=device),
        hi=torch.as_tensor([k[2] for k in kinds], dtype=dt, device=device),
        law_index=law_index, group_of_col=group_of_col)


def _to_theta(u, pr: _Problems, torch):
    u = u.clamp(-_U_CLAMP, _U_CLAMP)
    e = torch.exp(u.clamp(max=700.0))
    s = torch.sigmoid(u)
    theta = torch.where(pr.kind == _ID, u,
                        torch.where(pr.kind == _LO, pr.lo + e,
                                    torch.where(pr.kind == _HI, pr.hi - e, pr.lo + (pr.hi - pr.lo) * s)))
    dtheta = torch.where(pr.kind == _ID, torch.ones_like(u),
                         torch.where(pr.kind == _LO, e,
                                     torch.where(pr.kind == _HI, -e, (pr.hi - pr.lo) * s * (1 - s))))
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
    return np.clip(u, -_U_CLAMP, _U_CLAMP)


def _logit(p):
    return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------------------- evaluation
class _Evaluator:
    def __init__(self, law: Law, pr: _Problems, R: int, torch):
        self.law, self.pr, self.R, self.torch = law, pr, R, torch
        self.program, self.pairs = law.jacobian_program
        self.backend = torch_backend()
        self.names = law.param_names
        self.d = len(law.target_names)

    def __call__(self, u, want_jac: bool = True):
        """u: (Pb, R, P) -> residuals (Pb, R, d*n), Jacobian (Pb, R, d*n, P) or None."""
        torch, pr = self.torch, self.pr
        theta, dtheta = _to_theta(u, pr, torch)
        env = dict(pr.X)
        if pr.col is None:
            for k, name in enumerate(self.names):
                env[name] = theta[..., k:k + 1]
        else:
            Pb, R, P = theta.shape
            n = pr.col.shape[-1]
            K = len(self.names)
            gathered = torch.gather(theta.unsqueeze(2).expand(Pb, R, K, P), 3,
                                    pr.col.expand(Pb, R, K, n))
            for k, name in enumerate(self.names):
                env[name] = gathered[:, :, k, :]
        outs = self.program.run(self.backend, env)
        Pb, R, P = u.shape
        n = pr.y.shape[-1]
        shape = (Pb, R, n)
        vals = [torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape) for o in outs[:self.d]]
        f = torch.stack(vals, dim=2)                                   # (Pb, R, d, n)
        r = torch.where(pr.mask, f - pr.y, torch.zeros((), dtype=u.dtype, device=u.device))
        r = r.reshape(Pb, R, self.d * n)
        if not want_jac:
            return r, None
        if pr.col is None:
            J = torch.zeros((Pb, R, self.d, n, P), dtype=u.dtype, device=u.device)
            for (t, k), o in zip(self.pairs, outs[self.d:]):
                J[:, :, t, :, k] = torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape) \
                    * dtheta[..., k:k + 1]
        else:
            J = torch.zeros((Pb, R, self.d, n, P), dtype=u.dtype, device=u.device)
            for (t, k), o in zip(self.pairs, outs[self.d:]):
                colk = pr.col[:, :, k, :].expand(Pb, R, n)               # (Pb, R, n)
                dk = torch.as_tensor(o, dtype=u.dtype, device=u.device).expand(shape) \
                    * torch.gather(dtheta, 2, colk)
                J[:, :, t].scatter_add_(3, colk.unsqueeze(-1), dk.unsqueeze(-1))
        J = torch.where(pr.mask.unsqueeze(-1), J, torch.zeros((), dtype=u.dtype, device=u.device))
        return r, J.reshape(Pb, R, self.d * n, P)


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


def _project_linear(u, ev: _Evaluator, lin_cols: list[int], torch):
    """Solve exactly for the linear columns given the others (least squares per restart)."""
    if not lin_cols:
        return u
    r, J = ev(u)
    Jl = J[..., lin_cols]                                         # (Pb, R, M, L)
    # residual is affine in the linear columns: r(u + delta) = r + Jl delta
    A = Jl.transpose(-1, -2) @ Jl
    g = Jl.transpose(-1, -2) @ r.unsqueeze(-1)
    L = len(lin_cols)
    eye = torch.eye(L, dtype=u.dtype, device=u.device)
    scale = A.diagonal(dim1=-2, dim2=-1).clamp_min(1e-300).unsqueeze(-1)
    A = A + 1e-12 * eye * scale
    ok = torch.isfinite(A).all(-1).all(-1) & torch.isfinite(g).all(-1).all(-1)
    A = torch.where(ok[..., None, None], A, eye)
    g = torch.where(ok[..., None, None], g, torch.zeros_like(g))
    chol, info = torch.linalg.cholesky_ex(A)
    good = ok & (info == 0)
    chol = torch.where(good[..., None, None], chol, eye)
    delta = -torch.cholesky_solve(torch.where(good[..., None, None], g, torch.zeros_like(g)), chol).squeeze(-1)
    new = u.clone()
    new[..., lin_cols] = u[..., lin_cols] + torch.where(good[..., None], delta, torch.zeros_like(delta))
    return new


def fit_law(law: Law, split, *, restarts: int = 32, seed: int = 0, device: str = "cpu",
            max_iter: int = 200, ftol: float = 1e-10, loss: str = "l2",
            huber_delta: float | None = None,
            extra_starts: Mapping[str, Mapping[str, float]] | Sequence | None = None,
            project_linear: bool = True) -> FitResult:
    """Fit ``law`` on ``split`` (a :class:`~lawforge.datasets.DataSplit`), per group.

    Returns the best restart per group with its convergence status. Raises :class:`FitError`
    for data that cannot be fitted (NaN/inf, a group with fewer than 2 points, ...).
    """
    import torch

    if loss not in ("l2", "huber"):
        raise FitError(f"fit: loss must be one of 'l2', 'huber', got {loss!r}")
    if restarts < 1:
        raise FitError(f"fit: restarts must be at least 1, got {restarts}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise FitError(f"fit: device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FitError("fit: device 'cuda' was asked for but torch sees no CUDA device")
    _check_data(law, split)
    t0 = time.perf_counter()
    pr = _build(law, split, torch, device)
    ev = _Evaluator(law, pr, restarts, torch)
    u = _starts(law, pr, restarts, seed, extra_starts, torch, device)
    Pb, R, P = u.shape
    if project_linear:
        lin_law = set(_linear_params(law))
        lin_cols = [j for j, k in enumerate(pr.law_index) if k in lin_law]
        if lin_cols and len(lin_cols) < P:
            with torch.no_grad():
                u = _project_linear(u, ev, lin_cols, torch)
    delta_h = huber_delta
    if loss == "huber" and delta_h is None:
        delta_h = 0.01 * float(np.std(split.y)) or 1e-8

    def objective(r):
        if loss == "l2":
            return (r * r).sum(-1)
        a = r.abs()
        return torch.where(a <= delta_h, r * r, 2 * delta_h * a - delta_h**2).sum(-1)

    with torch.no_grad():
        r, J = ev(u)
        cur = objective(r)
        finite = torch.isfinite(cur) & torch.isfinite(J).all(-1).all(-1)
        cur = torch.where(finite, cur, torch.full_like(cur, math.inf))
        alive = finite.clone()
        done = ~alive
        converged = torch.zeros_like(done)
        lam = torch.full((Pb, R), 1e-3, dtype=u.dtype, device=device)
        eye = torch.eye(P, dtype=u.dtype, device=device)
        iters = torch.zeros((Pb, R), dtype=torch.int64, device=device)
        stall = torch.zeros((Pb, R), dtype=torch.int64, device=device)
        J = torch.where(finite[..., None, None], J, torch.zeros((), dtype=u.dtype, device=device))
        r = torch.where(finite[..., None], r, torch.zeros((), dtype=u.dtype, device=device))
        for _ in range(max_iter):
            if bool(done.all()):
                break
            if loss == "huber":
                w = torch.where(r.abs() <= delta_h, torch.ones_like(r), delta_h / r.abs().clamp_min(1e-300)).sqrt()
                Jw, rw = J * w.unsqueeze(-1), r * w
            else:
                Jw, rw = J, r
            A = Jw.transpose(-1, -2) @ Jw
            g = (Jw.transpose(-1, -2) @ rw.unsqueeze(-1)).squeeze(-1)
            diag = A.diagonal(dim1=-2, dim2=-1)
            dmax = diag.amax(-1, keepdim=True)
            damp = diag.clamp_min(1e-12 * dmax + 1e-300)
            Al = A + torch.diag_embed(lam.unsqueeze(-1) * damp)
            chol, info = torch.linalg.cholesky_ex(Al)
            good = (info == 0) & torch.isfinite(chol).all(-1).all(-1)
            chol = torch.where(good[..., None, None], chol, eye)
            step = -torch.cholesky_solve(torch.where(good[..., None], g, torch.zeros_like(g)).unsqueeze(-1),
                                         chol).squeeze(-1)
            active = ~done
            step = torch.where((good & active)[..., None], step, torch.zeros_like(step))
            u_new = u + step
            r_new, J_new = ev(u_new)
            new = objective(r_new)
            ok_new = torch.isfinite(new) & torch.isfinite(J_new).all(-1).all(-1)
            accept = active & good & ok_new & (new < cur)
            rel = torch.where(accept, (cur - new) / cur.clamp_min(1e-300), torch.zeros_like(cur))
            u = torch.where(accept[..., None], u_new, u)
            r = torch.where(accept[..., None], r_new, r)
            J = torch.where(accept[..., None, None], J_new, J)
            cur = torch.where(accept, new, cur)
            lam = torch.where(accept, (lam * 0.3).clamp_min(1e-12), (lam * 4.0).clamp_max(1e16))
            iters = iters + active.to(torch.int64)
            small = accept & (rel < ftol)
            stall = torch.where(accept & ~small, torch.zeros_like(stall), stall + active.to(torch.int64))
            gnorm = (g.abs() * (1 + u.abs())).amax(-1)
            conv_now = active & ((small & (stall >= 2)) | (lam >= 1e15) | (gnorm <= 1e-14 * (1 + cur))
                                 | (cur <= 1e-30))
            converged = converged | conv_now
            done = done | conv_now
        theta, _ = _to_theta(u, pr, torch)
    # pick the best restart per problem
    cur_np = cur.cpu().numpy()
    theta_np = theta.cpu().numpy()
    conv_np = converged.cpu().numpy()
    it_np = iters.cpu().numpy()
    alive_np = np.isfinite(cur_np)
    r_np = r.cpu().numpy()
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
        res = r_np[b, best].reshape(-1, n)
        for gi, g in enumerate(pg):
            vals = {}
            for j, k in enumerate(pr.law_index):
                if pr.group_of_col[j] in (-1, gi) or pr.col is None:
                    vals[names[k]] = float(theta_np[b, best, j])
            gl = float(np.sum(res[:, pr.row_group[b] == gi] ** 2))
            groups[g] = GroupFit(g, vals, gl, status, n_ok, int(it_np[b, best]))
    ordered = {g: groups[g] for g in split.group_names}
    return FitResult(law, ordered, restarts, Pb * R, time.perf_counter() - t0, str(device),
                     {"max_iter": max_iter, "ftol": ftol, "loss": loss, "huber_delta": delta_h,
                      "seed": seed, "project_linear": project_linear})


def predict(law: Law, params_by_group: Mapping[str, Mapping[str, float]], split) -> np.ndarray:
    """Predictions (n, d) for ``split`` with each row's group constants (numpy)."""
    out = np.full((split.n, len(law.target_names)), np.nan)
    for g in split.group_names:
        if g not in params_by_group:
            raise FitError(f"predict: no fitted constants for group {g!r}")
        idx = split.group_rows(g)
        out[idx] = law.predict({k: v[idx] for k, v in split.X.items()}, params_by_group[g])
    return out
