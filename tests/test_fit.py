import logging

import numpy as np
import pytest

from lawforge.datasets import load_dataset
from lawforge.datasets.loader import DataSplit
from lawforge.errors import FitError
from lawforge.fitting.lm import fit_split, predict
from lawforge.laws.law import Law
from lawforge.laws.metrics import compute_metrics


def _split(X, y, groups=None):
    n = len(y)
    groups = np.array(groups if groups is not None else ["all"] * n, dtype=object)
    return DataSplit("train", {k: np.asarray(v, float) for k, v in X.items()}, np.asarray(y, float).reshape(n, -1),
                     groups, list(dict.fromkeys(groups.tolist())), ["y"])


def test_recovers_synthetic_chinchilla_and_extrapolates():
    ds = load_dataset("synthetic_chinchilla")
    law, _ = ds.card.human_law()
    res = fit_split(law, ds.train, restarts=16, seed=0)
    g = res.groups["all"]
    assert g.status == "converged" and res.ok
    m = compute_metrics(ds.test.y, predict(law, res.params(), ds.test))
    assert m.r2 > 0.99
    assert g.params["alpha"] == pytest.approx(0.34, abs=0.03)


def test_exact_data_is_fitted_to_machine_precision_per_group():
    rng = np.random.default_rng(0)
    D = np.tile(200 * 2.0 ** np.arange(10), 3)
    groups = np.repeat(["a", "b", "c"], 10)
    truth = {"a": (40, 0.45, 30, 1.2), "b": (15, 0.35, 12, 0.9), "c": (90, 0.55, 60, 1.6)}
    y = np.array([truth[g][3] + truth[g][0] / (d ** truth[g][1] + truth[g][2]) for d, g in zip(D, groups)])
    law = Law("A/(D**alpha + B) + C", {"D": "D"},
              params={"A": {"init": 10, "bounds": [0, None]}, "alpha": {"init": 0.5, "bounds": [0, 3]},
                      "B": {"init": 10, "bounds": [0, None]}, "C": 1.0}, target_names=["y"])
    res = fit_split(law, _split({"D": D}, y, groups), restarts=32, seed=rng.integers(100))
    for g, (A, a, B, C) in truth.items():
        assert res.groups[g].loss < 1e-18
        assert res.groups[g].params["alpha"] == pytest.approx(a, rel=1e-5)
        assert res.groups[g].params["C"] == pytest.approx(C, rel=1e-5)


def test_bounds_are_respected():
    x = np.linspace(1, 10, 20)
    y = 2.0 - 0.5 * x  # wants a negative slope
    law = Law("a + b*x", {"x": "x"}, params={"a": 0.0, "b": {"init": 1.0, "bounds": [0.1, 5]}},
              target_names=["y"])
    res = fit_split(law, _split({"x": x}, y), restarts=8)
    assert 0.1 <= res.groups["all"].params["b"] <= 0.1 + 1e-6


def test_shared_parameters_are_fitted_jointly():
    x = np.tile(np.linspace(1, 5, 8), 2)
    groups = np.repeat(["g1", "g2"], 8)
    y = np.where(groups == "g1", 1.0, 3.0) + 2.0 * np.exp(-0.7 * x)
    law = Law("c + k*exp(-r*x)", {"x": "x"},
              params={"c": 0.0, "k": {"init": 1.0, "shared": True}, "r": {"init": 0.3, "bounds": [0, 5], "shared": True}},
              target_names=["y"])
    res = fit_split(law, _split({"x": x}, y, groups), restarts=16)
    assert res.groups["g1"].params["k"] == res.groups["g2"].params["k"] == pytest.approx(2.0, rel=1e-6)
    assert res.groups["g1"].params["c"] == pytest.approx(1.0, abs=1e-6)
    assert res.groups["g2"].params["c"] == pytest.approx(3.0, abs=1e-6)


def test_same_seed_same_result_and_restarts_are_seeded():
    ds = load_dataset("synthetic_multigroup")
    law, _ = ds.card.human_law()
    a = fit_split(law, ds.train, restarts=8, seed=3).params()
    b = fit_split(law, ds.train, restarts=8, seed=3).params()
    assert a == b


def test_overflow_restarts_are_dropped_not_propagated():
    x = np.linspace(1, 50, 30)
    y = 1.0 + np.exp(0.1 * x)
    # random starts put b up to ~+5: exp(5*50) overflows; those restarts must be dropped
    law = Law("a + exp(b*x)", {"x": "x"}, params={"a": 0.0, "b": {"init": 0.2, "scale": 20.0}}, target_names=["y"])
    res = fit_split(law, _split({"x": x}, y), restarts=64, seed=0)
    g = res.groups["all"]
    assert 0 < g.restarts_ok < 64  # some diverged and were dropped
    assert np.isfinite(g.loss) and g.params["b"] == pytest.approx(0.1, rel=1e-6)


