"""The Python API: LawSearch (scikit-learn contract) and fit_law."""


import numpy as np
import pandas as pd
import pytest
import sympy as sp

from conftest import chinchilla_table


@pytest.mark.slow
def test_api_lawsearch(tmp_path):
    from lawforge import LawSearch

    df = chinchilla_table(seed=1)
    df["model"] = np.where(df.index % 2 == 0, "a", "b")
    est = LawSearch(max_evals=40, seed=0, out_dir=str(tmp_path / "api"))
    assert est.get_params()["max_evals"] == 40 and not hasattr(est, "best_law_")
    assert est.fit(df[["N", "D"]], df["loss"], groups=df["model"]) is est
    pred = est.predict(df[["N", "D"]], groups=df["model"])
    assert pred.shape == (len(df),) and np.all(np.isfinite(pred))
    assert est.score(df[["N", "D"]], df["loss"], groups=df["model"]) > 0.95
    assert isinstance(est.laws_, pd.DataFrame)
    assert {"complexity", "n_params", "val_r2", "expression"} <= set(est.laws_.columns) and len(est.laws_) >= 1
    assert sorted(est.best_law_.groups) == ["a", "b"]
    assert isinstance(est.best_law_.to_sympy(), sp.Expr)
    assert "loss" in est.best_law_.to_latex()
    import torch

    f = est.best_law_.to_torch("a")
    rows = df["model"] == "a"
    t = f({"N": torch.tensor(df.N[rows].to_numpy()), "D": torch.tensor(df.D[rows].to_numpy())})
    assert np.allclose(t.numpy()[:, 0], pred[rows.to_numpy()])
    with pytest.raises(Exception, match="groups"):
        est.predict(df[["N", "D"]])


@pytest.mark.slow
def test_api_clone_and_params():
    from lawforge import LawSearch

    est = LawSearch(max_evals=7, seed=3, hyperparameters=("lr",))
    clone = type(est)(**est.get_params())
    assert clone.get_params() == est.get_params() and clone is not est
    assert est.set_params(seed=5) is est and est.seed == 5
    with pytest.raises(ValueError, match="invalid parameter"):
        est.set_params(sede=1)
    with pytest.raises(Exception, match="not fitted"):
        est.predict(np.ones((2, 2)))


@pytest.mark.slow
def test_api_sklearn_clone():
    from lawforge import LawSearch

    base = pytest.importorskip("sklearn.base", reason="scikit-learn is not a dependency; clone() checked where installed")
    est = LawSearch(max_evals=7, seed=3)
    assert base.clone(est).get_params() == est.get_params()


def test_api_fit_law_one_call():
    from lawforge import fit_law

    df = chinchilla_table(seed=2, noise=0.0)
    fitted = fit_law("E + A/N**alpha + B/D**beta", df, target="loss")
    p = fitted.params["all"]
    assert p["alpha"] == pytest.approx(0.34, rel=1e-3) and p["E"] == pytest.approx(1.69, rel=1e-3)
    assert fitted.metrics["train_r2"] > 0.999999
    assert np.allclose(fitted.predict(df), df["loss"], rtol=1e-6)
    with pytest.raises(Exception, match="target"):
        fit_law("E + A/N**alpha", df)  # D and loss both candidates
    with pytest.raises(Exception, match="uses no column"):
        fit_law("E + A/Q**alpha", df, target="loss")


def test_lawsearch_passes_the_scikit_learn_checks_that_do_not_fit():
    """scikit-learn's own estimator checks, those that apply without fitting (the estimator's fit
    needs positive scale features, which the random data of the fitting checks is not)."""
    from sklearn.utils import estimator_checks as ec

    from lawforge import LawSearch

    est = LawSearch()
    ec.check_no_attributes_set_in_init("LawSearch", est)
    ec.check_get_params_invariance("LawSearch", est)
    ec.check_set_params("LawSearch", est)
    ec.check_parameters_default_constructible("LawSearch", est)
    assert LawSearch().restarts == 12   # the search's own default (lawforge.search.settings.SEARCH_RESTARTS)
