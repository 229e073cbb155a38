"""Trends inferred from the train rows where a card leaves them unstated (datasets.trends)."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import chinchilla_table
from lawforge.datasets.byo import csv_card, frame_dataset
from lawforge.datasets.card import bundled_card_paths, get_card, parse_card, read_card
from lawforge.datasets.loader import data_available, load_dataset
from lawforge.datasets.trends import infer_trends, with_inferred_trends
from lawforge.errors import DatasetError

CARDS = sorted(bundled_card_paths())

#: A feature whose card states ``trend: none`` and whose rows show a trend all the same: the
#: vocabulary has an optimum per model size that lies inside the grid (33 cells fall and 93 rise
#: with it; their median Spearman correlation is +0.50).
STATED_NONE_ROWS_RISE = {("vocab_scaling_law", "vocab_size"): "increasing"}


def _stripped(card):
    return dataclasses.replace(card, features=[dataclasses.replace(f, trend=None) for f in card.features])


@pytest.mark.parametrize("name", CARDS)
def test_inference_gives_back_each_cards_trends(name):
    card = get_card(name)
    if not data_available(card):
        pytest.skip(f"{name}: its data is not here (set LAWFORGE_DATA)")
    ds = load_dataset(name)
    got = infer_trends(ds.train, _stripped(card))
    for f in card.features:
        want = f.trend if f.trend in ("decreasing", "increasing") else None
        want = STATED_NONE_ROWS_RISE.get((name, f.column), want)
        assert got[f.column].trend == want, (name, got[f.column].text())


def test_every_bundled_feature_has_its_trend_stated_or_inferable():
    """After inference no feature of a bundled card is left unstated."""
    for name in CARDS:
        card = get_card(name)
        if not data_available(card):
            continue
        ds, inferred = with_inferred_trends(load_dataset(name))
        assert all(f.trend in ("decreasing", "increasing", "none") for f in ds.card.features), name
        assert set(inferred) == {f.column for f in card.features if f.trend is None}, name


def _frame(rows):
    return pd.DataFrame(rows)


def test_a_product_feature_is_not_held_fixed():
    """With compute C = 6ND a feature, holding C fixed would move N against D (an IsoFLOP slice)
    and read a falling loss in N as rising; C is released instead."""
    df = chinchilla_table(noise=0.0)
    df["C"] = 6 * df.N * df.D
    ds = frame_dataset(df, None, ["N", "D", "C"], ["loss"], None)
    got = infer_trends(ds.train, ds.card)
    assert {c: i.trend for c, i in got.items()} == {"N": "decreasing", "D": "decreasing", "C": "decreasing"}
    assert got["N"].released == ("C",)


def test_settings_within_five_percent_are_one_setting():
    """A model's size moves a little with the parallel streams it is trained with; each size is
    still one setting, so the streams' own trend is read within it."""
    rows = []
    for n in (1e8, 3e8, 1e9):
        for p in (1, 2, 4, 8):
            N = n * (1 + 0.004 * p)
            rows.append({"N": N, "P": p, "loss": 2 + 50 / N ** 0.2 - 0.02 * np.log(p)})
    ds = frame_dataset(_frame(rows), None, ["N", "P"], ["loss"], None)
    got = infer_trends(ds.train, ds.card)
    assert got["P"].trend == "decreasing" and got["P"].cells == 3
    assert got["N"].trend == "decreasing"


def test_no_clear_trend_and_hyperparameters_get_none():
    rng = np.random.default_rng(0)
    N, lr, X = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e-4, 1e-2, 3),
                                               [1.0, 2.0, 3.0], indexing="ij"))
    loss = 2 + 30 / N ** 0.2 + 0.1 * np.log(lr / 1e-3) ** 2     # X plays no part
    df = pd.DataFrame({"N": N, "lr": lr, "X": X, "loss": loss * (1 + rng.normal(0, 0.01, len(N)))})
    ds = frame_dataset(df, None, ["N", "lr", "X"], ["loss"], None, hyperparameters=["lr"])
    got = infer_trends(ds.train, ds.card)
    assert got["N"].trend == "decreasing"
    assert got["lr"].trend is None and "hyperparameter" in got["lr"].text()
    assert got["X"].trend is None, got["X"].text()


def test_shares_on_a_simplex_get_none():
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(3), 20)
    df = pd.DataFrame({"a": w[:, 0], "b": w[:, 1], "c": w[:, 2], "loss": 2 - w[:, 0]})
    ds = frame_dataset(df, None, ["a", "b", "c"], ["loss"], None)
    assert all(i.trend is None and "simplex" in i.text() for i in infer_trends(ds.train, ds.card).values())


def test_stated_trends_are_kept_and_none_round_trips(tmp_path):
    path = tmp_path / "runs.csv"
    chinchilla_table().to_csv(path, index=False)
    card = csv_card(path, "N,D", "loss", "N >= 1e9", increasing="D")   # a user's word is kept
    assert set(infer_trends(load_dataset(card).train, card)) == {"N"}
    raw = card.to_dict()
    raw["features"][0]["trend"] = "none"
    again = parse_card(yaml.safe_load(yaml.safe_dump(raw)))
    assert again.features[0].trend == "none" and again.trends == {"D": "increasing"}
    raw["features"][0]["trend"] = "down"
    with pytest.raises(DatasetError, match="trend must be one of"):
        parse_card(raw)


@pytest.mark.slow
def test_a_csv_discovery_prints_and_records_the_trends_it_inferred(csv_run, capsys):
    from lawforge.cli import main

    d, path = csv_run
    out = d / "inferred"
    assert main(["discover", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test", "N >= 1e9",
                 "--max-evals", "20", "--seed", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trends inferred from train" in text and "N: decreasing (median Spearman" in text
    card = read_card(str(out / "card.yaml"))
    assert card.trends == {"N": "decreasing", "D": "decreasing"}
    assert set(json.loads((out / "metrics.json").read_text())["inferred_trends"]) == {"N", "D"}
    off = d / "not_inferred"
    assert main(["discover", "--csv", str(path), "--features", "N,D", "--target", "loss", "--test", "N >= 1e9",
                 "--max-evals", "20", "--seed", "0", "--out", str(off), "--set", "checks.infer_trends=false"]) == 0
    assert read_card(str(off / "card.yaml")).trends == {}
