"""lawforge doctor and the progress line."""

import json

from lawforge.cli import main


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


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
