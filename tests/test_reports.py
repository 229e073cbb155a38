"""Reports and LaTeX: report.html/report.md, laws.tex, rendering, plots that survive bad values."""

import base64
import json
import shutil

import pytest

from lawforge.cli import main
from lawforge.outputs.latex import laws_table_tex


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_report_files(run_dir):
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    law = json.loads((run_dir / "law.json").read_text())
    assert law["latex"] in md
    assert "Building blocks: " in md and "Readable-law contract: kept." in md
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
    # predictions at 10x and 100x the largest train N, with 90% bootstrap intervals, on the page and in LaTeX
    assert "Predictions beyond the data" in md and "(10x)" in md and "(100x)" in md
    rows = [line for line in md.splitlines() if "(100x)" in line]
    lo, hi = (float(x) for x in rows[0].split("[")[1].split("]")[0].split(","))
    pred = float(rows[0].split("|")[3])
    assert lo <= pred <= hi
    tex = (run_dir / "predictions.tex").read_text()
    assert "\\begin{tabular}" in tex and "90\\% interval" in tex and "(100x)" in tex


@pytest.mark.slow
def test_report_command_rewrites(run_dir, capsys):
    (run_dir / "report.html").unlink()
    out = _json_out(capsys, ["report", str(run_dir), "--format", "html", "--json"])
    assert out["html"].endswith("report.html") and (run_dir / "report.html").stat().st_size > 10000


def test_report_on_non_run(tmp_path, capsys):
    rc = main(["report", str(tmp_path)])
    assert rc == 1 and "not a complete run folder" in capsys.readouterr().err


@pytest.mark.slow
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


@pytest.mark.slow
def test_fit_and_discover_print_latex(capsys):
    assert main(["fit", "synthetic_chinchilla", "--law", "E + A/N**alpha + B/D**beta", "--latex",
                 "--restarts", "8"]) == 0
    out = capsys.readouterr().out
    assert "loss = E + A N^{- \\alpha} + B D^{- \\beta}" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(run_dir, tmp_path):
    from lawforge.outputs.report import render_png

    png = render_png(run_dir / "report.html", tmp_path / "page.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50000


def test_pareto_plot_survives_non_finite_errors():
    from lawforge.outputs.report import _pareto_plot

    run = {"candidates": [{"status": "ok", "complexity": 5, "val_nmse": float("inf")},
                          {"status": "ok", "complexity": 7, "val_nmse": 1e300},
                          {"status": "ok", "complexity": 9, "val_nmse": 0.01}],
           "pareto": [{"complexity": "5", "val_nmse": "inf"}, {"complexity": "9", "val_nmse": "0.01"}]}
    png = _pareto_plot(run)
    assert png[:4] == b"\x89PNG"


def test_the_report_states_the_comparison_with_the_cards_law():
    from lawforge.outputs.report import _law_notes

    lj = {"contract": {"ok": True, "reasons": [], "blocks": ["N^p", "floor"]},
          "incumbent": {"human": "chinchilla", "human_nmse": 0.01, "discovered_nmse": 0.02, "margin": 0.75,
                        "folds": 3, "chosen": "human"}}
    text = " ".join(_law_notes(lj))
    assert "Building blocks: N^p, floor. Readable-law contract: kept." in text
    assert "`chinchilla`" in text and "mean of 3 fold(s)" in text and "the card's law was kept" in text
    lj["incumbent"].update(chosen="discovered", why_not="its refit on train breaks the contract")
    assert "the discovered law was kept (its refit on train breaks the contract)" in " ".join(_law_notes(lj))
    assert _law_notes({}) == []


@pytest.mark.slow
def test_a_report_past_its_deadline_draws_no_bands_and_says_so(run_dir, tmp_path):
    import time

    from lawforge.outputs.report import REPORT_RESAMPLES, write_report

    late = tmp_path / "late"
    shutil.copytree(run_dir, late)
    write_report(late, formats=("md",), deadline=time.perf_counter())   # spent: no bands, and it says so
    md = (late / "report.md").read_text()
    assert "Not drawn: the run's time budget was spent" in md and "(100x)" not in md
    assert f"({REPORT_RESAMPLES} refits on" in (run_dir / "report.md").read_text()   # no deadline: all
