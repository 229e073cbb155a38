"""``lawforge discover``: a discovery as named stages over a sealed dataset and its run folder.

    prepare   the run folder, the space, the seeds and the scoring context (train only)
    search    the evolutionary loop, checkpointed after every generation
    choose    rank the searched forms, re-rank by extrapolation shift, refit the chosen one
    score     read the test split once, for the chosen law and the runners-up
    write     law.json, top_laws.json, metrics.json, then the output hooks (laws.tex, report)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp

from lawforge._version import __version__
from lawforge.datasets.byo import card_yaml
from lawforge.datasets.loader import Dataset, SealedDataset
from lawforge.datasets.trends import with_inferred_trends
from lawforge.errors import ConfigError
from lawforge.fitting.lm import FitJob, FitResult, fit_many, predict, resolve_device
from lawforge.laws.metrics import compute_metrics
from lawforge.procs import FolderLock
from lawforge.runs.folder import ENSEMBLE, LAW, LLM_USAGE, METRICS, TOP_LAWS, RunFolder
from lawforge.search import space as S
from lawforge.search.candidates import CandidateContext
from lawforge.search.choose import Choice, build_ensemble, by_chunks, choose, ensemble_predict, law_of
from lawforge.search.engine import SearchResult, run_search
from lawforge.search.prepare import build_space, final_train, make_context, seeds_for
from lawforge.search.settings import SearchConfig

log = logging.getLogger(__name__)
ENGINES = ("native", "pysr")

#: A hook run after the results are written: ``hook(run, dataset, top_laws)``. Outputs (laws.tex,
#: the report) come in this way, so that runs never import the layer above them.
RunHook = Callable[[RunFolder, Dataset, list], None]


@dataclass
class Stage:
    """What the stages share: the dataset, its sealed view, the folder and the search's parts."""

    dataset: Dataset
    cfg: SearchConfig
    run: RunFolder
    engine: str
    sealed: SealedDataset
    space: S.Space = None
    ctx: CandidateContext = None
    proposer: Any = None
    checkpoint: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    lock: FolderLock | None = None
    trends: dict[str, str] = field(default_factory=dict)   # column -> the trend inferred, in words


def discover(dataset: Dataset, cfg: SearchConfig, out_dir: str | Path | None = None, engine: str = "native",
             progress: Callable[[dict], None] | None = None, data_dir: str | None = None, report: bool = True,
             llm=None, resume: bool = False, handle_sigint: bool = False,
             hooks: Sequence[RunHook] = ()) -> dict[str, Any]:
    """Run a discovery on ``dataset`` and write its run folder; return the summary.

    The search checkpoints after every generation; ``resume=True`` continues the run in
    ``out_dir`` from its checkpoint (candidates evaluated after it are reused, not lost; with an
    evaluation budget and no LLM the resumed run ends with the same law as an uninterrupted one).
    ``handle_sigint``: the first Ctrl-C finishes the current step, checkpoints and returns a
    summary with ``stopped == "interrupted"``. ``report`` is recorded in the run's config (a
    resume repeats it); the ``hooks`` write the outputs."""
    clock = _Clock()
    st = prepare(dataset, cfg, out_dir, engine, data_dir, report, llm, resume)
    try:
        with _cluster(cfg) as cfg:
            st.timings["prepare"] = clock.lap()
            return _search_and_write(st, cfg, clock, progress, handle_sigint, hooks)
    finally:
        st.lock.release()


@contextlib.contextmanager
def _cluster(cfg: SearchConfig):
    """With ``cfg.ray``, the Ray session of the run (the candidate fits run on its actors); its
    CPUs are the workers where ``cfg.workers`` is 0. Without, ``cfg`` as it is."""
    if cfg.ray is None:
        yield cfg
        return
    from lawforge.procs import RaySession

    with RaySession(cfg.ray, num_cpus=cfg.workers or None) as session:
        yield dataclasses.replace(cfg, workers=cfg.workers or session.cpus())


