"""Predictions with bands, and compute-optimal allocation."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lawforge import FittedLaw, fit_law
from lawforge.cli import main
from lawforge.errors import LawError
from lawforge.laws.law import law_from_text
from lawforge.laws.optimum import Constraint, NoOptimum, minimise

from conftest import chinchilla_table

CHIN = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def chinchilla_law():
    return law_from_text("E + A/N**alpha + B/D**beta", {"N": "N", "D": "D"}, ["loss"])


def test_the_optimum_of_the_published_chinchilla_law_matches_its_closed_form():
    law = chinchilla_law()
    a, b, A, B = CHIN["alpha"], CHIN["beta"], CHIN["A"], CHIN["B"]
    G = (a * A / (b * B)) ** (1 / (a + b))
    c = Constraint.parse("6*N*D = 1e24", law)
    best = minimise(law, CHIN, c, train_range=(1e8, 1e10))
    n_star = G * (1e24 / 6) ** (b / (a + b))
    assert best["N"] == pytest.approx(n_star, rel=0.01)
    assert best["D"] == pytest.approx(1e24 / 6 / n_star, rel=0.01)
    assert best["N"] * best["D"] * 6 == pytest.approx(1e24, rel=1e-9)
    budgets = np.geomspace(1e21, 1e25, 9)
    ns = [minimise(law, CHIN, c.with_value(C, law), train_range=(1e8, 1e10))["N"] for C in budgets]
    slope = np.polyfit(np.log(budgets), np.log(ns), 1)[0]
    assert abs(slope - b / (a + b)) < 1e-3            # N* ∝ C^0.4516


def test_fitted_law_optimum_and_its_bands():
    fitted = fit_law("E + A/N**alpha + B/D**beta", chinchilla_table(noise=0.0), target="loss",
                     params={k: {"init": v * 1.3, "lower": 0.0} for k, v in CHIN.items()})
    best = fitted.optimum("6*N*D = 1e22")
    truth = minimise(chinchilla_law(), CHIN, Constraint.parse("6*N*D = 1e22", chinchilla_law()), train_range=(1e8, 1e10))
    assert best["N"] == pytest.approx(truth["N"], rel=0.01)     # noiseless data: the truth's optimum
    with_bands = fitted.optimum("6*N*D = 1e22", interval=0.9, resamples=30)
    lo, hi = with_bands["bands"]["N"]
    assert lo <= with_bands["N"] <= hi


def test_prediction_bands_hold_the_prediction_and_widen_with_extrapolation():
    fitted = fit_law("E + A/N**alpha + B/D**beta", chinchilla_table(noise=0.01), target="loss",
                     params={k: {"init": v, "lower": 0.0} for k, v in CHIN.items()})
    pts = pd.DataFrame({"N": [3e9, 3e10, 3e11], "D": [2e11, 2e11, 2e11]})
    band = fitted.predict(pts, interval=0.9, resamples=60)
    assert list(band.columns) == ["prediction", "low", "high"]
    assert np.all(band["low"] <= band["prediction"]) and np.all(band["prediction"] <= band["high"])
    width = (band["high"] - band["low"]).to_numpy()
    assert width[0] < width[1] < width[2]
    assert np.allclose(band["prediction"], fitted.predict(pts))
    with pytest.raises(Exception, match="interval level must be between 0 and 1"):
        fitted.predict(pts, interval=90, resamples=20)


def test_a_bootstrap_past_its_deadline_refits_one_batch_and_says_so():
    import time

    from lawforge.fitting import bootstrap as B

    fitted = fit_law("E + A/N**alpha + B/D**beta", chinchilla_table(noise=0.01), target="loss",
                     params={k: {"init": v, "lower": 0.0} for k, v in CHIN.items()})
    args = (fitted.law, fitted.train, fitted.params, 2 * B.CHUNK + 5)
    late = B.bootstrap(*args, seed=3, deadline=time.perf_counter() - 1.0)
    assert late.requested == B.CHUNK and len(late.params) + late.failed == B.CHUNK
    assert any(f"{B.CHUNK} of {2 * B.CHUNK + 5} bootstrap refits ran" in n for n in late.notes)
    full = B.bootstrap(*args, seed=3, deadline=time.perf_counter() + 600)
    assert full.requested == 2 * B.CHUNK + 5 and not any("time budget" in n for n in full.notes)
    free = B.bootstrap(*args, seed=3)
    assert free.requested == 2 * B.CHUNK + 5
    for a, b in zip(late.params, free.params):   # the same first resamples as without a deadline
        assert a["all"]["E"] == pytest.approx(b["all"]["E"], rel=1e-6)


def test_a_law_without_its_data_has_no_interval():
    f = FittedLaw(chinchilla_law(), {"all": CHIN})
    with pytest.raises(Exception, match="does not know the data it was fitted on"):
        f.predict(pd.DataFrame({"N": [1e9], "D": [1e10]}), interval=0.9)


@pytest.mark.parametrize("text, match", [
    ("6*N*D", "expected one equation"),
    ("6*N*D == 1e24", "expected one equation"),
    ("6*N*Q = 1e24", "unknown symbol 'Q'"),
    ("6*N = 1e24", "exactly two of the law's features"),
    ("__import__('os').system('true')*N*D = 1", "not allowed"),
])
def test_bad_constraints_are_clear_errors(text, match):
    with pytest.raises(LawError, match=match):
        Constraint.parse(text, chinchilla_law())


def test_a_law_with_no_interior_optimum_says_so():
    law = law_from_text("E + A/N**alpha + B*D", {"N": "N", "D": "D"}, ["loss"])
    with pytest.raises(NoOptimum, match="no interior optimum"):
        minimise(law, dict(E=1.0, A=400.0, alpha=0.3, B=1e-12), Constraint.parse("6*N*D = 1e24", law),
                 train_range=(1e8, 1e10))


@pytest.mark.slow
def test_predict_and_optimum_on_a_run(run_dir, capsys, tmp_path):
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(run_dir), "--at", "N=3e10,D=2e11;N=1e9,D=1e10", "--resamples", "20", "--json",
                 "--csv", str(out_csv)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["points"]) == 2 and res["laws"] >= 1
    for p in res["points"]:
        assert p["low"] <= p["prediction"] <= p["high"]
        assert p["combined_low"] <= p["combined_high"] and p["model_low"] <= p["prediction"] <= p["model_high"]
        assert p["observed_low"] <= p["prediction"] <= p["observed_high"]
    assert len(pd.read_csv(out_csv)) == 2
    rc = main(["optimum", str(run_dir), "--constraint", "6*N*D = 1e22", "--resamples", "20", "--json"])
    out, err = capsys.readouterr()
    if rc == 0:
        o = json.loads(out)
        assert math.isclose(6 * o["optimum"]["N"] * o["optimum"]["D"], 1e22, rel_tol=1e-6)
    else:
        assert "no interior optimum" in err
    plot = tmp_path / "frontier.png"
    rc = main(["optimum", str(run_dir), "--constraint", "6*N*D = 1e22", "--over", "1e21:1e23:3", "--resamples", "10",
               "--plot", str(plot)])
    out, err = capsys.readouterr()
    if rc == 0:
        assert "N* ~ budget^" in out and plot.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "no interior optimum" in err
    assert main(["predict", str(run_dir), "--at", "N=-1,D=1e9", "--resamples", "20"]) != 0
    assert "outside the law's domain: N must be positive" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--at", "N=1e9,N=2e9,D=1e9"]) != 0
    assert "N is given twice (points are separated by ';')" in capsys.readouterr().err
    assert main(["optimum", str(run_dir), "--constraint", "6*N*K = 1e22"]) != 0
    assert "unknown symbol 'K'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--at", "N=1,D=1"]) != 0
    assert "no law yet" in capsys.readouterr().err


@pytest.mark.slow
def test_the_discovered_laws_optimum_on_noiseless_data_is_the_truths():
    from lawforge import LawSearch

    N = np.repeat(np.geomspace(2e7, 3e9, 8), 6)
    D = np.tile(np.geomspace(2e9, 2e11, 6), 8)
    y = CHIN["E"] + CHIN["A"] / N ** CHIN["alpha"] + CHIN["B"] / D ** CHIN["beta"]
    est = LawSearch(max_evals=200, seed=0).fit(pd.DataFrame({"N": N, "D": D}), y)
    law = chinchilla_law()
    truth = minimise(law, CHIN, Constraint.parse("6*N*D = 1e22", law), train_range=(2e7, 3e9))
    found = est.optimum("6*N*D = 1e22")
    assert found["N"] == pytest.approx(truth["N"], rel=0.01)
    assert found["D"] == pytest.approx(truth["D"], rel=0.01)