def test_all_restarts_diverging_is_a_failed_status_not_nan_crash():
    x = np.linspace(1000, 2000, 10)
    law = Law("exp(a*x)", {"x": "x"}, params={"a": {"init": 5.0, "bounds": [1, 10]}}, target_names=["y"])
    res = fit_split(law, _split({"x": x}, np.ones(10)), restarts=4)
    assert res.groups["all"].status == "failed" and not res.ok


def test_bad_inputs_raise_clear_errors():
    law = Law("a + b*x", {"x": "x"}, target_names=["y"])
    with pytest.raises(FitError, match="target 'y' is all NaN"):
        fit_split(law, _split({"x": [1.0, 2.0, 3.0]}, [np.nan] * 3))
    with pytest.raises(FitError, match="target 'y' has a NaN or inf value \\(row 1\\)"):
        fit_split(law, _split({"x": [1.0, 2.0, 3.0]}, [1.0, np.inf, 2.0]))
    with pytest.raises(FitError, match="column 'x' has a NaN"):
        fit_split(law, _split({"x": [1.0, np.nan, 3.0]}, [1.0, 2.0, 3.0]))
    with pytest.raises(FitError, match="group 'b' has 1 point"):
        fit_split(law, _split({"x": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0], ["a", "a", "b"]))
    with pytest.raises(FitError, match="restarts"):
        fit_split(law, _split({"x": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0]), restarts=0)
    with pytest.raises(FitError, match="device"):
        fit_split(law, _split({"x": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0]), device="tpu")


def test_a_value_outside_the_laws_domain_is_a_clear_error_naming_the_column_and_value():
    x = {"x": [1.0, -2.0, 3.0]}
    for text, what in (("a + b*log(x)", "law's log\\(x\\) is not defined \\(x must be > 0\\)"),
                       ("a + b*x**c", "law's x\\*\\*c is not defined \\(x must be >= 0\\)"),
                       ("a + b*sqrt(x)", "law's sqrt\\(x\\) is not defined")):
        with pytest.raises(FitError, match="column 'x' has the value -2 \\(row 1\\), where the " + what):
            fit_split(Law(text, {"x": "x"}, target_names=["y"]), _split(x, [1.0, 2.0, 3.0]))
    with pytest.raises(FitError, match="column 'x' has the value 0 .*log"):
        fit_split(Law("a + b*log(x)", {"x": "x"}, target_names=["y"]), _split({"x": [0.0, 1.0, 2.0]}, [1.0, 2.0, 3.0]))
    # whole powers, a zero under a power and a shifted log are defined: no error
    for text, col in (("a + b*x**2", [1.0, -2.0, 3.0]), ("a + b*x**c", [0.0, 1.0, 2.0]),
                      ("a + b*log(c + x)", [1.0, -2.0, 3.0])):
        fit_split(Law(text, {"x": "x"}, target_names=["y"]), _split({"x": col}, [1.0, 2.0, 3.0]), restarts=2)


def test_underdetermined_group_warns(caplog):
    law = Law("a + b*x + c*x**2", {"x": "x"}, target_names=["y"])
    with caplog.at_level(logging.WARNING):
        fit_split(law, _split({"x": [1.0, 2.0]}, [1.0, 2.0]), restarts=2)
    assert "underdetermined" in caplog.text


def test_huber_resists_an_outlier():
    x = np.linspace(0, 10, 41)
    y = 1.0 + 0.5 * x
    y[20] += 50.0
    law = Law("a + b*x**p", {"x": "x"}, params={"a": 0.0, "b": 1.0, "p": {"init": 1.2, "bounds": [0.5, 2]}},
              target_names=["y"])
    l2 = fit_split(law, _split({"x": x}, y), restarts=8).groups["all"].params
    hub = fit_split(law, _split({"x": x}, y), restarts=8, loss="huber", huber_delta=0.1).groups["all"].params
    assert abs(hub["b"] - 0.5) < 0.02 and abs(hub["b"] - 0.5) < abs(l2["b"] - 0.5)


def test_extra_starts_are_used():
    ds = load_dataset("synthetic_multigroup")
    law, _ = ds.card.human_law()
    truth = {"g1": {"A": 40.0, "alpha": 0.45, "B": 30.0, "C": 1.2}, "g2": {"A": 15.0, "alpha": 0.35, "B": 12.0, "C": 0.9},
             "g3": {"A": 90.0, "alpha": 0.55, "B": 60.0, "C": 1.6}, "g4": {"A": 25.0, "alpha": 0.40, "B": 5.0, "C": 2.1}}
    res = fit_split(law, ds.train, restarts=2, extra_starts=truth, max_iter=50)
    assert all(g.status == "converged" for g in res.groups.values())