def _search_and_write(st: Stage, cfg: SearchConfig, clock: "_Clock", progress, handle_sigint: bool,
                      hooks: Sequence[RunHook]) -> dict[str, Any]:
    """The stages after ``prepare``: search, choose, score, write."""
    dataset = st.dataset
    res = search(st, progress, handle_sigint, search_budget(cfg, st.timings["prepare"]))
    st.timings["search"] = clock.lap()
    if res.stopped == "interrupted":
        return {"dataset": dataset.name, "stopped": "interrupted", "evaluations": res.evaluations,
                "seconds": round(res.seconds, 2), "run_dir": str(st.run.path)}
    st.run.write_pareto([[m.rec["complexity"], m.rec["n_params"], m.rec["val_r2"], m.rec["val_nmse"],
                          sp.sstr(m.expr)] for m in res.front])
    train = final_train(st.sealed, cfg)
    budget_s = cfg.budget.seconds
    choice = choose(res.members, st.ctx, dataset.card, train, cfg,
                    deadline=final_deadline("choose", budget_s, clock))
    st.timings["choose"] = clock.lap()
    ensemble = build_ensemble(choice, st.ctx, dataset.card, train, cfg,
                              deadline=final_deadline("ensemble", budget_s, clock))
    st.timings["ensemble"] = clock.lap()
    full = st.sealed.unseal()
    top = score_top_laws(choice, full, train, cfg, deadline=final_deadline("score", budget_s, clock))
    st.timings["score"] = clock.lap()
    summary = write_results(st, res, choice, full, top, ensemble)
    if budget_s is not None:   # the outputs' bootstrap bands stop by the budget's end
        st.run.deadline = clock.t0 + budget_s
    for hook in hooks:
        try:
            hook(st.run, full, top)
        except Exception as exc:  # an output must never cost the run its results
            log.warning("%s not written: %s: %s", getattr(hook, "__name__", "output"), type(exc).__name__, exc)
    summary["timings"]["outputs"] = round(clock.lap(), 2)
    summary["wall_s"] = round(clock.total(), 2)
    return summary


#: With a time budget, the search stops early enough to leave the final choice, the refits and
#: the outputs their time, so that the whole run ends within about the budget: FINAL_FIXED_S
#: seconds plus the time of FINAL_EVALS candidate evaluations on one core, at the search's pace,
#: never more than FINAL_MAX_SHARE of the budget (the first evaluations, which start the workers,
#: make the early pace look slow). Measured: the final stages took the time of 26 and 43 such
#: evaluations on moe and sft (before the ensemble), and of 31 to 454 (median 129, 75th
#: percentile 164) on the catalogue's 27 runs of 8dce2a7 (2026-12-04) with the ensemble; the outputs 2 to
#: 7 s. Where the estimate falls short, the final stages' deadlines (FINAL_SHARES) hold the rest.
FINAL_FIXED_S, FINAL_EVALS, FINAL_MAX_SHARE = 8.0, 150, 0.25


#: Under a time budget, the share of the time left after the search (less FINAL_FIXED_S for the
#: outputs) by which each final stage stops taking on more forms (the re-ranking by
#: extrapolation shift, the ensemble's members, the runners-up scored for top_laws.json); what
#: it has started, it finishes. The shares are cumulative; each stage's deadline is set when it
#: starts, from the time left then (:func:`final_deadline`).
FINAL_SHARES = {"choose": 0.4, "ensemble": 0.7, "score": 0.9}


def final_deadline(stage: str, budget_s: float | None, clock: "_Clock", now: float | None = None) -> float | None:
    """The :func:`time.perf_counter` deadline of final ``stage`` (a key of FINAL_SHARES), to be
    asked for when the stage starts (``now``: that time, by default the clock's reading); None
    without a time budget.

    A stage gets ``(share - previous share) / (1 - previous share)`` of the time left when it
    starts. Stages that keep to their shares end where the cumulative shares say; one that runs
    past its share (the choice's fallback refits are not bounded) shortens the stages after it
    instead of leaving them no time at all."""
    if budget_s is None:
        return None
    names = list(FINAL_SHARES)
    i = names.index(stage)
    prev = FINAL_SHARES[names[i - 1]] if i else 0.0
    frac = (FINAL_SHARES[stage] - prev) / (1.0 - prev)
    now = time.perf_counter() if now is None else now
    left = max(clock.t0 + budget_s - FINAL_FIXED_S - now, 0.0)   # FINAL_FIXED_S: the outputs'
    return now + frac * left


