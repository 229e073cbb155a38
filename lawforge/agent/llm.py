"""LLM mutation through any OpenAI-compatible chat-completions endpoint (extra ``llm``).

The model is shown the dataset card, the best laws so far with their validation scores and the
recent failures, and must answer with a JSON list of laws::

    [{"expression": "E + A/N**alpha + B/D**beta", "parameters": ["E", "A", "alpha", "B", "beta"]}]

Replies are parsed with the whitelist parser (never executed) and checked against the
parameter limit; anything else (prose, code, unknown names, a huge or truncated reply) counts
as invalid. Calls have a timeout, bounded retries with exponential backoff on 429/5xx/timeouts,
and hard budgets (calls, tokens, cost) that stop LLM use, not the run. Every call is logged in
``llm_calls.jsonl`` and the replies are cached by prompt hash (``llm_cache/``) so a run can be
replayed offline. The prompt is a template in package data; ``prompt_file`` overrides it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import sympy as sp

from lawforge.errors import ConfigError, LawforgeError
from lawforge.fileio import atomic_write
from lawforge.search import space as S
from lawforge.search.proposer import SearchView

log = logging.getLogger(__name__)

MAX_LAWS_PER_REPLY = 20
MAX_EXPR_CHARS = 400


@dataclass
class LLMConfig:
    base_url: str
    model: str
    rate: float = 0.2                 # fraction of proposals that come from the LLM
    timeout_s: float = 30.0
    max_retries: int = 3              # retries after the first attempt (429, 5xx, timeout, connection)
    backoff_s: float = 1.0            # first retry delay; doubles, capped at max_backoff_s
    max_backoff_s: float = 8.0
    max_calls: int | None = 100       # HTTP requests, retries included
    max_tokens: int | None = 500_000  # prompt + completion tokens
    max_cost: float | None = None     # in the currency of the prices below
    price_in_per_1k: float = 0.0
    price_out_per_1k: float = 0.0
    completion_tokens: int = 1200
    temperature: float = 0.7
    max_reply_chars: int = 20_000
    prompt_file: str | None = None
    cache_dir: str | None = None      # default: <run>/llm_cache
    replay_only: bool = False         # never call the network; use cached replies only

    def __post_init__(self):
        if not self.base_url or not re.match(r"^https?://", self.base_url):
            raise ConfigError(f"--llm-base-url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ConfigError("--llm-model is required with --llm-base-url")
        if not 0 < self.rate < 1:
            raise ConfigError(f"--llm-rate must be in (0, 1), got {self.rate}")
        for k in ("max_calls", "max_tokens"):
            v = getattr(self, k)
            if v is not None and v < 0:
                raise ConfigError(f"{k} must be >= 0, got {v}")

    def to_dict(self) -> dict:
        return asdict(self)   # never holds the key: that comes from OPENAI_API_KEY


@dataclass
class Ledger:
    """What the LLM has cost so far, against the hard limits."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    cached: int = 0
    laws_valid: int = 0
    laws_invalid: int = 0
    statuses: dict = field(default_factory=dict)
    exhausted: str | None = None

    def allows(self) -> bool:
        if self.max_calls is not None and self.calls >= self.max_calls:
            self.exhausted = "calls"
        elif self.max_tokens is not None and self.tokens_in + self.tokens_out >= self.max_tokens:
            self.exhausted = "tokens"
        elif self.max_cost is not None and self.cost >= self.max_cost:
            self.exhausted = "cost"
        return self.exhausted is None

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Ledger":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def spend_text(self) -> str:
        s = f"{self.calls} calls, {self.tokens_in + self.tokens_out} tok"
        if self.cost:
            s += f", cost {self.cost:.4f}"
        return s + (f" (stopped: {self.exhausted} budget)" if self.exhausted else "")


def default_prompt() -> str:
    return (resources.files("lawforge.agent") / "prompts" / "mutation.txt").read_text()


