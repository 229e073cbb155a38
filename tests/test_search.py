import dataclasses
import json

import numpy as np
import pytest
import sympy as sp

from lawforge.cli import main
from lawforge.datasets import load_dataset
from lawforge.datasets.loader import Dataset, SealedDataset, TestAccessError, carve_validation, holdout_dataset
from lawforge.search import space as S
from lawforge.runs.discover import discover
from lawforge.search.settings import parse_budget
from lawforge.fitting.lm import predict
from lawforge.search.settings import SearchConfig

N, D = sp.Symbol("N", real=True), sp.Symbol("D", real=True)


def _space(limit=None, targets=1):
    return S.Space([S.VarInfo("N", True, False), S.VarInfo("D", True, False)], n_targets=targets, param_limit=limit)



def _stable(law, params, ctx, tcols) -> bool:
    """Whether a fitted law passes the context's probe rules."""
    from lawforge.search.checks import passes_checks

    return passes_checks(law, params, ctx.screen, tcols)

def test_canonical_merges_parameter_subtrees_and_renames():
    e = S.P(5) * S.P(7) + S.P(3) * N ** (-S.P(1)) + sp.exp(S.P(2))
    c = S.canonical(e)
    assert S.n_params(c) == 3  # p5*p7 + exp(p2) merged into one offset
    assert {s.name for s in c.free_symbols} == {"N", "p0", "p1", "p2"}
    assert S.key(S.canonical(c)) == S.key(c)


def test_canonical_merges_powers_of_one_base():
    """``D*D**p`` is ``D**p`` with a shifted exponent, ``exp(a)*exp(b)`` one exp; a product of
    powers of different bases with one exponent is left as it is."""
    c = S.canonical(S.P(0) + S.P(1) * N * N ** S.P(2) * sp.log(D))
    assert S.n_params(c) == 3 and c == S.canonical(S.P(0) + S.P(1) * N ** S.P(2) * sp.log(D))
    c = S.canonical(S.P(0) + S.P(1) * sp.exp(S.P(2) * N) * sp.exp(S.P(3) * D))
    assert sum(isinstance(n, sp.exp) for n in sp.preorder_traversal(c)) == 1 and S.n_params(c) == 4
    kept = S.canonical(S.P(0) + S.P(1) * N ** S.P(2) * D ** S.P(2))
    bases = {n.base for n in sp.preorder_traversal(kept) if isinstance(n, sp.Pow)}
    assert S.n_params(kept) == 3 and {N, D} <= bases   # not (N*D)**p


def test_canonical_merges_inside_a_power_and_fixed_numbers_into_constants():
    """``D*D**p`` inside a squared sum merges too; a fixed number with no symbol (``log(2)**2``)
    joins the fitted constant beside it."""
    B = sp.Symbol("B", real=True)
    c = S.canonical(S.P(0) + S.P(1) * (S.P(2) + S.P(3) * D * D ** S.P(4) + sp.log(B)) ** 2)
    assert not any(isinstance(n, sp.Mul) and D in n.args for n in sp.preorder_traversal(c)), c
    assert S.n_params(c) == 5
    c = S.canonical(S.P(0) + S.P(1) * sp.log(2) ** 2 * N ** S.P(2))
    assert c == S.canonical(S.P(0) + S.P(1) * N ** S.P(2)) and not c.has(sp.log(2))


def test_canonical_merges_like_terms_into_one_fitted_coefficient():
    """``p*T - T`` is ``p'*T``; ``p*T + q*T`` one term; not when the parameter is used elsewhere,
    and a shared parameter does not absorb a per-group one."""
    P = sp.Symbol("P", real=True)
    T = sp.log(N) * sp.log(P)
    c = S.canonical(S.P(0) + (S.P(1) / (N * (1 + S.P(2) * T - T))) ** S.P(3))
    assert c == S.canonical(S.P(0) + (S.P(1) / (N * (1 + S.P(2) * T))) ** S.P(3)), c
    assert S.canonical(S.P(0) + S.P(1) * N ** S.P(3) + S.P(2) * N ** S.P(3)) == S.canonical(S.P(0) + S.P(1) * N ** S.P(2))
    kept = S.canonical(S.P(0) + S.P(1) * sp.log(N) - sp.log(N) + S.P(1) * sp.log(D))   # p1 also scales log(D)
    assert S.n_params(kept) == 2 and kept.has(-sp.log(N))
    s0 = sp.Symbol("s0", real=True)
    mixed = S.canonical(S.P(0) + S.P(1) * sp.log(N) + s0 * sp.log(N))
    assert mixed == S.canonical(S.P(0) + S.P(1) * sp.log(N))   # per group: p1 + s0 is per group
    shared = S.canonical(S.P(0) + s0 * sp.log(N) - sp.log(N))
    assert {s.name for s in shared.free_symbols} == {"p0", "s0", "N"}


def test_canonical_gives_a_repeated_constant_one_parameter():
    E = sp.Symbol("E", real=True)
    e = sp.log(N) * sp.log(E + S.P(3) * S.P(4)) + S.P(0) * sp.log(E + S.P(3) * S.P(4))
    c = S.canonical(e)
    assert S.n_params(c) == 2  # the two copies of p3*p4 are one constant
    # the moe card's human law uses Clark's saturating expert count twice: 6 parameters, not 8
    from lawforge.datasets.card import get_card

    law, _ = get_card("moe_scaling_law").human_law()
    form = S.canonical(S.from_law(law))
    assert S.n_params(form) == 6 == len(law.params)


def test_scale_parameters_start_at_the_data_scale_and_fit():
    from lawforge.datasets.loader import DataSplit
    from lawforge.fitting.lm import fit_split
    from lawforge.laws.law import Law

    Pn = sp.Symbol("P", real=True)
    rng = np.random.default_rng(0)
    n_ = np.tile(np.logspace(7.5, 9.5, 8), 3)
    p_ = np.repeat([1.0, 2.0, 4.0], 8)
    y = (2e8 / (n_ * (0.4 * np.log(p_) + 1))) ** 0.25 + 1.2 + rng.normal(0, 1e-4, n_.size)
    split = DataSplit("fit", {"N": n_, "P": p_}, y[:, None], np.array(["g"] * n_.size, dtype=object), ["g"], ["loss"])
    form = S.P(0) + (S.P(1) / (N * (S.P(2) * sp.log(Pn) + 1))) ** S.P(3)
    specs = S.scale_specs(form, split, {"N": "N", "P": "P"})
    # p1/(N*(p2*log(P) + 1)) starts near 1; its sign depends on p2 too, so p1 is not bounded
    assert set(specs) == {"p1"} and "bounds" not in specs["p1"] and 1e8 < specs["p1"]["init"] < 1e10
    # when the rest of the product is data alone and positive, the parameter is bounded positive
    pos = S.scale_specs(S.P(0) + (S.P(1) / N) ** S.P(2), split, {"N": "N", "P": "P"})
    assert pos["p1"]["bounds"] == [0, None] and 1e8 < pos["p1"]["init"] < 1e10
    # under exp, the product starts at -1 (decay) with no bound
    decay = S.scale_specs(S.P(0) * sp.exp(-S.P(1) * N) + S.P(2), split, {"N": "N", "P": "P"})
    assert "bounds" not in decay["p1"] and 1e-10 < decay["p1"]["init"] < 1e-8

    def fit_r2(law):
        res = fit_split(law, split, restarts=6, seed=1, max_iter=60)
        from lawforge.fitting.lm import predict

        pred = predict(law, res.params(), split)[:, 0]
        return 1 - np.mean((pred - y) ** 2) / np.var(y)

    with_scale = S.to_law(form, {"N": "N", "P": "P"}, ["loss"], data=split)
    unit = S.to_law(form, {"N": "N", "P": "P"}, ["loss"])
    assert fit_r2(with_scale) > 0.9999
    assert fit_r2(unit) < 0.999  # unit starts: the fit never reaches p1 ~ 2e8
    assert isinstance(with_scale, Law)


