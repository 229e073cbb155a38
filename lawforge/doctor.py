"""``lawforge doctor``: versions, torch device, PySR/Julia, LLM endpoint, bundled data integrity.

Every check returns a row ``{check, status, detail}`` with status OK, WARN (optional piece
missing; lawforge works without it) or FAIL (lawforge itself is broken here). Nothing is
installed, started or downloaded: PySR is looked up, not imported (importing it starts Julia).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import sys
import urllib.error
import urllib.request
from importlib import resources
from typing import Any

REQUIRED = ("numpy", "scipy", "sympy", "pandas", "torch", "pyyaml", "rich", "matplotlib", "markdown-it-py")
OPTIONAL = ("openai", "langgraph", "pysr", "huggingface_hub", "pytest")


def _row(check: str, status: str, detail: str) -> dict[str, str]:
    return {"check": check, "status": status, "detail": detail}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def synthetic_hashes() -> dict[str, str]:
    base = resources.files("lawforge.datasets") / "synthetic_data"
    return {e.name: hashlib.sha256(e.read_bytes()).hexdigest()
            for e in sorted(base.iterdir(), key=lambda e: e.name) if e.name.endswith(".csv")}


def expected_hashes() -> dict[str, str]:
    f = resources.files("lawforge.datasets") / "synthetic_data" / "SHA256SUMS.json"
    return json.loads(f.read_text())


def check_llm(base_url: str, timeout: float = 3.0) -> dict[str, str]:
    url = base_url.rstrip("/") + "/models"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return _row("LLM endpoint", "OK", f"{url} answered HTTP {r.status}")
    except urllib.error.HTTPError as exc:  # it answered: reachable, maybe needs a key
        return _row("LLM endpoint", "WARN" if exc.code in (401, 403) else "OK",
                    f"{url} answered HTTP {exc.code}" + (" (check OPENAI_API_KEY)" if exc.code in (401, 403) else ""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return _row("LLM endpoint", "WARN", f"{url} not reachable ({reason}); runs without --llm-* are unaffected")


def run_checks(llm_base_url: str | None = None, data_dir: str | None = None) -> list[dict[str, Any]]:
    from lawforge._version import __version__

    rows = [_row("lawforge", "OK", f"{__version__} on Python {sys.version.split()[0]}, {platform.platform()}")]
    for dist in REQUIRED:
        v = _version(dist)
        rows.append(_row(dist, "OK" if v else "FAIL", v or "not installed (required)"))
    for dist in OPTIONAL:
        v = _version(dist)
        rows.append(_row(dist, "OK" if v else "WARN", v or "not installed (optional)"))
    try:
        import torch

        if torch.cuda.is_available():
            rows.append(_row("torch device", "OK", f"cuda: {torch.cuda.get_device_name(0)} (CPU is the default; "
                                                   f"--device cuda uses it)"))
        else:
            rows.append(_row("torch device", "OK", f"cpu ({torch.get_num_threads()} threads); no CUDA device"))
    except Exception as exc:  # a broken torch install
        rows.append(_row("torch device", "FAIL", f"torch does not import: {exc}"))
    julia = shutil.which("julia")
    has_pysr = importlib.util.find_spec("pysr") is not None
    if julia and has_pysr:
        rows.append(_row("PySR engine", "OK", f"pysr {_version('pysr')}, julia at {julia}"))
    else:
        miss = [m for m, ok in (("Julia", julia), ("the pysr package", has_pysr)) if not ok]
        rows.append(_row("PySR engine", "WARN", f"unavailable ({' and '.join(miss)} missing); the native engine "
                                                "is the default. Install: pip install 'lawforge[pysr]' and Julia "
                                                "from https://julialang.org"))
    url = llm_base_url or os.environ.get("LAWFORGE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    rows.append(check_llm(url) if url else _row("LLM endpoint", "OK", "none configured (LLM mutation is optional)"))
    try:
        got, want = synthetic_hashes(), expected_hashes()
        bad = sorted(n for n in want if got.get(n) != want[n])
        extra = sorted(set(got) - set(want))
        if bad:
            rows.append(_row("bundled datasets", "FAIL", f"hash mismatch: {', '.join(bad)} (reinstall lawforge)"))
        else:
            rows.append(_row("bundled datasets", "OK", f"{len(want)} synthetic CSVs match their SHA-256"
                                                       + (f"; unlisted: {extra}" if extra else "")))
    except (OSError, ValueError) as exc:
        rows.append(_row("bundled datasets", "FAIL", f"cannot check: {exc}"))
    from lawforge.datasets import bundled_card_paths, data_available, get_card

    names = [n for n in bundled_card_paths() if get_card(n).data["source"] == "sldbench"]
    here = [n for n in names if data_available(get_card(n), data_dir)]
    rows.append(_row("SLDBench data", "OK" if len(here) == len(names) else "WARN",
                     f"{len(here)}/{len(names)} tasks found" + ("" if len(here) == len(names) else
                                                                "; set --data-dir or LAWFORGE_DATA")))
    return rows