def search_budget(cfg: SearchConfig, used_s: float) -> SearchConfig:
    """``cfg`` with the search's own time limit: the run's budget less ``used_s`` (spent before
    the search). Without a time budget, ``cfg`` itself."""
    total = cfg.budget.seconds
    if total is None:
        return cfg
    seconds = max(0.5 * total, total - used_s)
    return dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, seconds=seconds))


def final_reserve(workers: int, budget_s: float | None):
    """The time to leave for the final stages, from the search's pace so far."""
    cap = FINAL_MAX_SHARE * (budget_s or 0.0)

    def reserve(evals: int, seconds: float) -> float:
        return min(cap, FINAL_FIXED_S + FINAL_EVALS * max(workers, 1) * seconds / max(evals, 1))
    return reserve


class _Clock:
    def __init__(self):
        self.t0 = self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        lap, self.t = now - self.t, now
        return lap

    def total(self) -> float:
        return time.perf_counter() - self.t0


# ------------------------------------------------------------------------------ prepare
def prepare(dataset: Dataset, cfg: SearchConfig, out_dir, engine: str, data_dir, report: bool, llm,
            resume: bool) -> Stage:
    """Open or create the run folder, write the start files, and build the search's parts."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "pysr":
        from lawforge.search.pysr_backend import require_pysr

        require_pysr()
    inferred = {}
    if not resume and cfg.checks.infer_trends:   # a resumed run's card holds them already
        dataset, inferred = with_inferred_trends(dataset)
    sealed = SealedDataset(dataset, cfg.seed)
    if resume:
        if out_dir is None:
            raise ConfigError("resume needs the run folder")
        run = RunFolder.open(out_dir)
        lock = run.lock()
        ck = run.checkpoint()
        if ck.get("status") == "done":
            lock.release()
            raise ConfigError(f"{run.path}: this run is already complete (see metrics.json)")
    else:
        run, ck = RunFolder.create(out_dir, dataset.name, cfg.seed), None
        lock = run.lock()
        try:
            RunFolder.create(run.path, dataset.name, cfg.seed)  # again, now that no other process can start one
        except ConfigError:
            lock.release()
            raise
        config = {"dataset": dataset.name, "card": dataset.card.to_dict(), "engine": engine,
                  "settings": cfg.to_dict(), "validation_rows": sealed.val.n, "fit_rows": sealed.fit.n,
                  "data_dir": str(data_dir) if data_dir else os.environ.get("LAWFORGE_DATA"),
                  "data_origin": dataset.origin, "report": report, "llm": llm.to_dict() if llm else None}
        run.write_start(config, card_yaml(dataset.card), manifest(sealed, cfg, engine))
    st = Stage(dataset, cfg, run, engine, sealed, checkpoint=ck, lock=lock,
               trends={c: i.text() for c, i in inferred.items()})
    try:
        st.space = build_space(sealed, cfg)
        st.ctx = make_context(sealed, cfg)
        if llm is not None:
            from lawforge.agent.llm import LLMProposer

            st.proposer = LLMProposer(llm, dataset.card, st.space, run.llm_calls_path, run.llm_cache_dir)
    except BaseException:
        lock.release()
        raise
    return st


def manifest(ds: SealedDataset, cfg: SearchConfig, engine: str) -> dict:
    import torch

    device = resolve_device(cfg.fitting.device)
    gpu = {"gpu": torch.cuda.get_device_name(torch.device(device))} if device.startswith("cuda") else {}
    return {"lawforge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": np.__version__, "sympy": sp.__version__, "torch": torch.__version__,
            "device": device, **gpu, "seed": cfg.seed, "engine": engine, "dataset": ds.name,
            "data_hash": ds.data_hash, "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}


# ------------------------------------------------------------------------------ search
def search(st: Stage, progress: Callable[[dict], None] | None, handle_sigint: bool,
           cfg: SearchConfig | None = None) -> SearchResult:
    """The evolutionary loop, every candidate appended to the log, a checkpoint per generation;
    ``cfg`` (default: the run's) may carry a tighter time limit (:func:`search_budget`)."""
    cfg, run, proposer = cfg or st.cfg, st.run, st.proposer
    logged: list[dict] = []
    cache: dict[str, dict] = {}
    if st.checkpoint is not None:
        logged, cache = run.split_log_at(int(st.checkpoint["evaluations"]))
        if proposer is not None:
            proposer.restore(st.checkpoint.get("ledger") or {}, st.checkpoint.get("llm_pending") or [])
    extra: list[tuple[sp.Expr, str]] = []
    if st.engine == "pysr" and st.checkpoint is None:  # pragma: no cover - needs Julia
        from lawforge.search.pysr_backend import pysr_candidates

        extra = [(S.from_law(lw), "pysr") for lw, _ in pysr_candidates(st.sealed, cfg)]
    log_f = run.open_log()
    counter = [len(logged)]

    def on_eval(m):
        rec = {k: v for k, v in m.rec.items() if k not in ("params", "tree", "key", "index", "origin")}
        rec.update(origin=m.origin, index=counter[0], key=m.key, tree=S.to_tree(m.expr))
        counter[0] += 1
        log_f.append(rec)

    def on_gen(gen, pop, evals, secs):
        best = min((m for m in pop if m.ok), key=lambda m: m.score(cfg.evolution.parsimony))
        if progress:
            progress({"generation": gen, "evaluations": evals, "best_val_r2": best.rec["val_r2"],
                      "cand_per_s": evals / max(secs, 1e-9), "seconds": secs,
                      "llm_spend": proposer.spend_text() if proposer else None})

    def checkpoint(snap: dict) -> None:
        status = {None: "running", "interrupted": "interrupted"}.get(snap.get("stopped"), "searched")
        run.write_checkpoint({**snap, "status": status})
        if proposer is not None:
            run.write_json(LLM_USAGE, proposer.usage())

    stop = _StopFlag(handle_sigint)
    try:
        restore = (st.checkpoint["engine"], logged, cache) if st.checkpoint is not None else None
        return run_search(st.space, st.ctx, extra + seeds_for(st.sealed, st.space), cfg, on_eval, on_gen,
                          stop.is_set, restore=restore, reserve=final_reserve(cfg.workers, cfg.budget.seconds), llm=proposer,
                          checkpoint=checkpoint)
    finally:
        log_f.close()
        stop.restore()


class _StopFlag:
    """With ``active``, the first Ctrl-C (or SIGTERM, as a batch scheduler sends before its
    time limit) sets the flag (the search finishes its step and checkpoints); a second one
    stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, active: bool):
        self.stop = False
        self.old = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS} if active else {}

    def _on_signal(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    def is_set(self) -> bool:
        return self.stop

    def restore(self) -> None:
        for s, old in self.old.items():
            signal.signal(s, old)


# ------------------------------------------------------------------------------ score
def score_top_laws(choice: Choice, full: Dataset, train, cfg: SearchConfig,
                   deadline: float | None = None) -> list[dict]:
    """The chosen law and the ``selection.top_k`` next-ranked forms refit on all of train and
    scored on test once (for ``top_laws.json`` and ``laws.tex``; the choice was made before).
    With a ``deadline`` (a :func:`time.perf_counter` value) the runners-up are refit
    a few at a time (:func:`~lawforge.search.choose.by_chunks`) until then, and those not reached are left out."""
    best, law = choice.member, choice.law
    tm = test_metrics(law, choice.fit.params(), full)
    top = [{"rank": 0, "expression": law.to_string(), "latex": law.to_latex(), "n_params": law.n_params,
            "complexity": best.rec["complexity"], "val_r2": best.rec["val_r2"], "origin": best.origin,
            "test_r2": tm.get("r2"), "extrapolation_shift": choice.shift.get(best.key), "chosen": True,
            "params": choice.fit.params(), "_test": tm}]
    others = [m for m in choice.ranked if m.key != best.key][:cfg.selection.top_k]
    laws = [law_of(m, full.card, train, cfg, f"rank{i + 1}") for i, m in enumerate(others)]
    fits = by_chunks(laws, lambda chunk: fit_many([FitJob(lw, train, cfg.fitting.rank_restarts, cfg.seed) for lw in chunk],
                                                  device=resolve_device(cfg.fitting.device), errors="return"), deadline)
    for m, lw, f2 in zip(others, laws, fits):
        t2 = test_metrics(lw, f2.params(), full) if isinstance(f2, FitResult) and f2.ok else {}
        top.append({"rank": len(top), "expression": lw.to_string(), "latex": lw.to_latex(), "n_params": lw.n_params,
                    "complexity": m.rec["complexity"], "val_r2": m.rec["val_r2"], "origin": m.origin,
                    "test_r2": t2.get("r2"), "extrapolation_shift": choice.shift.get(m.key), "chosen": False,
                    "params": f2.params() if isinstance(f2, FitResult) and f2.ok else None})
    return top


def rule_counts(candidates: list[dict]) -> dict:
    """How many candidates each rule of the contract rejected (``rule``: a form rule made it
    ``invalid``, a probe rule ``unstable``) and how many fitted candidates broke each contract
    rule first (``contract_rule``: they rank lower), by rule id, most first; and the share of all
    candidates each rule rejected."""
    def count(key):
        out: dict[str, int] = {}
        for c in candidates:
            if c.get(key):
                out[c[key]] = out.get(c[key], 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    rejected = count("rule")
    share = {k: round(v / max(len(candidates), 1), 4) for k, v in rejected.items()}
    return {"rejected_by_rule": rejected, "rejected_share_by_rule": share,
            "contract_broken_by_rule": count("contract_rule")}


def test_metrics(law, params, full: Dataset) -> dict:
    """Test metrics as a dict, or Nones when the dataset has no test rows (in-memory data)."""
    if full.test.n == 0:
        return {"r2": None, "r2_raw": None, "nmse": None, "nmae": None}
    return compute_metrics(full.test.y, predict(law, params, full.test)).to_dict()


# ------------------------------------------------------------------------------ write
def write_results(st: Stage, res: SearchResult, choice: Choice, full: Dataset, top: list[dict],
                  ensemble: list | None = None) -> dict:
    """law.json, top_laws.json, ensemble.json (when there is one) and metrics.json; the checkpoint
    marked done. Returns the summary."""
    cfg, run, best, law, fit = st.cfg, st.run, choice.member, choice.law, choice.fit
    params = fit.params()
    tm = top[0].pop("_test")
    trm = compute_metrics(full.train.y, predict(law, params, full.train))
    run.write_json(LAW, {"expression": law.to_string(), "form": sp.sstr(best.expr), "latex": law.to_latex(),
                                "python": law.to_python(), "n_params": law.n_params, "params": params,
                                "shared_params": [p.name for p in law.params if p.shared], "origin": best.origin,
                                "fit_status": {g: gf.status for g, gf in fit.groups.items()},
                                "contract": choice.contract.to_dict() if choice.contract is not None else None,
                                "incumbent": choice.incumbent, "reference": choice.reference},
                   default=float)
    run.write_json(TOP_LAWS, top, default=float)
    ens_test = None
    if ensemble:
        run.write_json(ENSEMBLE, {"weights": "1 / validation NMSE (validation carve and extra folds, refit there)",
                                  "members": [{"expression": m.law.to_string(), "origin": m.origin,
                                               "n_params": m.law.n_params, "val_nmse": m.val_nmse,
                                               "weight": m.weight, "params": m.params} for m in ensemble]},
                       default=float)
        if full.test.n:
            ens_test = compute_metrics(full.test.y, ensemble_predict(ensemble, full.test)).r2
    summary = {"dataset": full.name, "law": law.to_string(), "n_params": law.n_params,
               "val_r2": best.rec["val_r2"], "test_r2": tm.get("r2"), "test_r2_raw": tm.get("r2_raw"),
               "test_nmse": tm.get("nmse"), "test_nmae": tm.get("nmae"), "train_r2": trm.r2,
               "evaluations": res.evaluations, "seconds": round(res.seconds, 2), "generations": res.generations,
               "stopped": res.stopped, "fallbacks": choice.fallbacks, "select": cfg.selection.rule,
               "contract_ok": choice.contract.ok if choice.contract is not None else None,
               "incumbent": (choice.incumbent or {}).get("chosen"),
               "reference": choice.reference,
               "ensemble_size": len(ensemble or []), "ensemble_test_r2": ens_test,
               "extrapolation_shift": choice.shift.get(best.key), "seed": cfg.seed, "engine": st.engine,
               "run_dir": str(run.path), "timings": {k: round(v, 2) for k, v in st.timings.items()}}
    if st.trends:
        summary["inferred_trends"] = st.trends
    summary.update(rule_counts(run.read_candidates()))
    if st.proposer is not None:
        summary["llm"] = st.proposer.usage()
    run.write_json(METRICS, summary)
    run.mark_done()
    return summary
