"""The campaign leaderboard writer: CSV and Markdown, errors as rows, means and bests per dataset."""

import csv

from lawforge.runs.campaign import COLUMNS, write_leaderboard


def _row(dataset, seed, r2, **kw):
    return {"dataset": dataset, "seed": seed, "status": "ok", "test_r2": r2, "val_r2": 0.99, "n_params": 3,
            "evaluations": 10, "seconds": 1.5, "wall_s": 2.0, "llm_calls": 0, "llm_tokens": 0, "llm_cost": 0.0,
            "law": "p0 + p1/N**p2", "run_dir": f"/x/{dataset}-s{seed}", **kw}


def test_leaderboard_rows_sorted_with_means_and_bests(tmp_path):
    rows = [_row("b", 1, 0.5), _row("a", 0, 0.9), _row("b", 0, 0.7),
            {"dataset": "a", "seed": 1, "status": "error: boom", "run_dir": "/x/a-s1"}]
    write_leaderboard(tmp_path, rows)
    with open(tmp_path / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == COLUMNS
    assert [(r["dataset"], r["seed"], r["status"]) for r in table] == [
        ("a", "0", "ok"), ("a", "1", "error: boom"), ("b", "0", "ok"), ("b", "1", "ok")]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| a | 1 | error: boom |" in md                      # a failed run is a row, not the end
    assert "| a | 1 | 0.9000 | 0.9000 |" in md                   # runs, mean, best per dataset
    assert "| b | 2 | 0.6000 | 0.7000 |" in md
    assert "| **mean over datasets** | | 0.7500 | 0.8000 |" in md
    assert not list(tmp_path.glob("*.tmp"))                      # written atomically


def test_leaderboard_rewrites_in_place_as_rows_arrive(tmp_path):
    write_leaderboard(tmp_path, [_row("a", 0, 0.1)])
    write_leaderboard(tmp_path, [_row("a", 0, 0.1), _row("a", 1, 0.3)])
    with open(tmp_path / "leaderboard.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "| a | 2 | 0.2000 | 0.3000 |" in (tmp_path / "leaderboard.md").read_text()
