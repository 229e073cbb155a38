import json

import pytest

from conftest import SLD_TASKS, needs_sldbench
from lawforge.cli import main

# Published R2 of the human laws on SLDBench (leaderboard values, full precision, from the
# benchmark's published human-law programs); the reproduction must agree to 1e-6.
GOLDEN_PUBLISHED_R2 = {
    "parallel_scaling_law": 0.9998925970125949,
    "vocab_scaling_law": 0.9663633622783212,
    "sft_scaling_law": 0.9570773394105645,
    "domain_mixture_scaling_law": 0.6711173709701893,
    "moe_scaling_law": 0.7032072576764614,
    "data_constrained_scaling_law": 0.910567317114437,
    "lr_bsz_scaling_law": -0.0756888853193145,
    "easy_question_scaling_law": -1.0,
}


def _json_out(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@needs_sldbench
def test_bench_published_reproduces_golden_r2(capsys):
    rows = _json_out(capsys, ["bench", "--laws", "human", "--fit", "published", "--json",
                              "--datasets", ",".join(SLD_TASKS)])
    got = {r["dataset"]: r for r in rows}
    assert set(got) == set(SLD_TASKS)
    for task, r2 in GOLDEN_PUBLISHED_R2.items():
        assert got[task]["fit"] == "published"
        assert got[task]["r2"] == pytest.approx(r2, abs=1e-6), task
        for k in ("dataset", "law", "fit", "r2", "nmse", "nmae", "n_params"):
            assert k in got[task]
    assert got["easy_question_scaling_law"]["r2_raw"] == pytest.approx(-939.7954755725, abs=1e-6)
    assert got["domain_mixture_scaling_law"]["n_params"] == 35


@needs_sldbench
def test_refit_sft_beats_published(capsys):
    row = _json_out(capsys, ["fit", "sft_scaling_law", "--human", "--fit", "refit", "--restarts", "16", "--json"])
    assert row["fit"] == "refit"
    assert row["r2"] > 0.99 > GOLDEN_PUBLISHED_R2["sft_scaling_law"]


def test_datasets_lists_bundled(capsys):
    rows = _json_out(capsys, ["datasets", "--json"])
    names = {r["dataset"]: r for r in rows}
    assert names["synthetic_chinchilla"]["available"] is True
    assert names["synthetic_chinchilla"]["rows"] == "36/12"
    assert set(SLD_TASKS) <= set(names)


def test_fit_user_law_on_synthetic(capsys):
    row = _json_out(capsys, ["fit", "synthetic_chinchilla", "--law", "E + A/N**alpha + B/D**beta",
                             "--params", "{E: 1.0, A: {init: 100, bounds: [0, .inf]}, B: {init: 100, bounds: [0, .inf]},"
                                         " alpha: {init: 0.3, bounds: [0, 2]}, beta: {init: 0.3, bounds: [0, 2]}}",
                             "--restarts", "8", "--json"])
    assert row["r2"] > 0.99 and row["n_params"] == 5
    assert set(row["params"]["all"]) == {"E", "A", "B", "alpha", "beta"}
    assert "\\alpha" in row["latex"]


def test_fit_human_table_output(capsys):
    assert main(["fit", "synthetic_multigroup", "--human", "--fit", "refit", "--restarts", "4"]) == 0
    out = capsys.readouterr().out
    assert "Constants per group" in out and "g4" in out and "test" in out


@pytest.mark.parametrize("argv, match", [
    (["fit", "nope_dataset", "--law", "a*N"], "unknown dataset 'nope_dataset'"),
    (["fit", "synthetic_chinchilla", "--law", "E + A/Q**a", "--params", "{E: 1, A: 1, a: 1}"], "unknown symbol 'Q'"),
    (["fit", "synthetic_chinchilla", "--law", "__import__('os')"], "not allowed|unknown function"),
    (["fit", "synthetic_chinchilla", "--law", "a + b*N + c*D + d*N*D + e*N**2 + f*D**2"], "6 parameters per group"),
    (["fit", "synthetic_chinchilla", "--law", "a*N", "--params", "{a: [1"], "not valid YAML"),
    (["fit", "synthetic_chinchilla"], "exactly one of --law"),
    (["bench", "--laws", "llm"], "--laws must be 'human'"),
])
def test_errors_are_one_line_without_traceback(capsys, argv, match):
    import re

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1
    assert re.search(match, err), err


def test_debug_shows_the_exception():
    from lawforge.errors import DatasetError

    with pytest.raises(DatasetError):
        main(["fit", "nope_dataset", "--law", "a*N", "--debug"])