@pytest.mark.parametrize("op", sorted(S.MUTATIONS))
def test_each_mutation_changes_the_form(op):
    space = _space()
    base = S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2)) + S.P(3) * D ** sp.Rational(-1, 2))
    changed = 0
    for seed in range(20):
        child = S.canonical(S.MUTATIONS[op](base, space, np.random.default_rng(seed)))
        changed += S.key(child) != S.key(base)
    assert changed >= 10, op


def test_crossover_takes_material_from_both_parents():
    space = _space()
    a = S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2)))
    b = S.canonical(S.P(0) + S.P(1) * sp.log(D))
    kids = [S.crossover(a, b, space, np.random.default_rng(s)) for s in range(20)]
    assert any(k.has(D) and k.has(N) for k in kids)


def test_parameter_limit_and_validity():
    space = _space(limit=4)
    ok = S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2)))
    too_many = S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2)) + S.P(3) * D ** (-S.P(4)))
    assert S.valid(ok, space) and not S.valid(too_many, space)
    assert not S.valid(S.canonical(S.P(0) + S.P(1)), space)           # no variable
    assert not S.valid(S.canonical(N ** 2), space)                     # no parameter
    assert not S.valid(S.canonical(S.P(0) + S.P(1) * N ** (-S.P(2))), _space(limit=5, targets=2))
    law = S.to_law(ok, {"N": "N", "D": "D"}, ["l1", "l2"])
    assert law.n_params == 6 and set(law.targets) == {"l1", "l2"}


def test_forms_with_nodes_outside_the_whitelist_are_invalid():
    N, p0 = S.make_symbol("N"), S.make_symbol("p0")
    assert S.valid(p0 * sp.log(N), _space())
    assert not S.valid(p0 * sp.re(sp.log(N - 5)) + sp.sign(N), _space())   # re() from simplification
    assert not S.valid(p0 * sp.sign(N), _space())


def test_powers_of_a_log_beyond_the_square_are_invalid():
    p0, p1 = S.P(0), S.P(1)
    assert S.valid(p0 + p1 * sp.log(N) ** 2, _space())          # the log-quadratic bowl stays
    assert S.valid(p0 + p1 / sp.log(N), _space())
    assert not S.valid(p0 + p1 * sp.log(N) ** 3, _space())
    assert not S.valid(p0 + p1 * sp.log(D) * sp.log(N) ** sp.Rational(11, 2), _space())
    assert not S.valid(p0 + p1 * sp.log(N) ** -3, _space())
    assert S.valid(p0 + p1 * N ** 5, _space())                   # powers of a variable are not capped


def test_generic_seeds_are_valid_and_task_agnostic():
    seeds = S.generic_seeds(_space())
    assert len(seeds) >= 10 and all(S.valid(s, _space()) for s in seeds)


def test_validation_split_holds_out_largest_scale():
    ds = load_dataset("synthetic_multigroup")
    fit, val = carve_validation(ds.train, ds.card)
    for g in ds.train.group_names:
        assert val.X["D"][val.groups == g].min() > fit.X["D"][fit.groups == g].max()
    assert fit.n + val.n == ds.train.n


def test_inner_holdout_is_made_from_train_alone():
    ds = load_dataset("synthetic_multigroup")
    inner = holdout_dataset(ds)
    fit, val = carve_validation(ds.train, ds.card)
    assert inner.train.n == fit.n and inner.test.n == val.n and inner.train.n + inner.test.n == ds.train.n
    test_rows = {tuple(r) for r in np.column_stack([ds.test.X[c] for c in ds.card.feature_columns] + [ds.test.y])}
    inner_rows = np.column_stack([inner.test.X[c] for c in ds.card.feature_columns] + [inner.test.y])
    assert not any(tuple(r) in test_rows for r in inner_rows)
    for g in inner.train.group_names:
        assert inner.test.X["D"][inner.test.groups == g].min() > inner.train.X["D"][inner.train.groups == g].max()
    assert "inner holdout" in inner.origin


def test_sealed_dataset_blocks_test_until_unsealed():
    sealed = SealedDataset(load_dataset("synthetic_chinchilla"))
    with pytest.raises(TestAccessError):
        _ = sealed.test
    assert sealed.unseal().test.n == 12


@pytest.mark.slow
def test_search_never_reads_a_test_row(monkeypatch, tmp_path):
    import lawforge.runs.discover as disc

    state = {"searching": False, "test_reads_during_search": 0, "test_reads_after": 0}
    real_test = Dataset.test.fget

    def guarded(self):
        if state["searching"]:
            state["test_reads_during_search"] += 1
            raise AssertionError("test split read during the search")
        state["test_reads_after"] += 1
        return real_test(self)

    monkeypatch.setattr(Dataset, "test", property(guarded))
    real_run = disc.run_search

    def wrapped(*a, **k):
        state["searching"] = True
        try:
            return real_run(*a, **k)
        finally:
            state["searching"] = False

    monkeypatch.setattr(disc, "run_search", wrapped)
    ds = load_dataset("synthetic_chinchilla")
    out = discover(ds, SearchConfig.build(max_evals=40, seed=0), tmp_path / "run")
    assert state["test_reads_during_search"] == 0 and state["test_reads_after"] >= 1
    assert out["test_r2"] is not None


@pytest.mark.slow
def test_same_seed_and_eval_budget_give_the_same_law(tmp_path):
    ds = load_dataset("synthetic_multigroup")
    a = discover(ds, SearchConfig.build(max_evals=70, seed=3), tmp_path / "a")
    b = discover(ds, SearchConfig.build(max_evals=70, seed=3), tmp_path / "b")
    assert a["law"] == b["law"] and a["test_r2"] == b["test_r2"] and a["evaluations"] == 70
    la = [json.loads(l)["expr"] for l in open(tmp_path / "a" / "candidates.jsonl")]
    lb = [json.loads(l)["expr"] for l in open(tmp_path / "b" / "candidates.jsonl")]
    assert la == lb
    # worker processes fit in parallel but change nothing: the same candidates, scores and law
    c = discover(ds, SearchConfig.build(max_evals=70, seed=3, workers=2), tmp_path / "c")
    assert c["law"] == a["law"] and c["test_r2"] == a["test_r2"]
    ra = [(r["expr"], r["val_nmse"]) for r in map(json.loads, open(tmp_path / "a" / "candidates.jsonl"))]
    rc = [(r["expr"], r["val_nmse"]) for r in map(json.loads, open(tmp_path / "c" / "candidates.jsonl"))]
    assert rc == ra


@pytest.mark.slow
def test_discover_cli_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "50", "--seed", "1", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("dataset", "law", "n_params", "val_r2", "test_r2", "test_nmse", "test_nmae", "evaluations", "seconds", "run_dir"):
        assert k in s
    assert s["evaluations"] == 50 and s["test_r2"] > 0.9
    for f in ("config.json", "manifest.json", "candidates.jsonl", "pareto.csv", "law.json", "metrics.json"):
        assert (out / f).is_file(), f
    recs = [json.loads(l) for l in open(out / "candidates.jsonl")]
    assert len(recs) == 50 and all(r["status"] in ("ok", "nan", "unstable", "failed", "error", "invalid") for r in recs)
    assert all(r["val_nmse"] is None for r in recs if r["status"] != "ok")  # no made-up scores
    law = json.loads((out / "law.json").read_text())
    assert "latex" in law and law["params"]
    from lawforge.cli import usable_cores

    assert json.loads((out / "config.json").read_text())["settings"]["workers"] == usable_cores()  # default: every core
    capsys.readouterr()
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "5", "--workers", "0"]) == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["data_hash"]


