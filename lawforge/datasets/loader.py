"""Loading a dataset's data: data directory, hub cache, or the package's own synthetic files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lawforge.datasets.card import DatasetCard, get_card
from lawforge.datasets.locations import ENV_DATA, data_root, find_catalogue_file, find_sldbench_files, hub_cache_dir
from lawforge.datasets.rules import evaluate_rule
from lawforge.errors import DatasetError
from lawforge.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

HUB_REPO = "pkuHaowei/sldbench"
ENV_HUMAN = "LAWFORGE_HUMAN"


@dataclass
class DataSplit:
    """Rows of one split: features by column, targets (n, d), and a group label per row."""

    name: str
    X: dict[str, np.ndarray]
    y: np.ndarray
    groups: np.ndarray
    group_names: list[str]
    target_columns: list[str]

    @property
    def n(self) -> int:
        return len(self.groups)

    def select(self, mask: np.ndarray, name: str | None = None) -> "DataSplit":
        groups = self.groups[mask]
        names = [g for g in self.group_names if np.any(groups == g)]
        return DataSplit(name or self.name, {k: v[mask] for k, v in self.X.items()}, self.y[mask],
                         groups, names, self.target_columns)

    def group_rows(self, group: str) -> np.ndarray:
        return np.flatnonzero(self.groups == group)

    def n_cells(self) -> int:
        """The number of distinct (group, features) design points."""
        return len(self._cells()[1])

    def _cells(self) -> tuple[np.ndarray, np.ndarray]:
        keys = pd.DataFrame({"__group": self.groups.astype(str), **self.X})
        codes = keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        return codes, np.sort(first)

    def cell_means(self) -> "DataSplit":
        """Replicate rows (same group and features) averaged into one row per design point, in
        order of first appearance: every design point then counts once in a fit or a score,
        however many replicate runs it has. A split without replicates is returned unchanged."""
        codes, first = self._cells()
        if len(first) == self.n:
            return self
        order = codes[first]          # cell code of each output row
        inv = np.empty(codes.max() + 1, dtype=int)
        inv[order] = np.arange(len(order))
        row = inv[codes]
        y = np.zeros((len(order), self.y.shape[1]))
        np.add.at(y, row, self.y)
        y /= np.bincount(row, minlength=len(order))[:, None]
        return DataSplit(self.name, {k: v[first] for k, v in self.X.items()}, y, self.groups[first],
                         list(self.group_names), self.target_columns)


class Dataset:
    """A card plus its validated train and test splits."""

    def __init__(self, card: DatasetCard, train: pd.DataFrame, test: pd.DataFrame, origin: str):
        self.card = card
        self.origin = origin
        self._train_df = train
        self._test_df = test
        self.train = self._to_split(train, "train")
        self._test = self._to_split(test, "test")
        missing = [g for g in self._test.group_names if g not in self.train.group_names]
        if missing:
            raise DatasetError(f"{card.name}: group {missing[0]!r} has test rows but no train rows")

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def test(self) -> DataSplit:
        return self._test

    def _to_split(self, df: pd.DataFrame, name: str) -> DataSplit:
        card = self.card
        X = {c: df[c].to_numpy(dtype=np.float64) for c in card.feature_columns}
        y = np.stack([df[c].to_numpy(dtype=np.float64) for c in card.target_columns], axis=1)
        if card.group:
            groups = df[card.group].astype(str).to_numpy()
        else:
            groups = np.full(len(df), "all", dtype=object)
        names = list(dict.fromkeys(groups.tolist()))
        return DataSplit(name, X, y, groups, names, card.target_columns)

    @cached_property
    def data_hash(self) -> str:
        h = hashlib.sha256()
        for df in (self._train_df, self._test_df):
            h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.name, "train_rows": self.train.n, "test_rows": self.test.n,
                "groups": len(self.train.group_names), "features": self.card.feature_columns,
                "targets": self.card.target_columns, "origin": self.origin}


# ------------------------------------------------------------------------- resolution
def download_from_hub(task: str) -> tuple[Path, Path]:
    """Download one task's splits from the benchmark's public hub dataset into the cache.

    Needs ``huggingface_hub`` and a network; neither is available on the project's CI machines,
    so this path is kept small and is not exercised by the tests.
    """
    try:
        from huggingface_hub import hf_hub_download  # lazy: optional
    except ImportError as exc:
        raise DatasetError("huggingface_hub is not installed") from exc
    out = hub_cache_dir() / task
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "test"):
        src = hf_hub_download(HUB_REPO, f"{task}/{split}.csv", repo_type="dataset")
        paths.append(atomic_write_bytes(out / f"{split}.csv", Path(src).read_bytes()))
    return paths[0], paths[1]


def _no_data_error(card: DatasetCard, data_dir) -> DatasetError:
    task = card.data["task"]
    root = data_root(data_dir)
    where = f"under {root}" if root else f"(no data directory set: use --data-dir or {ENV_DATA})"
    return DatasetError(
        f"{card.name}: data not found {where}. Put the benchmark's splits at "
        f"<data-dir>/{task}/train.csv and test.csv (the layout of SLDBench), or go online and "
        f"'pip install huggingface_hub' to download {HUB_REPO} once into the cache")


def _read_csv(path: Path, card: DatasetCard) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{card.name}: data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    check_header(list(df.columns), path)
    return df


def _shown(v) -> str:
    """A cell as a user wrote it: ``nan``, ``inf``, ``'abc'`` (not ``np.float64(nan)``)."""
    return f"{float(v):g}" if isinstance(v, (float, np.floating, int, np.integer)) else repr(v)


def check_header(cols: list, path) -> None:
    """A header naming a column twice is an error (pandas renames the second ``N`` to ``N.1``)."""
    twice = [c for c in cols if cols.count(c) > 1] + [str(c)[:-2] for c in cols
                                                      if str(c).endswith(".1") and str(c)[:-2] in cols]
    if twice:
        raise DatasetError(f"{path}: column {twice[0]!r} appears twice in the header")


def validate_frame(df: pd.DataFrame, card: DatasetCard, path: str) -> pd.DataFrame:
    """Check columns, numeric values, NaN/inf and group labels; return the numeric frame."""
    needed = card.feature_columns + card.target_columns + ([card.group] if card.group else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        from lawforge.errors import did_you_mean

        raise DatasetError(f"{path}: missing column {missing[0]!r}{did_you_mean(missing[0], df.columns)}; "
                           f"the file has {', '.join(map(str, df.columns))}")
    if len(df) == 0:
        raise DatasetError(f"{path}: no rows")
    df = df.copy()
    for c in card.feature_columns + card.target_columns:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = col.isna() & df[c].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetError(f"{path}: column {c!r} has a non-numeric value {df[c].iloc[i]!r} "
                               f"(data row {i + 1})")
        arr = col.to_numpy(dtype=np.float64)
        nonfinite = ~np.isfinite(arr)
        if nonfinite.any():
            i = int(np.flatnonzero(nonfinite)[0])
            raise DatasetError(f"{path}: column {c!r} has a missing or non-finite value "
                               f"({_shown(df[c].iloc[i])}, data row {i + 1})")
        df[c] = arr
    if card.group:
        g = df[card.group]
        empty = g.isna() | (g.astype(str).str.strip() == "")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DatasetError(f"{path}: group column {card.group!r} is empty at data row {i + 1}")
        labels = g.astype(str)
        norm = labels.str.strip().str.lower()
        clash = norm.groupby(norm).apply(lambda s: sorted(set(labels[s.index])))
        dup = [v for v in clash if len(v) > 1]
        if dup:
            raise DatasetError(f"{path}: group labels {dup[0]} differ only by case or spaces "
                               f"(duplicate groups)")
        df[card.group] = labels
    return df


def load_dataset(name_or_card: str | Path | DatasetCard, data_dir: str | Path | None = None,
                 allow_download: bool = True) -> Dataset:
    """Load a bundled dataset by name, or a user dataset from its card path."""
    card = name_or_card if isinstance(name_or_card, DatasetCard) else get_card(name_or_card)
    src = card.data["source"]
    if src == "sldbench":
        files = find_sldbench_files(card, data_dir)
        if files is None:
            if allow_download and not os.environ.get("LAWFORGE_OFFLINE"):
                try:
                    files = download_from_hub(card.data["task"])
                except Exception as exc:  # any network or import failure: one clear error
                    log.debug("hub download failed: %s", exc)
                    raise _no_data_error(card, data_dir) from None
            else:
                raise _no_data_error(card, data_dir)
        paths = files
    elif src == "package":
        base = Path(str(resources.files("lawforge.datasets") / "synthetic_data"))
        paths = (base / card.split["file"],) if "file" in card.split else (
            base / card.split["train"], base / card.split["test"])
    elif src == "catalogue":
        found = find_catalogue_file(card.data["task"], data_dir)
        if found is None:
            raise _no_catalogue_error(card, data_dir)
        paths = (found,)
    else:  # "path": relative to the card file
        base = card.path.parent if card.path else Path.cwd()
        paths = (base / card.split["file"],) if "file" in card.split else (
            base / card.split["train"], base / card.split["test"])
    if "file" in card.split:
        df = validate_frame(_read_csv(paths[0], card), card, str(paths[0]))
        table = {c: df[c].to_numpy() for c in df.columns if isinstance(c, str) and c.isidentifier()}
        if "keep" in card.split:  # the rows the card uses; the file itself is never changed
            kept = evaluate_rule(card.split["keep"], table)
            if not kept.any():
                raise DatasetError(f"{card.name}: keep rule {card.split['keep']!r} matches no row of {paths[0]}")
            df = df[kept].reset_index(drop=True)
            table = {c: v[kept] for c, v in table.items()}
        mask = evaluate_rule(card.split["test"], table)
        if mask.all():
            raise DatasetError(f"{card.name}: test rule {card.split['test']!r} matches every row of {paths[0]}")
        if not mask.any():
            raise DatasetError(f"{card.name}: test rule {card.split['test']!r} matches no row of {paths[0]}")
        train, test = df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)
        origin = str(paths[0])
    else:
        train = validate_frame(_read_csv(paths[0], card), card, str(paths[0]))
        test = validate_frame(_read_csv(paths[1], card), card, str(paths[1]))
        origin = str(paths[0].parent)
    return Dataset(card, train, test, origin)


def data_available(card: DatasetCard, data_dir=None) -> bool:
    if card.data["source"] == "sldbench":
        return find_sldbench_files(card, data_dir) is not None
    if card.data["source"] == "catalogue":
        return find_catalogue_file(card.data["task"], data_dir) is not None
    return True


def _no_catalogue_error(card: DatasetCard, data_dir) -> DatasetError:
    task = card.data["task"]
    root = data_root(data_dir)
    where = f"under {root}" if root else f"(no data directory set: use --data-dir or {ENV_DATA})"
    return DatasetError(f"{card.name}: data not found {where}. Run 'lawforge datasets fetch {task}' to download "
                        f"it from its public source into the cache, or put it at <data-dir>/external/{task}/data.csv")


# ------------------------------------------------------------------------- published constants
def human_dir(data_dir=None) -> Path | None:
    d = os.environ.get(ENV_HUMAN)
    if d:
        return Path(d).expanduser()
    root = data_root(data_dir)
    if root is None:
        return None
    for cand in (root / "sldbench-human", root.parent / "sldbench-human", root / "human"):
        if cand.is_dir():
            return cand
    return None


def load_published_constants(card: DatasetCard, law_name: str | None = None, data_dir=None
                             ) -> dict[str, dict[str, float]]:
    """Published constants per group for the card's human law, keyed by our parameter names."""
    _, h = card.human_law(law_name)
    if not h.published:
        raise DatasetError(f"{card.name}: human law {h.name!r} has no published constants")
    d = human_dir(data_dir)
    task = card.data.get("task", card.name)
    if d is None or not (d / f"{task}.json").is_file():
        raise DatasetError(f"{card.name}: published constants not found; put {task}.json (the layout "
                           f"of sldbench-human) in <data-dir>/sldbench-human/ or set {ENV_HUMAN}")
    path = d / f"{task}.json"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON: {exc}") from None
    order: Sequence[str] = h.published.get("param_order")
    theirs = raw.get("param_order", [])
    if not order or len(order) != len(theirs):
        raise DatasetError(f"{path}: its param_order {theirs} does not match the card's {order}")
    out = {}
    for g, vals in raw.get("params_by_group", {}).items():
        if len(vals) != len(order):
            raise DatasetError(f"{path}: group {g!r} has {len(vals)} constants, expected {len(order)}")
        out[str(g)] = {n: float(v) for n, v in zip(order, vals)}
    return out


