import os
from pathlib import Path

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
