"""The native evolutionary search: seeds, mutation/crossover, fit on ``fit``, rank on ``val``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from lawforge.errors import LawforgeError
from lawforge.search import space as S
from lawforge.search.evaluate import EvalContext, evaluate

log = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    max_evals: int | None = 600
    budget_s: float | None = None
    seed: int = 0
    population: int = 32
    offspring: int = 32
    tournament: int = 3
    crossover_rate: float = 0.2
    parsimony: float = 0.02          # score = val NMSE * (1 + parsimony * complexity)
    restarts: int = 6
    max_iter: int = 60
    workers: int = 1


@dataclass
class Member:
    expr: sp.Expr
    key: str
    rec: dict
    origin: str

    @property
    def ok(self) -> bool:
        return self.rec["status"] == "ok"

    def score(self, parsimony: float) -> float:
        if not self.ok:
            return float("inf")
        return max(self.rec["val_nmse"], 0.0) * (1 + parsimony * self.rec["complexity"])


@dataclass
class SearchResult:
    members: list[Member]
    evaluations: int
    seconds: float
    generations: int
    stopped: str
    front: list[Member] = field(default_factory=list)


def pareto_front(members: list[Member]) -> list[Member]:
    """Non-dominated members in (complexity, validation NMSE), sorted by complexity."""
    ok = sorted((m for m in members if m.ok), key=lambda m: (m.rec["complexity"], m.rec["val_nmse"]))
    front, best = [], float("inf")
    for m in ok:
        if m.rec["val_nmse"] < best:
            front.append(m)
            best = m.rec["val_nmse"]
    return front


class _Pool:
    """Evaluates candidates in order, in this process or in worker processes."""

    def __init__(self, ctx: EvalContext, workers: int):
        self.ctx = ctx
        self.ex = None
        if workers > 1:
            import concurrent.futures as cf
            import multiprocessing as mp

            self.ex = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(ctx,))

    def map(self, texts: list[str]) -> list[dict]:
        if self.ex is None:
            return [evaluate(t, self.ctx) for t in texts]
        return list(self.ex.map(_eval_in_worker, texts, chunksize=max(1, len(texts) // 8)))

    def close(self):
        if self.ex is not None:
            self.ex.shutdown(cancel_futures=True)


_CTX: EvalContext | None = None


def _init_worker(ctx: EvalContext) -> None:
    global _CTX
    import torch

    torch.set_num_threads(1)
    _CTX = ctx


def _eval_in_worker(text: str) -> dict:
    return evaluate(text, _CTX)


def run_search(space: S.Space, ctx: EvalContext, seeds: list[tuple[sp.Expr, str]], cfg: SearchConfig,
               on_eval: Callable[[Member], None] | None = None,
               on_generation: Callable[[int, list[Member], int, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> SearchResult:
    """Evolve forms until ``max_evals`` evaluations or ``budget_s`` seconds.

    ``on_eval`` sees every evaluated member in order (for the append-only log); the same seed
    and ``max_evals`` give the same sequence of candidates and the same result on the CPU.
    """
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
    t0 = time.perf_counter()
    seen: dict[str, Member] = {}
    members: list[Member] = []
    evals = 0
    pool = _Pool(ctx, cfg.workers)

    def out_of_budget() -> str | None:
        if cfg.max_evals is not None and evals >= cfg.max_evals:
            return "max_evals"
        if cfg.budget_s is not None and time.perf_counter() - t0 >= cfg.budget_s:
            return "budget"
        if should_stop is not None and should_stop():
            return "interrupted"
        return None

    def run_batch(batch: list[tuple[sp.Expr, str]]) -> list[Member]:
        nonlocal evals
        if cfg.max_evals is not None:
            batch = batch[:max(0, cfg.max_evals - evals)]
        recs = pool.map([sp.sstr(e) for e, _ in batch])
        out = []
        for (e, origin), rec in zip(batch, recs):
            m = Member(e, S.key(e), rec, origin)
            seen[m.key] = m
            members.append(m)
            evals += 1
            out.append(m)
            if on_eval:
                on_eval(m)
        return out

    try:
        first = []
        seeds = [(S.canonical(e), o) for e, o in seeds]
        # seeds may be larger than random forms: let the search keep (and edit) them
        space.max_nodes = max(space.max_nodes, *(S.complexity(e) + 8 for e, _ in seeds)) if seeds else space.max_nodes
        for e, origin in seeds:
            e = S.canonical(e)
            k = S.key(e)
            if k not in seen and k not in {S.key(x) for x, _ in first} and S.valid(e, space):
                first.append((e, origin))
        population = [m for m in run_batch(first)]
        gen = 0
        stopped = out_of_budget()
        while stopped is None:
            gen += 1
            alive = sorted((m for m in population if m.ok), key=lambda m: m.score(cfg.parsimony))
            if not alive:
                raise LawforgeError("no seed form could be fitted on this dataset")
            children: list[tuple[sp.Expr, str]] = []
            keys = set()
            tries = 0
            while len(children) < cfg.offspring and tries < cfg.offspring * 20:
                tries += 1
                a = _tournament(alive, rng, cfg)
                try:
                    if rng.random() < cfg.crossover_rate and len(alive) > 1:
                        b = _tournament(alive, rng, cfg)
                        child, op = S.crossover(a.expr, b.expr, space, rng), "crossover"
                    else:
                        op = list(S.MUTATIONS)[rng.integers(len(S.MUTATIONS))]
                        child = S.MUTATIONS[op](a.expr, space, rng)
                    child = S.canonical(child)
                except (TypeError, ValueError, AttributeError, RecursionError, ZeroDivisionError):
                    continue
                if not S.valid(child, space):
                    continue
                k = S.key(child)
                if k in seen or k in keys:
                    continue
                keys.add(k)
                children.append((child, op))
            if not children:
                stopped = "exhausted"
                break
            new = run_batch(children)
            pool_members = {m.key: m for m in population + new}
            ranked = sorted(pool_members.values(), key=lambda m: m.score(cfg.parsimony))
            front_keys = {m.key for m in pareto_front(list(pool_members.values()))}
            keep = ranked[:cfg.population]
            keep += [m for m in ranked[cfg.population:] if m.key in front_keys]
            population = keep
            if on_generation:
                on_generation(gen, population, evals, time.perf_counter() - t0)
            stopped = out_of_budget()
    finally:
        pool.close()
    return SearchResult(members, evals, time.perf_counter() - t0, gen, stopped or "done",
                        pareto_front(members))


def _tournament(alive: list[Member], rng, cfg: SearchConfig) -> Member:
    idx = rng.integers(len(alive), size=min(cfg.tournament, len(alive)))
    return min((alive[i] for i in idx), key=lambda m: m.score(cfg.parsimony))
