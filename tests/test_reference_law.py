"""The reference law every discovery competes with (search.reference_law, choose._against_reference)."""

import numpy as np
import pandas as pd
import pytest
import sympy as sp

from lawforge.datasets.byo import frame_dataset
from lawforge.datasets.loader import SealedDataset, load_dataset
from lawforge.laws.expr import parse_expression
from lawforge.search import space as S
from lawforge.search.choose import choose
from lawforge.search.engine import Member
from lawforge.search.prepare import final_train, make_context
from lawforge.search.reference_law import beats, reference_law
from lawforge.search.settings import SearchConfig


def _member(text, nmse):
    expr = parse_expression(text, None, what="candidate")
    rec = {"status": "ok", "val_nmse": nmse, "complexity": S.complexity(expr), "n_params": S.n_params(expr)}
    return Member(expr, sp.srepr(expr), rec, "test")


def test_its_form_follows_the_data_shape():
    ds = load_dataset("synthetic_lr_bowl")
    text = reference_law(ds.card, ds.train).to_string()
    assert "/N**b" in text and "/D**b" in text and "log(lr)" in text and "log(N)" in text   # a bowl that moves
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(3), 12)
    shares = frame_dataset(pd.DataFrame({"a": w[:, 0], "b": w[:, 1], "c": w[:, 2], "y": 1 + w[:, 0]}), None,
                           ["a", "b", "c"], ["y"], None)
    assert reference_law(shares.card, shares.train) is None


def test_the_bootstrap_share_needs_a_real_win():
    e = np.linspace(0.1, 1.0, 30)
    assert beats(e, e) == 0.0                 # a tie keeps the reference
    assert beats(0.5 * e, e) == 1.0
    d = 0.3 * (-1.0) ** np.arange(30) - 0.01   # lower on average by 0.01, noise 0.3 per row
    assert 0.3 < beats(e + d, e) < 0.84          # within the noise: not a win


def _choose(ds, members, **settings):
    cfg = SearchConfig.build(seed=0, select="score", **{"selection.reference": True, **settings})
    sealed = SealedDataset(ds, cfg.seed)
    return choose(members, make_context(sealed, cfg), ds.card, final_train(sealed, cfg), cfg)


def test_a_poor_choice_gives_way_to_the_reference():
    """The search's best form (a log in D alone) loses to the reference on validation: the
    reference is returned and says so; with selection.reference off, the form is kept."""
    ds = load_dataset("synthetic_chinchilla")
    poor = [_member("p0 + p1*log(D)", 0.05)]
    got = _choose(ds, poor)
    assert got.reference["chosen"] == "reference" and got.member.origin == "reference"
    assert got.reference["found_better_share"] < got.reference["keep_share"]
    assert got.law.name == "reference" and got.fit.ok
    assert _choose(ds, poor, **{"selection.reference": False}).member is poor[0]


def test_a_better_form_is_kept():
    """Where the data follow a form the reference cannot take (an exponential approach), the
    discovered form beats it beyond the noise and is kept."""
    rng = np.random.default_rng(1)
    D = np.geomspace(1e3, 1e6, 30)
    df = pd.DataFrame({"D": D, "loss": (2 + 3 * np.exp(-(D / 2e4) ** 0.5)) * (1 + rng.normal(0, 0.002, 30))})
    ds = frame_dataset(df, None, ["D"], ["loss"], None, name="approach")
    good = [_member("p0 + p1*exp(-p2*D**p3)", 0.001)]
    got = _choose(ds, good)
    assert got.member is good[0] and got.reference["chosen"] == "discovered", got.reference
    assert got.reference["found_better_share"] >= 0.84


@pytest.mark.slow
def test_a_run_has_a_place_for_the_reference(run_dir):
    import json

    law = json.loads((run_dir / "law.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "reference" in law and "reference" in metrics   # None while selection.reference is off