def test_pysr_engine_without_julia_exits_2(capsys, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert main(["discover", "synthetic_chinchilla", "--engine", "pysr", "--max-evals", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Julia" in err and "pip install" in err


def test_parse_budget():
    assert parse_budget("90s") == 90 and parse_budget("5m") == 300 and parse_budget("1h") == 3600
    with pytest.raises(Exception, match="--budget"):
        parse_budget("soon")


def test_a_feature_that_holds_a_log_is_probed_by_the_log_of_the_factor():
    """A log10-FLOPs column is pushed by log10(2) and log10(5) beyond its largest train value (x2
    and x5 of the compute), not multiplied, and not by its range when it has negative values."""
    from lawforge.datasets.loader import DataSplit
    from lawforge.search.checks import make_probe, make_trend_probe

    x = np.array([-0.5, 0.5, 1.0, 2.0])
    train = DataSplit("train", {"x": x}, np.zeros((4, 1)), np.array(["a"] * 4, dtype=object), ["a"], ["y"])
    probe = make_probe(train, "x", {"x": 10.0})
    assert np.allclose(sorted(probe.X["x"]), [2.0 + np.log10(2.0), 2.0 + np.log10(5.0)])
    plain = make_probe(train, "x")   # as a plain feature with negative values: +0.5 and +1 range
    assert np.allclose(sorted(plain.X["x"]), [3.25, 4.5])
    split, slices = make_trend_probe(train, {"x": "decreasing"}, (), {"x": 10.0})
    assert np.allclose(split.X["x"], [2.0, 2.0 + np.log10(2.0), 2.0 + np.log10(5.0)])


def test_probe_marks_wild_extrapolation_unstable():
    from lawforge.search.candidates import CandidateContext, score_candidate
    from lawforge.search.checks import Screen, make_probe

    ds = load_dataset("synthetic_chinchilla")
    fit, val = carve_validation(ds.train, ds.card)
    from lawforge.search.checks import probe_stats

    probe = make_probe(ds.train, "N")
    center, span = probe_stats(ds.train, probe)
    ctx = CandidateContext({"N": "N", "D": "D"}, ["loss"], fit, val,
                           screen=Screen(probe=probe, probe_center=center, probe_span=span))
    assert ctx.screen.probe.X["N"].min() > ds.train.X["N"].max()
    good = score_candidate("p0 + p1*N**(-p2) + p3*D**(-p4)", ctx)
    assert good["status"] == "ok"
    wild = score_candidate("p0 + p1*log(N) + p2*log(N)**2 + p3*log(N)**3 + p4*log(N)**4 + p5*log(N)**5", ctx)
    assert wild["status"] in ("unstable", "ok")
    if wild["status"] == "ok":  # a tame fit is allowed; a wild one is not
        assert wild["val_nmse"] is not None


# ----------------------------------------------------------------------------- validation shapes
def _card_with_validation(tmp_path, validation: str):
    import numpy as np
    import pandas as pd

    N = np.repeat([1e7, 1e8, 1e9], 4)
    D = np.tile([1e9, 2e9, 4e9, 8e9], 3)
    pd.DataFrame({"N": N, "D": D, "loss": 2 + 1 / np.log(N) + 1 / np.log(D)}).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "name: v\nfeatures: [N, D]\ntargets: [loss]\nsplit: {file: d.csv, test: 'N > 5e9'}\n"
        "data: {source: path}\n" + validation)


def test_validation_corner_and_union(tmp_path):
    import numpy as np

    from lawforge.datasets.loader import SealedDataset, carve_validation
    from lawforge.errors import DatasetError

    _card_with_validation(tmp_path, "validation: {axis: [N, D]}\n")
    with pytest.raises(Exception):
        load_dataset(str(tmp_path / "c.yaml"))  # test rule matches nothing: a clear error
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text().replace("N > 5e9", "D > 7e9 and N > 5e8"))
    ds = load_dataset(str(tmp_path / "c.yaml"))
    # corner: the largest-D row of the largest N (in train, D=4e9 at N=1e9)
    _fit, val = carve_validation(ds.train, ds.card)
    assert val.n == 1 and val.X["N"][0] == 1e9 and val.X["D"][0] == 4e9
    # one row cannot rank laws (R2 is undefined on it): a clear error before any search
    with pytest.raises(DatasetError, match="validation carve"):
        SealedDataset(ds)
    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text().replace(
        "validation: {axis: [N, D]}", "validation: {axis: [N, D], fraction: 0.34, combine: any}"))
    s = SealedDataset(load_dataset(str(tmp_path / "c.yaml")))
    top_n = s.val.X["N"] == 1e9
    top_d = s.val.X["D"] == s.train.X["D"].max()
    assert np.all(top_n | top_d) and top_n.any() and top_d.any()
    # a second carve would leave a fit part with one N and one D value: no such fold is made
    assert s.fit.n == 6 and s.extra_folds(1) == []


def test_rolling_fold_needs_two_axis_values_in_its_fit_part(tmp_path):
    import numpy as np
    import pandas as pd

    from lawforge.datasets.loader import SealedDataset

    def sealed(levels):
        N = np.repeat(levels, 3)
        D = np.tile([1e9, 2e9, 4e9], len(levels))
        pd.DataFrame({"N": N, "D": D, "loss": 2 + 30 / N ** 0.2 + 1 / np.log(D)}).to_csv(tmp_path / "d.csv", index=False)
        (tmp_path / "c.yaml").write_text(
            "name: v\nfeatures: [N, D]\ntargets: [loss]\nsplit: {file: d.csv, test: 'N > 5e9'}\n"
            "data: {source: path}\nvalidation: {axis: N}\n")
        return SealedDataset(load_dataset(str(tmp_path / "c.yaml")))

    # train N in 1e6..1e9: validation N=1e9; a fold validating on 1e8 fits on 1e6 and 1e7
    folds = sealed([1e6, 1e7, 1e8, 1e9, 1e10]).extra_folds(3)
    assert [sorted(set(v.X["N"])) for _, v in folds] == [[1e8]]
    assert sorted(set(folds[0][0].X["N"])) == [1e6, 1e7]
    # train N in 1e7..1e9: the fold would fit on N=1e7 alone (like parallel's P=1): not made
    assert sealed([1e7, 1e8, 1e9, 1e10]).extra_folds(3) == []


def test_validation_combine_checked(tmp_path):
    _card_with_validation(tmp_path, "validation: {axis: [N, D], combine: some}\n")
    with pytest.raises(Exception, match="combine"):
        load_dataset(str(tmp_path / "c.yaml"))


