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
from lawforge.search.candidates import CandidateContext
from lawforge.search.proposer import SearchView
from lawforge.search.pool import CandidatePool, single_thread_torch
from lawforge.search.settings import SearchConfig

log = logging.getLogger(__name__)


#: A form that breaks the readable-law contract competes with its validation error times this:
#: rejecting such forms outright left some datasets with no fitted seed at all (obsscaling, where
#: every saturating form's fitted asymptote passed 1 somewhere beyond the data). Not tuned.
CONTRACT_PENALTY = 3.0


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
        """Validation NMSE times the parsimony factor, times :data:`CONTRACT_PENALTY` for a form
        that breaks the readable-law contract on its search fit (it can still win, by a lot)."""
        if not self.ok:
            return float("inf")
        pen = CONTRACT_PENALTY if self.rec.get("contract") is False else 1.0
        return max(self.rec["val_nmse"], 0.0) * (1 + parsimony * self.rec["complexity"]) * pen


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


class Engine:
    """The evolutionary search as explicit steps over explicit state (for the campaign graph).

    ``seed_population`` evaluates the seeds; each generation is ``propose`` (children from the
    population, with the RNG), ``fit_and_score`` (in order) and ``select``. The whole
    state (members, population, RNG, counters) can be saved with :meth:`state_dict` after any
    generation and restored with :meth:`restore`; ``cache`` holds results evaluated after the
    last checkpoint (read back from the candidate log), which are reused, not refit, when the
    resumed search proposes them again.
    """

    def __init__(self, space: S.Space, ctx: CandidateContext, seeds: list[tuple[sp.Expr, str]], cfg: SearchConfig,
                 on_eval: Callable[[Member], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 reserve: Callable[[int, float], float] | None = None):
        self.space, self.ctx, self.cfg = space, ctx, cfg
        self.reserve = reserve
        self.on_eval, self.should_stop = on_eval, should_stop
        self.rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
        self.seen: dict[str, Member] = {}
        self.members: list[Member] = []
        self.population: list[Member] = []
        self.evals = 0
        self.generation = 0
        self.elapsed_before = 0.0
        self.t0 = time.perf_counter()
        self.cache: dict[str, dict] = {}
        self.pool = CandidatePool(ctx, cfg.workers, cfg.ray)
        # A card's law is fitted as published: canonicalising it can change its parameterisation
        # (``p3/D**p4`` becomes ``D**p4*p3`` with the sign of the exponent absorbed, ``(1 - p0)``
        # a free parameter), which would void its own inits and bounds (``ctx.seed_specs``, keyed
        # by the published form's text). Every other seed, and every child, is canonical.
        published = set(ctx.seed_specs or {})
        self.seeds = [(e if sp.sstr(e) in published else S.canonical(e), o) for e, o in seeds]
        # seeds may be larger than random forms: let the search keep (and edit) them
        if self.seeds:
            space.max_nodes = max(space.max_nodes, *(S.complexity(e) + 8 for e, _ in self.seeds))

    # -- budget
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def out_of_budget(self) -> str | None:
        if self.cfg.budget.max_evals is not None and self.evals >= self.cfg.budget.max_evals:
            return "max_evals"
        if self.cfg.budget.seconds is not None and self._time_left()[1] <= 0:
            return "budget"
        if self.should_stop is not None and self.should_stop():
            return "interrupted"
        return None

    def room(self) -> int | None:
        """Under a time budget, how many more forms the search can fit before it should stop
        (:meth:`out_of_budget`), at its pace so far (at least 1); None without a time budget or
        before any pace is measured. A generation is cut to it, so that the search does not
        overrun its budget by most of a generation where one takes long (porian's 15 groups:
        about 24 s of a 2-minute budget)."""
        if self.cfg.budget.seconds is None or not self.evals:
            return None
        spent, left = self._time_left()
        return max(1, int(left * self.evals / max(spent, 1e-9)))

    def _time_left(self) -> tuple[float, float]:
        """(seconds spent, seconds left before the search should stop): the time budget less
        what is spent and the final stages' reserve (none before any pace is measured)."""
        spent = self.elapsed()
        later = self.reserve(self.evals, spent) if self.reserve is not None and self.evals else 0.0
        return spent, self.cfg.budget.seconds - spent - later

    # -- steps
    def fit_and_score(self, batch: list[tuple[sp.Expr, str]]) -> list[Member]:
        if self.cfg.budget.max_evals is not None:
            batch = batch[:max(0, self.cfg.budget.max_evals - self.evals)]
        room = self.room()
        if room is not None:
            batch = batch[:room]
        keys = [S.key(e) for e, _ in batch]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        recs: list[dict | None] = [self.cache.get(k) for k in keys]
        for i, rec in zip(todo, self.pool.map([sp.sstr(batch[i][0]) for i in todo])):
            recs[i] = rec
        out = []
        for (e, origin), k, rec in zip(batch, keys, recs):
            cached = k in self.cache
            m = Member(e, k, self.cache.pop(k) if cached else rec, origin)
            if cached:
                m.origin = m.rec.get("origin", origin)
            self.seen[m.key] = m
            self.members.append(m)
            self.evals += 1
            out.append(m)
            if self.on_eval:
                self.on_eval(m)
        return out

    def seed_population(self) -> list[Member]:
        first: list[tuple[sp.Expr, str]] = []
        keys = set()
        for e, origin in self.seeds:
            k = S.key(e)
            if k not in self.seen and k not in keys and S.valid(e, self.space):
                keys.add(k)
                first.append((e, origin))
        self.population = self.fit_and_score(first)
        return self.population

    def propose(self, n: int | None = None) -> list[tuple[sp.Expr, str]]:
        """Up to ``n`` new forms (never seen before, canonical, valid): children of tournament
        winners from the population, by crossover or one mutation. When those give fewer than
        ``n`` new forms in ``20 n`` tries (a converged population whose every neighbour is
        seen), the rest are immigrants: two successive mutations of any form fitted so far, so
        that the search keeps exploring rather than stopping with budget left. An empty list
        means that neither found a new form."""
        cfg, rng = self.cfg, self.rng
        n = cfg.evolution.offspring if n is None else n
        alive = sorted((m for m in self.population if m.ok), key=lambda m: m.score(cfg.evolution.parsimony))
        if not alive:
            raise LawforgeError("no seed form could be fitted on this dataset")
        children: list[tuple[sp.Expr, str]] = []
        keys: set[str] = set()
        tries = 0
        while len(children) < n and tries < n * 20:
            tries += 1
            a = _tournament(alive, rng, cfg)
            try:
                if rng.random() < cfg.evolution.crossover_rate and len(alive) > 1:
                    b = _tournament(alive, rng, cfg)
                    child, op = S.crossover(a.expr, b.expr, self.space, rng), "crossover"
                else:
                    ops = S.mutations_for(self.space)
                    op = list(ops)[rng.integers(len(ops))]
                    child = ops[op](a.expr, self.space, rng)
                child = S.canonical(child)
            except (TypeError, ValueError, AttributeError, RecursionError, ZeroDivisionError):
                continue
            self._take(child, op, children, keys)
        if len(children) < n:
            self._immigrants(n - len(children), children, keys)
        return children

    def _take(self, child, op: str, children: list, keys: set) -> None:
        """Add ``child`` to ``children`` when it is valid and new."""
        if not S.valid(child, self.space):
            return
        k = S.key(child)
        if k in self.seen or k in keys:
            return
        keys.add(k)
        children.append((child, op))

    def _immigrants(self, n: int, children: list, keys: set) -> None:
        """Up to ``n`` forms two mutations away from a form drawn uniformly from every form
        fitted so far (not only the population's tournament winners)."""
        rng = self.rng
        archive = [m for m in self.members if m.ok] or [m for m in self.population if m.ok]
        ops = S.mutations_for(self.space)
        names = list(ops)
        want = len(children) + n
        tries = 0
        while len(children) < want and tries < n * 20:
            tries += 1
            child = archive[rng.integers(len(archive))].expr
            try:
                for _ in range(2):
                    child = ops[names[rng.integers(len(names))]](child, self.space, rng)
                child = S.canonical(child)
            except (TypeError, ValueError, AttributeError, RecursionError, ZeroDivisionError):
                continue
            self._take(child, "immigrant", children, keys)

    def admit(self, forms: list[tuple[sp.Expr, str]]) -> list[tuple[sp.Expr, str]]:
        """Forms from outside (LLM, PySR): canonical, valid, new; the rest dropped."""
        out, keys = [], set()
        for e, origin in forms:
            try:
                e = S.canonical(e)
            except (TypeError, ValueError, AttributeError, RecursionError, ZeroDivisionError):
                continue
            k = S.key(e)
            if S.valid(e, self.space) and k not in self.seen and k not in keys:
                keys.add(k)
                out.append((e, origin))
        return out

    def view(self, k: int = 8) -> SearchView:
        """What a :class:`~lawforge.search.proposer.Proposer` may read: the ``k`` best forms,
        the features' ranges over the fit rows, the group count, and :meth:`admit`."""
        ranked = sorted((m for m in self.members if m.ok), key=lambda m: m.score(self.cfg.evolution.parsimony))[:k]
        fit = self.ctx.fit
        return SearchView(best=[(m.expr, m.rec["val_r2"], m.rec["n_params"]) for m in ranked],
                          ranges={c: (float(np.min(v)), float(np.max(v))) for c, v in fit.X.items()},
                          n_groups=len(fit.group_names), offspring=self.cfg.evolution.offspring, admit=self.admit)

    def select(self, new: list[Member]) -> None:
        cfg = self.cfg
        pool_members = {m.key: m for m in self.population + new}
        ranked = sorted(pool_members.values(), key=lambda m: m.score(cfg.evolution.parsimony))
        front_keys = {m.key for m in pareto_front(list(pool_members.values()))}
        keep = ranked[:cfg.evolution.population]
        keep += [m for m in ranked[cfg.evolution.population:] if m.key in front_keys]
        self.population = keep
        self.generation += 1

    def result(self, stopped: str) -> SearchResult:
        return SearchResult(self.members, self.evals, self.elapsed(), self.generation, stopped,
                            pareto_front(self.members))

    def close(self) -> None:
        self.pool.close()

    # -- checkpoints
    def state_dict(self) -> dict:
        return {"generation": self.generation, "evaluations": self.evals, "elapsed": self.elapsed(),
                "rng": self.rng.bit_generator.state, "population": [m.key for m in self.population],
                "max_nodes": self.space.max_nodes}

    def restore(self, state: dict, logged: list[dict]) -> None:
        """Continue from ``state`` (a checkpoint) and the candidate log: the first
        ``state['evaluations']`` logged records are the committed members; later ones (evaluated
        after the checkpoint, before an interruption) become the cache."""
        n = int(state["evaluations"])
        for rec in logged[:n]:
            m = Member(S.from_tree(rec["tree"]), rec["key"], rec, rec.get("origin", "?"))
            self.seen[m.key] = m
            self.members.append(m)
        for rec in logged[n:]:
            self.cache[rec["key"]] = rec
        self.evals = n
        self.generation = int(state["generation"])
        self.elapsed_before = float(state["elapsed"])
        self.t0 = time.perf_counter()
        self.rng.bit_generator.state = state["rng"]
        self.space.max_nodes = int(state.get("max_nodes", self.space.max_nodes))
        missing = [k for k in state["population"] if k not in self.seen]
        if missing:
            raise LawforgeError(f"checkpoint names {len(missing)} population member(s) missing from the candidate log")
        self.population = [self.seen[k] for k in state["population"]]


def run_search(space: S.Space, ctx: CandidateContext, seeds: list[tuple[sp.Expr, str]], cfg: SearchConfig,
               on_eval: Callable[[Member], None] | None = None,
               on_generation: Callable[[int, list[Member], int, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None, restore=None,
               reserve: Callable[[int, float], float] | None = None, **graph_kw) -> SearchResult:
    """Evolve forms until ``max_evals`` evaluations or ``budget_s`` seconds, as the campaign
    graph (:mod:`lawforge.search.loop`): propose, evaluate, select, optionally ask an LLM,
    checkpoint, repeat.

    ``on_eval`` sees every evaluated member in order (for the append-only log); the same seed
    and ``max_evals`` give the same sequence of candidates and the same result on the CPU.
    ``restore=(state, logged, cache)`` continues from a checkpoint (see :meth:`Engine.restore`).
    ``reserve(evaluations, seconds)`` is the time to leave, within the time budget, for what
    follows the search (estimated from the search's own pace); the search stops that much earlier.
    """
    from lawforge.search.loop import run_search_graph

    engine = Engine(space, ctx, seeds, cfg, on_eval, should_stop, reserve)
    try:
        if restore is not None:
            state, logged, cache = restore
            engine.restore(state, logged)
            engine.cache = cache
        with single_thread_torch(cfg.workers <= 1):
            return run_search_graph(engine, on_generation=on_generation, resumed=restore is not None, **graph_kw)
    finally:
        engine.close()


def _tournament(alive: list[Member], rng, cfg: SearchConfig) -> Member:
    idx = rng.integers(len(alive), size=min(cfg.evolution.tournament, len(alive)))
    return min((alive[i] for i in idx), key=lambda m: m.score(cfg.evolution.parsimony))
