"""``lawforge discover``: search on a sealed dataset, then refit the chosen law and score test once."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import os
import platform
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sympy as sp

from lawforge import __version__
from lawforge.datasets.loader import Dataset, SealedDataset
from lawforge.errors import ConfigError
from lawforge.evaluators.fit import fit_law, predict
from lawforge.evaluators.metrics import compute_metrics
from lawforge.search import space as S
from lawforge.search.evaluate import (BETWEEN_TOL, EvalContext, cross_trend_chains, make_between_probe,
                                      make_domain_probe, make_probe, make_trend_probe, probe_stats)
from lawforge.search.native import SearchConfig, run_search

log = logging.getLogger(__name__)
ENGINES = ("native", "pysr")


def parse_budget(text: str | None) -> float | None:
    """'90s', '5m', '1h', '300' (seconds) -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget must look like 90s, 5m or 1h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# Shared parameters (``s0``...) are searched on datasets with 2..MAX_SHARED_GROUPS groups. A law
# with a shared parameter is fitted as one dense problem over all groups: on sft's 42 groups one
# such fit took 1.25 s against 0.24 s per group, and the 60 s sft search fell from 741 to 261
# evaluations; with 2 to 9 groups (parallel, easy_question) it costs about the same.
MAX_SHARED_GROUPS = 16


def build_space(ds: SealedDataset, cfg: SearchConfig | None = None) -> S.Space:
    infos = []
    for f in ds.card.features:
        v = ds.train.X[f.column]
        infos.append(S.VarInfo(f.symbol, bool(np.all(v > 0)), bool(np.max(np.abs(v)) <= 50),
                               f.role == "hyperparameter"))
    return S.Space(infos, n_targets=len(ds.card.targets), param_limit=ds.card.param_limit,
                   grouped=(cfg is None or cfg.scope) and 1 < len(np.unique(ds.train.groups)) <= MAX_SHARED_GROUPS)


def seeds_for(ds: SealedDataset, space: S.Space) -> list[tuple[sp.Expr, str]]:
    out: list[tuple[sp.Expr, str]] = []
    for h in ds.card.human_laws:
        law, _ = ds.card.human_law(h.name)
        e = S.from_law(law)
        if e is not None:
            out.append((e, f"human:{h.name}"))
        elif len(law.exprs) > 1:  # per-target law: seed with its first target's form
            first = next(iter(law.exprs.values()))
            names = [p.name for p in law.params if make_param_in(first, p.name)]
            ren = {sp.Symbol(n, real=True): S.P(i) for i, n in enumerate(names)}
            out.append((first.xreplace(ren), f"human:{h.name}"))
    out += [(e, "seed:generic") for e in S.generic_seeds(space)]
    return out


def make_context(sealed: SealedDataset, cfg: SearchConfig) -> EvalContext:
    """What every candidate is scored with: the fit/validation parts, the rolling-origin folds,
    and the probe and trend points beyond the train range (all from train)."""
    card = sealed.card
    axis = card.validation.get("axis")
    # scale datasets: points beyond the train range; mixture-type (no axis): points between and
    # across the groups' measured points, with a wider band (BETWEEN_TOL)
    probe = make_probe(sealed.train, axis) if axis else make_between_probe(sealed.train) if cfg.between else None
    probe_tol = EvalContext.probe_tol if axis else BETWEEN_TOL
    domain = make_domain_probe(sealed.train) if not axis and cfg.domain else None
    center, span = probe_stats(sealed.train, probe) if probe is not None else (None, None)
    hyper = [f.column for f in card.features if f.role == "hyperparameter"] if cfg.trend_best else []
    trends = {f.column: f.trend for f in card.features if f.trend}
    trend = make_trend_probe(sealed.train, trends, hyper) if cfg.trend else None
    cross = cross_trend_chains(trend, trends, hyper) if cfg.cross_trend else None
    tspan = probe_stats(sealed.train, trend[0])[1] if trend is not None else None
    folds = sealed.extra_folds(max(0, cfg.val_folds - 1))
    fit, val = sealed.fit, sealed.val
    if replicate_means(cfg):
        fit, val = fit.cell_means(), val.cell_means()
        folds = [(f.cell_means(), v.cell_means()) for f, v in folds]
    return EvalContext(dict(card.variables), card.target_columns, fit, val,
                       restarts=cfg.restarts, max_iter=cfg.max_iter, probe=probe, probe_tol=probe_tol,
                       probe_center=center, probe_span=span, folds=folds,
                       trend=trend, trend_span=tspan, returns=cfg.returns, cross_trend=cross,
                       scale_starts=cfg.scale_starts, domain=domain)


