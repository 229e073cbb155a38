"""One campaign job: a discovery run as a leaderboard row. The local pool
(:mod:`lawforge.runs.campaign`) and the Ray executor (:mod:`lawforge.runs.ray_campaign`) both run
jobs through :func:`run_job`."""

from __future__ import annotations

import time
from typing import Any


def run_job(job: dict) -> dict:
    """One discovery of a campaign, in a worker process or a Ray task: a leaderboard row. ``job``:
    ``name``, ``dataset`` (a loaded dataset or a name), ``seed``, ``max_evals``, ``budget_s``,
    ``out`` (the run folder), optionally ``write_to`` (where to write it instead), ``data_dir``,
    ``search`` (settings), ``llm``, ``report`` and ``hooks``. An error is the row's status."""
    from lawforge.agent.llm import LLMConfig
    from lawforge.errors import LawforgeError
    from lawforge.runs.discover import discover
    from lawforge.search.settings import SearchConfig

    row: dict[str, Any] = {"dataset": job["name"], "seed": job["seed"], "run_dir": job["out"]}
    t0 = time.perf_counter()
    try:
        cfg = SearchConfig.build(max_evals=job["max_evals"], budget_s=job["budget_s"], seed=job["seed"], workers=1,
                                 **(job.get("search") or {}))
        llm = LLMConfig(**job["llm"]) if job.get("llm") else None
        s = discover(job["dataset"], cfg, job.get("write_to") or job["out"], data_dir=job["data_dir"], llm=llm,
                     report=job.get("report", True), hooks=job.get("hooks") or ())
    except LawforgeError as exc:
        row.update(status=f"error: {exc}")
        return row
    except Exception as exc:  # one run's crash is a row of the leaderboard, not the end of the campaign
        row.update(status=f"error: {type(exc).__name__}: {exc}")
        return row
    led = s.get("llm") or {}
    row.update(status="ok", test_r2=s["test_r2"], val_r2=s["val_r2"], n_params=s["n_params"],
               evaluations=s["evaluations"], seconds=s["seconds"], law=s["law"],
               llm_calls=led.get("calls", 0), llm_tokens=led.get("tokens_in", 0) + led.get("tokens_out", 0),
               llm_cost=round(led.get("cost", 0.0), 6), wall_s=round(time.perf_counter() - t0, 1))
    return row
