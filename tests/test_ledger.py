"""The LLM budget ledger: hard limits on calls, tokens and cost, and its round trip through a checkpoint."""

from lawforge.agent.llm import Ledger


def test_ledger_stops_at_each_limit_and_says_which():
    led = Ledger(max_calls=2)
    assert led.allows()
    led.calls = 2
    assert not led.allows() and led.exhausted == "calls"
    led = Ledger(max_tokens=100, tokens_in=60, tokens_out=40)
    assert not led.allows() and led.exhausted == "tokens"
    led = Ledger(max_cost=1.0, cost=0.99)
    assert led.allows()
    led.cost = 1.0
    assert not led.allows() and led.exhausted == "cost"
    assert Ledger().allows()                                  # no limits: always allowed


def test_ledger_counts_statuses_and_round_trips():
    led = Ledger(max_calls=5, calls=3, tokens_in=10, tokens_out=5, cost=0.25)
    led.count("ok")
    led.count("ok")
    led.count("http_429")
    assert led.statuses == {"ok": 2, "http_429": 1}
    back = Ledger.from_dict({**led.to_dict(), "unknown_key": 1})   # older/newer checkpoints load
    assert back == led
    assert led.spend_text() == "3 calls, 15 tok, cost 0.2500"
    led.calls = 5
    led.allows()
    assert led.spend_text().endswith("(stopped: calls budget)")