def test_hyperparameter_bowl_seeds():
    sp_ = S.Space([S.VarInfo("N", True, False), S.VarInfo("lr", True, True, True)], 1, None)
    seeds = S.hyper_bowl_seeds(sp_)
    assert len(seeds) == 6
    assert all(s.has(sp.log(sp_.syms["lr"]) ** 2) for s in seeds[:3])
    assert seeds[1].has(sp.log(sp_.syms["lr"]) * sp.log(sp_.syms["N"]))  # optimum moves with scale
    # vertex form: p5 * (log lr - p3 - p4 log N)^2 is zero at the optimum lr = e^p3 N^p4, so
    # the loss at the best setting is the power-law base p0 + p1 N^-p2 on every N
    lr_, n_ = sp_.syms["lr"], sp_.syms["N"]
    vertex = seeds[3]
    assert vertex.has(sp.log(lr_)) and not vertex.has(sp.log(lr_) ** 2)
    vals = {S.P(i): v for i, v in enumerate([2.0, 3.0, 0.3, -7.0, -0.4, 0.05])}
    for n in (1e8, 1e9, 1e10):
        at_best = vertex.xreplace(vals).subs({n_: n, lr_: float(np.exp(-7.0) * n ** -0.4)})
        assert abs(float(at_best) - (2.0 + 3.0 * n ** -0.3)) < 1e-9
    two = S.Space([S.VarInfo("N", True, False), S.VarInfo("lr", True, True, True),
                   S.VarInfo("bsz", True, False, True)], 1, None)
    both = S.hyper_bowl_seeds(two)
    lb = sp.log(two.syms["bsz"])

    def cross_of_deviations(e):  # a term (log lr - ...)(log bsz - ...)
        return any(isinstance(n, sp.Mul) and sum(isinstance(a, sp.Add) and a.has(sp.log(lr_)) for a in n.args) == 1
                   and sum(isinstance(a, sp.Add) and a.has(lb) for a in n.args) == 1 for n in sp.preorder_traversal(e))

    assert len(both) == 7 and cross_of_deviations(both[4]) and not cross_of_deviations(both[3])
    # widened bowls: the whole bowl (expanded, then vertex form) times a power law of scale, so
    # the loss's sensitivity to the hyperparameters can change with scale
    for e, vertex_form in ((both[5], False), (both[6], True)):
        amp = [t for t in sp.Add.make_args(e) if t.has(lb) and isinstance(t, sp.Mul)
               and any(isinstance(a, sp.Pow) and a.base == n_ and not a.exp.is_Number for a in t.args)]
        assert len(amp) == 1 and all(not t.has(lb) for t in sp.Add.make_args(e) if t is not amp[0])
        inner = next(a for a in amp[0].args if isinstance(a, sp.Add))
        assert inner.has(sp.log(lr_) ** 2) != vertex_form and cross_of_deviations(inner) == vertex_form
    assert S.hyper_bowl_seeds(S.Space([S.VarInfo("N", True, False)], 1, None)) == []


def test_form_tree_roundtrip_is_exact():
    import json

    import numpy as np

    sp_ = S.Space([S.VarInfo("N", True, False), S.VarInfo("D", True, False)], 1, None)
    rng = np.random.default_rng(0)
    pop = [S.canonical(e) for e in S.generic_seeds(sp_)]
    for _ in range(400):
        a = pop[rng.integers(len(pop))]
        op = list(S.MUTATIONS)[rng.integers(len(S.MUTATIONS))]
        try:
            c = S.canonical(S.MUTATIONS[op](a, sp_, rng))
        except Exception:
            continue
        pop.append(c)
        r = S.from_tree(json.loads(json.dumps(S.to_tree(c))))
        assert S.key(r) == S.key(c)
    with pytest.raises(ValueError, match="not allowed"):
        S.from_tree(["__import__", ["S", "os"]])


def test_trend_probe_rejects_forms_that_turn_against_the_trend():
    from lawforge.laws.law import Law
    from lawforge.search.candidates import CandidateContext
    from lawforge.search.checks import Screen, make_trend_probe, probe_stats

    ds = load_dataset("synthetic_chinchilla")
    s = SealedDataset(ds)
    trend = make_trend_probe(s.train, {"N": "decreasing", "D": "decreasing"})
    ctx = CandidateContext(dict(ds.card.variables), ds.card.target_columns, s.fit, s.val,
                           screen=Screen(trend=trend, trend_span=probe_stats(s.train, trend[0])[1]))
    law = Law("E + A/N**a + B/D**b + C*log(N)**2", {"N": "N", "D": "D"}, target_names=["loss"])
    falling = {g: {"E": 1.7, "A": 400.0, "a": 0.34, "B": 410.0, "b": 0.28, "C": 0.0} for g in s.train.group_names}
    assert _stable(law, falling, ctx, [0])
    # the same law with a bowl in log N that turns upward just beyond the largest N in train
    rising = {g: {**v, "C": 0.05} for g, v in falling.items()}
    assert not _stable(law, rising, ctx, [0])
    # without a declared trend the rising form passes
    plain = CandidateContext(dict(ds.card.variables), ds.card.target_columns, s.fit, s.val)
    assert _stable(law, rising, plain, [0])


def test_cell_means_average_replicates_once_per_design_point():
    ds = load_dataset("synthetic_multigroup")
    assert ds.train.cell_means() is ds.train  # no replicates: unchanged
    rep = ds.train.select(np.r_[np.arange(ds.train.n), [0, 0, 3]])  # row 0 three times, row 3 twice
    rep.y = rep.y.copy()
    rep.y[-3:-1] += np.array([[1.0], [2.0]])[:, :rep.y.shape[1]]   # replicates of row 0 differ
    cm = rep.cell_means()
    assert cm.n == ds.train.n and rep.n_cells() == ds.train.n
    assert np.allclose(cm.y[0], ds.train.y[0] + 1.0)              # (y, y+1, y+2) / 3
    assert np.allclose(cm.y[3], ds.train.y[3]) and np.allclose(cm.y[1:3], ds.train.y[1:3])
    for k in ds.train.X:
        assert np.array_equal(cm.X[k], ds.train.X[k])
    assert list(cm.groups) == list(ds.train.groups)


@pytest.mark.slow
def test_replicates_setting_fits_design_points_once(tmp_path):
    import pandas as pd
    from lawforge.search.prepare import make_context

    ds = load_dataset("synthetic_chinchilla")
    df = ds._train_df
    doubled = Dataset(ds.card, pd.concat([df, df.iloc[:5]], ignore_index=True), ds._test_df, "test: replicates")
    sealed = SealedDataset(doubled)
    rows = make_context(sealed, SearchConfig.build(replicates="rows"))
    mean = make_context(sealed, SearchConfig.build(replicates="mean"))
    assert rows.fit.n + rows.val.n == doubled.train.n
    assert mean.fit.n + mean.val.n == ds.train.n
    with pytest.raises(Exception, match="validation.replicates must be one of"):
        SearchConfig.build(replicates="median")
    out = discover(doubled, SearchConfig.build(max_evals=30, seed=0, replicates="mean"), tmp_path / "run", report=False)
    assert out["test_r2"] is not None


@pytest.mark.slow
def test_discover_cli_replicates_option_is_recorded(tmp_path):
    out = tmp_path / "run"
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--replicates", "rows",
                 "--out", str(out), "--no-report", "--json"]) == 0
    assert json.loads((out / "config.json").read_text())["settings"]["validation"]["replicates"] == "rows"


def test_scale_starts_setting_reaches_the_context_and_old_runs_keep_unit_starts():
    from lawforge.search.prepare import make_context
    from lawforge.search.settings import config_of_run

    ds = load_dataset("synthetic_chinchilla")
    assert make_context(SealedDataset(ds), SearchConfig.build()).scale_starts is True
    assert make_context(SealedDataset(ds), SearchConfig.build(scale_starts=False)).scale_starts is False
    assert config_of_run({"seed": 3}).grammar.scale_starts is False  # a run from before the setting
    assert config_of_run({"seed": 3, "scale_starts": True}).grammar.scale_starts is True


