"""Campaigns and searches on a real local Ray cluster (127.0.0.1, 2 CPUs): the same results as
the local pool, and a campaign that survives a killed Ray worker."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_sldbench

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lawforge[ray]')")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

# the campaigns and runs here read SLDBench tasks (parallel, moe) from the data directory

DATASETS = ["synthetic_chinchilla", "parallel_scaling_law"]
KEYS = ("dataset", "seed", "status", "test_r2", "val_r2", "n_params", "evaluations", "law")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, started by this process and shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_board(tmp_path_factory):
    from lawforge.runs.campaign import run_campaign

    out = run_campaign(DATASETS, 2, tmp_path_factory.mktemp("local"), max_evals=60, workers=2, report=False)
    return [{k: r.get(k) for k in KEYS} for r in out["rows"]]


def _campaign(address: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lawforge.cli", "campaign", *DATASETS, "--seeds", "2",
                             "--max-evals", "60", "--no-report", "--json", "--ray", address, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(stdout: str) -> list[dict]:
    return [{k: r.get(k) for k in KEYS} for r in json.loads(stdout)["rows"]]


def _complete(out: Path, rows: list[dict]) -> None:
    """Every run folder written by the driver, whole, naming itself; no lock left."""
    for r in rows:
        folder = out / f"{r['dataset']}-s{r['seed']}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["run_dir"] == str(folder) and metrics["law"] == r["law"]
        assert json.loads((folder / "checkpoint.json").read_text())["status"] == "done"
        assert not list(out.rglob("*.lock"))


@needs_sldbench
def test_a_campaign_on_ray_gives_the_local_pools_leaderboard(cluster, local_board, tmp_path):
    proc = _campaign(cluster, tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = _rows(stdout)
    assert rows == local_board
    _complete(tmp_path, rows)


@needs_sldbench
def test_a_campaign_on_ray_survives_a_killed_worker(cluster, local_board, tmp_path):
    proc = _campaign(cluster, tmp_path)
    killed = None
    try:
        t0 = time.monotonic()
        while killed is None and proc.poll() is None and time.monotonic() - t0 < 120:
            for p in psutil.process_iter(["cmdline"]):
                title = (p.info["cmdline"] or [""])[0]
                if title.startswith("ray::lawforge:"):   # a worker running one of the campaign's runs
                    os.kill(p.pid, signal.SIGKILL)
                    killed = title
                    break
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "no campaign task was seen running"
    assert proc.returncode == 0, stderr
    rows = _rows(stdout)
    assert rows == local_board   # the killed run was run again: nothing lost, the same row
    _complete(tmp_path, rows)


@needs_sldbench
def test_discover_on_ray_gives_the_local_law(cluster, tmp_path):
    from lawforge.cli import main

    args = ["discover", "moe_scaling_law", "--max-evals", "48", "--seed", "1", "--workers", "2", "--no-report", "--json"]
    out = subprocess.run([sys.executable, "-m", "lawforge.cli", *args, "--ray", cluster, "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert main(args + ["--out", str(tmp_path / "l")]) == 0
    on_ray = json.loads((tmp_path / "r" / "metrics.json").read_text())
    local = json.loads((tmp_path / "l" / "metrics.json").read_text())
    for k in ("law", "test_r2", "val_r2", "evaluations"):
        assert on_ray[k] == local[k], k


def test_an_address_where_no_cluster_answers_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lawforge.cli", "campaign", "synthetic_chinchilla", "--seeds", "1",
                          "--max-evals", "4", "--ray", "127.0.0.1:1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "--ray 127.0.0.1:1: no Ray cluster answers there" in out.stderr