def prompt_hash(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps({"model": model, "messages": messages}, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------ reply parsing
class InvalidReply(LawforgeError):
    pass


def extract_laws(text: str, max_chars: int = 20_000) -> list[dict]:
    """The JSON list of laws in a reply (optionally inside a ```json fence), or InvalidReply."""
    if text is None or not text.strip():
        raise InvalidReply("empty reply")
    if len(text) > max_chars:
        raise InvalidReply(f"reply of {len(text)} characters is over the {max_chars} limit")
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    if not body.startswith("["):
        start = body.find("[")
        body = body[start:] if start >= 0 else body
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidReply(f"not a JSON list of laws ({exc.msg} at char {exc.pos})") from None
    if isinstance(data, dict) and isinstance(data.get("laws"), list):
        data = data["laws"]
    if not isinstance(data, list):
        raise InvalidReply(f"reply JSON is a {type(data).__name__}, not a list of laws")
    return data[:MAX_LAWS_PER_REPLY]


def law_to_form(item: Any, variables: list[str], param_limit: int | None, n_targets: int,
                shared_ok: bool = False) -> sp.Expr:
    """One reply item -> a search form, or InvalidReply. Parameters are renamed ``p0, p1, ...``
    (fitted per group); those the item lists under ``"shared"`` become ``s0, s1, ...`` (one value
    for all groups) when ``shared_ok`` (the search's space shares parameters: 2..16 groups), and
    stay per group otherwise (with one group the two are the same law)."""
    from lawforge.laws.expr import parse_expression

    if isinstance(item, str):
        item = {"expression": item}
    if not isinstance(item, dict) or not isinstance(item.get("expression"), str):
        raise InvalidReply("law is not an object with an 'expression' string")
    text = item["expression"].strip()
    if len(text) > MAX_EXPR_CHARS:
        raise InvalidReply(f"expression longer than {MAX_EXPR_CHARS} characters")
    if "=" in text.replace("==", ""):  # "L = ..." : keep the right side
        text = text.split("=", 1)[1].strip()
    params = item.get("parameters")
    if params is not None and (not isinstance(params, list) or not all(isinstance(p, str) for p in params)):
        raise InvalidReply("'parameters' must be a list of names")
    shared = item.get("shared") or []
    if not isinstance(shared, list) or not all(isinstance(p, str) for p in shared):
        raise InvalidReply("'shared' must be a list of parameter names")
    allowed = None if params is None else list(variables) + list(params)
    try:
        expr = parse_expression(text, allowed, what="LLM law")
    except LawforgeError as exc:
        raise InvalidReply(str(exc)) from None
    names = sorted(s.name for s in expr.free_symbols)
    pnames = [n for n in names if n not in variables]
    if not any(n in variables for n in names):
        raise InvalidReply("law uses none of the dataset's variables")
    if not pnames:
        raise InvalidReply("law has no parameters to fit")
    stray = [n for n in shared if n not in pnames]
    if stray:
        raise InvalidReply(f"'shared' names {stray[0]!r}, which is not a parameter of the expression")
    if param_limit is not None and len(pnames) * n_targets > param_limit:
        raise InvalidReply(f"law has {len(pnames)} parameters per target, over the limit {param_limit}")
    syms = sorted((s for s in expr.free_symbols if s.name in pnames), key=lambda s: s.name)
    sh = [s for s in syms if shared_ok and s.name in shared]
    ren = {s: S.SP(i) for i, s in enumerate(sh)} | {s: S.P(i) for i, s in enumerate(s for s in syms if s not in sh)}
    return expr.xreplace(ren)


# ------------------------------------------------------------------------------ the proposer
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class LLMProposer:
    """Asks the model for forms at the configured rate, within the ledger's budget."""

    def __init__(self, cfg: LLMConfig, card, space: S.Space, calls_log: str | Path, cache_dir: str | Path,
                 ledger: Ledger | None = None):
        """``calls_log``: the request log (JSON lines); ``cache_dir``: the reply cache, unless
        ``cfg.cache_dir`` names another (both where the run folder says)."""
        self.cfg = cfg
        self.card = card
        self.space = space
        self.ledger = ledger or Ledger(cfg.max_calls, cfg.max_tokens, cfg.max_cost)
        self.pending: list[tuple[sp.Expr, str]] = []
        self.credit = 0.0
        self.failures: list[str] = []
        self.template = Template(Path(cfg.prompt_file).read_text() if cfg.prompt_file else default_prompt())
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cache_dir)
        self.log_path = Path(calls_log)
        self._client = None

    # -- state
    def take_pending(self) -> list[tuple[sp.Expr, str]]:
        out, self.pending = self.pending, []
        return out

    def restore(self, ledger: dict, pending: list) -> None:
        self.ledger = Ledger.from_dict(ledger) if ledger else self.ledger
        self.pending = [(S.from_tree(t), o) for t, o in pending]

    def state(self) -> dict:
        return {"ledger": self.ledger.to_dict(), "llm_pending": [[S.to_tree(e), o] for e, o in self.pending]}

    def usage(self) -> dict:
        return self.ledger.to_dict()

    def spend_text(self) -> str:
        return self.ledger.spend_text()

    # -- prompt
    def build_messages(self, view: SearchView, n: int) -> list[dict]:
        card = self.card
        var_lines = []
        for f in card.features:
            bits = [f"{f.symbol}: {f.description or f.column}"]
            if f.unit:
                bits.append(f"unit {f.unit}")
            if f.role != "scale":
                bits.append(f.role)
            lo, hi = view.ranges[f.column]
            bits.append(f"train range {lo:.4g} to {hi:.4g}")
            var_lines.append("- " + ", ".join(bits))
        tgt = ", ".join(f"{t.column} ({t.description})" if t.description else t.column for t in card.targets)
        best = "\n".join(f"- {sp.sstr(e)}    (validation R2 {r2:.5f}, {k} params)"
                         for e, r2, k in view.best) or "- (none yet)"
        fails = "\n".join(f"- {f}" for f in self.failures[-6:]) or "- (none)"
        limit = f"at most {card.param_limit} parameters per group" if card.param_limit else "no parameter limit"
        sharing = ("A parameter may instead take one value shared by all groups: list its name under \"shared\", "
                   "e.g. \"shared\": [\"alpha\"]. In the laws below, p0, p1, ... are fitted per group and s0, s1, "
                   "... are shared.") if self.space.grouped else ""
        user = self.template.safe_substitute(
            dataset=card.name, description=card.description or card.name, variables="\n".join(var_lines),
            targets=tgt, param_limit=limit, best_laws=best, failures=fails, n=n, sharing=sharing,
            groups=view.n_groups)
        return [{"role": "system", "content": "You propose scaling-law formulas. Answer with JSON only."},
                {"role": "user", "content": user}]

    # -- calls
    def client(self):
        if self._client is None:
            try:
                import openai
            except ImportError:
                from lawforge.errors import MissingDependency

                raise MissingDependency("LLM mutation needs the 'openai' package: pip install 'lawforge[llm]'") from None
            self._client = openai.OpenAI(base_url=self.cfg.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                                         timeout=self.cfg.timeout_s, max_retries=0)
        return self._client

    def _log(self, rec: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _cached(self, h: str) -> str | None:
        p = self.cache_dir / f"{h}.json"
        if p.is_file():
            try:
                return json.loads(p.read_text())["reply"]
            except (json.JSONDecodeError, KeyError):
                return None
        return None

    def _store(self, h: str, reply: str, usage: dict) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.cache_dir / f"{h}.json", json.dumps({"reply": reply, "usage": usage, "model": self.cfg.model}))

    def complete(self, messages: list[dict]) -> str | None:
        """The reply text (from the cache or the endpoint, with retries), or None."""
        import openai

        h = prompt_hash(self.cfg.model, messages)
        cached = self._cached(h)
        base = {"model": self.cfg.model, "prompt_hash": h}
        if cached is not None:
            self.ledger.cached += 1
            self.ledger.count("cached")
            self._log({**base, "status": "cached", "tokens_in": 0, "tokens_out": 0, "latency_s": 0.0})
            return cached
        if self.cfg.replay_only:
            self.ledger.count("cache_miss")
            self._log({**base, "status": "cache_miss", "tokens_in": 0, "tokens_out": 0, "latency_s": 0.0})
            return None
        for attempt in range(self.cfg.max_retries + 1):
            if not self.ledger.allows():
                return None
            self.ledger.calls += 1
            t = time.perf_counter()
            status, reply, tin, tout = "ok", None, 0, 0
            try:
                r = self.client().chat.completions.create(
                    model=self.cfg.model, messages=messages, max_tokens=self.cfg.completion_tokens,
                    temperature=self.cfg.temperature)
                reply = (r.choices[0].message.content or "") if r.choices else ""
                if r.usage is not None:
                    tin, tout = int(r.usage.prompt_tokens or 0), int(r.usage.completion_tokens or 0)
                else:  # an endpoint without usage: count characters / 4
                    tin = sum(len(m["content"]) for m in messages) // 4
                    tout = len(reply) // 4
            except openai.APITimeoutError:
                status = "timeout"
            except openai.APIStatusError as exc:
                status = f"http_{exc.status_code}"
            except openai.APIConnectionError as exc:
                status = f"connection_error: {type(exc).__name__}"
            latency = round(time.perf_counter() - t, 3)
            self.ledger.tokens_in += tin
            self.ledger.tokens_out += tout
            self.ledger.cost += tin / 1000 * self.cfg.price_in_per_1k + tout / 1000 * self.cfg.price_out_per_1k
            self.ledger.count(status.split(":")[0])
            self._log({**base, "status": status, "attempt": attempt, "tokens_in": tin, "tokens_out": tout,
                       "latency_s": latency})
            if status == "ok":
                self._store(h, reply, {"prompt_tokens": tin, "completion_tokens": tout})
                return reply
            retryable = status in ("timeout",) or status.startswith("connection") or \
                (status.startswith("http_") and int(status[5:]) in RETRY_STATUSES)
            if not retryable or attempt == self.cfg.max_retries:
                return None
            time.sleep(min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** attempt))
        return None

    def maybe_propose(self, view: SearchView) -> int:
        """Ask for about ``rate`` of a generation's proposals; queue the valid forms. Returns
        how many forms were queued."""
        off = view.offspring
        self.credit += self.cfg.rate * off
        n = int(math.floor(self.credit))
        if n < 1:
            return 0
        self.credit -= n
        reply = self.complete(self.build_messages(view, n))
        if reply is None:
            return 0
        variables = [v.symbol for v in self.space.vars]
        valid, invalid = [], 0
        try:
            items = extract_laws(reply, self.cfg.max_reply_chars)
        except InvalidReply as exc:
            items, invalid = [], 1
            self.failures.append(f"(reply) {exc}")
        for it in items:
            try:
                form = law_to_form(it, variables, self.space.param_limit, self.space.n_targets,
                                   shared_ok=self.space.grouped)
            except InvalidReply as exc:
                invalid += 1
                self.failures.append(f"{str(it)[:120]}: {exc}")
                continue
            valid.append((form, "llm"))
        admitted = view.admit(valid)
        self.ledger.laws_valid += len(valid)
        self.ledger.laws_invalid += invalid
        self._log({"model": self.cfg.model, "status": "parsed", "laws_valid": len(valid), "laws_invalid": invalid,
                   "laws_new": len(admitted)})
        self.pending.extend(admitted)
        return len(admitted)