def test_trend_with_hyperparameters_is_checked_on_each_cells_best_setting():
    """With a learning-rate axis, a larger model at a fixed, too-large learning rate can do worse
    (the optimum moves); the trend holds for the best setting of each (N) cell, and a form whose
    best setting gets worse with N is still rejected."""
    from lawforge.datasets.loader import DataSplit
    from lawforge.laws.law import Law
    from lawforge.search.candidates import CandidateContext
    from lawforge.search.checks import Screen, make_trend_probe, probe_stats

    N, lr = np.meshgrid([1e7, 3e7, 1e8, 3e8], np.exp(np.linspace(-11, -3, 9)))
    N, lr = N.ravel(), lr.ravel()
    law = Law("E + A/N**a + c*(log(lr) - k + m*log(N))**2", {"N": "N", "lr": "lr"}, target_names=["loss"])
    shifting = {"all": {"E": 2.0, "A": 50.0, "a": 0.3, "c": 0.05, "k": 2.0, "m": 0.4}}
    y = predict(law, shifting, DataSplit("x", {"N": N, "lr": lr}, np.zeros((len(N), 1)),
                                         np.array(["all"] * len(N), dtype=object), ["all"], ["loss"]))
    train = DataSplit("train", {"N": N, "lr": lr}, y, np.array(["all"] * len(N), dtype=object), ["all"], ["loss"])

    def ctx(hyper):
        trend = make_trend_probe(train, {"N": "decreasing"}, hyper)
        return CandidateContext({"N": "N", "lr": "lr"}, ["loss"], train, train,
                                screen=Screen(trend=trend, trend_span=probe_stats(train, trend[0])[1]))

    assert not _stable(law, shifting, ctx(()), [0])       # every row: the high-lr rows get worse with N
    assert _stable(law, shifting, ctx(["lr"]), [0])       # each cell's best setting keeps improving
    rising = {"all": {**shifting["all"], "A": -5000.0}}   # the best loss itself rises with N
    assert not _stable(law, rising, ctx(["lr"]), [0])


def test_trend_best_setting_reaches_the_context_and_old_runs_check_every_row():
    from lawforge.search.settings import config_of_run

    assert SearchConfig.build().checks.trend_at_best_setting is True
    assert config_of_run({"seed": 1}).checks.trend_at_best_setting is False


def test_extrapolation_shift_is_small_for_a_law_the_data_pins_down():
    """A power law barely moves at the probe points when the validation carve joins its fit; a
    cubic in the logs, which bends freely beyond the data, moves far more."""
    from lawforge.laws.law import Law
    from lawforge.search.prepare import final_train, make_context
    from lawforge.search.choose import extrapolation_shift

    ds = load_dataset("synthetic_chinchilla")
    s, cfg = SealedDataset(ds), SearchConfig.build()
    ctx, train = make_context(s, cfg), final_train(s, cfg)
    power = Law("E + A/N**a + B/D**b", dict(ds.card.variables), target_names=ds.card.target_columns,
                params={"E": {"init": 1.5}, "A": {"init": 400}, "a": {"init": 0.3}, "B": {"init": 400},
                        "b": {"init": 0.3}})
    cubic = Law("c0 + c1*log(N) + c2*log(N)**2 + c3*log(N)**3 + c4*log(D) + c5*log(D)**2 + c6*log(D)**3",
                dict(ds.card.variables), target_names=ds.card.target_columns)
    sp_, sc = extrapolation_shift(power, ctx, train), extrapolation_shift(cubic, ctx, train)
    assert sp_ is not None and sc is not None and sc > 10 * sp_
    no_probe = dataclasses.replace(ctx, screen=dataclasses.replace(ctx.screen, probe=None))
    assert extrapolation_shift(power, no_probe, train) is None  # no probe points: not measured


@pytest.mark.slow
def test_select_setting_is_recorded_and_old_runs_choose_by_score(tmp_path):
    from lawforge.errors import ConfigError
    from lawforge.search.settings import config_of_run

    ds = load_dataset("synthetic_chinchilla")
    out = discover(ds, SearchConfig.build(max_evals=40, seed=0), tmp_path / "stable", report=False)
    assert out["select"] == "shift" and out["extrapolation_shift"] is not None
    top = json.loads((tmp_path / "stable" / "top_laws.json").read_text())
    assert top[0]["chosen"] and all("extrapolation_shift" in t for t in top)
    by_score = discover(ds, SearchConfig.build(max_evals=40, seed=0, select="score"), tmp_path / "score", report=False)
    assert by_score["select"] == "score" and by_score["extrapolation_shift"] is None
    assert config_of_run({"seed": 0}).selection.rule == "score"
    assert SearchConfig.build(select="stable").selection.rule == "shift"   # the rule's former name
    with pytest.raises(ConfigError, match="selection.rule must be one of"):
        SearchConfig.build(max_evals=5, select="best")


def test_shift_is_measured_only_when_the_fit_part_spans_three_axis_values():
    from types import SimpleNamespace

    from lawforge.search.choose import shift_measurable

    def ctx(values, probe=True):
        return SimpleNamespace(screen=SimpleNamespace(probe=object() if probe else None),
                               fit=SimpleNamespace(X={"P": np.array(values)}))

    assert shift_measurable(ctx([1.0, 2.0, 4.0, 4.0]), "P")
    assert not shift_measurable(ctx([1.0, 2.0, 2.0]), "P")       # two values: any 2-parameter curve fits
    assert not shift_measurable(ctx([1.0, 2.0, 4.0], probe=False), "P")
    assert not shift_measurable(ctx([1.0, 2.0, 4.0]), None)


def test_between_probe_rejects_a_pole_inside_a_mixture_dataset(tmp_path):
    """Datasets without a scale axis (mixture-type) get probe points between the measured points
    and at the points other groups measured; a law that blows up there is unstable, one that
    stays smooth is not; ``between=false`` and runs recorded before the setting have none."""
    import pandas as pd

    from lawforge.search.prepare import make_context
    from lawforge.search.settings import config_of_run
    from lawforge.search.checks import BETWEEN_TOL, make_between_probe

    rng = np.random.default_rng(0)
    rows = []
    for g, mixes in [("small", [0.1, 0.3, 0.6, 0.9]), ("large", [0.2, 0.5, 0.8])]:
        for r1 in mixes:
            rows.append({"group": g, "r1": r1, "r2": 1 - r1, "loss": 2 + 0.5 * np.exp(-r1) + rng.normal(0, 1e-3)})
    rows.append({"group": "small", "r1": 0.45, "r2": 0.55, "loss": 2 + 0.5 * np.exp(-0.45)})
    rows.append({"group": "large", "r1": 0.35, "r2": 0.65, "loss": 2 + 0.5 * np.exp(-0.35)})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "m.yaml").write_text(
        "name: mix\nfeatures: [r1, r2]\ntargets: [loss]\ngroup: group\n"
        "split: {file: m.csv, test: 'r1 > 0.4 and r1 < 0.5 or r1 > 0.3 and r1 < 0.4'}\n"
        "data: {source: path}\nvalidation: {axis: null, fraction: 0.25}\n")
    sealed = SealedDataset(load_dataset(str(tmp_path / "m.yaml")))
    probe = make_between_probe(sealed.train)
    small = probe.groups == "small"
    # 4 measured mixtures in "small": 6 midpoints, then the 7 mixtures measured in either group
    assert small.sum() == 6 + 7 and (~small).sum() == 3 + 7
    assert 0.8 in probe.X["r1"][small]  # "small" is probed where "large" was measured

    ctx = make_context(sealed, SearchConfig.build())
    assert ctx.screen.probe is not None and ctx.screen.probe_tol == BETWEEN_TOL
    law = S.to_law(sp.sympify("p0 + p1/(r1 - p2)", locals={n: S.make_symbol(n) for n in ("p0", "p1", "p2", "r1")}),
                   {"r1": "r1", "r2": "r2"}, ["loss"])
    pole = {g: {"p0": 2.0, "p1": 0.01, "p2": 0.2001} for g in ("small", "large")}  # a pole at r1 = 0.2001
    tame = {g: {"p0": 2.0, "p1": 0.01, "p2": -1.0} for g in ("small", "large")}
    assert not _stable(law, pole, ctx, [0])
    assert _stable(law, tame, ctx, [0])
    # the pole sits between "small"'s points 0.1 and 0.3 and at "large"'s 0.2: the same check
    # without the probe (as before) would pass it
    assert make_context(sealed, SearchConfig.build(between=False)).screen.probe is None
    assert config_of_run({"seed": 0}).checks.sane_between_points is False


