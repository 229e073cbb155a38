"""Campaigns over datasets x seeds: leaderboards, inner holdouts, per-dataset budgets, bad arguments."""

import json
from pathlib import Path

import numpy as np
import pytest

from lawforge.cli import main

REPO = Path(__file__).resolve().parents[1]
NOVEL = json.dumps([
    {"expression": "E + A*(N*D)**(-a)", "parameters": ["E", "A", "a"]},
    {"expression": "E + A/N**a + B/D**a", "parameters": ["E", "A", "B", "a"]},
])


@pytest.mark.slow
def test_campaign_leaderboard(tmp_path, capsys):
    out = tmp_path / "camp"
    assert main(["campaign", "synthetic_chinchilla", "synthetic_multigroup", "--seeds", "1", "--max-evals", "40",
                 "--workers", "2", "--out", str(out), "--no-report", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["workers"] == 2 and len(res["rows"]) == 2
    import csv

    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert [r["dataset"] for r in rows] == ["synthetic_chinchilla", "synthetic_multigroup"]
    assert all(float(r["test_r2"]) > 0.9 and r["status"] == "ok" for r in rows)
    md = (out / "leaderboard.md").read_text()
    assert "mean over datasets" in md and "LLM calls" in md
    assert (out / "synthetic_chinchilla-s0" / "law.json").exists()


@pytest.mark.slow
def test_inner_campaign_never_reads_the_real_test_split(tmp_path, capsys):
    out = tmp_path / "inner"
    assert main(["campaign", "synthetic_chinchilla", "--seeds", "1", "--max-evals", "30", "--workers", "1",
                 "--inner", "--out", str(out), "--no-report", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = out / "synthetic_chinchilla-s0"
    cfg = json.loads((run / "config.json").read_text())
    assert "inner holdout" in cfg["data_origin"]
    from lawforge.datasets import load_dataset
    from lawforge.datasets.loader import holdout_dataset

    ds = load_dataset("synthetic_chinchilla")
    inner = holdout_dataset(ds)
    assert cfg["fit_rows"] + cfg["validation_rows"] == inner.train.n < ds.train.n
    assert json.loads((run / "metrics.json").read_text())["test_r2"] is not None
    assert res["rows"][0]["status"] == "ok"
    # comparing selection rules refuses runs scored on the real test split
    import runpy

    rules = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "selection_rules.py"))
    row = rules["analyse"](run, top=5, rules=["score", "onese", "fold1", "fold1s2x", "noisepars", "p05s2x", "win10s"])
    assert row["score"]["test_r2"] is not None and row["onese"]["law"] and row["fold1s2x"]["law"]
    assert row["p05s2x"]["law"] and row["win10s"]["complexity"] >= 1
    assert row["noise"] is None and row["noisepars"]["law"]  # no replicate rows: no noise window
    # the replicate-noise NMSE: pooled within-cell variance / cell size / variance of the cell means
    from lawforge.datasets.loader import DataSplit

    y = np.array([1.0, 1.2, 1.4, 3.0, 3.2, 3.4])  # two cells of three replicates, within variance 0.04
    split = DataSplit("t", {"N": np.array([1.0, 1, 1, 2, 2, 2])}, y[:, None], np.array(["g"] * 6, dtype=object),
                      ["g"], ["loss"])
    assert rules["replicate_noise"](split, [split]) == pytest.approx(0.04 / 3 / 1.0)
    assert rules["replicate_noise"](split.cell_means(), [split]) is None
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--out", str(tmp_path / "real"),
                 "--no-report", "--json"]) == 0
    with pytest.raises(SystemExit, match="not an inner-holdout run"):
        rules["analyse"](tmp_path / "real", top=5, rules=["score"])
    # replaying a finished run's final choice on its logged candidates gives back the law it chose
    replay = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "replay_choice.py"))
    row = replay["replay"](tmp_path / "real", {"selection.parsimony_choice": 1.0})
    assert row["own"]["test_r2"] == pytest.approx(row["recorded"]["test_r2"], abs=1e-6)
    assert row["replay"]["complexity"] <= row["own"]["complexity"]
    with pytest.raises(SystemExit, match="only selection"):
        replay["replay"](tmp_path / "real", {"evolution.parsimony": 0.1})


@pytest.mark.slow
def test_campaign_budget_for_one_dataset(tmp_path):
    from lawforge.runs.campaign import run_campaign

    out = tmp_path / "b"
    run_campaign(["synthetic_chinchilla", "synthetic_multigroup"], 1, out, budget_s=30.0, max_evals=15,
                 workers=1, report=False, budgets={"synthetic_multigroup": 45.0})
    cfg = {d: json.loads((out / f"{d}-s0" / "config.json").read_text()) for d in
           ("synthetic_chinchilla", "synthetic_multigroup")}
    assert cfg["synthetic_chinchilla"]["settings"]["budget"]["seconds"] == 30.0
    assert cfg["synthetic_multigroup"]["settings"]["budget"]["seconds"] == 45.0


def test_campaign_args(capsys, tmp_path):
    from lawforge.runs.campaign import run_campaign
    from lawforge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown search setting 'nope'"):
        run_campaign(["synthetic_chinchilla"], 1, tmp_path / "c", max_evals=5, search={"nope": 1})
    with pytest.raises(ConfigError, match="'seed'"):
        run_campaign(["synthetic_chinchilla"], 1, tmp_path / "c", max_evals=5, search={"seed": 3})
    with pytest.raises(ConfigError, match="budget given for 'synthetic_multigroup'"):
        run_campaign(["synthetic_chinchilla"], 1, tmp_path / "c", max_evals=5,
                     budgets={"synthetic_multigroup": 5.0})
    assert main(["campaign"]) == 1
    assert "--all" in capsys.readouterr().err
    assert main(["campaign", "synthetic_chinchila"]) == 1
    assert "did you mean" in capsys.readouterr().err
