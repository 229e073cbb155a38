"""Where dataset files are found: the data directory (``--data-dir`` or ``$LAWFORGE_DATA``) and
lawforge's download cache. The loader and the catalogue both look here; neither imports the other
for it."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "LAWFORGE_DATA"


def data_root(data_dir: str | Path | None = None) -> Path | None:
    d = data_dir or os.environ.get(ENV_DATA)
    return Path(d).expanduser() if d else None


def cache_root() -> Path:
    """lawforge's download cache: $LAWFORGE_CACHE, else $XDG_CACHE_HOME/lawforge (~/.cache/lawforge)."""
    base = os.environ.get("LAWFORGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lawforge")
    return Path(base)


def hub_cache_dir() -> Path:
    """Where SLDBench tasks downloaded from the benchmark's hub are cached."""
    return cache_root() / "sldbench"


def _task_dir_candidates(task: str, root: Path) -> list[Path]:
    return [root / task, root / "sldbench-rebuilt" / task]


def find_sldbench_files(card, data_dir=None) -> tuple[Path, Path] | None:
    """The train and test files of an SLDBench card's task: in the data directory, else in the cache."""
    task = card.data["task"]
    root = data_root(data_dir)
    if root is not None:
        for d in _task_dir_candidates(task, root):
            tr, te = d / card.split["train"], d / card.split["test"]
            if tr.is_file() and te.is_file():
                return tr, te
    cached = hub_cache_dir() / task
    tr, te = cached / card.split["train"], cached / card.split["test"]
    if tr.is_file() and te.is_file():
        return tr, te
    return None


def catalogue_cache(name: str) -> Path:
    return cache_root() / "catalogue" / name


def find_catalogue_file(name: str, data_dir=None) -> Path | None:
    """The table of catalogue dataset ``name``: in the data directory, else in the cache."""
    root = data_root(data_dir)
    cands = [root / "external" / name / "data.csv", root / name / "data.csv"] if root is not None else []
    cands.append(catalogue_cache(name) / "data.csv")
    return next((p for p in cands if p.is_file()), None)
