"""Issue 5: reports, laws.tex, bring-your-own CSV, the scikit-learn API, doctor."""

import base64
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import sympy as sp

from lawforge.cli import main
from lawforge.report import laws_table_tex


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def chinchilla_table(seed=0, noise=0.003):
    """A Chinchilla-like grid with noise: L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(2e7, 3e9, 8), 6)
    D = np.tile(np.geomspace(2e9, 2e11, 6), 8)
    loss = 1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28
    return pd.DataFrame({"N": N, "D": D, "loss": loss * (1 + rng.normal(0, noise, len(N)))})


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo")
    path = d / "runs.csv"
    chinchilla_table().to_csv(path, index=False)
    return d, path


@pytest.fixture(scope="module")
def run_dir(csv_run):
    d, path = csv_run
    out = d / "run"
    rc = main(["discover", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test", "N >= 1e9",
               "--max-evals", "60", "--seed", "0", "--out", str(out), "--json"])
    assert rc == 0
    return out


# ----------------------------------------------------------------------------- BYO CSV
def test_byo_csv_recovers_known_law(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test_r2"] > 0.99, m
    card = (run_dir / "card.yaml").read_text()
    assert "N >= 1e9" in card and "loss" in card
    # the card written into the run folder reloads as a dataset with the same split
    from lawforge.datasets import load_dataset

    ds = load_dataset(str(run_dir / "card.yaml"))
    assert ds.test.n == 12 and ds.train.n == 36
    assert ds.card.validation["axis"] == "N"  # the column the test rule reads


def test_byo_csv_fit(csv_run, capsys):
    _, path = csv_run
    row = _json_out(capsys, ["fit", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test",
                             "N >= 1e9", "--law", "E + A/N**alpha + B/D**beta", "--json"])
    assert row["r2"] > 0.99
    assert "alpha" in row["latex"]


@pytest.mark.parametrize("argv_extra, needle", [
    (["--features", "N,X", "--target", "loss", "--test", "N >= 1e9"], "'X'"),
    (["--features", "N,D", "--target", "los", "--test", "N >= 1e9"], "did you mean 'loss'"),
    (["--features", "N,D", "--target", "loss", "--test", "N >= 1e99"], "matches no row"),
    (["--features", "N,D", "--target", "loss", "--test", "N > 0"], "matches every row"),
    (["--features", "N,D", "--target", "loss", "--test", "__import__('os')"], "test rule"),
    (["--features", "N,D", "--target", "loss", "--test", "Q >= 1"], "Q"),
    (["--features", "N,D", "--target", "loss"], "--test"),
    (["--features", "N,loss", "--target", "loss", "--test", "N >= 1e9"], "both a feature and a target"),
    (["--features", "N,D", "--target", "loss", "--test", "N >= 1e9", "--validation-axis", "loss"],
     "not one of the features"),
])
def test_byo_csv_bad_input(csv_run, capsys, argv_extra, needle):
    _, path = csv_run
    rc = main(["discover", "--csv", str(path), "--max-evals", "5", *argv_extra])
    err = capsys.readouterr().err
    assert rc == 1
    assert needle in err and err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mutate, needle", [
    (lambda df: df.assign(loss=df["loss"].astype(object).where(df.index != 3, "abc")), "non-numeric value 'abc'"),
    (lambda df: df.assign(D=df["D"].where(df.index != 5, np.nan)), "column 'D' has a missing or non-finite"),
    (lambda df: df.assign(loss=np.inf), "non-finite"),
    (lambda df: df.assign(loss=2.0), "constant"),
    (lambda df: df.drop(columns=["D"]), "no column 'D'"),
    (lambda df: df.iloc[[0, 47]], "row"),
])
def test_byo_csv_bad_values(tmp_path, capsys, mutate, needle):
    path = tmp_path / "bad.csv"
    mutate(chinchilla_table()).to_csv(path, index=False)
    rc = main(["discover", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test", "N >= 1e9",
               "--max-evals", "5", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and needle in err, err
    assert str(path) in err or "bad" in err


def test_byo_missing_file(capsys, tmp_path):
    rc = main(["discover", "--csv", str(tmp_path / "nope.csv"), "--features", "N", "--target", "y", "--test", "N>1"])
    assert rc == 1 and "file not found" in capsys.readouterr().err


def test_csv_and_dataset_conflict(capsys, csv_run):
    rc = main(["discover", "synthetic_chinchilla", "--csv", str(csv_run[1]), "--features", "N", "--target", "loss",
               "--test", "N >= 1e9"])
    assert rc == 1 and "not both" in capsys.readouterr().err


# ----------------------------------------------------------------------------- report + LaTeX
def test_report_files(run_dir):
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    law = json.loads((run_dir / "law.json").read_text())
    assert law["latex"] in md
    for section in ("Chosen law", "Constants per group", "Law against the data", "Pareto front", "Residuals",
                    "Top candidates", "Settings", "LLM"):
        assert section in md and section in html
    imgs = html.count('src="data:image/png;base64,')
    assert imgs >= 4  # law, groups, pareto, residuals: embedded, nothing external
    assert "report_files/" not in html
    for name in ("groups_loss", "pareto", "residuals"):
        png = (run_dir / "report_files" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    first = html.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(first)[:4] == b"\x89PNG"


def test_report_command_rewrites(run_dir, capsys):
    (run_dir / "report.html").unlink()
    out = _json_out(capsys, ["report", str(run_dir), "--format", "html", "--json"])
    assert out["html"].endswith("report.html") and (run_dir / "report.html").stat().st_size > 10000


def test_report_on_non_run(tmp_path, capsys):
    rc = main(["report", str(tmp_path)])
    assert rc == 1 and "not a complete run folder" in capsys.readouterr().err


def test_laws_tex(run_dir):
    tex = (run_dir / "laws.tex").read_text()
    top = json.loads((run_dir / "top_laws.json").read_text())
    assert tex.count("\\\\") >= len(top) + 1 and "\\toprule" in tex and "\\bottomrule" in tex
    assert tex.count("&") == 4 * (len(top) + 1)
    assert top[0]["chosen"] and top[0]["latex"] in tex
    assert all(t["val_r2"] is not None for t in top)


def test_laws_table_tex_escapes():
    tex = laws_table_tex([{"rank": 0, "latex": "L = a", "n_params": 1, "val_r2": 0.5, "test_r2": None,
                           "chosen": True}], "my_data%")
    assert "my\\_data\\%" in tex and "--" in tex


def test_fit_and_discover_print_latex(capsys):
    assert main(["fit", "synthetic_chinchilla", "--law", "E + A/N**alpha + B/D**beta", "--latex",
                 "--restarts", "8"]) == 0
    out = capsys.readouterr().out
    assert "loss = A N^{- \\alpha} + B D^{- \\beta} + E" in out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(run_dir, tmp_path):
    from lawforge.report import render_png

    png = render_png(run_dir / "report.html", tmp_path / "page.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50000


# ----------------------------------------------------------------------------- Python API
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


# ----------------------------------------------------------------------------- doctor
def test_doctor(capsys):
    rows = _json_out(capsys, ["doctor", "--json"])
    by = {r["check"]: r for r in rows}
    assert by["torch device"]["status"] == "OK" and "cpu" in by["torch device"]["detail"]
    assert by["bundled datasets"]["status"] == "OK"
    assert by["PySR engine"]["status"] in ("OK", "WARN")
    assert by["numpy"]["status"] == "OK"
    assert all(r["status"] in ("OK", "WARN", "FAIL") for r in rows)


def test_doctor_unreachable_llm(capsys):
    rows = _json_out(capsys, ["doctor", "--json", "--llm-base-url", "http://127.0.0.1:9/v1"])
    llm = {r["check"]: r for r in rows}["LLM endpoint"]
    assert llm["status"] == "WARN" and "not reachable" in llm["detail"]


def test_doctor_detects_tampered_data(monkeypatch, capsys):
    import lawforge.doctor as doc

    monkeypatch.setattr(doc, "expected_hashes", lambda: {"synthetic_chinchilla.csv": "0" * 64})
    rows = doc.run_checks()
    row = {r["check"]: r for r in rows}["bundled datasets"]
    assert row["status"] == "FAIL" and "synthetic_chinchilla.csv" in row["detail"]


# ----------------------------------------------------------------------------- progress
def test_progress_quiet_off_terminal(tmp_path):
    import io

    from lawforge.progress import Progress, format_progress

    buf = io.StringIO()
    with Progress(budget_s=60, stream=buf) as p:
        p.update({"generation": 3, "evaluations": 90, "best_val_r2": 0.98, "cand_per_s": 12.0, "seconds": 7.5})
    assert buf.getvalue() == ""  # not a terminal: quiet
    buf = io.StringIO()
    with Progress(budget_s=60, stream=buf, verbose=True) as p:
        p.update({"generation": 3, "evaluations": 90, "best_val_r2": 0.98, "cand_per_s": 12.0, "seconds": 7.5,
                  "llm_spend": "$0.02"})
    line = buf.getvalue()
    assert "gen   3" in line and "0.98000" in line and "12.0 cand/s" in line and "52s left" in line and "$0.02" in line
    assert "LLM: off" in format_progress({"generation": 1})


def test_pareto_plot_survives_non_finite_errors():
    from lawforge.report import _pareto_plot

    run = {"candidates": [{"status": "ok", "complexity": 5, "val_nmse": float("inf")},
                          {"status": "ok", "complexity": 7, "val_nmse": 1e300},
                          {"status": "ok", "complexity": 9, "val_nmse": 0.01}],
           "pareto": [{"complexity": "5", "val_nmse": "inf"}, {"complexity": "9", "val_nmse": "0.01"}]}
    png = _pareto_plot(run)
    assert png[:4] == b"\x89PNG"
