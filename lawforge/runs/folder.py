"""The run folder: the one owner of every file a run reads or writes.

    config.json        resolved settings, the card, data origin          (written at the start)
    card.yaml          the dataset card (a CSV run's generated card too)
    manifest.json      versions, seed, device, data hash
    candidates.jsonl   every evaluated candidate, append-only
    candidates.pending.jsonl   candidates evaluated after the last checkpoint (while resuming)
    checkpoint.json    the search state after each generation; status running/searched/done
    llm_usage.json, llm_calls.jsonl, llm_cache/   the LLM ledger, request log and reply cache
    pareto.csv, law.json, top_laws.json, ensemble.json, metrics.json   the results
    laws.tex, report.html, report.md, report_files/      outputs for people and papers
    predictions.tex    the chosen law beyond the data (10x, 100x) with bootstrap intervals
    lawforge.lock      present while a process runs in the folder (see RunFolder.lock)

Every whole-file write goes through :func:`lawforge.fileio.atomic_write`; the candidate log is
appended line by line and a torn last line (from ``kill -9``) is dropped when read.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any, Iterable

from lawforge.errors import ConfigError
from lawforge.fileio import atomic_write, atomic_write_bytes
from lawforge.procs import FolderLock

CONFIG, CARD, MANIFEST = "config.json", "card.yaml", "manifest.json"
CANDIDATES, PENDING, CHECKPOINT = "candidates.jsonl", "candidates.pending.jsonl", "checkpoint.json"
LLM_USAGE, LLM_CALLS, LLM_CACHE = "llm_usage.json", "llm_calls.jsonl", "llm_cache"
PARETO, LAW, TOP_LAWS, METRICS = "pareto.csv", "law.json", "top_laws.json", "metrics.json"
LAWS_TEX, REPORT_HTML, REPORT_MD, REPORT_FILES = "laws.tex", "report.html", "report.md", "report_files"
LOCK, PREDICTIONS_TEX, ENSEMBLE = "lawforge.lock", "predictions.tex", "ensemble.json"
PARETO_COLUMNS = ["complexity", "n_params", "val_r2", "val_nmse", "expression"]


class RunFolder:
    """A run's folder. :meth:`create` starts a new one (refusing a folder that holds a run);
    :meth:`open` reads an existing one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        #: The :func:`time.perf_counter` time by which the run's outputs should be written (set
        #: by a discovery under a time budget; the output hooks read it), or None.
        self.deadline: float | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- opening
    @classmethod
    def create(cls, path: str | Path | None, dataset: str, seed: int) -> "RunFolder":
        """A new run folder at ``path`` (default ``runs/<dataset>-<time>-s<seed>``)."""
        if path is None:
            path = Path("runs") / f"{dataset}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-s{seed}"
        run = cls(path)
        if run.has(CANDIDATES) or run.has(CHECKPOINT):
            raise ConfigError(f"{run.path} already holds a run; continue it with 'lawforge resume {run.path}' "
                              f"or choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(f"run folder not found: {run.path}")
        return run

    def lock(self) -> "FolderLock":
        """Hold this folder for this process (see :class:`lawforge.procs.FolderLock`): a second
        process that tries is refused, naming the holder; a killed holder's lock is gone."""
        return FolderLock(self.path, LOCK, "run folder").acquire()

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    # -- generic reads and writes
    def write_text(self, name: str, text: str) -> Path:
        return atomic_write(self.file(name), text)

    def write_json(self, name: str, obj: Any, **kw) -> Path:
        return self.write_text(name, json.dumps(obj, **{"indent": 2, **kw}))

    def read_json(self, name: str, default: Any = ConfigError) -> Any:
        """The parsed file; a missing one returns ``default`` or, without one, is an error
        naming the folder."""
        p = self.file(name)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            if default is not ConfigError:
                return default
            raise ConfigError(f"{self.path}: not a complete run folder (no {name})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None

    # -- the start of a run
    def config(self) -> dict:
        try:
            return json.loads(self.file(CONFIG).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: no {CONFIG}; not a lawforge run folder") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.file(CONFIG)}: not valid JSON ({exc.msg})") from None

    def write_start(self, config: dict, card_yaml: str, manifest: dict) -> None:
        self.write_json(CONFIG, config, default=str)
        self.write_text(CARD, card_yaml)
        self.write_json(MANIFEST, manifest)

    # -- the candidate log
    def _records(self, name: str) -> list:
        """Every parseable line of a JSON-lines file (a torn last line, from a kill, is dropped)."""
        p = self.file(name)
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def read_log(self, name: str = CANDIDATES) -> list[dict]:
        """The log's complete candidate records (each with its key and tree)."""
        return [r for r in self._records(name) if isinstance(r, dict) and "key" in r and "tree" in r]

    def read_candidates(self) -> list[dict]:
        """Every parseable record of the candidate log (for reports)."""
        return self._records(CANDIDATES)

    def open_log(self):
        """The candidate log opened for appending (one JSON record per line, flushed each)."""
        return CandidateLog(self.file(CANDIDATES))

    def split_log_at(self, committed: int) -> tuple[list[dict], dict[str, dict]]:
        """For a resume: keep the first ``committed`` records in the log; later ones (evaluated
        after the checkpoint, before the interruption) move to the pending file and come back as
        a cache keyed by form, so nothing evaluated is lost."""
        recs = self.read_log()
        if len(recs) < committed:
            raise ConfigError(f"{self.file(CANDIDATES)}: {len(recs)} complete records, but the checkpoint "
                              f"needs {committed}")
        pending = {r["key"]: r for r in self.read_log(PENDING)}
        for r in recs[committed:]:
            pending[r["key"]] = r
        self.write_text(PENDING, "".join(json.dumps(r) + "\n" for r in pending.values()))
        self.write_text(CANDIDATES, "".join(json.dumps(r) + "\n" for r in recs[:committed]))
        return recs[:committed], pending

    # -- checkpoints
    def checkpoint(self) -> dict:
        p = self.file(CHECKPOINT)
        if not p.is_file():
            raise ConfigError(f"{self.path}: no {CHECKPOINT}; not a lawforge run folder, or it stopped before "
                              f"its first step (start it again)")
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: unreadable checkpoint ({exc.msg})") from None

    def write_checkpoint(self, snap: dict) -> None:
        self.write_text(CHECKPOINT, json.dumps(snap, default=float))

    def mark_done(self) -> None:
        if self.has(CHECKPOINT):
            self.write_text(CHECKPOINT, json.dumps({**self.checkpoint(), "status": "done"}))

    # -- LLM files (the proposer writes its request log and cache where the folder says)
    @property
    def llm_calls_path(self) -> Path:
        return self.file(LLM_CALLS)

    @property
    def llm_cache_dir(self) -> Path:
        return self.file(LLM_CACHE)

    # -- results
    def write_pareto(self, rows: Iterable[list]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(PARETO_COLUMNS)
        for r in rows:
            w.writerow(r)
        self.write_text(PARETO, buf.getvalue())

    def read_pareto(self) -> list[dict]:
        if not self.has(PARETO):
            return []
        with open(self.file(PARETO)) as f:
            return list(csv.DictReader(f))

    def write_image(self, name: str, png: bytes) -> Path:
        (self.path / REPORT_FILES).mkdir(exist_ok=True)
        return atomic_write_bytes(self.path / REPORT_FILES / f"{name}.png", png)

    def load(self) -> dict[str, Any]:
        """What a report needs: config, metrics, law, top laws, candidates, Pareto front, LLM use."""
        return {"dir": self.path, "config": self.read_json(CONFIG), "metrics": self.read_json(METRICS),
                "law": self.read_json(LAW), "top": self.read_json(TOP_LAWS, []),
                "candidates": self.read_candidates(), "pareto": self.read_pareto(),
                "llm": self.read_json(LLM_USAGE, None)}


class CandidateLog:
    """The append-only candidate log: one JSON record per line, flushed after each."""

    def __init__(self, path: Path):
        self._f = open(path, "a")

    def append(self, rec: dict) -> None:
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