def test_domain_probe_rejects_a_law_undefined_beyond_the_measured_mixtures(tmp_path):
    """Mixture-type datasets (no scale axis) also check finiteness over the whole feature domain:
    the simplex when the features are proportions with one sum, else the box of their ranges. A
    log of a sum that turns negative outside the measured mixtures passes the between probe and
    fails here, and so does an exp that explodes there (beyond DOMAIN_TOL group ranges);
    ``domain=false`` and runs recorded before the setting have no such check."""
    import pandas as pd

    from lawforge.search.prepare import make_context
    from lawforge.search.settings import config_of_run
    from lawforge.search.checks import make_domain_probe

    rows = []
    for g, mixes in [("small", [0.3, 0.4, 0.5, 0.6, 0.7]), ("large", [0.35, 0.45, 0.55, 0.65])]:
        for r1 in mixes:
            rows.append({"group": g, "r1": r1, "r2": 1 - r1, "loss": 2 + 0.5 * np.log(r1 + 0.5)})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    card = ("name: mix\nfeatures: [r1, r2]\ntargets: [loss]\ngroup: group\n"
            "split: {file: m.csv, test: 'r1 > 0.68 and r1 < 0.72'}\n"
            "data: {source: path}\nvalidation: {axis: null, fraction: 0.25}\n")
    (tmp_path / "m.yaml").write_text(card)
    sealed = SealedDataset(load_dataset(str(tmp_path / "m.yaml")))
    dom = make_domain_probe(sealed.train, n=50)
    assert dom.n == 100 and np.allclose(dom.X["r1"] + dom.X["r2"], 1.0)       # the simplex
    assert dom.X["r1"].min() < 0.1 and dom.X["r1"].max() > 0.9                  # beyond the data
    law = S.to_law(sp.sympify("p0 + log(r1 + p1)/2", locals={n: S.make_symbol(n) for n in ("p0", "p1", "r1")}),
                   {"r1": "r1", "r2": "r2"}, ["loss"])
    undefined = {g: {"p0": 2.7, "p1": -0.2} for g in ("small", "large")}  # log of a negative below r1 = 0.2
    defined = {g: {"p0": 2.0, "p1": 0.5} for g in ("small", "large")}
    ctx = make_context(sealed, SearchConfig.build())
    assert ctx.screen.domain is not None
    assert not _stable(law, undefined, ctx, [0]) and _stable(law, defined, ctx, [0])
    # finite, flat over the measured mixtures (r1 from 0.3 to 0.7) and exploding beyond them, past
    # DOMAIN_TOL group ranges (the train range is 0.2): 1e6*(r1 - 0.5)**12 is 4e-3 at r1 = 0.7, 17 at 0.9
    boom = S.to_law(sp.sympify("p0 + p1*(r1 - p2)**12", locals={n: S.make_symbol(n) for n in ("p0", "p1", "p2", "r1")}),
                    {"r1": "r1", "r2": "r2"}, ["loss"])
    tame = {g: {"p0": 2.0, "p1": 1.0, "p2": 0.5} for g in ("small", "large")}
    wild = {g: {"p0": 2.0, "p1": 1e6, "p2": 0.5} for g in ("small", "large")}
    nodomain = make_context(sealed, SearchConfig.build(domain=False))
    assert _stable(boom, wild, nodomain, [0])                  # the between probe alone passes it
    assert _stable(boom, tame, ctx, [0]) and not _stable(boom, wild, ctx, [0])
    off = make_context(sealed, SearchConfig.build(domain=False))
    assert off.screen.domain is None and _stable(law, undefined, off, [0])  # the between probe alone passes it
    assert config_of_run({"seed": 0}).checks.finite_on_domain is False
    # features that are not proportions: the box of their ranges
    from lawforge.datasets.loader import DataSplit

    t = sealed.train
    box = make_domain_probe(DataSplit("t", {"r1": t.X["r1"], "r2": 3 * t.X["r2"]}, t.y, t.groups, t.group_names,
                                      t.target_columns), n=20)
    assert box.X["r2"].max() <= 3 * 0.7 + 1e-12 and box.X["r2"].min() >= 3 * 0.3 - 1e-12


def test_time_budget_covers_the_whole_run():
    from lawforge.runs.discover import final_reserve, search_budget

    cfg = SearchConfig.build(budget_s=60)
    assert search_budget(cfg, 2.0).budget.seconds == 58.0 and cfg.budget.seconds == 60
    assert search_budget(SearchConfig.build(max_evals=10), 5.0).budget.seconds is None
    reserve = final_reserve(2, 60.0)
    assert reserve(1000, 5.0) == pytest.approx(8.0 + 150 * 2 * 0.005)   # 150 evaluations on one core, plus 8 s
    assert reserve(5, 30.0) == 15.0                                   # never more than a quarter of the budget


def test_search_stops_when_what_follows_needs_the_rest_of_the_budget():
    from lawforge.datasets.loader import SealedDataset
    from lawforge.search.engine import Engine
    from lawforge.search.prepare import build_space, make_context, seeds_for

    sealed = SealedDataset(load_dataset("synthetic_chinchilla"), 0)
    cfg = SearchConfig.build(max_evals=None, budget_s=1000.0)
    space = build_space(sealed, cfg)
    ctx = make_context(sealed, cfg)
    free = Engine(space, ctx, seeds_for(sealed, space), cfg)
    tight = Engine(space, ctx, seeds_for(sealed, space), cfg, reserve=lambda evals, secs: 1000.0)
    free.evals = tight.evals = 10
    assert free.out_of_budget() is None and tight.out_of_budget() == "budget"
    tight.evals = 0   # no pace measured yet: the search starts
    assert tight.out_of_budget() is None


def test_under_a_time_budget_a_generation_is_cut_to_the_time_left_at_the_searchs_pace():
    from lawforge.datasets.loader import SealedDataset
    from lawforge.search.engine import Engine
    from lawforge.search.prepare import build_space, make_context, seeds_for

    sealed = SealedDataset(load_dataset("synthetic_chinchilla"), 0)
    space = build_space(sealed, SearchConfig.build())
    ctx = make_context(sealed, SearchConfig.build())
    timed = Engine(space, ctx, seeds_for(sealed, space), SearchConfig.build(max_evals=None, budget_s=1000.0, seed=0),
                   reserve=lambda evals, secs: 100.0)
    assert timed.room() is None            # no pace yet
    timed.evals, timed.elapsed_before = 10, 800.0   # 80 s a form: 100 s left after the reserve
    assert timed.room() == 1
    timed.elapsed_before = 299.0                    # about 30 s a form: about 600 s left
    assert timed.room() == 20
    timed.elapsed_before = 599.0                    # about 60 s a form: about 300 s left
    assert timed.room() == 5
    batch = timed.seeds[:12]
    assert len(batch) == 12 and len(timed.fit_and_score(batch)) == 5 and timed.evals == 15
    counted = Engine(space, ctx, seeds_for(sealed, space), SearchConfig.build(max_evals=100, seed=0))
    counted.evals = 10
    assert counted.room() is None          # an evaluation budget is never cut by time


