"""Checkpoints and resume: Ctrl-C, kill -9, the same law after a resume, refusing an existing run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lawforge.cli import main
from lawforge.datasets import load_dataset
from lawforge.runs.discover import discover
from lawforge.runs.folder import RunFolder
from lawforge.search.settings import SearchConfig

REPO = Path(__file__).resolve().parents[1]
NOVEL = json.dumps([
    {"expression": "E + A*(N*D)**(-a)", "parameters": ["E", "A", "a"]},
    {"expression": "E + A/N**a + B/D**a", "parameters": ["E", "A", "B", "a"]},
])


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "lawforge.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_lines(path: Path, n: int, proc, timeout=240):
    t = time.time()
    while time.time() - t < timeout:
        if path.exists() and (path.parent / "checkpoint.json").exists() and \
                sum(1 for _ in open(path)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError("timed out waiting for candidates")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run the resumed ones must match."""
    out = tmp_path_factory.mktemp("ref") / "run"
    s = discover(load_dataset("synthetic_multigroup"), SearchConfig.build(max_evals=260, seed=1), out, report=False)
    return s, [r["expr"] for r in RunFolder(out).read_log()]


@pytest.mark.slow
def test_interrupt_then_resume_gives_the_same_law(tmp_path, reference):
    ref, ref_exprs = reference
    out = tmp_path / "run"
    ds = load_dataset("synthetic_multigroup")

    def progress(info):  # a Ctrl-C in the middle of the third generation's step
        if info["generation"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    s = discover(ds, SearchConfig.build(max_evals=260, seed=1), out, progress=progress, report=False, handle_sigint=True)
    assert s["stopped"] == "interrupted" and 0 < s["evaluations"] < 260
    assert json.loads((out / "checkpoint.json").read_text())["status"] == "interrupted"
    assert not (out / "law.json").exists()
    r = discover(ds, SearchConfig.build(max_evals=260, seed=1), out, report=False, resume=True)
    assert r["law"] == ref["law"] and r["test_r2"] == ref["test_r2"] and r["evaluations"] == 260
    assert [x["expr"] for x in RunFolder(out).read_log()] == ref_exprs
    with pytest.raises(Exception, match="already complete"):
        discover(ds, SearchConfig.build(max_evals=260, seed=1), out, report=False, resume=True)


@pytest.mark.slow
def test_kill9_then_resume_loses_nothing(tmp_path, reference, capsys):
    ref, ref_exprs = reference
    out = tmp_path / "run"
    p = _cli("discover", "synthetic_multigroup", "--max-evals", "260", "--seed", "1", "--out", str(out),
             "--no-report", "--json")
    _wait_lines(out / "candidates.jsonl", 110, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {r["key"] for r in RunFolder(out).read_log()}
    assert len(before) >= 110
    assert main(["resume", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = RunFolder(out).read_log()
    assert before <= {r["key"] for r in after}  # no evaluated candidate lost
    assert s["evaluations"] == 260 and len(after) == 260
    assert s["law"] == ref["law"] and [r["expr"] for r in after] == ref_exprs


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path, capsys):
    out = tmp_path / "run"
    p = _cli("discover", "synthetic_chinchilla", "--max-evals", "2000", "--seed", "0", "--out", str(out),
             "--no-report")
    _wait_lines(out / "candidates.jsonl", 40, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, err
    assert "lawforge resume" in err and "Traceback" not in err
    ck = json.loads((out / "checkpoint.json").read_text())
    assert ck["status"] == "interrupted" and ck["evaluations"] == len(RunFolder(out).read_log())


def test_resume_bad_folder(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 1
    assert "not a lawforge run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_fresh_run_refuses_existing_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--out", str(out), "--no-report"]) == 0
    before = (out / "candidates.jsonl").read_text()
    capsys.readouterr()
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--out", str(out)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "candidates.jsonl").read_text() == before  # nothing already written is lost
