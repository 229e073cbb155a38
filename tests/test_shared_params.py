"""Shared-vs-per-group parameter scoping in the search space (``s0``... shared, ``p0``... per group)."""

import json

import numpy as np
import pytest
import sympy as sp

from lawforge.datasets import load_dataset
from lawforge.datasets.loader import DataSplit, SealedDataset
from lawforge.errors import DatasetError
from lawforge.fitting.lm import fit_split, predict
from lawforge.search import space as S
from lawforge.runs.discover import discover
from lawforge.search.prepare import build_space
from lawforge.search.settings import SearchConfig

N = sp.Symbol("N", real=True)


def _grouped_space():
    return S.Space([S.VarInfo("N", True, False)], grouped=True)


def test_scope_mutation_moves_a_parameter_between_per_group_and_shared():
    space = _grouped_space()
    base = S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2)))
    seen = set()
    for seed in range(30):
        child = S.canonical(S.mutate_scope(base, space, np.random.default_rng(seed)))
        assert S.n_params(child) == 3
        shared = sorted(s.name for s in child.free_symbols if S.is_shared(s))
        assert shared == ["s0"]  # exactly one parameter moved, renamed canonically
        seen.add(S.key(child))
        back = S.canonical(S.mutate_scope(child, space, np.random.default_rng(seed)))
        assert S.n_params(back) == 3
    assert len(seen) == 3  # each of the three parameters can be the one shared
    # shared -> per group
    all_shared = S.canonical(S.SP(0) + S.SP(1) * N ** (-S.SP(2)))
    child = S.canonical(S.mutate_scope(all_shared, space, np.random.default_rng(0)))
    assert sum(not S.is_shared(s) for s in child.free_symbols if S.is_param(s)) == 1


def test_scope_is_searched_only_where_there_are_several_groups():
    assert "scope" in S.mutations_for(_grouped_space())
    one = S.Space([S.VarInfo("N", True, False)])
    assert S.mutations_for(one) is S.MUTATIONS and "scope" not in S.MUTATIONS
    # a dataset's space: grouped when train has 2..MAX_SHARED_GROUPS groups
    assert build_space(SealedDataset(load_dataset("synthetic_multigroup"), 0)).grouped
    assert not build_space(SealedDataset(load_dataset("synthetic_chinchilla"), 0)).grouped
    # --set scope=false turns it off; a run recorded before the setting existed resumes without it
    from lawforge.search.settings import config_of_run

    multi = SealedDataset(load_dataset("synthetic_multigroup"), 0)
    assert not build_space(multi, SearchConfig.build(scope=False)).grouped
    assert config_of_run({"seed": 1}).grammar.shared_params is False and SearchConfig.build().grammar.shared_params is True


def test_canonical_keeps_scopes_apart_and_merges_constants_by_scope():
    e = S.SP(4) * S.SP(2) + S.P(3) * N ** (-S.SP(7)) + S.P(9) * S.SP(1) * sp.log(N)
    c = S.canonical(e)
    names = {s.name for s in c.free_symbols if S.is_param(s)}
    # s4*s2 -> one shared offset; p9*s1 -> one per-group constant (it varies by group)
    assert names == {"s0", "s1", "p0", "p1"}, c
    assert S.key(S.canonical(c)) == S.key(c)
    assert S.key(S.canonical(S.P(0) * N ** S.SP(0))) != S.key(S.canonical(S.P(0) * N ** S.P(1)))
    # crossover keeps the donor's scopes and gives them fresh indices
    a = S.canonical(S.P(0) + S.SP(0) * sp.log(N))
    b = S.canonical(S.P(0) * N ** (-S.SP(0)))
    kids = [S.crossover(a, b, _grouped_space(), np.random.default_rng(s)) for s in range(30)]
    assert any(k.has(S.SP(1)) for k in kids)
    # exact serialisation
    for k in kids:
        assert S.key(S.from_tree(json.loads(json.dumps(S.to_tree(k))))) == S.key(k)


