"""Campaigns: discoveries over many datasets and seeds, one run per worker process, and a
leaderboard (CSV and Markdown) of datasets x seeds with test R², law, parameters, time and LLM
spend. A run that fails is a row with its error, not the end of the campaign."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import datetime as _dt
import io
import multiprocessing as mp
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lawforge.fileio import atomic_write
from lawforge.procs import FolderLock, start_worker
from lawforge.runs.job import run_job

COLUMNS = ["dataset", "seed", "status", "test_r2", "val_r2", "n_params", "evaluations", "seconds", "wall_s", "llm_calls",
           "llm_tokens", "llm_cost", "law", "run_dir"]


def _init_worker() -> None:
    """A campaign worker (after :func:`lawforge.procs.start_worker`): one torch thread."""
    import torch

    torch.set_num_threads(1)


def _load(name: str, data_dir: str | None, inner: bool):
    """The dataset of a campaign's runs, loaded once in the driver (it travels to the workers,
    which need no data folder); a load error becomes each of its runs' row."""
    from lawforge.datasets import load_dataset
    from lawforge.errors import LawforgeError

    try:
        ds = load_dataset(name, data_dir)
        if inner:
            from lawforge.datasets.loader import holdout_dataset

            ds = holdout_dataset(ds)
        return ds
    except LawforgeError as exc:
        return f"error: {exc}"


def _pool_rows(jobs: list[dict], workers: int) -> Iterator[dict]:
    """The rows of ``jobs``, as they finish, from ``workers`` local worker processes."""
    ex = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=start_worker,
                                initargs=("lawforge.runs.campaign:_init_worker", None))
    finished = False
    try:
        futs = [ex.submit(run_job, j) for j in jobs]
        for f in cf.as_completed(futs):
            yield f.result()
        finished = True
    finally:
        if finished:
            ex.shutdown(wait=True)
        else:  # Ctrl-C or an error: the runs in flight stop now (each can be resumed from its folder)
            procs = list((getattr(ex, "_processes", None) or {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(5)


def run_campaign(datasets: list[str], seeds: int, out_dir: str | Path | None = None, budget_s: float | None = None,
                 max_evals: int | None = None, data_dir: str | None = None, llm=None, workers: int | None = None,
                 report: bool = True, on_row: Callable[[dict], None] | None = None,
                 inner: bool = False, search: dict | None = None, seed_start: int = 0,
                 budgets: dict[str, float] | None = None, hooks: Sequence[Callable] = (),
                 ray: str | None = None) -> dict[str, Any]:
    """One discovery per (dataset, seed), ``workers`` side by side. ``inner=True`` runs each on
    its inner holdout (:func:`lawforge.datasets.loader.holdout_dataset`: train's largest-scale
    rows play the test split), for comparing search settings without the real test split.
    ``search`` overrides search settings (:mod:`lawforge.search.settings`, dotted or short
    names) in every run; ``budgets`` (dataset -> seconds) overrides ``budget_s`` for the datasets
    it names; ``hooks`` write each run's outputs (module-level functions: they travel to the
    worker processes). ``ray`` (``"auto"`` or a cluster address) runs each (dataset, seed) as a
    Ray task (:mod:`lawforge.runs.ray_campaign`) instead of a local worker process; ``workers``
    then caps the runs in flight (default: as many as the cluster takes).

    A campaign folder is used by one campaign at a time (a lock, released however the campaign
    ends); the datasets are loaded here and travel to the workers."""
    from lawforge.errors import ConfigError
    from lawforge.search import usable_cores
    from lawforge.search.settings import NOT_SETTABLE, resolve_key

    for k in search or {}:
        if ".".join(resolve_key(k)) in NOT_SETTABLE:
            raise ConfigError(f"search setting {k!r} is set by the campaign itself, not as a setting")
    out = Path(out_dir) if out_dir else Path("runs") / f"campaign-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    unknown = [d for d in (budgets or {}) if d not in datasets]
    if unknown:
        raise ConfigError(f"budget given for {unknown[0]!r}, which is not among the datasets: {', '.join(datasets)}")
    budgets = budgets or {}
    loaded = {d: _load(d, data_dir, inner) for d in dict.fromkeys(datasets)}
    jobs = [{"name": d, "dataset": loaded[d], "seed": s, "out": str(out / f"{d}-s{s}"), "data_dir": data_dir,
             "budget_s": budgets.get(d, budget_s),
             "max_evals": max_evals, "llm": llm.to_dict() if llm else None, "report": report,
             "search": search, "hooks": list(hooks)}
            for d in datasets for s in range(seed_start, seed_start + seeds)]
    rows: list[dict] = [{"dataset": j["name"], "seed": j["seed"], "run_dir": j["out"], "status": j["dataset"]}
                        for j in jobs if isinstance(j["dataset"], str)]
    jobs = [j for j in jobs if not isinstance(j["dataset"], str)]
    for row in rows:
        if on_row:
            on_row(row)
    if ray is not None:
        from lawforge.runs.ray_campaign import ray_rows

        source, workers = ray_rows(jobs, ray, workers), workers or 0
    else:
        workers = max(1, min(workers or usable_cores(), len(jobs) or 1))
        source = _pool_rows(jobs, workers)
    with FolderLock(out, "campaign.lock", "campaign folder"), contextlib.closing(source):
        try:
            write_leaderboard(out, rows)
            for row in source:
                rows.append(row)
                if on_row:
                    on_row(row)
                write_leaderboard(out, rows)  # after every run: an interrupted campaign keeps its rows
        finally:
            write_leaderboard(out, rows)
    return {"leaderboard_csv": str(out / "leaderboard.csv"), "leaderboard_md": str(out / "leaderboard.md"),
            "rows": sorted(rows, key=lambda r: (r["dataset"], r["seed"])), "out_dir": str(out), "workers": workers,
            "engine": "ray" if ray is not None else "local"}


def write_leaderboard(out: Path, rows: list[dict]) -> None:
    """``leaderboard.csv`` and ``leaderboard.md`` of the rows so far (datasets x seeds, then the
    mean and best test R² per dataset), each written atomically."""
    rows = sorted(rows, key=lambda r: (r["dataset"], r["seed"]))
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write(out / "leaderboard.csv", buf.getvalue())

    def f4(x):
        return "-" if x is None else f"{x:.4f}"

    lines = ["# lawforge campaign leaderboard", "",
             "| dataset | seed | test R² | val R² | params | evals | seconds | LLM calls | LLM tokens | LLM cost | law |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['dataset']} | {r['seed']} | {r.get('status')} | | | | | | | | |")
            continue
        lines.append(f"| {r['dataset']} | {r['seed']} | {f4(r['test_r2'])} | {f4(r['val_r2'])} | {r['n_params']} | "
                     f"{r['evaluations']} | {r['seconds']} | {r['llm_calls']} | {r['llm_tokens']} | {r['llm_cost']} | "
                     f"`{r['law']}` |")
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("test_r2") is not None:
            by.setdefault(r["dataset"], []).append(r["test_r2"])
    if by:
        lines += ["", "| dataset | runs | mean test R² | best test R² |", "|---|---|---|---|"]
        for d, v in sorted(by.items()):
            lines.append(f"| {d} | {len(v)} | {np.mean(v):.4f} | {np.max(v):.4f} |")
        means = [np.mean(v) for v in by.values()]
        lines.append(f"| **mean over datasets** | | {np.mean(means):.4f} | {np.mean([np.max(v) for v in by.values()]):.4f} |")
    atomic_write(out / "leaderboard.md", "\n".join(lines) + "\n")
