import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tests read the benchmark's data from ../shared (never committed), unless told otherwise.
if "LAWFORGE_DATA" not in os.environ and (SHARED / "sldbench-rebuilt").is_dir():
    os.environ["LAWFORGE_DATA"] = str(SHARED)
os.environ.setdefault("LAWFORGE_OFFLINE", "1")

SLD_TASKS = ["parallel_scaling_law", "vocab_scaling_law", "sft_scaling_law", "domain_mixture_scaling_law",
             "moe_scaling_law", "data_constrained_scaling_law", "lr_bsz_scaling_law",
             "easy_question_scaling_law"]


def sldbench_available() -> bool:
    d = os.environ.get("LAWFORGE_DATA")
    return bool(d) and all((Path(d) / "sldbench-rebuilt" / t / "train.csv").is_file()
                           or (Path(d) / t / "train.csv").is_file() for t in SLD_TASKS)


needs_sldbench = pytest.mark.skipif(not sldbench_available(),
                                    reason="SLDBench data not found (set LAWFORGE_DATA to the folder holding sldbench-rebuilt/)")


# A noisy Chinchilla grid as a user's CSV, and one discovery on it that several test files read.
def chinchilla_table(seed=0, noise=0.003):
    """A Chinchilla-like grid with noise: L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(2e7, 3e9, 8), 6)
    D = np.tile(np.geomspace(2e9, 2e11, 6), 8)
    loss = 1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28
    return pd.DataFrame({"N": N, "D": D, "loss": loss * (1 + rng.normal(0, noise, len(N)))})


@pytest.fixture(scope="session")
def csv_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo")
    path = d / "runs.csv"
    chinchilla_table().to_csv(path, index=False)
    return d, path


@pytest.fixture(scope="session")
def run_dir(csv_run):
    d, path = csv_run
    out = d / "run"
    from lawforge.cli import main

    rc = main(["discover", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test", "N >= 1e9",
               "--max-evals", "60", "--seed", "0", "--out", str(out), "--json"])
    assert rc == 0
    return out


# No process the suite starts outlives it: every worker, pool and server a test starts must be
# gone when the tests end (the multiprocessing resource tracker of this process excepted: it
# ends with this process by design, once no process holds its pipe).
def _own_processes():
    import psutil

    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if p.ppid() == me.pid and "multiprocessing.resource_tracker" in cmd:
            continue
        out.append((p, cmd))
    return out


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    import time

    before = {p.pid for p, _ in _own_processes()}
    yield
    deadline = time.monotonic() + 10
    left = [(p, c) for p, c in _own_processes() if p.pid not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [(p, c) for p, c in _own_processes() if p.pid not in before]
    for p, _ in left:
        p.kill()
    assert not left, "processes started by the tests outlived them: " + "; ".join(
        f"pid {p.pid}: {c[:120]}" for p, c in left)