def test_a_shared_exponent_is_fitted_once_across_groups():
    rng = np.random.default_rng(0)
    groups = ["a", "b", "c", "d"]
    n_ = np.tile(np.logspace(6, 9, 5), len(groups))
    g_ = np.repeat(groups, 5).astype(object)
    a_ = np.repeat([1.0, 1.5, 2.0, 2.5], 5)
    b_ = np.repeat([20.0, 40.0, 60.0, 80.0], 5)
    y = a_ + b_ * n_ ** -0.3 + rng.normal(0, 1e-4, n_.size)
    split = DataSplit("fit", {"N": n_}, y[:, None], g_, groups, ["loss"])
    form = S.canonical(S.P(0) + S.P(1) * N ** (-S.SP(0)))
    law = S.to_law(form, {"N": "N"}, ["loss"], data=split)
    assert [p.name for p in law.params if p.shared] == ["s0"]
    res = fit_split(law, split, restarts=6, seed=0, max_iter=200)
    params = res.params()
    alphas = {params[g]["s0"] for g in groups}
    assert len(alphas) == 1 and abs(abs(alphas.pop()) - 0.3) < 0.01  # canonical form may carry the sign
    assert len({round(params[g]["p0"], 6) for g in groups}) == 4  # offsets stay per group
    pred = predict(law, params, split)[:, 0]
    assert np.max(np.abs(pred - y)) < 1e-3


def test_parameter_limit_counts_shared_parameters():
    space = S.Space([S.VarInfo("N", True, False)], param_limit=2, grouped=True)
    assert not S.valid(S.canonical(S.P(0) + S.P(1) * N ** (-S.SP(0))), space)
    assert S.valid(S.canonical(S.P(0) * N ** (-S.SP(0))), space)


def test_human_law_seed_keeps_its_shared_parameters():
    from lawforge.laws.law import Law

    law = Law({"loss": "E + A*N**(-alpha)"}, {"N": "N"}, {"E": 1.0, "A": 1.0, "alpha": {"init": 0.3, "shared": True}})
    form = S.from_law(law)
    assert {s.name for s in form.free_symbols if S.is_param(s)} == {"p0", "p1", "s0"}
    back = S.to_law(S.canonical(form), {"N": "N"}, ["loss"])
    assert [p.name for p in back.params if p.shared] == ["s0"]


@pytest.mark.slow
def test_run_records_shared_parameters_and_searches_them(tmp_path):
    ds = load_dataset("synthetic_multigroup")
    res = discover(ds, SearchConfig.build(max_evals=120, seed=0), tmp_path / "r")
    rows = [json.loads(l) for l in open(tmp_path / "r" / "candidates.jsonl")]
    scoped = [r for r in rows if r["origin"] == "scope"]
    assert scoped and any(r["status"] == "ok" for r in scoped)
    law = json.loads((tmp_path / "r" / "law.json").read_text())
    shared = law["shared_params"]
    assert isinstance(shared, list)
    for name in shared:  # one value for every group
        assert len({g[name] for g in law["params"].values()}) == 1
    assert res["evaluations"] == 120


@pytest.mark.parametrize("column", ["p0", "s1"])
def test_a_csv_column_named_like_a_parameter_gets_another_symbol(tmp_path, column):
    from lawforge.datasets.byo import _symbol

    sym = _symbol(column, set())
    assert not S.looks_like_param(sym) and sym != column


def test_a_card_feature_symbol_named_like_a_parameter_is_an_error(tmp_path):
    from lawforge.datasets.card import read_card

    (tmp_path / "data.csv").write_text("n,y\n1,2\n2,3\n")
    card = tmp_path / "c.yaml"
    card.write_text("name: bad\nfeatures: [{column: n, symbol: s0}]\ntargets: [y]\n"
                    "split: {file: data.csv, test: 'n >= 2'}\ndata: {source: path}\n")
    with pytest.raises(DatasetError, match="feature symbol 's0' looks like a law parameter"):
        read_card(card)
