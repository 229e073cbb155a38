"""Your own CSV: a card built from the file, a known law recovered, clear errors for bad input."""

import json

import numpy as np
import pytest

from conftest import chinchilla_table
from lawforge.cli import main


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
def test_byo_csv_bad_input(csv_run, capsys, argv_extra, needle):
    _, path = csv_run
    rc = main(["discover", "--csv", str(path), "--max-evals", "5", *argv_extra])
    err = capsys.readouterr().err
    assert rc == 1
    assert needle in err and err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mutate, needle", [
    (lambda df: df.assign(loss=df["loss"].astype(object).where(df.index != 3, "abc")), "non-numeric value 'abc'"),
    (lambda df: df.assign(D=df["D"].where(df.index != 5, np.nan)), "column 'D' has a missing or non-finite value (nan, data row 6)"),
    (lambda df: df.assign(loss=np.inf), "non-finite"),
    (lambda df: df.assign(loss=2.0), "constant on the train rows (2)"),
    (lambda df: df.drop(columns=["D"]), "no column 'D'"),
    (lambda df: df.rename(columns={"D": "N"}), "column 'N' appears twice in the header"),
    (lambda df: df.iloc[[0, 47]], "row"),
])
@pytest.mark.slow
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


@pytest.mark.slow
def test_csv_and_dataset_conflict(capsys, csv_run):
    rc = main(["discover", "synthetic_chinchilla", "--csv", str(csv_run[1]), "--features", "N", "--target", "loss",
               "--test", "N >= 1e9"])
    assert rc == 1 and "not both" in capsys.readouterr().err


def test_csv_may_say_a_feature_holds_a_log(tmp_path, capsys):
    """``--log-features log_c:10`` is the CSV form of a card's ``log: 10``: the column is read as
    log10 of a quantity; a missing or unknown base, or a column that is not a feature, is an error
    naming it."""
    from lawforge.datasets.byo import csv_card

    df = chinchilla_table().assign(log_c=lambda d: np.log10(6 * d["N"] * d["D"]))
    path = tmp_path / "logs.csv"
    df.to_csv(path, index=False)
    card = csv_card(path, "log_c,N", "loss", "N >= 1e9", log_features="log_c:10")
    assert card.features[0].log == 10.0 and card.features[1].log is None
    assert card.log_variables == {"log_c"}
    for bad, needle in (("log_c", "give the base of the log 'log_c' holds, as log_c:10"),
                        ("log_c:3", "must be 10, 2 or e, got '3'"), ("D:10", "'D' is not one of the features")):
        rc = main(["discover", "--csv", str(path), "--features", "log_c,N", "--target", "loss",
                   "--test", "N >= 1e9", "--log-features", bad, "--max-evals", "5"])
        err = capsys.readouterr().err
        assert rc == 1 and needle in err and err.startswith("error:"), err