def final_train(sealed: SealedDataset, cfg: SearchConfig):
    """The split the chosen law is refit on after the search: all of train, as cell means when
    ``cfg.replicates`` is ``mean``."""
    return sealed.train.cell_means() if replicate_means(cfg) else sealed.train


def config_of_run(conf: dict) -> SearchConfig:
    """The search settings recorded in a run's ``config.json``. A run started before the
    ``replicates`` setting existed used every row; one started before ``scale_starts``, unit
    starts; one started before ``trend_best``, the trend checked on every row; one started before
    ``select``, the final choice by validation score; one started before ``scope``, per-group
    parameters only; one started before ``between``, no probe on datasets without a scale axis;
    one started before ``domain``, no finiteness check over their feature domain."""
    conf = {"replicates": "rows", "scale_starts": False, "trend_best": False, "select": "score", "scope": False,
            "between": False, "domain": False, **conf}
    return SearchConfig(**{k: conf[k] for k in SearchConfig.__dataclass_fields__ if k in conf})


def replicate_means(cfg: SearchConfig) -> bool:
    """Whether replicate rows are averaged into one per design point (``cfg.replicates``)."""
    if cfg.replicates not in ("rows", "mean"):
        raise ConfigError(f"replicates must be 'rows' or 'mean', got {cfg.replicates!r}")
    return cfg.replicates == "mean"


def select_stable(cfg: SearchConfig) -> bool:
    """Whether the final choice re-ranks the top forms by extrapolation shift (``cfg.select``)."""
    if cfg.select not in ("stable", "score"):
        raise ConfigError(f"select must be 'stable' or 'score', got {cfg.select!r}")
    return cfg.select == "stable"


def shift_measurable(ctx: EvalContext, axis) -> bool:
    """Whether an extrapolation shift means something here: there are probe points, and the fit
    part (train without the validation carve) holds at least three values of every scale axis.
    With one value a form's trend along the axis is not fitted at all, and with two any
    two-parameter curve passes through them; forms flat along the axis would then look the most
    stable."""
    if ctx.probe is None or not axis:
        return False
    axes = axis if isinstance(axis, list) else [axis]
    return all(len(np.unique(ctx.fit.X[a])) >= 3 for a in axes)


def make_param_in(expr: sp.Expr, name: str) -> bool:
    return any(s.name == name for s in expr.free_symbols)


