"""Batched Levenberg–Marquardt fitting: many laws, all their groups and many restarts at once.

Design:

* One LM program runs over the rows of a batch: every (job, problem, restart) triple, where a job
  is one law on one data split (:class:`FitJob`). Laws with different parameter counts share the
  batch with parameter columns padded to a common width, the same alone as in a batch (a padded
  column has a zero Jacobian and never moves; ``_WIDTH``); each
  law's residuals and Jacobian come from its own compiled program
  (:class:`~lawforge.fitting.problems._Evaluator`), everything else (transforms, normal equations,
  projection, damping, convergence) is one set of tensor operations for the whole batch.
  :func:`fit_split` is the one-job case; :func:`fit_many` fits a whole generation of candidate
  forms, or one form on several folds, in one call.
* The Jacobian is exact: the law's program carries forward-mode partials, evaluated
  elementwise on tensors of shape (rows, data points). No autograd, no vmap.
* Each row runs its own damped Gauss–Newton (LM) iteration with its own damping; the linear
  systems are solved by a batched Cholesky.
* Variable projection: parameters a law is jointly affine in and that carry no bounds are
  solved exactly by linear least squares at every evaluation, and LM runs over the nonlinear
  parameters only, with Kaufman's projected Jacobian ``(I - Phi Phi^+) J_nl``. A purely linear
  law is solved in one projection. In a batch, the linear columns of every law sit after the
  nonlinear ones.
* Damping follows Nielsen's gain-ratio rule; a row stops on small relative loss change
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

from lawforge.errors import FitError, LawforgeError
from lawforge.fitting.defaults import FINAL_RESTARTS
from lawforge.fitting.problems import (_ID, _build, _check_data, _Evaluator, _starts, _transform,
                                       start_points)
from lawforge.laws.law import Law

log = logging.getLogger(__name__)

__all__ = ["FitJob", "FitResult", "GroupFit", "fit_many", "fit_split", "predict", "resolve_device", "start_points"]


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


@dataclass
class FitJob:
    """One law to fit on one data split (a :class:`~lawforge.datasets.DataSplit`)."""

    law: Law
    split: Any
    restarts: int = FINAL_RESTARTS
    seed: int = 0
    extra_starts: Mapping[str, Mapping[str, float]] | Sequence | None = None


def fit_split(law: Law, split, *, restarts: int = FINAL_RESTARTS, seed: int = 0, device: str = "cpu",
              max_iter: int = 200, ftol: float = 1e-10, xtol: float = 1e-10, loss: str = "l2",
              huber_delta: float | None = None,
              extra_starts: Mapping[str, Mapping[str, float]] | Sequence | None = None,
              project_linear: bool = True, chunk_elements: float = 4e6) -> FitResult:
    """Fit ``law`` on ``split`` (a :class:`~lawforge.datasets.DataSplit`), per group.

    Returns the best restart per group with its convergence status. Raises :class:`FitError`
    for data that cannot be fitted (NaN/inf, a group with fewer than 2 points, ...).
    """
    return fit_many([FitJob(law, split, restarts, seed, extra_starts)], device=device, max_iter=max_iter,
                    ftol=ftol, xtol=xtol, loss=loss, huber_delta=huber_delta, project_linear=project_linear,
                    chunk_elements=chunk_elements)[0]


def fit_many(jobs: Sequence[FitJob], *, device: str = "cpu", max_iter: int = 200, ftol: float = 1e-10,
             xtol: float = 1e-10, loss: str = "l2", huber_delta: float | None = None, project_linear: bool = True,
             chunk_elements: float = 4e6, errors: str = "raise") -> list:
    """Fit every job in batched LM programs; one :class:`FitResult` per job, in order.

    Each job gets the starts and the per-row iteration :func:`fit_split` would give it alone;
    jobs of one padded shape share a program (:func:`_partition`, ``_WIDTH``), so a job's fit is
    the same, bit for bit, as alone. With
    ``errors="return"`` a job whose data cannot be fitted, or whose law cannot be compiled,
    yields its :class:`~lawforge.errors.LawforgeError` in its place instead of raising; when a
    shared program raises (a numeric error in one form), its jobs are fitted one by one so the
    others still get their fits.
    """
    import torch

    for job in jobs:
        _check_options(loss, job.restarts, device, torch)
    if errors not in ("raise", "return"):
        raise FitError(f"fit: errors must be 'raise' or 'return', got {errors!r}")
    t0 = time.perf_counter()
    out: list = [None] * len(jobs)
    built = []
    for i, job in enumerate(jobs):
        try:
            built.append(_Job.build(i, job, device, loss, huber_delta, project_linear, torch))
        except LawforgeError as exc:  # bad data (FitError) or a law that cannot be compiled
            if errors == "raise":
                raise
            out[i] = exc
    options = {"max_iter": max_iter, "ftol": ftol, "loss": loss, "project_linear": project_linear}
    for group in _partition(built):
        try:
            _run_group(group, out, t0, torch, device, max_iter, ftol, xtol, loss, chunk_elements, options)
        except (RuntimeError, ValueError, ArithmeticError):
            if errors == "raise":
                raise
            for job in group:  # one bad form must not sink the rest: fit each alone
                try:
                    _run_group([job], out, t0, torch, device, max_iter, ftol, xtol, loss, chunk_elements, options)
                except (RuntimeError, ValueError, ArithmeticError) as exc1:
                    out[job.index] = FitError(f"fit: {type(exc1).__name__}: {exc1}")
    return out


def _run_group(group, out, t0, torch, device, max_iter, ftol, xtol, loss, chunk_elements, options) -> None:
    """One batched LM program over ``group``'s jobs; their results into ``out``."""
    batch = _Batch(group, torch, device)
    lm = _LM(batch, torch, device, max_iter, ftol, xtol, loss)
    u = batch.start()
    rows = torch.arange(batch.n_rows, device=device)
    chunk = max(1, int(chunk_elements // max(batch.D * batch.P, 1)))
    with torch.no_grad():
        parts = [lm.run(u[i:i + chunk], rows[i:i + chunk]) for i in range(0, batch.n_rows, chunk)]
        u, cur, converged, iters = (torch.cat(x) for x in zip(*parts))
    seconds = time.perf_counter() - t0
    for job in group:
        out[job.index] = job.result(batch, u, cur, converged, iters, seconds, str(device),
                                    {**options, "huber_delta": job.delta_h, "seed": job.job.seed})


#: Parameter widths. A job's nonlinear and linear parameter counts are padded up (each to at
#: least one column) to multiples of a width that depends on the job alone, alone as in a batch,
#: and only jobs of one padded shape share a batch: BLAS and LAPACK pick their kernels by shape
#: (gemm by width; the recursive Cholesky splits at n/2), so a form padded to a batch's widest
#: law would end a few last bits from the same form fitted alone, and an unconverged fit
#: elsewhere. With one shape per batch, a form's fit is the same bit for bit whatever it is
#: batched with. Jobs with few rows (restarts x groups) are overhead-bound: wide buckets
#: (``_WIDTH``) let a whole generation share one batch. Jobs with many rows (sft: 42 groups x
#: 12 restarts) pay for every padded column: narrow buckets. Above ``_EXACT_ABOVE`` residuals
#: per problem the arithmetic dominates and widths stay exact (lr_bsz: 1,730 rows).
_WIDTH = 8
_MANY_ROWS, _WIDTH_MANY_ROWS = 64, 2
_EXACT_ABOVE = 1024


def _padded(n: int, D: int, rows: int) -> int:
    if D > _EXACT_ABOVE:
        return n
    w = _WIDTH if rows <= _MANY_ROWS else _WIDTH_MANY_ROWS
    return -(-max(n, 1) // w) * w


def _partition(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs grouped into batches, one per padded shape (residual length, nonlinear and linear
    widths), in order of first appearance."""
    shapes: dict[tuple, list[_Job]] = {}
    for j in jobs:
        shapes.setdefault((j.D, j.wn, j.wl), []).append(j)
    return list(shapes.values())


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; any other name unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_options(loss: str, restarts: int, device: str, torch) -> None:
    if loss not in ("l2", "huber"):
        raise FitError(f"fit: loss must be one of 'l2', 'huber', got {loss!r}")
    if restarts < 1:
        raise FitError(f"fit: restarts must be at least 1, got {restarts}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise FitError(f"fit: device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FitError("fit: device 'cuda' was asked for but torch sees no CUDA device")


class _Job:
    """One job laid out for the batch: its problems, evaluator, starts and padded columns."""

    @classmethod
    def build(cls, index: int, job: FitJob, device, loss, huber_delta, project_linear, torch) -> "_Job":
        self = cls()
        self.index, self.job, self.law = index, job, job.law
        _check_data(job.law, job.split)
        self.pr = _build(job.law, job.split, torch, device)
        self.ev = _Evaluator(job.law, self.pr, torch)
        self.u0 = _starts(job.law, self.pr, job.restarts, job.seed, job.extra_starts, torch, device)
        self.Pb, self.R, self.P = self.u0.shape
        self.D = self.pr.y.shape[-1] * len(job.law.target_names)
        self.delta_h = huber_delta
        if loss == "huber" and huber_delta is None:
            self.delta_h = 0.01 * float(np.std(job.split.y)) or 1e-8
        lin_law = set(job.law.linear_params) if project_linear and loss == "l2" else set()
        self.lin = [j for j, k in enumerate(self.pr.law_index) if k in lin_law]
        self.nl = [j for j in range(self.P) if j not in set(self.lin)]
        rows = self.Pb * self.R
        self.wn, self.wl = _padded(len(self.nl), self.D, rows), _padded(len(self.lin), self.D, rows)
        return self

    def place(self, Pn: int, P: int, start: int, torch, device) -> None:
        """Fix the job's rows [start, start + Pb*R) and its columns in the padded layout of
        ``Pn`` nonlinear then ``P - Pn`` linear columns."""
        self.start, self.stop = start, start + self.Pb * self.R
        perm = np.empty(self.P, dtype=np.int64)
        perm[self.nl] = np.arange(len(self.nl))
        perm[self.lin] = Pn + np.arange(len(self.lin))
        self.perm = torch.as_tensor(perm, device=device)
        self.identity = self.P == P and bool(np.array_equal(perm, np.arange(self.P)))

    def result(self, batch, u, cur, converged, iters, seconds, device, options) -> FitResult:
        torch, pr, Pb, R, P = batch.torch, self.pr, self.Pb, self.R, self.P
        sl = slice(self.start, self.stop)
        theta, _ = _transform(u[sl], batch.kind[sl], batch.lo[sl], batch.hi[sl], torch)
        theta = theta[:, self.perm].reshape(Pb, R, P)
        cur, converged, iters = cur[sl].reshape(Pb, R), converged[sl].reshape(Pb, R), iters[sl].reshape(Pb, R)
        best = torch.where(torch.isfinite(cur), cur, torch.full_like(cur, math.inf)).argmin(-1)
        ar = torch.arange(Pb, device=theta.device)
        r_best, _ = self.ev.values(theta[ar, best], ar)
        groups = _best_per_group(self.law, pr, cur.cpu().numpy(), theta.cpu().numpy(), converged.cpu().numpy(),
                                 iters.cpu().numpy(), r_best.cpu().numpy())
        ordered = {g: groups[g] for g in self.job.split.group_names}
        return FitResult(self.law, ordered, self.job.restarts, Pb * R, seconds, device, options)


class _Batch:
    """Every job's rows one after another, parameters padded to ``Pn`` nonlinear then ``Pl``
    linear columns, residuals padded to ``D`` entries; evaluates any sorted subset of rows."""

    def __init__(self, jobs: list[_Job], torch, device):
        self.jobs, self.torch, self.device = jobs, torch, device
        self.Pn = max(j.wn for j in jobs)
        self.Pl = max(j.wl for j in jobs)
        self.P = self.Pn + self.Pl
        self.D = max(j.D for j in jobs)
        start = 0
        for j in jobs:
            j.place(self.Pn, self.P, start, torch, device)
            start = j.stop
        self.n_rows = start
        self.starts = np.array([j.start for j in jobs] + [start])
        dt = torch.float64
        self.kind = torch.full((self.n_rows, self.P), _ID, dtype=torch.long, device=device)
        self.lo = torch.zeros((self.n_rows, self.P), dtype=dt, device=device)
        self.hi = torch.zeros((self.n_rows, self.P), dtype=dt, device=device)
        pidx, pure_linear, delta = [], [], []
        for j in jobs:
            sl = slice(j.start, j.stop)
            self.kind[sl, j.perm] = j.pr.kind
            self.lo[sl, j.perm] = j.pr.lo
            self.hi[sl, j.perm] = j.pr.hi
            pidx.append(torch.arange(j.Pb, device=device).repeat_interleave(j.R))
            pure_linear += [not j.nl] * (j.stop - j.start)
            delta += [j.delta_h or 0.0] * (j.stop - j.start)
        self.pidx = torch.cat(pidx)
        self.pure_linear = torch.as_tensor(pure_linear, device=device)
        self.delta = torch.as_tensor(delta, dtype=dt, device=device)

    def start(self):
        u = self.torch.zeros((self.n_rows, self.P), dtype=self.torch.float64, device=self.device)
        for j in self.jobs:
            u[j.start:j.stop, j.perm] = j.u0.reshape(-1, j.P)
        return u

    def __call__(self, u, rows):
        """u: (b, P) at the sorted global ``rows`` -> r (b, D), J (b, D, P) by u."""
        torch = self.torch
        theta, dtheta = _transform(u, self.kind[rows], self.lo[rows], self.hi[rows], torch)
        pidx = self.pidx[rows]
        if len(self.jobs) == 1 and self.jobs[0].identity:
            r, J = self.jobs[0].ev.values(theta, pidx)
            return r, J * dtheta.unsqueeze(1)
        b = len(rows)
        r = torch.zeros((b, self.D), dtype=u.dtype, device=u.device)
        J = torch.zeros((b, self.D, self.P), dtype=u.dtype, device=u.device)
        cut = np.searchsorted(rows.cpu().numpy(), self.starts)
        for j, i0, i1 in zip(self.jobs, cut[:-1], cut[1:]):
            if i0 == i1:
                continue
            rj, Jj = j.ev.values(theta[i0:i1, j.perm], pidx[i0:i1])
            r[i0:i1, :j.D] = rj
            if j.identity:
                J[i0:i1, :j.D, :j.P] = Jj
            else:
                J[i0:i1, :j.D, j.perm] = Jj
        return r, J * dtheta.unsqueeze(1)


class _LM:
    """Batched Levenberg-Marquardt (Nielsen damping) over the rows of a :class:`_Batch`, with
    the linear columns projected out (variable projection) and an L2 or Huber objective."""

    def __init__(self, batch: _Batch, torch, device, max_iter: int, ftol: float, xtol: float, loss: str):
        self.batch, self.torch, self.device, self.dtype = batch, torch, device, torch.float64
        self.Pn = batch.Pn
        self.lin_cols = list(range(batch.Pn, batch.P))
        self.nl_cols = list(range(batch.Pn))
        self.loss = loss
        self.max_iter, self.ftol, self.xtol = max_iter, ftol, xtol
        self.zero = torch.zeros((), dtype=self.dtype, device=device)

    def objective(self, r, rows):
        if self.loss == "l2":
            return (r * r).sum(-1)
        a, d = r.abs(), self.batch.delta[rows].unsqueeze(-1)
        return self.torch.where(a <= d, r * r, 2 * d * a - d**2).sum(-1)

    def normal_eqs(self, r, J, rows):
        torch = self.torch
        if self.loss == "huber":
            d = self.batch.delta[rows].unsqueeze(-1)
            w = torch.where(r.abs() <= d, torch.ones_like(r), d / r.abs().clamp_min(1e-300)).sqrt()
            J, r = J * w.unsqueeze(-1), r * w
        Jt = J.transpose(-1, -2)
        return Jt @ J, (Jt @ r.unsqueeze(-1)).squeeze(-1)

    def evaluate(self, u, rows):
        """Normal equations (J^T W J, J^T W r) over the nonlinear columns with the linear
        columns projected out (Kaufman's variable projection), and the objective.

        Only the products the projection needs are formed (Phi^T Phi, Phi^T r, Phi^T J_nl), then
        the projected nonlinear block of J explicitly (forming it keeps full precision in
        near-collinear valleys) and its normal equations."""
        torch, zero = self.torch, self.zero
        r, J = self.batch(u, rows)
        ok = torch.isfinite(r).all(-1)
        r = torch.where(ok[:, None], r, zero)
        if not bool(torch.isfinite(J).all()):
            # A finite value with a non-finite partial (0*log(0) at x = 0, sqrt'(0)) has no usable
            # sensitivity there: that entry counts as 0. Rows whose value is not finite are dropped.
            J = torch.where(torch.isfinite(J) & ok[:, None, None], J, zero)
        if self.lin_cols:
            u, r, J = self._project(u, r, J)
        A, g = self.normal_eqs(r, J, rows)
        obj = self.objective(r, rows)
        ok = ok & torch.isfinite(obj) & torch.isfinite(A).all(-1).all(-1) & torch.isfinite(g).all(-1)
        return u, A, g, torch.where(ok, obj, torch.full_like(obj, math.inf)), ok

    def _project(self, u, r, J):
        """Solve the linear coefficients exactly; return them applied, the residuals at them and
        the projected nonlinear block of J."""
        torch, zero, Pn = self.torch, self.zero, self.Pn
        Phi, Jn = J[..., Pn:], J[..., :Pn]          # the batch keeps linear columns last
        PhiT = Phi.transpose(-1, -2)
        G = PhiT @ Phi
        G = G + torch.diag_embed(1e-13 * G.diagonal(dim1=-2, dim2=-1) + 1e-300)
        chol, info = torch.linalg.cholesky_ex(G)
        good = (info == 0) & torch.isfinite(G).all(-1).all(-1)
        chol = torch.where(good[:, None, None], chol, torch.eye(len(self.lin_cols), dtype=u.dtype, device=self.device))
        rhs = torch.cat([PhiT @ r.unsqueeze(-1), PhiT @ Jn], dim=-1)
        sol = torch.where(good[:, None, None], torch.cholesky_solve(rhs, chol), zero)
        dc = -sol[..., 0]
        r = r + (Phi @ dc.unsqueeze(-1)).squeeze(-1)
        Jn = Jn - Phi @ sol[..., 1:]
        u = u.clone()
        u[:, Pn:] = u[:, Pn:] + dc
        return u, r, Jn

    def run(self, u, rows):
        """LM on one chunk of batch rows: (u, objective, converged, iterations)."""
        torch, device = self.torch, self.device
        u, A, g, cur, alive = self.evaluate(u, rows)
        # a purely linear law is solved by the projection alone
        linear = self.batch.pure_linear[rows]
        done = ~alive | linear
        converged = alive & linear
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
            self._step(s, act, rows, eye)
        return s["u"], s["cur"], s["converged"], s["iters"]

    def _step(self, s, act, rows, eye) -> None:
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
        u_new, A_new, g_new, new, ok_new = self.evaluate(u_try, rows[act])
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
    """Predictions (n, d) for ``split`` with each row's group constants (numpy, one evaluation
    with per-row parameter values)."""
    names = list(split.group_names)
    missing = [g for g in names if g not in params_by_group]
    if missing:
        raise FitError(f"predict: no fitted constants for group {missing[0]!r}")
    if split.n == 0:
        return np.full((0, len(law.target_names)), np.nan)
    index = {g: i for i, g in enumerate(names)}
    row_group = np.array([index[g] for g in split.groups]) if len(names) > 1 else np.zeros(split.n, dtype=int)
    per_row = {}
    for p in law.param_names:
        gone = [g for g in names if p not in params_by_group[g]]
        if gone:
            raise FitError(f"predict: group {gone[0]!r} has no value for parameter {p!r}")
        values = np.array([params_by_group[g][p] for g in names], dtype=np.float64)
        per_row[p] = values[row_group] if len(names) > 1 else values[0]
    return law.predict(split.X, per_row)
