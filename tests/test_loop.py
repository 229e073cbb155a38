"""The search loop as a LangGraph graph, driven with a stand-in engine (no fitting)."""

from types import SimpleNamespace

import sympy as sp

from lawforge.search.loop import build_graph, run_search_graph


class FakeEngine:
    """Records the graph's calls; stops after ``gens`` generations."""

    def __init__(self, gens=3, offspring=4, exhaust_at=None):
        self.cfg = SimpleNamespace(evolution=SimpleNamespace(offspring=offspring, parsimony=0.0))
        self.gens, self.exhaust_at = gens, exhaust_at
        self.calls, self.population, self.generation, self.evals = [], [], 0, 0

    def seed_population(self):
        self.calls.append("seed")

    def admit(self, forms):
        self.calls.append(("admit", len(forms)))
        return forms

    def propose(self, n):
        self.calls.append(("propose", n))
        if self.exhaust_at is not None and self.generation >= self.exhaust_at:
            return []
        return [(sp.Symbol("x") + i, "mut") for i in range(n)]

    def fit_and_score(self, batch):
        self.calls.append(("fit", len(batch)))
        self.evals += len(batch)
        return []

    def select(self, new):
        self.generation += 1
        self.calls.append("select")

    def elapsed(self):
        return 1.0

    def out_of_budget(self):
        return "max_evals" if self.generation >= self.gens else None

    def view(self):
        return "view"

    def state_dict(self):
        return {"generation": self.generation, "evaluations": self.evals, "rng": {}, "population": []}

    def result(self, stopped):
        return SimpleNamespace(stopped=stopped, generations=self.generation, evaluations=self.evals)


class FakeProposer:
    def __init__(self):
        self.pending, self.views = [(sp.Symbol("y"), "llm")], []

    def maybe_propose(self, view):
        self.views.append(view)
        return 0

    def take_pending(self):
        out, self.pending = self.pending, []
        return out

    def state(self):
        return {"ledger": {"calls": len(self.views)}, "llm_pending": []}


def test_graph_runs_generations_until_the_budget_and_checkpoints_each():
    eng, snaps, gens = FakeEngine(gens=3), [], []
    res = run_search_graph(eng, on_generation=lambda *a: gens.append(a[0]), checkpoint=snaps.append)
    assert res.stopped == "max_evals" and res.generations == 3 and res.evaluations == 12
    assert eng.calls[0] == "seed" and eng.calls.count("select") == 3
    assert gens == [1, 2, 3]
    # one checkpoint after the seeds and one per generation; only the last says why it stopped
    assert [s["generation"] for s in snaps] == [0, 1, 2, 3]
    assert [s["stopped"] for s in snaps] == [None, None, None, "max_evals"]


def test_resumed_graph_skips_the_seeds():
    eng = FakeEngine(gens=1)
    run_search_graph(eng, resumed=True)
    assert "seed" not in eng.calls and eng.calls.count("select") == 1


def test_graph_stops_when_no_new_form_can_be_proposed():
    eng, snaps = FakeEngine(gens=10, exhaust_at=2), []
    res = run_search_graph(eng, checkpoint=snaps.append)
    assert res.stopped == "exhausted" and res.generations == 2 and snaps[-1]["stopped"] == "exhausted"


def test_proposer_forms_come_first_and_its_state_is_checkpointed():
    eng, llm, snaps = FakeEngine(gens=2, offspring=4), FakeProposer(), []
    run_search_graph(eng, llm=llm, checkpoint=snaps.append)
    # the queued LLM form is admitted and takes one of the generation's four places
    assert eng.calls[1:4] == [("admit", 1), ("propose", 3), ("fit", 4)]
    # the proposer sees the engine's view, not the engine, and is not asked once the budget is spent
    assert llm.views == ["view"]
    assert snaps[-1]["ledger"] == {"calls": 1} and snaps[-1]["llm_pending"] == []


def test_graph_has_the_documented_nodes():
    app = build_graph(FakeEngine())
    assert {"seed", "propose", "evaluate", "select", "llm", "checkpoint"} <= set(app.get_graph().nodes)