def _manifest(ds: SealedDataset, cfg: SearchConfig, engine: str) -> dict:
    import torch

    return {"lawforge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": np.__version__, "sympy": sp.__version__, "torch": torch.__version__,
            "device": "cpu", "seed": cfg.seed, "engine": engine, "dataset": ds.name,
            "data_hash": ds.data_hash, "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def discover(dataset: Dataset, cfg: SearchConfig, out_dir: str | Path | None = None, engine: str = "native",
             progress: Callable[[dict], None] | None = None, final_restarts: int = 64,
             data_dir: str | None = None, report: bool = True, top_k: int = 5, llm=None,
             resume: bool = False, handle_sigint: bool = False) -> dict[str, Any]:
    """Run a discovery on ``dataset`` and write its run folder; return the summary.

    The search checkpoints after every generation (``checkpoint.json``; every evaluated
    candidate is in the append-only ``candidates.jsonl``). ``resume=True`` continues the run in
    ``out_dir`` from its checkpoint: candidates evaluated after it are reused, not lost, and with
    an evaluation budget and no LLM the resumed run ends with the same law as an uninterrupted
    one. ``handle_sigint``: the first Ctrl-C finishes the current step, checkpoints and returns
    a summary with ``stopped == "interrupted"``.

    After the search, the chosen law and the ``top_k`` next-ranked forms are refit on the whole
    train split and scored on test once (for ``top_laws.json`` and ``laws.tex``; the choice was
    made before, on validation). ``report`` writes ``report.html`` and ``report.md``."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "pysr":
        from lawforge.search.pysr_backend import require_pysr

        require_pysr()
    sealed = SealedDataset(dataset, cfg.seed)
    if resume:
        if out_dir is None:
            raise ConfigError("resume needs the run folder")
        run_dir = Path(out_dir)
        ck = _read_checkpoint(run_dir)
        if ck.get("status") == "done":
            raise ConfigError(f"{run_dir}: this run is already complete (see metrics.json)")
    else:
        run_id = f"{dataset.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}"
        run_dir = Path(out_dir) if out_dir else Path("runs") / run_id
        if (run_dir / "candidates.jsonl").exists() or (run_dir / "checkpoint.json").exists():
            raise ConfigError(f"{run_dir} already holds a run; continue it with 'lawforge resume {run_dir}' "
                              f"or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        ck = None
    extra_seeds: list[tuple[sp.Expr, str]] = []
    if engine == "pysr" and not resume:  # pragma: no cover - needs Julia
        from lawforge.search.pysr_backend import pysr_candidates

        extra_seeds = [(S.from_law(lw), "pysr") for lw, _ in pysr_candidates(sealed, cfg)]
    if not resume:
        config = {"dataset": dataset.name, "card": dataset.card.to_dict(), "engine": engine, **asdict(cfg),
                  "final_restarts": final_restarts, "validation_rows": sealed.val.n, "fit_rows": sealed.fit.n,
                  "data_dir": str(data_dir) if data_dir else os.environ.get("LAWFORGE_DATA"),
                  "data_origin": dataset.origin, "report": report, "top_k": top_k,
                  "llm": llm.to_dict() if llm else None}
        _atomic_write(run_dir / "config.json", json.dumps(config, indent=2, default=str))
        from lawforge.datasets.byo import write_card

        write_card(dataset.card, run_dir / "card.yaml")
        _atomic_write(run_dir / "manifest.json", json.dumps(_manifest(sealed, cfg, engine), indent=2))
    space = build_space(sealed, cfg)
    ctx = make_context(sealed, cfg)
    proposer = None
    if llm is not None:
        from lawforge.agent.llm import LLMProposer

        proposer = LLMProposer(llm, dataset.card, space, run_dir)
    cache: dict[str, dict] = {}
    logged: list[dict] = []
    if resume:
        logged, cache = _prepare_resume(run_dir, int(ck["evaluations"]))
        if proposer is not None:
            proposer.restore(ck.get("ledger") or {}, ck.get("llm_pending") or [])
    log_f = open(run_dir / "candidates.jsonl", "a")
    counter = [len(logged)]

    def on_eval(m):
        rec = {k: v for k, v in m.rec.items() if k not in ("params", "tree", "key", "index", "origin")}
        rec.update(origin=m.origin, index=counter[0], key=m.key, tree=S.to_tree(m.expr))
        counter[0] += 1
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()

    def on_gen(gen, pop, evals, secs):
        best = min((m for m in pop if m.ok), key=lambda m: m.score(cfg.parsimony))
        if progress:
            progress({"generation": gen, "evaluations": evals, "best_val_r2": best.rec["val_r2"],
                      "cand_per_s": evals / max(secs, 1e-9), "seconds": secs,
                      "llm_spend": proposer.ledger.spend_text() if proposer else None})

    def checkpoint(snap: dict) -> None:
        status = {None: "running", "interrupted": "interrupted"}.get(snap.get("stopped"), "searched")
        _atomic_write(run_dir / "checkpoint.json", json.dumps({**snap, "status": status}, default=float))
        if proposer is not None:
            _atomic_write(run_dir / "llm_usage.json", json.dumps(proposer.ledger.to_dict(), indent=2))

    flag = {"stop": False}
    old_handler = None
    if handle_sigint:
        import signal

        def on_sigint(signum, frame):
            if flag["stop"]:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            flag["stop"] = True
            print("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop now)",
                  file=sys.stderr, flush=True)

        old_handler = signal.signal(signal.SIGINT, on_sigint)
    seeds = extra_seeds + seeds_for(sealed, space)
    try:
        restore = (ck["engine"], logged, cache) if resume else None
        res = run_search(space, ctx, seeds, cfg, on_eval, on_gen, lambda: flag["stop"], restore=restore, llm=proposer,
                         checkpoint=checkpoint)
    finally:
        log_f.close()
        if old_handler is not None:
            import signal

            signal.signal(signal.SIGINT, old_handler)
    if res.stopped == "interrupted":
        return {"dataset": dataset.name, "stopped": "interrupted", "evaluations": res.evaluations,
                "seconds": round(res.seconds, 2), "run_dir": str(run_dir)}
    with open(run_dir / "pareto.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["complexity", "n_params", "val_r2", "val_nmse", "expression"])
        for m in res.front:
            w.writerow([m.rec["complexity"], m.rec["n_params"], m.rec["val_r2"], m.rec["val_nmse"], sp.sstr(m.expr)])
    ok = sorted((m for m in res.members if m.ok), key=lambda m: m.score(cfg.parsimony))
    if not ok:
        raise ConfigError(f"{dataset.name}: no candidate could be fitted")
    train = final_train(sealed, cfg)

    def law_of(m, name="discovered"):
        return S.to_law(m.expr, dict(dataset.card.variables), dataset.card.target_columns, name=name,
                        data=train if cfg.scale_starts else None)

    shift: dict[str, float] = {}
    if select_stable(cfg) and shift_measurable(ctx, dataset.card.validation.get("axis")):
        # among the top forms by validation score (within 2x the best), prefer the one whose
        # extrapolation moves least when the validation carve is added to its fit (train only)
        from lawforge.search.evaluate import stable_order

        ranked = ok
        ok, by_pos = stable_order(ranked, [m.score(cfg.parsimony) for m in ranked], law_of, ctx, train)
        shift = {ranked[i].key: s for i, s in by_pos.items()}
    # Final: refit the chosen form on the whole train split (the probe check is repeated on this
    # refit; an unstable refit falls back to the next-ranked form), then read test once.
    from lawforge.search.evaluate import _stable

    fallback, first = 0, None
    for best in ok[:10]:
        law = law_of(best)
        fit = fit_law(law, train, restarts=final_restarts, seed=cfg.seed)
        first = first or (best, law, fit)
        tcols = [sealed.train.target_columns.index(t) for t in law.target_names]
        if fit.ok and (not ctx.checks or _stable(law, fit.params(), ctx, tcols)):
            break
        fallback += 1
    else:  # none stable: keep the top-ranked form (already refit)
        best, law, fit = first
    params = fit.params()
    full = sealed.unseal()
    tm = _test_metrics(law, params, full)
    trm = compute_metrics(full.train.y, predict(law, params, full.train))
    law_json = {"expression": law.to_string(), "form": sp.sstr(best.expr), "latex": law.to_latex(),
                "python": law.to_python(), "n_params": law.n_params, "params": params,
                "shared_params": [p.name for p in law.params if p.shared], "origin": best.origin,
                "fit_status": {g: gf.status for g, gf in fit.groups.items()}}
    _atomic_write(run_dir / "law.json", json.dumps(law_json, indent=2, default=float))
    top = [{"rank": 0, "expression": law.to_string(), "latex": law.to_latex(), "n_params": law.n_params,
            "complexity": best.rec["complexity"], "val_r2": best.rec["val_r2"], "origin": best.origin,
            "test_r2": tm.get("r2"), "extrapolation_shift": shift.get(best.key), "chosen": True}]
    for m in ok:
        if len(top) > top_k:
            break
        if m.key == best.key:
            continue
        lw = law_of(m, f"rank{len(top)}")
        f2 = fit_law(lw, train, restarts=16, seed=cfg.seed)
        t2 = _test_metrics(lw, f2.params(), full) if f2.ok else {}
        top.append({"rank": len(top), "expression": lw.to_string(), "latex": lw.to_latex(), "n_params": lw.n_params,
                    "complexity": m.rec["complexity"], "val_r2": m.rec["val_r2"], "origin": m.origin,
                    "test_r2": t2.get("r2"), "extrapolation_shift": shift.get(m.key), "chosen": False})
    _atomic_write(run_dir / "top_laws.json", json.dumps(top, indent=2, default=float))
    from lawforge.report import laws_table_tex

    _atomic_write(run_dir / "laws.tex", laws_table_tex(top, dataset.name))
    summary = {"dataset": dataset.name, "law": law.to_string(), "n_params": law.n_params,
               "val_r2": best.rec["val_r2"], "test_r2": tm.get("r2"), "test_r2_raw": tm.get("r2_raw"),
               "test_nmse": tm.get("nmse"), "test_nmae": tm.get("nmae"), "train_r2": trm.r2,
               "evaluations": res.evaluations, "seconds": round(res.seconds, 2), "generations": res.generations,
               "stopped": res.stopped, "fallbacks": fallback, "select": cfg.select,
               "extrapolation_shift": shift.get(best.key), "seed": cfg.seed, "engine": engine, "run_dir": str(run_dir)}
    if proposer is not None:
        summary["llm"] = proposer.ledger.to_dict()
    _atomic_write(run_dir / "metrics.json", json.dumps(summary, indent=2))
    ck_path = run_dir / "checkpoint.json"
    if ck_path.exists():
        _atomic_write(ck_path, json.dumps({**json.loads(ck_path.read_text()), "status": "done"}))
    if report:
        try:
            from lawforge.report import write_report

            write_report(run_dir, dataset=full)
        except Exception as exc:  # a report must never cost the run its results
            log.warning("report not written: %s: %s", type(exc).__name__, exc)
    return summary


def _read_checkpoint(run_dir: Path) -> dict:
    p = run_dir / "checkpoint.json"
    if not p.is_file():
        raise ConfigError(f"{run_dir}: no checkpoint.json; not a lawforge run folder, or it stopped before "
                          f"its first step (start it again)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: unreadable checkpoint ({exc.msg})") from None


def read_log(path: Path) -> list[dict]:
    """The candidate log's complete records (a torn last line, from a kill, is dropped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "key" in rec and "tree" in rec:
            out.append(rec)
    return out


