"""Batched fits on the GPU beside the CPU: candidate forms per minute at >= 10,000 fits per batch.

    python benchmarks/gpu_batch.py [--dataset sft_scaling_law] [--sizes 64,256,1024] [--restarts 12]
                                   [--forms-file F.json] [--save-forms F.json] [--threads N]
                                   [--gpu-chunks 4e6,1e8] [--profile] [--json]

Takes the first candidate forms a short search logs on the dataset (a real generation mix; or
the texts saved in ``--forms-file``, so a machine without the search's extras can run it), then,
for each size in ``--sizes``, fits that many forms in one :func:`fit_many` call with the search's
settings (``--restarts`` per group, 60 iterations), on the CPU and on CUDA when torch sees a GPU,
and prints fits per batch, wall time, forms per minute and the ratio to the CPU. sft has 42
groups, so 64 forms x 12 restarts make 32,256 fits in one batch. On CUDA each size is timed per
``--gpu-chunks`` value (rows x residuals x parameters per LM chunk). The best losses of the CPU
and CUDA fits of the same forms are compared (relative difference <= 1e-6 counts as agreement).
Without a GPU it prints the CPU rows and says so. ``--profile`` also runs torch's profiler on
the first size's batch on the fastest device there and prints the calls that took the most host
time (the kernel launches per iteration and how long the GPU was busy).
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
from lawforge.search.space import to_law


def timed(jobs, device: str, chunk: float) -> tuple[float, list]:
    import torch

    fit_many(jobs[:2], max_iter=5, device=device, errors="return")   # warm-up (CUDA context, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fit_many(jobs, max_iter=60, device=device, errors="return", chunk_elements=chunk)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def profile(jobs, device: str, chunk: float) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        secs, _ = timed(jobs, device, chunk)
    print(f"profile: {len(jobs)} forms on {device}, {secs:.2f}s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def logged_forms(ds, n: int) -> list[str]:
    from lawforge.runs.discover import discover
    from lawforge.runs.folder import RunFolder
    from lawforge.search.settings import SearchConfig

    run = tempfile.mkdtemp(prefix="lawforge-gpu-")
    discover(ds, SearchConfig.build(max_evals=n + 20, seed=0, workers=1, top_k=0,
                                    **{"selection.rule": "score"}), run, report=False)
    return [r["expr"] for r in RunFolder.open(run).read_candidates()][:n]


def losses(out) -> list:
    return [None if isinstance(r, Exception) or not r.ok else r.total_loss for r in out]


def agreement(a: list, b: list) -> tuple[int, int]:
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    good = sum(1 for x, y in both if y <= x + 1e-6 * max(abs(x), 1e-300))
    return good, len(both)


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sft_scaling_law")
    ap.add_argument("--sizes", default="64", help="comma-separated form counts, one batch each")
    ap.add_argument("--restarts", type=int, default=12)
    ap.add_argument("--forms-file", help="JSON list of expression texts to fit (else a short search logs them)")
    ap.add_argument("--save-forms", help="write the logged expression texts here and continue")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--gpu-chunks", default="4e6", help="comma-separated chunk_elements values tried on CUDA")
    ap.add_argument("--data-dir", default=os.environ.get("LAWFORGE_DATA"))
    ap.add_argument("--profile", action="store_true", help="profile the first size's batch (torch.profiler)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    ds = load_dataset(args.dataset, args.data_dir)
    if args.forms_file:
        with open(args.forms_file) as fh:
            texts = json.load(fh)
    else:
        texts = logged_forms(ds, max(sizes))
    if args.save_forms:
        with open(args.save_forms, "w") as fh:
            json.dump(texts, fh)
    if len(texts) < max(sizes):
        raise SystemExit(f"gpu_batch: {len(texts)} logged forms, fewer than the largest size {max(sizes)}")
    variables = dict(ds.card.variables)
    laws = [to_law(parse_expression(t, None), variables, ds.card.target_columns, data=ds.train) for t in texts]
    all_jobs = [FitJob(law, ds.train, args.restarts, zlib.crc32(t.encode())) for t, law in zip(texts, laws)]
    cuda = torch.cuda.is_available()
    rows = []
    for n in sizes:
        jobs = all_jobs[:n]
        fits = n * args.restarts * len(ds.train.group_names)
        runs = [("cpu", 4e6)] + ([("cuda", float(c)) for c in args.gpu_chunks.split(",")] if cuda else [])
        cpu_secs = cpu_loss = None
        for device, chunk in runs:
            secs, out = timed(jobs, device, chunk)
            row = {"device": device, "forms": n, "fits_per_batch": fits, "chunk_elements": chunk,
                   "seconds": round(secs, 3), "forms_per_minute": round(60 * n / secs, 1),
                   "fits_per_s": round(fits / secs), "ok": sum(1 for x in losses(out) if x is not None),
                   "threads": torch.get_num_threads() if device == "cpu" else None,
                   "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
            if device == "cpu":
                cpu_secs, cpu_loss = secs, losses(out)
            else:
                row["ratio_vs_cpu"] = round(cpu_secs / secs, 2)
                good, both = agreement(cpu_loss, losses(out))
                row["agree_with_cpu"] = f"{good}/{both}"
            rows.append(row)
            if not args.json:
                print(f"{device:5s} {n} forms, {fits} fits in one batch (chunk {chunk:.0e}): {secs:.2f}s, "
                      f"{row['forms_per_minute']:.0f} forms/min, {row['fits_per_s']} fits/s, {row['ok']} fitted"
                      + (f", x{row['ratio_vs_cpu']} vs CPU ({row['threads'] or torch.get_num_threads()} threads), "
                         f"CUDA loss <= CPU loss (1e-6 rel.) on {row['agree_with_cpu']}" if device == "cuda" else ""),
                      flush=True)
    if args.profile:
        profile(all_jobs[:sizes[0]], "cuda" if cuda else "cpu", float(args.gpu_chunks.split(",")[-1]) if cuda else 4e6)
    if args.json:
        print(json.dumps(rows))
    elif not cuda:
        print("no GPU here: torch sees no CUDA device, so only the CPU rows were measured")


if __name__ == "__main__":
    main()
