"""The discovery campaign as a LangGraph ``StateGraph``.

    START -> seed -> checkpoint -> (stop? END : propose) -> evaluate -> select -> llm -> checkpoint ...

* ``seed`` fits the seed forms (skipped when resuming from a checkpoint);
* ``propose`` draws children from the population with the engine's RNG and adds the forms the
  LLM proposed in the previous round;
* ``evaluate`` fits and scores them (in order; the candidate log sees each one);
* ``select`` updates the population and the Pareto front;
* ``llm`` (when configured, at its rate and within its budget ledger) asks the model for new
  forms, parsed with the whitelist and checked against the parameter limit;
* ``checkpoint`` saves the state (generation, counters, RNG, population, LLM ledger, pending
  LLM forms) atomically, then the run stops (budget, interrupted, exhausted) or continues.

The graph state holds the population (member keys), the budget ledger and the RNG state; the
heavy objects (sympy forms, the worker pool) stay in the :class:`~lawforge.search.engine.Engine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypedDict

if TYPE_CHECKING:  # pragma: no cover
    from lawforge.search.proposer import Proposer


RECURSION_LIMIT = 10**9


class SearchState(TypedDict, total=False):
    generation: int
    evaluations: int
    population: list[str]
    rng_state: dict
    ledger: dict
    llm_pending: list
    best_val_r2: float | None
    stopped: str | None
    resumed: bool
    engine: dict


def _best(engine) -> float | None:
    ok = [m for m in engine.population if m.ok]
    if not ok:
        return None
    return min(ok, key=lambda m: m.score(engine.cfg.evolution.parsimony)).rec["val_r2"]


def build_graph(engine, llm: "Proposer | None" = None, checkpoint: Callable[[dict], None] | None = None,
                on_generation: Callable[..., None] | None = None):
    from langgraph.graph import END, START, StateGraph

    pending: list[tuple[Any, str]] = []   # forms waiting for the next evaluate
    new_members: list = []

    def snapshot(**extra) -> dict:
        st = engine.state_dict()
        return {"generation": st["generation"], "evaluations": st["evaluations"], "population": st["population"],
                "rng_state": st["rng"], **(llm.state() if llm else {"ledger": {}, "llm_pending": []}),
                "best_val_r2": _best(engine), "engine": st, **extra}

    def seed(state: SearchState) -> dict:
        engine.seed_population()
        return snapshot()

    def propose(state: SearchState) -> dict:
        pending.clear()
        extra = engine.admit(llm.take_pending()) if llm else []
        pending.extend(extra)
        pending.extend(engine.propose(max(0, engine.cfg.evolution.offspring - len(extra))))
        if not pending:
            return {"stopped": "exhausted"}
        return {}

    def evaluate(state: SearchState) -> dict:
        new_members[:] = engine.fit_and_score(list(pending))
        pending.clear()
        return {"evaluations": engine.evals}

    def select(state: SearchState) -> dict:
        engine.select(list(new_members))
        if on_generation:
            on_generation(engine.generation, engine.population, engine.evals, engine.elapsed())
        return {"generation": engine.generation, "best_val_r2": _best(engine)}

    def ask_llm(state: SearchState) -> dict:
        if llm is not None and engine.out_of_budget() is None:
            llm.maybe_propose(engine.view())
        return {}

    def save(state: SearchState) -> dict:
        stopped = state.get("stopped") or engine.out_of_budget()
        snap = snapshot(stopped=stopped)
        if checkpoint:
            checkpoint(snap)
        return snap

    def route_start(state: SearchState) -> str:
        return "checkpoint" if state.get("resumed") else "seed"

    def route(state: SearchState) -> str:
        return "stop" if state.get("stopped") else "continue"

    g = StateGraph(SearchState)
    g.add_node("seed", seed)
    g.add_node("propose", propose)
    g.add_node("evaluate", evaluate)
    g.add_node("select", select)
    g.add_node("llm", ask_llm)
    g.add_node("checkpoint", save)
    g.add_conditional_edges(START, route_start, {"seed": "seed", "checkpoint": "checkpoint"})
    g.add_edge("seed", "checkpoint")
    g.add_conditional_edges("checkpoint", route, {"continue": "propose", "stop": END})
    g.add_conditional_edges("propose", route, {"continue": "evaluate", "stop": "checkpoint"})
    g.add_edge("evaluate", "select")
    g.add_edge("select", "llm")
    g.add_edge("llm", "checkpoint")
    return g.compile()


def run_search_graph(engine, on_generation=None, llm=None, checkpoint=None, resumed: bool = False):
    """Run the graph to the end; return the engine's :class:`SearchResult`."""
    app = build_graph(engine, llm, checkpoint, on_generation)
    final = app.invoke({"resumed": resumed, "stopped": None}, config={"recursion_limit": RECURSION_LIMIT})
    return engine.result(final.get("stopped") or "done")
