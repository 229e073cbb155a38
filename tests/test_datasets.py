import hashlib
from pathlib import Path

import numpy as np
import pytest

from conftest import SLD_TASKS, needs_sldbench
from lawforge.datasets import bundled_card_paths, get_card, load_dataset, read_card
from lawforge.datasets.rules import evaluate_rule
from lawforge.datasets.synthetic import write_all
from lawforge.errors import DatasetError

PKG_DATA = Path(__file__).resolve().parents[1] / "lawforge" / "datasets" / "synthetic_data"


def test_all_cards_parse_and_ship_the_eight_tasks():
    names = set(bundled_card_paths())
    assert set(SLD_TASKS) <= names
    assert {"synthetic_chinchilla", "synthetic_data_constrained", "synthetic_multigroup"} <= names
    for n in names:
        card = get_card(n)
        assert card.human_laws, n
        law, _ = card.human_law()
        if card.param_limit is not None:
            assert law.n_params <= card.param_limit
    dm = get_card("domain_mixture_scaling_law")
    law, _ = dm.human_law()
    assert law.n_params == 35 and len(law.target_names) == 5


def test_synthetic_csvs_regenerate_bit_for_bit(tmp_path):
    for p in write_all(tmp_path):
        shipped = PKG_DATA / p.name
        assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(shipped.read_bytes()).digest()


def test_synthetic_loads_with_rule_split():
    ds = load_dataset("synthetic_chinchilla")
    assert ds.train.n == 36 and ds.test.n == 12
    assert ds.test.X["N"].min() >= 1.5e9 > ds.train.X["N"].max()
    mg = load_dataset("synthetic_multigroup")
    assert mg.train.group_names == ["g1", "g2", "g3", "g4"]


@needs_sldbench
@pytest.mark.parametrize("task, sizes", [("parallel_scaling_law", (36, 12)), ("sft_scaling_law", (504, 42)),
                                         ("domain_mixture_scaling_law", (80, 24)), ("lr_bsz_scaling_law", (1730, 117))])
def test_sldbench_loads(task, sizes):
    ds = load_dataset(task)
    assert (ds.train.n, ds.test.n) == sizes


