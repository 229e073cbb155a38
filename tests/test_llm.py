"""LLM mutation against a local fake OpenAI-compatible endpoint: bad replies, budgets, replay, sharing."""

import json
from pathlib import Path

import pytest

from llm_server import GOOD, FakeLLM
from lawforge.agent.llm import InvalidReply, LLMConfig, extract_laws, law_to_form
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


def _llm(base_url, **kw):
    kw = {"rate": 0.5, "timeout_s": 1.0, "max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, **kw}
    return LLMConfig(base_url=base_url, model="any", **kw)


def _calls(run_dir):
    return [json.loads(line) for line in open(run_dir / "llm_calls.jsonl")]


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


@pytest.mark.slow
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
                     SearchConfig.build(max_evals=200, seed=0, population=16, offspring=8), out,
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
    llm_cands = [r for r in RunFolder(out).read_log() if r["origin"] == "llm"]
    assert llm_cands, "LLM-proposed laws must appear in the candidates with their provenance"
    usage = json.loads((out / "llm_usage.json").read_text())
    assert usage["calls"] == led["calls"]
    assert "OPENAI_API_KEY" not in (out / "config.json").read_text()


@pytest.mark.slow
def test_budget_ledger_stops_calls_exactly(tmp_path):
    with FakeLLM(default={"content": NOVEL}) as srv:
        s = discover(load_dataset("synthetic_chinchilla"), SearchConfig.build(max_evals=260, seed=1), tmp_path / "r",
                     llm=_llm(srv.base_url, max_calls=3), report=False)
        assert len(srv.requests) == 3
    assert s["llm"]["calls"] == 3 and s["llm"]["exhausted"] == "calls"
    assert s["evaluations"] == 260  # the run goes on without the LLM


@pytest.mark.slow
def test_token_budget_stops_llm_use(tmp_path):
    with FakeLLM(default={"content": NOVEL}) as srv:
        s = discover(load_dataset("synthetic_chinchilla"), SearchConfig.build(max_evals=200, seed=1), tmp_path / "r",
                     llm=_llm(srv.base_url, max_tokens=1), report=False)
        assert len(srv.requests) == 1
    assert s["llm"]["exhausted"] == "tokens"


@pytest.mark.slow
def test_replay_offline_from_cache(tmp_path):
    ds = load_dataset("synthetic_chinchilla")
    with FakeLLM(default={"content": NOVEL}) as srv:
        a = discover(ds, SearchConfig.build(max_evals=150, seed=2), tmp_path / "a", llm=_llm(srv.base_url), report=False)
    cache = tmp_path / "a" / "llm_cache"
    assert any(cache.iterdir())
    # the endpoint is gone: every reply comes from the cache, and the run is the same
    b = discover(ds, SearchConfig.build(max_evals=150, seed=2), tmp_path / "b",
                 llm=_llm("http://127.0.0.1:9/v1", cache_dir=str(cache), replay_only=True), report=False)
    assert b["law"] == a["law"] and b["llm"]["calls"] == 0
    assert b["llm"]["cached"] == a["llm"]["calls"] + a["llm"]["cached"] >= 1  # a may hit its own cache too
    ea = [r["expr"] for r in RunFolder(tmp_path / "a").read_log()]
    eb = [r["expr"] for r in RunFolder(tmp_path / "b").read_log()]
    assert ea == eb


@pytest.mark.slow
def test_cli_discover_with_llm(tmp_path, capsys):
    out = tmp_path / "run"
    with FakeLLM(default={"content": NOVEL}) as srv:
        rc = main(["discover", "synthetic_chinchilla", "--max-evals", "120", "--llm-base-url", srv.base_url,
                   "--llm-model", "any", "--llm-rate", "0.2", "--out", str(out), "--json", "--no-report"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["llm"]["calls"] >= 1 and s["llm"]["tokens_in"] > 0
    assert any(r["origin"] == "llm" for r in RunFolder(out).read_log())


def test_llm_flags_are_checked(capsys):
    assert main(["discover", "synthetic_chinchilla", "--llm-model", "x"]) == 1
    assert "--llm-base-url" in capsys.readouterr().err
    assert main(["discover", "synthetic_chinchilla", "--llm-base-url", "ftp://x", "--llm-model", "m"]) == 1
    assert "http(s) URL" in capsys.readouterr().err
    assert main(["discover", "synthetic_chinchilla", "--llm-base-url", "http://x/v1", "--llm-model", "m",
                 "--llm-rate", "1.5"]) == 1
    assert "--llm-rate" in capsys.readouterr().err


@pytest.mark.slow
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
    llm = [r for r in RunFolder(out).read_log() if r["origin"] == "llm"]
    assert llm and all("s0" in r["expr"] for r in llm)