# ---------------------------------------------------------------------------- batched fits
def _forms(ds):
    from lawforge.laws.expr import parse_expression
    from lawforge.search.space import to_law

    texts = ["p0 + p1*N**p2 + p3*D**p4",             # 3 nonlinear-ish + 2 linear columns
             "p0 + p1*log(N) + p2*log(D)",            # purely linear: solved by the projection alone
             "p0 + p1/(N**p2 + p3)",                  # bounded and free parameters mixed
             "exp(p0 + p1*log(N) + p2*log(D))"]       # no linear parameter at all
    return [to_law(parse_expression(t, None), dict(ds.card.variables), ds.card.target_columns, data=ds.train)
            for t in texts]


def test_fit_many_gives_each_form_what_it_gets_alone():
    from lawforge.fitting.lm import FitJob, fit_many

    ds = load_dataset("synthetic_chinchilla")
    laws = _forms(ds)
    together = fit_many([FitJob(law, ds.train, 8, seed=i) for i, law in enumerate(laws)], max_iter=200)
    for i, (law, res) in enumerate(zip(laws, together)):
        alone = fit_split(law, ds.train, restarts=8, seed=i, max_iter=200)
        assert res.ok and alone.ok
        # one padded shape per batch: the same arithmetic as alone, bit for bit
        assert res.total_loss == alone.total_loss, law.to_string()
        assert res.params() == alone.params()
        assert res.n_fits == alone.n_fits == 8
    assert together[1].groups["all"].iterations == 0   # linear: one projection, no LM step


def test_an_unconverged_fit_ends_where_it_ends_alone_whatever_its_batch():
    """Stopped after 3 iterations (far from converged), a form fitted beside forms of other
    widths ends exactly where it ends alone: batching never changes a fit, converged or not."""
    from lawforge.fitting.lm import FitJob, fit_many

    ds = load_dataset("synthetic_chinchilla")
    laws = _forms(ds)
    alone = [fit_split(law, ds.train, restarts=4, seed=7, max_iter=3) for law in laws]
    for order in (laws, laws[::-1]):
        together = fit_many([FitJob(law, ds.train, 4, seed=7) for law in order], max_iter=3)
        for law, res in zip(order, together):
            ref = alone[laws.index(law)]
            assert res.total_loss == ref.total_loss and res.params() == ref.params(), law.to_string()


def test_fit_many_mixes_splits_groups_and_returns_errors_in_place():
    from lawforge.fitting.lm import FitJob, fit_many

    multi = load_dataset("synthetic_multigroup")
    chin = load_dataset("synthetic_chinchilla")
    law_m, _ = multi.card.human_law()
    law_c, _ = chin.card.human_law()
    tiny = _split({"D": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0], groups=["a", "a", "b"])  # group b: one point
    bad = Law("a + b*D", {"D": "D"}, target_names=["y"])
    out = fit_many([FitJob(law_m, multi.train, 8), FitJob(bad, tiny, 4), FitJob(law_c, chin.train, 8)],
                   errors="return")
    assert isinstance(out[1], FitError) and "group 'b' has 1 point" in str(out[1])
    assert out[0].ok and set(out[0].groups) == set(multi.train.group_names)
    assert out[2].ok and out[2].total_loss == pytest.approx(fit_split(law_c, chin.train, restarts=8).total_loss,
                                                             rel=1e-6)
    with pytest.raises(FitError, match="group 'b' has 1 point"):
        fit_many([FitJob(law_c, chin.train, 8), FitJob(bad, tiny, 4)])
    with pytest.raises(FitError, match="errors must be"):
        fit_many([FitJob(law_c, chin.train, 8)], errors="ignore")


def test_predict_uses_each_rows_group_constants_in_one_evaluation():
    law = Law("a + b*D", {"D": "D"}, target_names=["y"])
    split = _split({"D": [1.0, 2.0, 3.0, 4.0]}, [0, 0, 0, 0], groups=["g1", "g2", "g1", "g2"])
    got = predict(law, {"g1": {"a": 1.0, "b": 1.0}, "g2": {"a": 0.0, "b": 10.0}}, split)[:, 0]
    assert got.tolist() == [2.0, 20.0, 4.0, 40.0]
    with pytest.raises(FitError, match="no fitted constants for group 'g2'"):
        predict(law, {"g1": {"a": 1.0, "b": 1.0}}, split)
    with pytest.raises(FitError, match="group 'g2' has no value for parameter 'b'"):
        predict(law, {"g1": {"a": 1.0, "b": 1.0}, "g2": {"a": 1.0}}, split)
