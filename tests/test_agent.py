"""Issue 4: the campaign graph, LLM mutation against a local fake endpoint, resumable runs, campaigns."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm_server import GOOD, FakeLLM
from lawforge.agent.llm import InvalidReply, LLMConfig, extract_laws, law_to_form
from lawforge.cli import main
from lawforge.datasets import load_dataset
from lawforge.search.discover import discover, read_log
from lawforge.search.native import SearchConfig

REPO = Path(__file__).resolve().parents[1]
NOVEL = json.dumps([
    {"expression": "E + A*(N*D)**(-a)", "parameters": ["E", "A", "a"]},
    {"expression": "E + A/N**a + B/D**a", "parameters": ["E", "A", "B", "a"]},
])


def _llm(base_url, **kw):
    kw = {"rate": 0.5, "timeout_s": 1.0, "max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, **kw}
    return LLMConfig(base_url=base_url, model="any", **kw)


def _calls(run_dir):
    return [json.loads(line) for line in open(run_dir / "llm_calls.jsonl")]


# ----------------------------------------------------------------------------- reply parsing
def test_extract_and_parse_laws():
    laws = extract_laws("```json\n" + NOVEL + "\n```")
    assert len(laws) == 2
    e = law_to_form(laws[0], ["N", "D"], 5, 1)
    assert sorted(s.name for s in e.free_symbols) == ["D", "N", "p0", "p1", "p2"]
    for bad, needle in [("Sure, here is a law: L = E + A/N", "not a JSON list"),
                        ('[{"expression": "E + A/N**a", "param', "not a JSON list"),
                        ("x" * 30000, "over the"), ("", "empty"), ('{"a": 1}', "not a list")]:
        with pytest.raises(InvalidReply, match=needle):
            extract_laws(bad)
    for item, needle in [({"expression": "E + A/T**a", "parameters": ["E", "A", "a"]}, "T"),
                         ({"expression": "__import__('os').system('x')", "parameters": []}, "not allowed|unknown"),
                         ({"expression": "a0+a1/N+a2/D+a3*N+a4*D+a5*N*D", "parameters": [f"a{i}" for i in range(6)]},
                          "over the limit"),
                         ({"expression": "E + A", "parameters": ["E", "A"]}, "none of the dataset's variables"),
                         ({"expr": "E"}, "expression"), (42, "expression")]:
        with pytest.raises(InvalidReply, match=needle):
            law_to_form(item, ["N", "D"], 5, 1)


# ----------------------------------------------------------------------------- the scripted endpoint
def test_llm_mutation_survives_every_bad_reply(tmp_path):
    marker = tmp_path / "PWNED"
    inject = json.dumps([{"expression": f"__import__('os').system('touch {marker}')", "parameters": []},
                         {"expression": f"exec(\"open('{marker}','w')\")", "parameters": []}])
    script = [
        {"content": NOVEL},                                                   # good laws
        {"status": 429}, {"content": NOVEL},                                  # 429 then success
        {"status": 500}, {"content": GOOD},                                   # 500 then success
        {"sleep": 2.5, "content": NOVEL}, {"content": GOOD},                  # slower than the timeout
        {"content": json.dumps([{"expression": "E + A/T**a", "parameters": ["E", "A", "a"]}])},  # unknown symbol
        {"content": json.dumps([{"expression": "a0+a1/N+a2/D+a3*N+a4*D+a5*N*D",
                                 "parameters": [f"a{i}" for i in range(6)]}])},  # too many parameters
        {"content": "Sure! A good law would be L = E + A/N^alpha. Hope this helps."},  # prose
        {"content": inject},                                                  # code injection
        {"content": f"import os\nos.system('touch {marker}')"},             # code, not JSON
        {"content": '[{"expression": "E + A/N**a + B/D**b", "parameters": ["E", "A", "a", "B'},  # truncated
        {"content": "[" + "0," * 20000 + "0]"},                               # huge reply
    ]
    out = tmp_path / "run"
    with FakeLLM(script) as srv:
        s = discover(load_dataset("synthetic_chinchilla"),
                     SearchConfig(max_evals=200, seed=0, population=16, offspring=8), out,
                     llm=_llm(srv.base_url), report=False)
        n_requests = len(srv.requests)
        assert not srv.script, "the whole script was played"
    assert s["evaluations"] == 200 and s["test_r2"] is not None
    assert not marker.exists()
    led = s["llm"]
    st = led["statuses"]
    assert st.get("http_429") == 1 and st.get("http_500") == 1 and st.get("timeout") == 1, st
    assert led["calls"] == n_requests  # every HTTP request is counted
    assert led["laws_invalid"] >= 8 and led["laws_valid"] >= 2, led
    calls = _calls(out)
    http = [c for c in calls if c["status"] not in ("parsed", "cached", "cache_miss")]
    assert len(http) == n_requests
    for c in http:
        assert {"model", "prompt_hash", "tokens_in", "tokens_out", "latency_s", "status"} <= set(c)
    assert sum(c["tokens_in"] for c in http) == led["tokens_in"] > 0
    llm_cands = [r for r in read_log(out / "candidates.jsonl") if r["origin"] == "llm"]
    assert llm_cands, "LLM-proposed laws must appear in the candidates with their provenance"
    usage = json.loads((out / "llm_usage.json").read_text())
    assert usage["calls"] == led["calls"]
    assert "OPENAI_API_KEY" not in (out / "config.json").read_text()


def test_budget_ledger_stops_calls_exactly(tmp_path):
    with FakeLLM(default={"content": NOVEL}) as srv:
        s = discover(load_dataset("synthetic_chinchilla"), SearchConfig(max_evals=260, seed=1), tmp_path / "r",
                     llm=_llm(srv.base_url, max_calls=3), report=False)
        assert len(srv.requests) == 3
    assert s["llm"]["calls"] == 3 and s["llm"]["exhausted"] == "calls"
    assert s["evaluations"] == 260  # the run goes on without the LLM


def test_token_budget_stops_llm_use(tmp_path):
    with FakeLLM(default={"content": NOVEL}) as srv:
        s = discover(load_dataset("synthetic_chinchilla"), SearchConfig(max_evals=200, seed=1), tmp_path / "r",
                     llm=_llm(srv.base_url, max_tokens=1), report=False)
        assert len(srv.requests) == 1
    assert s["llm"]["exhausted"] == "tokens"


def test_replay_offline_from_cache(tmp_path):
    ds = load_dataset("synthetic_chinchilla")
    with FakeLLM(default={"content": NOVEL}) as srv:
        a = discover(ds, SearchConfig(max_evals=150, seed=2), tmp_path / "a", llm=_llm(srv.base_url), report=False)
    cache = tmp_path / "a" / "llm_cache"
    assert any(cache.iterdir())
    # the endpoint is gone: every reply comes from the cache, and the run is the same
    b = discover(ds, SearchConfig(max_evals=150, seed=2), tmp_path / "b",
                 llm=_llm("http://127.0.0.1:9/v1", cache_dir=str(cache), replay_only=True), report=False)
    assert b["law"] == a["law"] and b["llm"]["calls"] == 0
    assert b["llm"]["cached"] == a["llm"]["calls"] + a["llm"]["cached"] >= 1  # a may hit its own cache too
    ea = [r["expr"] for r in read_log(tmp_path / "a" / "candidates.jsonl")]
    eb = [r["expr"] for r in read_log(tmp_path / "b" / "candidates.jsonl")]
    assert ea == eb


def test_cli_discover_with_llm(tmp_path, capsys):
    out = tmp_path / "run"
    with FakeLLM(default={"content": NOVEL}) as srv:
        rc = main(["discover", "synthetic_chinchilla", "--max-evals", "120", "--llm-base-url", srv.base_url,
                   "--llm-model", "any", "--llm-rate", "0.2", "--out", str(out), "--json", "--no-report"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["llm"]["calls"] >= 1 and s["llm"]["tokens_in"] > 0
    assert any(r["origin"] == "llm" for r in read_log(out / "candidates.jsonl"))


def test_llm_flags_are_checked(capsys):
    assert main(["discover", "synthetic_chinchilla", "--llm-model", "x"]) == 1
    assert "--llm-base-url" in capsys.readouterr().err
    assert main(["discover", "synthetic_chinchilla", "--llm-base-url", "ftp://x", "--llm-model", "m"]) == 1
    assert "http(s) URL" in capsys.readouterr().err
    assert main(["discover", "synthetic_chinchilla", "--llm-base-url", "http://x/v1", "--llm-model", "m",
                 "--llm-rate", "1.5"]) == 1
    assert "--llm-rate" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume
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
    s = discover(load_dataset("synthetic_multigroup"), SearchConfig(max_evals=260, seed=1), out, report=False)
    return s, [r["expr"] for r in read_log(out / "candidates.jsonl")]


def test_interrupt_then_resume_gives_the_same_law(tmp_path, reference):
    ref, ref_exprs = reference
    out = tmp_path / "run"
    ds = load_dataset("synthetic_multigroup")

    def progress(info):  # a Ctrl-C in the middle of the third generation's step
        if info["generation"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    s = discover(ds, SearchConfig(max_evals=260, seed=1), out, progress=progress, report=False, handle_sigint=True)
    assert s["stopped"] == "interrupted" and 0 < s["evaluations"] < 260
    assert json.loads((out / "checkpoint.json").read_text())["status"] == "interrupted"
    assert not (out / "law.json").exists()
    r = discover(ds, SearchConfig(max_evals=260, seed=1), out, report=False, resume=True)
    assert r["law"] == ref["law"] and r["test_r2"] == ref["test_r2"] and r["evaluations"] == 260
    assert [x["expr"] for x in read_log(out / "candidates.jsonl")] == ref_exprs
    with pytest.raises(Exception, match="already complete"):
        discover(ds, SearchConfig(max_evals=260, seed=1), out, report=False, resume=True)


def test_kill9_then_resume_loses_nothing(tmp_path, reference, capsys):
    ref, ref_exprs = reference
    out = tmp_path / "run"
    p = _cli("discover", "synthetic_multigroup", "--max-evals", "260", "--seed", "1", "--out", str(out),
             "--no-report", "--json")
    _wait_lines(out / "candidates.jsonl", 110, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {r["key"] for r in read_log(out / "candidates.jsonl")}
    assert len(before) >= 110
    assert main(["resume", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = read_log(out / "candidates.jsonl")
    assert before <= {r["key"] for r in after}  # no evaluated candidate lost
    assert s["evaluations"] == 260 and len(after) == 260
    assert s["law"] == ref["law"] and [r["expr"] for r in after] == ref_exprs


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
    assert ck["status"] == "interrupted" and ck["evaluations"] == len(read_log(out / "candidates.jsonl"))


def test_resume_bad_folder(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 1
    assert "not a lawforge run folder" in capsys.readouterr().err


def test_fresh_run_refuses_existing_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--out", str(out), "--no-report"]) == 0
    before = (out / "candidates.jsonl").read_text()
    capsys.readouterr()
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "20", "--out", str(out)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "candidates.jsonl").read_text() == before  # nothing already written is lost


# ----------------------------------------------------------------------------- campaign
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
    row = rules["analyse"](run, top=5, rules=["score", "onese", "fold1", "fold1s2x", "noisepars"])
    assert row["score"]["test_r2"] is not None and row["onese"]["law"] and row["fold1s2x"]["law"]
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


def test_campaign_budget_for_one_dataset(tmp_path):
    from lawforge.agent.campaign import run_campaign

    out = tmp_path / "b"
    run_campaign(["synthetic_chinchilla", "synthetic_multigroup"], 1, out, budget_s=30.0, max_evals=15,
                 workers=1, report=False, budgets={"synthetic_multigroup": 45.0})
    cfg = {d: json.loads((out / f"{d}-s0" / "config.json").read_text()) for d in
           ("synthetic_chinchilla", "synthetic_multigroup")}
    assert cfg["synthetic_chinchilla"]["budget_s"] == 30.0
    assert cfg["synthetic_multigroup"]["budget_s"] == 45.0


def test_campaign_args(capsys, tmp_path):
    from lawforge.agent.campaign import run_campaign
    from lawforge.errors import ConfigError

    with pytest.raises(ConfigError, match="'nope' is unknown"):
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


def test_set_values_are_read_by_the_settings_type():
    from lawforge.errors import ConfigError
    from lawforge.search.native import parse_settings

    got = parse_settings(["scope=false", "select=score", 'replicates="rows"', "val_folds=1", "parsimony=0.05",
                          "trend=Yes"])
    assert got == {"scope": False, "select": "score", "replicates": "rows", "val_folds": 1, "parsimony": 0.05,
                   "trend": True}
    assert isinstance(got["val_folds"], int) and isinstance(got["scope"], bool)
    for bad, match in [("scope=maybe", "'maybe' is not a valid bool for 'scope'"),
                       ("val_folds=1.5", "not a valid int for 'val_folds'"),
                       ("seed=3", "unknown search setting 'seed'"),
                       ("nope=1", "unknown search setting 'nope'"),
                       ("scope", "expected KEY=VALUE")]:
        with pytest.raises(ConfigError, match=match):
            parse_settings([bad])


def test_llm_laws_may_share_parameters_across_groups(tmp_path, capsys):
    item = {"expression": "E + A/D**a", "parameters": ["E", "A", "a"], "shared": ["a"]}
    e = law_to_form(item, ["D"], 6, 1, shared_ok=True)
    assert sorted(s.name for s in e.free_symbols) == ["D", "p0", "p1", "s0"]
    # where the search does not share (one group, or scope off), every parameter stays per group
    assert sorted(s.name for s in law_to_form(item, ["D"], 6, 1).free_symbols) == ["D", "p0", "p1", "p2"]
    for shared, needle in [(["b"], "'b', which is not a parameter"), ("a", "must be a list")]:
        with pytest.raises(InvalidReply, match=needle):
            law_to_form({**item, "shared": shared}, ["D"], 6, 1, shared_ok=True)
    # end to end on a 4-group dataset: the prompt explains sharing, the law arrives with s0
    reply = json.dumps([{"expression": "C + A/(D**alpha + B*log(D))", "parameters": ["C", "A", "alpha", "B"],
                         "shared": ["alpha"]}])
    out = tmp_path / "run"
    with FakeLLM(default={"content": reply}) as srv:
        rc = main(["discover", "synthetic_multigroup", "--max-evals", "80", "--llm-base-url", srv.base_url,
                   "--llm-model", "any", "--llm-rate", "0.2", "--out", str(out), "--json", "--no-report"])
        prompts = [m["content"] for r in srv.requests for m in r["messages"] if m["role"] == "user"]
    assert rc == 0
    assert prompts and "list its name under \"shared\"" in prompts[0]
    llm = [r for r in read_log(out / "candidates.jsonl") if r["origin"] == "llm"]
    assert llm and all("s0" in r["expr"] for r in llm)


def test_cli_set_reaches_the_run_config(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["discover", "synthetic_multigroup", "--max-evals", "12", "--set", "scope=false", "--set",
                 "parsimony=0.05", "--out", str(out), "--json", "--no-report"]) == 0
    conf = json.loads((out / "config.json").read_text())
    assert conf["scope"] is False and conf["parsimony"] == 0.05
    camp = tmp_path / "c"
    assert main(["campaign", "synthetic_chinchilla", "--seeds", "1", "--max-evals", "8", "--workers", "1",
                 "--set", "between=false", "--out", str(camp), "--json", "--no-report"]) == 0
    assert json.loads((camp / "synthetic_chinchilla-s0" / "config.json").read_text())["between"] is False
    capsys.readouterr()
    assert main(["discover", "synthetic_chinchilla", "--max-evals", "5", "--set", "seed=3"]) == 1
    assert "unknown search setting 'seed'" in capsys.readouterr().err