def _prepare_resume(run_dir: Path, committed: int) -> tuple[list[dict], dict[str, dict]]:
    """Split the log at the checkpoint: the committed records stay in ``candidates.jsonl``;
    later ones (evaluated before the interruption, after the checkpoint) are kept in
    ``candidates.pending.jsonl`` and returned as a cache, so nothing evaluated is lost."""
    log_path, pend_path = run_dir / "candidates.jsonl", run_dir / "candidates.pending.jsonl"
    recs = read_log(log_path)
    if len(recs) < committed:
        raise ConfigError(f"{log_path}: {len(recs)} complete records, but the checkpoint needs {committed}")
    pending = {r["key"]: r for r in read_log(pend_path)}
    for r in recs[committed:]:
        pending[r["key"]] = r
    _atomic_write(pend_path, "".join(json.dumps(r) + "\n" for r in pending.values()))
    _atomic_write(log_path, "".join(json.dumps(r) + "\n" for r in recs[:committed]))
    return recs[:committed], pending


def _test_metrics(law, params, full: Dataset) -> dict:
    """Test metrics as a dict, or Nones when the dataset has no test rows (in-memory data)."""
    if full.test.n == 0:
        return {"r2": None, "r2_raw": None, "nmse": None, "nmae": None}
    return compute_metrics(full.test.y, predict(law, params, full.test)).to_dict()