# ------------------------------------------------------------------------- sealed splits
class TestAccessError(RuntimeError):
    """Raised when code reads the test split of a sealed dataset before final scoring."""

    __test__ = False  # not a pytest test class


class SealedDataset:
    """A dataset view for searches: train is open, test raises until :meth:`unseal`.

    Discovery fits on ``fit`` and ranks on ``val`` (both carved from train along the card's
    scale axis); the test split is read once, after the search, to report.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self._ds = dataset
        self._sealed = True
        self.card = dataset.card
        self.name = dataset.name
        self.train = dataset.train
        self.fit, self.val = carve_validation(dataset.train, dataset.card, seed)
        if _constant_target(self.val):
            v = dataset.card.validation
            raise DatasetError(f"{self.name}: the validation carve (axis {v.get('axis')}, fraction {v.get('fraction')}) "
                               f"holds {self.val.n} row(s) with the same target, so no law can be ranked on it; "
                               f"choose a validation axis or fraction that holds out more rows")
        self._seed = seed

    def extra_folds(self, n: int) -> list[tuple[DataSplit, DataSplit]]:
        """Rolling-origin folds along the scale axis: fold k fits on what is left after holding
        out k+1 slices and validates on slice k+1 (the next-largest train values), so a form is
        ranked by how it extrapolates from several origins, not one. Only with a scale axis.

        A fold whose fit part holds a single value of an axis is not made: a law fitted there
        cannot learn how the target moves along that axis, so its score would only reward forms
        with no fitted dependence on it."""
        axis = self.card.validation.get("axis")
        if not axis:
            return []
        axes = axis if isinstance(axis, list) else [axis]
        out, fit = [], self.fit
        for _ in range(n):
            try:
                fit2, val2 = carve_validation(fit, self.card, self._seed)
            except DatasetError:
                break
            if fit2.n < 2 or val2.n < 1 or _constant_target(val2) or any(len(np.unique(fit2.X[a])) < 2 for a in axes):
                break
            out.append((fit2, val2))
            fit = fit2
        return out

    @property
    def test(self) -> DataSplit:
        if self._sealed:
            raise TestAccessError(f"{self.name}: the test split is sealed during the search")
        return self._ds.test

    @property
    def data_hash(self) -> str:
        return self._ds.data_hash

    def unseal(self) -> Dataset:
        self._sealed = False
        return self._ds


def _constant_target(split: DataSplit) -> bool:
    """A split on which R2 is undefined: some target has one value on all its rows."""
    return bool(np.any(np.ptp(split.y, axis=0) <= 0)) if split.n else True


def _top(vals: np.ndarray, idx: np.ndarray, frac: float) -> np.ndarray:
    """The rows of ``idx`` at the top ``frac`` of the distinct values ``vals`` (at least one
    value, never all of them)."""
    distinct = np.unique(vals)
    k = max(1, int(round(frac * len(distinct))))
    k = min(k, len(distinct) - 1) if len(distinct) > 1 else 0
    if k == 0:
        return idx[:0]
    return idx[vals >= distinct[-k]]


def carve_validation(train: DataSplit, card: DatasetCard, seed: int = 0) -> tuple[DataSplit, DataSplit]:
    """The (fit, validation) parts of ``train``: see :func:`validation_mask`."""
    val = validation_mask(train, card, seed)
    return train.select(~val, "fit"), train.select(val, "val")


def holdout_dataset(dataset: Dataset, seed: int = 0) -> Dataset:
    """An inner benchmark made from train alone: train's validation carve (its largest-scale
    rows, see :func:`validation_mask`) becomes the test split and the rest the train split. Rules
    of selection are compared on it without reading a row of the real test split."""
    val = validation_mask(dataset.train, dataset.card, seed)
    df = dataset._train_df.reset_index(drop=True)
    return Dataset(dataset.card, df[~val].reset_index(drop=True), df[val].reset_index(drop=True),
                   f"{dataset.origin}; inner holdout of train (test = its validation carve)")


def validation_mask(train: DataSplit, card: DatasetCard, seed: int = 0) -> np.ndarray:
    """Hold out, per group, the train rows at the largest values of the card's scale axis (the
    top ``fraction`` of that group's distinct axis values), the way the benchmark extrapolates.
    With a list of axes and ``combine: all`` (the default), the corner: the rows at the largest
    value of the first axis, then, among those, at the largest value of the second, and so on (a
    test cell beyond the largest model and data is mirrored by the largest-data cell of the
    largest model in train); with ``combine: any``, the union of each axis's top ``fraction``
    (a test of "largest N or largest D").
    Without an axis, a seeded random ``fraction`` of each group's rows. Each group keeps at
    least 2 fitting rows and gives at least 1 validation row when it has 3 or more rows."""
    axis = card.validation.get("axis")
    frac = float(card.validation.get("fraction", 0.2))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    val = np.zeros(train.n, dtype=bool)
    for g in train.group_names:
        idx = train.group_rows(g)
        if len(idx) < 3:
            continue
        if isinstance(axis, list) and card.validation.get("combine") == "any":
            chosen = np.unique(np.concatenate([_top(train.X[a][idx], idx, frac) for a in axis]))
            if len(idx) - len(chosen) < 2:
                continue
        elif isinstance(axis, list):
            chosen = idx
            for a in axis:
                v = train.X[a][chosen]
                chosen = chosen[v == v.max()]
            if len(idx) - len(chosen) < 2:
                continue
        elif axis:
            vals = train.X[axis][idx]
            chosen = _top(vals, idx, frac)
            if not len(chosen):
                continue
            if len(idx) - len(chosen) < 2:
                chosen = idx[np.argsort(vals)[-(len(idx) - 2):]]
        else:
            k = max(1, int(round(frac * len(idx))))
            k = min(k, len(idx) - 2)
            chosen = rng.choice(idx, size=k, replace=False)
        val[chosen] = True
    if not val.any():
        raise DatasetError(f"{card.name}: cannot carve a validation split from train (too few rows per group)")
    return val