def test_device_option_and_stage_times(tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        assert main(["discover", "synthetic_chinchilla", "--max-evals", "5", "--device", "cuda"]) == 1
        assert "torch sees no CUDA device" in capsys.readouterr().err
    out = tmp_path / "auto"
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--device", "auto", "--out", str(out),
                 "--json", "--no-report"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((out / "manifest.json").read_text())["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert json.loads((out / "config.json").read_text())["settings"]["fitting"]["device"] == "auto"
    assert set(s["timings"]) == {"prepare", "search", "choose", "ensemble", "score", "outputs"}
    assert s["wall_s"] >= s["timings"]["search"] > 0


def test_a_human_law_seed_keeps_its_own_inits_and_bounds():
    """The card's human law is fitted in the search and refit at the choice with its published
    parameterisation (Chinchilla's exponents bounded to [0, 3]), not the generic starts."""
    from lawforge.search.candidates import score_candidates
    from lawforge.search.choose import law_of
    from lawforge.search.prepare import make_context, seed_specs

    ds = load_dataset("synthetic_chinchilla")
    law, _ = ds.card.human_law("chinchilla")
    form, specs = S.from_law_specs(law)
    assert S.from_law(law) == form
    bounded = {p.name for p in law.params if p.lower == 0}
    assert bounded and sum(s["lower"] == 0 for s in specs.values()) == len(bounded)
    text = sp.sstr(form)
    assert seed_specs(ds.card)[text] == specs
    cfg = SearchConfig()
    sealed = SealedDataset(ds)
    ctx = make_context(sealed, cfg)
    assert ctx.seed_specs[text] == specs
    rec = score_candidates([text], ctx)[0]
    assert rec["status"] == "ok"
    member = type("M", (), {"expr": form})()
    built = law_of(member, ds.card, sealed.train, cfg)
    lowers = {p.name: p.lower for p in built.params}
    assert all(lowers[n] == s["lower"] or (s["lower"] is None and lowers[n] == -np.inf) for n, s in specs.items())
    # a form the card does not hold keeps the generic starts
    from lawforge.laws.expr import parse_expression

    other = S.to_law(parse_expression("p0 + p1/N**p2", None), dict(ds.card.variables), ds.card.target_columns)
    assert all(p.lower == -np.inf for p in other.params)


def test_a_converged_population_gets_immigrants_rather_than_stopping(monkeypatch):
    """When the population's children are all forms seen before (crossover here only returns a
    parent), the generation is filled with immigrants, two mutations from any form fitted so
    far: new, valid, canonical. The search stops as exhausted only when none can be found."""
    from lawforge.search.engine import Engine
    from lawforge.search.prepare import build_space, make_context, seeds_for

    sealed = SealedDataset(load_dataset("synthetic_chinchilla"), 0)
    cfg = SearchConfig.build(max_evals=100, seed=0, crossover_rate=1.0)
    space, ctx = build_space(sealed, cfg), make_context(sealed, cfg)
    engine = Engine(space, ctx, seeds_for(sealed, space), cfg)
    try:
        engine.seed_population()
        monkeypatch.setattr(S, "crossover", lambda a, b, space, rng: a)
        kids = engine.propose(6)
        assert len(kids) == 6 and {op for _, op in kids} == {"immigrant"}
        assert all(S.key(e) not in engine.seen and S.valid(e, space) and S.canonical(e) == e for e, _ in kids)
        assert len({S.key(e) for e, _ in kids}) == 6
        # nothing new anywhere: an empty generation, which the loop reports as exhausted
        monkeypatch.setattr(S, "mutations_for", lambda space: {"same": lambda e, space, rng: e})
        assert engine.propose(6) == []
    finally:
        engine.close()


def test_the_search_fits_a_cards_law_as_published():
    """The card's law enters the search in its published form, whose text keys its own specs:
    canonicalising it would change its parameterisation (``p3/D**p4`` -> ``D**p4*p3``, the sign of
    the exponent absorbed) and lose them. Generic seeds stay canonical."""
    from lawforge.search.engine import Engine
    from lawforge.search.prepare import build_space, make_context, seeds_for

    ds = load_dataset("synthetic_chinchilla")
    sealed = SealedDataset(ds)
    cfg = SearchConfig()
    ctx = make_context(sealed, cfg)
    space = build_space(sealed, cfg)
    seeds = seeds_for(sealed, space)
    human = next(e for e, o in seeds if o == "human:chinchilla")
    assert S.canonical(human) != human     # what the engine used to fit instead
    engine = Engine(space, ctx, seeds, cfg)
    try:
        kept = [e for e, o in engine.seeds if o == "human:chinchilla"]
        assert kept == [human] and sp.sstr(human) in ctx.seed_specs
        assert all(S.canonical(e) == e for e, o in engine.seeds if o == "seed:generic")
        members = engine.seed_population()
    finally:
        engine.close()
    rec = next(m.rec for m in members if m.origin == "human:chinchilla")
    assert rec["status"] == "ok" and rec["expr"] in ctx.seed_specs   # fitted with the card's specs


def test_the_cards_law_is_the_incumbent(tmp_path):
    """The discovered law replaces the card's own law only when its validation NMSE is at most
    ``selection.incumbent`` times the human law's (both refit on the same folds)."""
    from lawforge.search.settings import config_of_run

    ds = load_dataset("synthetic_chinchilla")
    out = discover(ds, SearchConfig.build(max_evals=40, seed=0, incumbent=0.75), tmp_path / "a", report=False)
    law = json.loads((tmp_path / "a" / "law.json").read_text())
    inc = law["incumbent"]
    if inc is None:
        assert law["origin"].startswith("human:")   # the search chose it: nothing to compare
    else:
        assert inc["human"] == "chinchilla" and inc["folds"] >= 1 and out["incumbent"] == inc["chosen"]
        wins = inc["discovered_nmse"] <= inc["margin"] * inc["human_nmse"]
        assert (inc["chosen"] == "discovered") == (wins or "why_not" in inc)
        assert law["origin"].startswith("human:") == (inc["chosen"] == "human")
    # a discovered law can never reach a margin of 1e-9: the card's law is chosen
    strict = discover(ds, SearchConfig.build(max_evals=40, seed=0, incumbent=1e-9), tmp_path / "b", report=False)
    law_b = json.loads((tmp_path / "b" / "law.json").read_text())
    assert law_b["origin"] == "human:chinchilla" and strict["test_r2"] > 0.9
    assert law_b["incumbent"] is None or law_b["incumbent"]["chosen"] == "human"
    # off (the default), and for runs written before the rule
    assert SearchConfig().selection.incumbent == 0
    off = discover(ds, SearchConfig.build(max_evals=40, seed=0), tmp_path / "c", report=False)
    assert off["incumbent"] is None
    assert config_of_run({"settings": {"seed": 0}}).selection.incumbent == 0.0


def test_a_run_writes_a_model_ensemble_and_predict_reports_it(tmp_path):
    """ensemble.json: the chosen form, the runners-up and the card's laws weighted by 1 / their
    refit validation NMSE; metrics.json scores it on test, predict prints its point prediction."""
    import pandas as pd

    from lawforge.laws.law import law_from_text
    from lawforge.laws.metrics import compute_metrics
    from lawforge.runs.predict import load_run_laws, predict_run
    from lawforge.search.settings import config_of_run

    ds = load_dataset("synthetic_chinchilla")
    out = discover(ds, SearchConfig.build(max_evals=40, seed=0), tmp_path / "a", report=False)
    ens = json.loads((tmp_path / "a" / "ensemble.json").read_text())["members"]
    assert out["ensemble_size"] == len(ens) >= 2
    assert abs(sum(m["weight"] for m in ens) - 1) < 1e-9
    assert any(m["origin"] == "human:chinchilla" for m in ens)
    w = np.array([1 / m["val_nmse"] for m in ens])
    assert np.allclose([m["weight"] for m in ens], w / w.sum())
    laws = [law_from_text(m["expression"], ds.card.variables, ds.card.target_columns) for m in ens]
    pred = sum(m["weight"] * predict(lw, m["params"], ds.test) for m, lw in zip(ens, laws))
    assert out["ensemble_test_r2"] == pytest.approx(compute_metrics(ds.test.y, pred).r2)
    rl = load_run_laws(tmp_path / "a")
    frame = pd.DataFrame({"N": [7e10], "D": [1.4e12]})
    res = predict_run(rl, frame, resamples=20)
    at = {"N": np.array([7e10]), "D": np.array([1.4e12])}
    want = sum(m["weight"] * lw.predict(at, m["params"]["all"])[0, 0] for m, lw in zip(ens, laws))
    assert res["ensemble"].iloc[0] == pytest.approx(want)
    off = discover(ds, SearchConfig.build(max_evals=40, seed=0, ensemble=False), tmp_path / "b", report=False)
    assert off["ensemble_size"] == 0 and off["ensemble_test_r2"] is None
    assert not (tmp_path / "b" / "ensemble.json").exists()
    assert "ensemble" not in predict_run(load_run_laws(tmp_path / "b"), frame, resamples=20)
    assert config_of_run({"settings": {"seed": 0}}).selection.ensemble is False


@pytest.mark.slow
def test_the_ensemble_leaves_out_members_that_break_the_contract(tmp_path):
    """On a learning-rate sweep the card's plain Chinchilla law has no best learning rate, so it
    breaks the contract and stays out of the ensemble; with the contract off it is a member."""
    from lawforge.search.contract import check_law

    ds = load_dataset("synthetic_lr_bowl")
    out = {}
    for name, on in (("on", True), ("off", False)):
        discover(ds, SearchConfig.build(max_evals=30, seed=0, **{"checks.contract": on}), tmp_path / name,
                 report=False)
        out[name] = json.loads((tmp_path / name / "ensemble.json").read_text())["members"]
    assert "human:chinchilla" in [m["origin"] for m in out["off"]]
    assert "human:chinchilla" not in [m["origin"] for m in out["on"]]
    from lawforge.laws.law import law_from_text
    for m in out["on"][1:]:
        law = law_from_text(m["expression"], ds.card.variables, ds.card.target_columns)
        assert check_law(law, m["params"], ds.train, ds.card).ok, m["expression"]


def test_each_final_stage_gets_its_share_of_the_time_left_when_it_starts():
    """The final stages' deadlines are their cumulative shares of the time left after the search
    when each stage keeps to its share; a stage that overruns its share shortens the next one's
    time instead of leaving it none, and none reaches past the time the outputs keep."""
    from lawforge.runs import discover as D

    c = D._Clock()
    now = c.t0 + 20.0                        # the search ended 20 s into a 60 s budget
    end = c.t0 + 60.0 - D.FINAL_FIXED_S      # 32 s left for the final stages
    by = {}
    for k in D.FINAL_SHARES:                 # each stage ends exactly at its deadline
        by[k] = now = D.final_deadline(k, 60.0, c, now)
    assert list(by.values()) == pytest.approx([c.t0 + 20.0 + f * 32.0 for f in D.FINAL_SHARES.values()])
    late = c.t0 + 20.0 + 0.8 * 32.0          # the choice ran past the ensemble's cumulative share
    assert late < D.final_deadline("ensemble", 60.0, c, late) < end
    assert D.final_deadline("score", 60.0, c, end + 5.0) == end + 5.0   # nothing left: now
    assert c.t0 < D.final_deadline("choose", 60.0, c) < end


def test_past_their_deadline_the_final_stages_take_on_no_more_forms(tmp_path, monkeypatch):
    """Under a time budget the final stages stop taking on forms at their deadlines: with every
    deadline already passed, the choice is the best validation score (no re-ranking measured),
    no ensemble is built and top_laws.json holds the chosen law alone. Without a budget there are
    no deadlines."""
    from lawforge.runs import discover as D

    assert [D.final_deadline(k, None, D._Clock()) for k in D.FINAL_SHARES] == [None] * 3
    ds = load_dataset("synthetic_chinchilla")
    full = discover(ds, SearchConfig.build(max_evals=30, seed=0), tmp_path / "a", report=False)
    monkeypatch.setattr(D, "final_deadline", lambda stage, budget_s, clock, now=None: 0.0)
    late = discover(ds, SearchConfig.build(max_evals=30, seed=0), tmp_path / "b", report=False)
    assert full["ensemble_size"] >= 2 and len(json.loads((tmp_path / "a" / "top_laws.json").read_text())) > 1
    assert late["ensemble_size"] == 0 and not (tmp_path / "b" / "ensemble.json").exists()
    assert len(json.loads((tmp_path / "b" / "top_laws.json").read_text())) == 1
    assert late["extrapolation_shift"] is None
    rows = [json.loads(x) for x in (tmp_path / "b" / "candidates.jsonl").read_text().splitlines()]
    best = min((r for r in rows if r["status"] == "ok"), key=lambda r: r["val_nmse"] * (1 + 0.02 * r["complexity"]))
    assert late["val_r2"] == pytest.approx(best["val_r2"])


def test_the_final_choice_ranks_with_its_own_parsimony():
    """``selection.parsimony_choice`` weighs complexity in the final choice only: a form that
    scores a little better on validation but is twice as complex is chosen at the search's
    parsimony (the default, 0.02) and passed over at 0.10."""
    from lawforge.laws.expr import parse_expression
    from lawforge.search.choose import choose
    from lawforge.search.engine import Member
    from lawforge.search.prepare import final_train, make_context
    from lawforge.search.settings import config_of_run

    ds = load_dataset("synthetic_chinchilla")

    def member(text, nmse):
        expr = parse_expression(text, None, what="candidate")
        rec = {"status": "ok", "val_nmse": nmse, "complexity": S.complexity(expr), "n_params": S.n_params(expr)}
        return Member(expr, sp.srepr(expr), rec, "test")

    members = [member("p0 + p1/N**p2 + p3/D**p4", 0.11),
               member("p0 + p1/N**p2 + p3/D**p4 + p5/(N**p6*D**p7) + p8*log(D)/D", 0.08)]
    assert members[1].rec["complexity"] >= 1.8 * members[0].rec["complexity"]
    picks = {}
    for pc in (None, 0.02, 0.10):
        cfg = SearchConfig.build(seed=0, select="score", **{"selection.reference": False},
                                 **({} if pc is None else {"parsimony_choice": pc}))
        sealed = SealedDataset(ds, cfg.seed)
        picks[pc] = choose(members, make_context(sealed, cfg), ds.card, final_train(sealed, cfg), cfg).member
    assert picks[None] is members[1] and picks[0.02] is members[1] and picks[0.10] is members[0]
    assert SearchConfig().selection.parsimony_choice is None and SearchConfig().evolution.parsimony == 0.02
    assert config_of_run({"seed": 0}).selection.parsimony_choice is None   # runs before the setting: as the search
