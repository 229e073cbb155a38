"""Batched fits on the GPU beside the CPU: candidate forms per minute at >= 10,000 fits per batch.

    python benchmarks/gpu_batch.py [--dataset sft_scaling_law] [--forms 64] [--restarts 12] [--json]

Takes the first ``--forms`` candidate forms a short search logs on the dataset (a real
generation mix), then fits all of them in one :func:`fit_many` call with the search's settings
(``--restarts`` per group, 60 iterations), once on the CPU and once on CUDA when torch sees a GPU,
and prints fits per batch, wall time, forms per minute and the ratio. sft has 42 groups, so 64
forms x 12 restarts make 32,256 fits in one batch. Without a GPU it prints the CPU row and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib

from lawforge.datasets import load_dataset
from lawforge.fitting.lm import FitJob, fit_many
from lawforge.laws.expr import parse_expression
from lawforge.runs.discover import discover
from lawforge.runs.folder import RunFolder
from lawforge.search.settings import SearchConfig
from lawforge.search.space import to_law


def timed(jobs, device: str) -> tuple[float, list]:
    import torch

    fit_many(jobs[:2], max_iter=5, device=device, errors="return")   # warm-up (CUDA context, kernels)
    t0 = time.perf_counter()
    out = fit_many(jobs, max_iter=60, device=device, errors="return")
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sft_scaling_law")
    ap.add_argument("--forms", type=int, default=64)
    ap.add_argument("--restarts", type=int, default=12)
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ds = load_dataset(args.dataset, args.data_dir)
    run = tempfile.mkdtemp(prefix="lawforge-gpu-")
    discover(ds, SearchConfig.build(max_evals=args.forms + 20, seed=0, workers=1, top_k=0,
                                    **{"selection.rule": "score"}), run, report=False)
    texts = [r["expr"] for r in RunFolder.open(run).read_candidates()][:args.forms]
    laws = [to_law(parse_expression(t, None), dict(ds.card.variables), ds.card.target_columns, data=ds.train)
            for t in texts]
    jobs = [FitJob(law, ds.train, args.restarts, zlib.crc32(t.encode())) for t, law in zip(texts, laws)]
    fits = len(jobs) * args.restarts * len(ds.train.group_names)
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        secs, out = timed(jobs, device)
        ok = sum(1 for r in out if not isinstance(r, Exception) and r.ok)
        rows.append({"device": device, "forms": len(jobs), "fits_per_batch": fits, "seconds": round(secs, 3),
                     "forms_per_minute": round(60 * len(jobs) / secs, 1), "fits_per_s": round(fits / secs),
                     "ok": ok, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None})
    if len(rows) == 2:
        rows[1]["ratio_vs_cpu"] = round(rows[0]["seconds"] / rows[1]["seconds"], 2)
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['device']:5s} {r['forms']} forms, {r['fits_per_batch']} fits in one batch: {r['seconds']:.2f}s, "
              f"{r['forms_per_minute']:.0f} forms/min, {r['fits_per_s']} fits/s, {r['ok']} fitted"
              + (f", x{r['ratio_vs_cpu']} vs CPU ({r['gpu']})" if "ratio_vs_cpu" in r else ""))
    if len(rows) == 1:
        print("no GPU here: torch sees no CUDA device, so only the CPU row was measured")


if __name__ == "__main__":
    main()
