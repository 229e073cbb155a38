"""Search settings: --set keys (dotted, short and former names) typed and recorded in the run config."""

import json
from pathlib import Path

import pytest

from lawforge.cli import main

REPO = Path(__file__).resolve().parents[1]
NOVEL = json.dumps([
    {"expression": "E + A*(N*D)**(-a)", "parameters": ["E", "A", "a"]},
    {"expression": "E + A/N**a + B/D**a", "parameters": ["E", "A", "B", "a"]},
])


def test_set_values_are_read_by_the_settings_type():
    from lawforge.errors import ConfigError
    from lawforge.search.settings import parse_settings

    # former names, unique short names and dotted names all reach the same nested setting
    got = parse_settings(["scope=false", "select=score", 'replicates="rows"', "val_folds=1", "parsimony=0.05",
                          "trend=Yes", "checks.finite_on_domain=0"])
    assert got == {"grammar.shared_params": False, "selection.rule": "score", "validation.replicates": "rows",
                   "validation.folds": 1, "evolution.parsimony": 0.05, "checks.follow_trends": True,
                   "checks.finite_on_domain": False}
    assert isinstance(got["validation.folds"], int) and isinstance(got["grammar.shared_params"], bool)
    for bad, match in [("scope=maybe", "'maybe' is not a valid bool for 'scope'"),
                       ("val_folds=1.5", "not a valid int for 'val_folds'"),
                       ("seed=3", "'seed' is set by its own option"),
                       ("nope=1", "unknown search setting 'nope'"),
                       ("select=best", "selection.rule must be one of"),
                       ("scope", "expected KEY=VALUE")]:
        with pytest.raises(ConfigError, match=match):
            parse_settings([bad])


def test_a_negative_seed_no_evaluations_or_no_time_are_clear_errors(capsys):
    from lawforge.cli import main
    from lawforge.errors import ConfigError
    from lawforge.search.settings import SearchConfig

    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="seed must be a whole number >= 0"):
            SearchConfig.build(seed=bad)
    for bad in (0, -5, 2.5):
        with pytest.raises(ConfigError, match=r"max_evals \(--max-evals\) must be a whole number >= 1"):
            SearchConfig.build(max_evals=bad)
    for bad in (0, -1.0, "60"):
        with pytest.raises(ConfigError, match=r"time budget \(--budget\) must be more than 0 seconds"):
            SearchConfig.build(budget_s=bad)
    assert SearchConfig.build(max_evals=None, budget_s=0.5).budget.seconds == 0.5
    for argv in (["discover", "synthetic_chinchilla"], ["fit", "synthetic_chinchilla", "--human"]):
        with pytest.raises(SystemExit):   # argparse's own usage error, as for any malformed option
            main([*argv, "--seed", "-1"])
        assert "argument --seed: must be a whole number >= 0, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_set_reaches_the_run_config(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["discover", "synthetic_multigroup", "--max-evals", "12", "--set", "scope=false", "--set",
                 "parsimony=0.05", "--out", str(out), "--json", "--no-report"]) == 0
    conf = json.loads((out / "config.json").read_text())["settings"]
    assert conf["grammar"]["shared_params"] is False and conf["evolution"]["parsimony"] == 0.05
    camp = tmp_path / "c"
    assert main(["campaign", "synthetic_chinchilla", "--seeds", "1", "--max-evals", "8", "--workers", "1",
                 "--set", "between=false", "--out", str(camp), "--json", "--no-report"]) == 0
    conf = json.loads((camp / "synthetic_chinchilla-s0" / "config.json").read_text())["settings"]
    assert conf["checks"]["sane_between_points"] is False
    capsys.readouterr()
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "5", "--set", "seed=3"]) == 1
    assert "'seed' is set by its own option" in capsys.readouterr().err
