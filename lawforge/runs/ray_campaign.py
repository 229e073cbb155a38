"""A campaign's runs as Ray tasks, one per (dataset, seed), on a Ray cluster.

What travels to a worker: the job (the loaded dataset, the settings, the LLM configuration, the
output hooks by reference). Each task runs its discovery in a temporary folder on its node and
returns the folder's files with its leaderboard row; the driver alone writes them into the
campaign folder, so the nodes need no shared file system and no data folder, only lawforge
installed. A task whose worker is lost (a node down, a process killed) is run again from its
start, up to :data:`MAX_RETRIES` times; each run is deterministic in its seed, so a rerun
gives the same row.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

from lawforge.fileio import atomic_write_bytes

MAX_RETRIES = 3


def _ray_one(job: dict) -> tuple[dict, dict[str, bytes]]:
    """One discovery in a Ray worker: its row and its run folder's files (relative path -> bytes)."""
    import torch

    from lawforge.runs.job import run_job

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="lawforge-ray-") as tmp:
        folder = Path(tmp) / Path(job["out"]).name
        row = run_job({**job, "write_to": str(folder)})
        files = {}
        if folder.is_dir():
            for p in sorted(folder.rglob("*")):
                if p.is_file() and not p.name.endswith(".lock"):
                    files[p.relative_to(folder).as_posix()] = p.read_bytes()
        return row, files


def _unpack(out: str, files: dict[str, bytes]) -> None:
    """Write a run's files into its folder ``out`` (on the driver), each atomically; the summary's
    ``run_dir`` names the folder here, not the worker's temporary one."""
    base = Path(out)
    for rel, data in files.items():
        path = base / rel
        if base.resolve() not in path.resolve().parents:
            raise ValueError(f"a Ray task returned a file outside its run folder: {rel!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel == "metrics.json":
            summary = json.loads(data)
            summary["run_dir"] = str(base)
            data = json.dumps(summary, indent=2).encode()
        atomic_write_bytes(path, data)


def _refused(job: dict) -> dict | None:
    """The error row of a job whose folder already holds a run (as the local pool reports it)."""
    from lawforge.errors import LawforgeError
    from lawforge.runs.folder import RunFolder

    try:
        RunFolder.create(job["out"], job["name"], job["seed"])
    except LawforgeError as exc:
        return {"dataset": job["name"], "seed": job["seed"], "run_dir": job["out"], "status": f"error: {exc}"}
    return None


def ray_rows(jobs: list[dict], address: str, workers: int | None) -> Iterator[dict]:
    """The rows of ``jobs`` as their Ray tasks finish, at most ``workers`` in flight (default:
    all; the cluster's CPUs decide how many run at once). Leaving early (Ctrl-C, an error)
    cancels the tasks in flight."""
    from lawforge.procs import RaySession

    with RaySession(address, num_cpus=workers) as session:
        ray = session.ray
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_ray_one)
        todo = list(jobs)
        cap = max(1, workers or len(jobs))
        inflight: dict = {}
        try:
            while todo or inflight:
                while todo and len(inflight) < cap:
                    job = todo.pop(0)
                    refused = _refused(job)
                    if refused is not None:
                        yield refused
                        continue
                    inflight[task.options(name=f"lawforge:{job['name']}-s{job['seed']}").remote(job)] = job
                if not inflight:
                    continue
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    job = inflight.pop(ref)
                    try:
                        row, files = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        yield {"dataset": job["name"], "seed": job["seed"], "run_dir": job["out"],
                               "status": f"error: Ray task failed after {MAX_RETRIES} retries: "
                                         f"{type(exc).__name__}: {first}"}
                        continue
                    _unpack(job["out"], files)
                    yield row
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)

