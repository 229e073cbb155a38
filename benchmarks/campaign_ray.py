"""Campaign wall time on this machine: the local worker pool beside Ray with 1 and 2 workers,
side by side in one run, plus the per-run and per-candidate costs that docs/distributed.md
scales to 10 and 100 nodes.

    python benchmarks/campaign_ray.py [--datasets synthetic_chinchilla,parallel_scaling_law,moe_scaling_law]
                                      [--seeds 2] [--max-evals 200] [--json]

Each configuration runs ``lawforge campaign`` as a new process (the wall time includes starting
Python, the workers, and for Ray a local Ray instance with that many CPUs), with the same
datasets, seeds and ``--max-evals`` (so every configuration runs the same candidates and must
give the same leaderboard, which is checked). Data: $LAWFORGE_DATA for SLDBench tasks.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "synthetic_chinchilla,parallel_scaling_law,moe_scaling_law"
CONFIGS = [("local pool", 1, False), ("local pool", 2, False), ("ray", 1, True), ("ray", 2, True)]


def one(datasets: list[str], seeds: int, max_evals: int, workers: int, ray: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="lawforge-bench-campaign-"))
    cmd = [sys.executable, "-m", "lawforge.cli", "campaign", *datasets, "--seeds", str(seeds), "--max-evals",
           str(max_evals), "--workers", str(workers), "--no-report", "--json", "--out", str(out)]
    if ray:
        cmd.append("--ray")   # no cluster running here: a local Ray instance with --workers CPUs
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"wall_s": round(wall, 1), "runs": len(rows),
            "evaluations": sum(int(r["evaluations"]) for r in rows),
            "run_seconds": round(sum(float(r["seconds"]) for r in rows), 1),
            "board": [(r["dataset"], r["seed"], r["law"], r["test_r2"]) for r in rows]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=DEFAULT)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--max-evals", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    datasets = a.datasets.split(",")
    results = []
    for engine, workers, ray in CONFIGS:
        r = one(datasets, a.seeds, a.max_evals, workers, ray)
        results.append({"engine": engine, "workers": workers, **r})
    boards = {json.dumps(r.pop("board")) for r in results}
    base = results[0]["wall_s"]
    for r in results:
        r["speedup_vs_local_1"] = round(base / r["wall_s"], 2)
        r["s_per_candidate_search"] = round(r["run_seconds"] / max(r["evaluations"], 1), 4)
    summary = {"datasets": datasets, "seeds": a.seeds, "max_evals": a.max_evals, "same_leaderboard": len(boards) == 1,
               "results": results}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"campaign: {len(datasets)} datasets x {a.seeds} seeds, --max-evals {a.max_evals}")
    print(f"{'engine':<11} {'workers':>7} {'wall s':>8} {'vs local-1':>10} {'runs':>5} {'evals':>6} "
          f"{'search s (sum)':>14} {'s/candidate':>11}")
    for r in results:
        print(f"{r['engine']:<11} {r['workers']:>7} {r['wall_s']:>8} {r['speedup_vs_local_1']:>10} {r['runs']:>5} "
              f"{r['evaluations']:>6} {r['run_seconds']:>14} {r['s_per_candidate_search']:>11}")
    print(f"same leaderboard in every configuration: {summary['same_leaderboard']}")


if __name__ == "__main__":
    main()