def test_missing_data_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LAWFORGE_DATA", str(tmp_path))
    monkeypatch.setenv("LAWFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="data not found under .*train.csv and test.csv"):
        load_dataset("sft_scaling_law")


def test_unknown_dataset_suggests():
    with pytest.raises(DatasetError, match="did you mean 'sft_scaling_law'"):
        get_card("sft_scaling_lawz")


def _user_card(tmp_path, csv_text, rule="N >= 1e9", group="null", extra=""):
    (tmp_path / "data.csv").write_text(csv_text)
    card = tmp_path / "card.yaml"
    card.write_text(f"""
name: mine
features: [{{column: N, symbol: N}}, {{column: D, symbol: D}}]
targets: [loss]
group: {group}
split: {{file: data.csv, test: "{rule}"}}
data: {{source: path}}
param_limit: 5
{extra}
""")
    return card


GOOD = "N,D,loss,g\n1e8,1e9,3.0,a\n2e8,1e9,2.9,a\n5e8,2e9,2.7,a\n1e9,4e9,2.5,a\n2e9,8e9,2.4,a\n"


def test_user_card_works_like_bundled(tmp_path):
    ds = load_dataset(_user_card(tmp_path, GOOD))
    assert ds.train.n == 3 and ds.test.n == 2


@pytest.mark.parametrize("csv, match", [
    (GOOD.replace("loss", "los"), "missing column 'loss'"),
    (GOOD.replace("2.9", "nan"), "column 'loss' has a missing or non-finite value"),
    (GOOD.replace("2.9", "inf"), "column 'loss' has a missing or non-finite value"),
    (GOOD.replace("2.9", ""), "column 'loss' has a missing or non-finite value"),
    (GOOD.replace("2.9", "abc"), "column 'loss' has a non-numeric value 'abc'"),
    ("N,D,loss,g\n", "no rows"),
])
def test_bad_csv_inputs(tmp_path, csv, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset(_user_card(tmp_path, csv))


def test_bad_rules(tmp_path):
    with pytest.raises(DatasetError, match="matches no row"):
        load_dataset(_user_card(tmp_path, GOOD, rule="N >= 1e12"))
    with pytest.raises(DatasetError, match="matches every row"):
        load_dataset(_user_card(tmp_path, GOOD, rule="N > 0"))
    with pytest.raises(DatasetError, match="unknown column 'Q'"):
        load_dataset(_user_card(tmp_path, GOOD, rule="Q > 0"))
    with pytest.raises(DatasetError, match="not allowed|may be called"):
        load_dataset(_user_card(tmp_path, GOOD, rule="__import__('os').system('id')"))
    with pytest.raises(DatasetError, match="not allowed"):
        load_dataset(_user_card(tmp_path, GOOD, rule="N.real > 0"))


def test_rule_language():
    t = {"N": np.array([1e8, 1e9, 5e9]), "D": np.array([1e12, 1e10, 1e10]), "g": np.array(["a", "b", "c"])}
    assert evaluate_rule("N >= 1e9 or D >= 6e11", t).tolist() == [True, True, True]
    assert evaluate_rule("N >= 1e9 and not D > 1e11", t).tolist() == [False, True, True]
    assert evaluate_rule("1e8 < N <= 1e9", t).tolist() == [False, True, False]
    assert evaluate_rule("g in ['a', 'c']", t).tolist() == [True, False, True]
    assert evaluate_rule("log10(N) >= 9", t).tolist() == [False, True, True]


def test_group_errors(tmp_path):
    grouped = "N,D,loss,g\n1e8,1e9,3.0,a\n2e8,1e9,2.9,a\n5e8,2e9,2.7,A \n1e9,4e9,2.5,a\n2e9,8e9,2.4,a\n"
    with pytest.raises(DatasetError, match="differ only by case or spaces"):
        load_dataset(_user_card(tmp_path, grouped, group="g"))
    empty = "N,D,loss,g\n1e8,1e9,3.0,a\n2e8,1e9,2.9,\n5e8,2e9,2.7,a\n1e9,4e9,2.5,a\n2e9,8e9,2.4,a\n"
    with pytest.raises(DatasetError, match="group column 'g' is empty at data row 2"):
        load_dataset(_user_card(tmp_path, empty, group="g"))
    only_test = "N,D,loss,g\n1e8,1e9,3.0,a\n2e8,1e9,2.9,a\n5e8,2e9,2.7,a\n1e9,4e9,2.5,b\n2e9,8e9,2.4,a\n"
    with pytest.raises(DatasetError, match="group 'b' has test rows but no train rows"):
        load_dataset(_user_card(tmp_path, only_test, group="g"))


def test_card_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown key 'param_limt'.*did you mean 'param_limit'"):
        read_card(_user_card(tmp_path, GOOD, extra="param_limt: 3"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(DatasetError, match="invalid YAML at line 2, column 1: expected ',' or ']'") as err:
        read_card(bad)
    assert "\n" not in str(err.value)   # one line, as every error
    with pytest.raises(DatasetError, match="card file not found"):
        read_card(tmp_path / "nope.yaml")
    with pytest.raises(DatasetError, match="data file not found"):
        card = _user_card(tmp_path, GOOD)
        (tmp_path / "data.csv").unlink()
        load_dataset(card)


def test_a_feature_may_hold_a_log():
    """``log: 10`` says the column is log10 of a positive quantity (log10 FLOPs); the card keeps
    it through a run folder's copy, and an unknown base is an error naming the feature."""
    from lawforge.datasets.card import get_card, parse_card

    card = get_card("easy_question_scaling_law")
    assert card.features[0].log == 10.0 and card.log_variables == {"x", "log_flops"}
    again = parse_card(card.to_dict())
    assert again.features[0].log == 10.0
    raw = card.to_dict()
    raw["features"][0]["log"] = 3
    with pytest.raises(DatasetError, match=r"features\[0\] log must be the base .* got 3"):
        parse_card(raw)
    assert get_card("sft_scaling_law").log_variables == set()


def test_a_feature_may_have_a_natural_unit():
    """``natural_unit: true`` marks a count whose unit means something (experts, parallel
    streams); it survives a run folder's copy of the card, and anything but true/false is an error
    naming the feature."""
    from lawforge.datasets.card import get_card, parse_card

    card = get_card("moe_scaling_law")
    assert [f.natural_unit for f in card.features] == [True, False]
    assert [f.natural_unit for f in parse_card(card.to_dict()).features] == [True, False]
    raw = card.to_dict()
    raw["features"][0]["natural_unit"] = "yes"
    with pytest.raises(DatasetError, match=r"features\[0\] natural_unit must be true or false, got 'yes'"):
        parse_card(raw)
