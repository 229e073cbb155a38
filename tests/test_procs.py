"""Process hygiene: workers end with their parent however it ends, and one process per run folder."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import needs_sldbench

from lawforge.errors import ConfigError
from lawforge.procs import FolderLock
from lawforge.runs.folder import RunFolder

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lawforge.cli", *args]


def _wait_for(cond, timeout: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _workers_up(proc: subprocess.Popen, n: int, folder: Path):
    """The descendants of ``proc`` once its ``n`` worker processes run and it has logged a
    candidate (the search is under way)."""
    parent = psutil.Process(proc.pid)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early (rc {proc.returncode})")
        kids = parent.children(recursive=True)
        workers = [k for k in kids if "spawn_main" in " ".join(k.cmdline())]
        return kids if len(workers) >= n and (folder / "candidates.jsonl").is_file() else None
    return _wait_for(ready, 90, f"{n} workers")


def _gone_within(procs, seconds: float) -> list:
    t0 = time.monotonic()
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() - t0 > seconds:
            return alive
        time.sleep(0.05)


def _end(proc: subprocess.Popen, kids=()) -> str:
    """Clean up after a test, whatever it found (the run and anything it left are killed, so
    that a failing test fails rather than waits on pipes an orphan holds); the run's stderr."""
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=30)[1]


def _discover(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli("discover", "moe_scaling_law", "--budget", "5m", "--workers", "2", "--out", str(out),
                                 "--no-report"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


@needs_sldbench
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_no_worker_outlives_a_discover(tmp_path, how):
    proc, out = _discover(tmp_path)
    kids = []
    try:
        kids = _workers_up(proc, 2, out)
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=120)  # Ctrl-C: the step ends, the checkpoint is written, the run returns
        left = _gone_within(kids, 5.0)
        assert not left, f"after {how}, still running: {[(p.pid, p.cmdline()) for p in left]}"
        if how == "SIGINT":
            assert RunFolder(out).checkpoint()["status"] == "interrupted"
    finally:
        _end(proc, kids)


@needs_sldbench
@pytest.mark.slow
def test_no_worker_outlives_a_crash(tmp_path):
    """An exception in the main loop (here raised by the progress callback) ends the run and its
    workers."""
    script = textwrap.dedent(f"""
        import time
        from lawforge.datasets import load_dataset
        from lawforge.runs.discover import discover
        from lawforge.search.settings import SearchConfig

        def progress(info):
            time.sleep(3)  # time for the test to see the workers
            raise RuntimeError("a crash in the main loop")

        discover(load_dataset("moe_scaling_law"), SearchConfig.build(budget_s=300, workers=2),
                 {str(tmp_path / 'run')!r}, progress=progress, report=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids = []
    try:
        kids = _workers_up(proc, 2, tmp_path / "run")
        proc.wait(timeout=60)
        left = _gone_within(kids, 5.0)
        assert not left, f"after the crash, still running: {[(p.pid, p.cmdline()) for p in left]}"
    finally:
        err = _end(proc, kids)
    assert proc.returncode != 0 and "a crash in the main loop" in err


@needs_sldbench
@pytest.mark.slow
def test_a_run_folder_takes_one_process_and_a_killed_ones_lock_does_not_block(tmp_path):
    proc, out = _discover(tmp_path)
    kids = []
    try:
        kids = _workers_up(proc, 2, out)
        second = subprocess.run(_cli("resume", str(out)), capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"in use by another lawforge process (pid {proc.pid}" in second.stderr
        again = subprocess.run(_cli("discover", "moe_scaling_law", "--max-evals", "10", "--out", str(out)),
                               capture_output=True, text=True, timeout=120)
        assert again.returncode != 0 and str(out) in again.stderr
        proc.kill()
        proc.wait(timeout=30)
        assert (out / "lawforge.lock").exists()  # left behind by the killed run, but no longer held
        with RunFolder(out).lock() as lock:
            assert lock.held
        assert not (out / "lawforge.lock").exists()
    finally:
        _end(proc, kids)


def test_folder_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lawforge.procs import FolderLock
        FolderLock({str(tmp_path)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another lawforge process \(pid {holder.pid} since"):
            FolderLock(tmp_path).acquire()
        holder.kill()
        holder.wait()
        lock = FolderLock(tmp_path).acquire()   # the kernel released the killed holder's lock
        assert lock.held and f"pid {os.getpid()}" in (tmp_path / "lawforge.lock").read_text()
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            FolderLock(tmp_path).acquire()      # a second lock in the same process is refused too
        lock.release()
        assert not lock.held and not (tmp_path / "lawforge.lock").exists()
    finally:
        holder.kill()
        holder.communicate()


def test_a_campaign_folder_takes_one_campaign(tmp_path):
    from lawforge.runs.campaign import run_campaign

    with FolderLock(tmp_path, "campaign.lock", "campaign folder"):
        with pytest.raises(ConfigError, match="campaign folder is in use"):
            run_campaign(["synthetic_chinchilla"], 1, tmp_path, max_evals=4, workers=1, report=False)
    assert not (tmp_path / "leaderboard.csv").exists()


def test_exit_with_parent_is_a_no_op_outside_a_worker():
    from lawforge.procs import exit_with_parent

    exit_with_parent()  # the test process has no multiprocessing parent: nothing to watch


def test_ray_missing_or_a_bad_address_is_a_clear_error(monkeypatch):
    from lawforge.procs import RaySession

    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        RaySession("nohost").start()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"--ray needs Ray, which is not installed: pip install 'lawforge\[ray\]'"):
        RaySession("auto").start()
