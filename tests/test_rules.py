"""The contract's rule table: every rule has an id, a doc and stages; each has a law that keeps it
and a law that breaks it, checked here by rule id; ``docs/rules.md`` is generated from the table."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lawforge.datasets import load_dataset
from lawforge.datasets.byo import load_csv_dataset
from lawforge.datasets.loader import SealedDataset
from lawforge.laws.expr import parse_expression
from lawforge.laws.law import law_from_text
from lawforge.search.checks import screen_issue
from lawforge.search.contract import check_law, vanishing_numbers
from lawforge.search.contract.form import exp_of_large, expr_issues
from lawforge.search.contract.identify import redundant_issues
from lawforge.search.contract.rules import STAGES, Issue
from lawforge.search.prepare import make_context
from lawforge.search.reference import all_rules, rules_doc
from lawforge.search.settings import SearchConfig

ROOT = Path(__file__).resolve().parents[1]
RULES = {r.id: r for r in all_rules()}
FORM = sorted(i for i, r in RULES.items() if r.kind == "form" and i != "exp-of-raw-variable")


def test_docs_rules_md_is_generated_from_the_table():
    doc = ROOT / "docs" / "rules.md"
    assert doc.read_text() == rules_doc(), "regenerate: lawforge rules --markdown > docs/rules.md"


def test_every_rule_has_an_id_stages_a_title_a_doc_and_examples():
    assert len(RULES) >= 40
    for r in RULES.values():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r.id), r.id
        assert r.stages and set(r.stages) <= set(STAGES), r.id
        assert r.title and len(r.doc) > 40, r.id
        assert r.keeps and r.breaks, r.id
        assert r.id in rules_doc()


def test_an_issue_names_its_rule_and_prints_its_message():
    i = Issue("bare-offset", "a bare number as the law's offset (fit it)", 2)
    assert str(i) == "a bare number as the law's offset (fit it): 2"
    assert i.to_dict() == {"rule": "bare-offset", "message": str(i)} and i.title == RULES["bare-offset"].title


def _variables(e):
    return [s.name for s in e.free_symbols if not re.fullmatch(r"[ps]\d+", s.name)]


@pytest.mark.parametrize("rid", FORM)
def test_a_form_rule_keeps_its_example_and_flags_its_counterexample(rid):
    """Form rules are judged as on a loss in nats (an offset of 1 is a bare number there)."""
    keeps, breaks = (parse_expression(t, None, what="t") for t in (RULES[rid].keeps, RULES[rid].breaks))
    assert expr_issues(keeps, _variables(keeps), unit_offset=False) == [], rid
    found = expr_issues(breaks, _variables(breaks), unit_offset=False)
    assert rid in {i.rule for i in found}, (rid, found)


def test_exp_of_raw_variable_is_a_grammar_rule_on_large_variables():
    from lawforge.laws.expr import make_symbol

    D, x = make_symbol("D"), make_symbol("x")
    assert exp_of_large(parse_expression(RULES["exp-of-raw-variable"].breaks, None, what="t"), {D})
    assert not exp_of_large(parse_expression(RULES["exp-of-raw-variable"].keeps, None, what="t"), {D})
    assert not exp_of_large(parse_expression("p0*exp(p1*x)", None, what="t"), {D})   # a small variable
    assert not exp_of_large(parse_expression("p0*exp(p1*D)", None, what="t"), {x})


# --------------------------------------------------------------- rules on fitted constants and beyond

@pytest.fixture(scope="module")
def chinchilla():
    return load_dataset("synthetic_chinchilla")


TRUE = {"p0": 1.69, "p1": 406.4, "p2": 0.34, "p3": 410.7, "p4": 0.28}


def _law(text, ds):
    return law_from_text(text, ds.card.variables, ds.card.target_columns)


def _rules(law, params, ds):
    return set(check_law(law, {g: params for g in ds.train.group_names}, ds.train, ds.card).rules)


def _csv(tmp_path, name, df, **kw):
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    return load_csv_dataset(path, **kw)


def case_redundant_constants(ds, tmp_path):
    good = redundant_issues(_law("p0 + p1/N**p2 + p3/D**p4", ds), {"all": TRUE}, ds.train)
    law = _law("p0 + p1*(p5*N)**-p2 + p3/D**p4", ds)
    bad = redundant_issues(law, {"all": dict(TRUE, p5=2.0)}, ds.train)
    return {i.rule for i in good}, {i.rule for i in bad}


def case_vanishing_term(ds, tmp_path):
    good = vanishing_numbers(_law("p0*(1 + p1/N)", ds), ds.train)
    bad = vanishing_numbers(_law("p0*(1 + N)", ds), ds.train)
    return {i.rule for i in good}, {i.rule for i in bad}


def case_not_finite_beyond(ds, tmp_path):
    law = _law("p0 + p1*exp(-p2*D) + p3/N**p4", ds)
    good = {"p0": 1.7, "p1": 1.0, "p2": 1e-10, "p3": 400.0, "p4": 0.34}
    return _rules(law, good, ds), _rules(law, dict(good, p2=-1e-9, p1=-1e-9), ds)


def case_against_trend(ds, tmp_path):
    law = _law("p0 + p1*N**p2 + p3/D**p4", ds)
    return (_rules(law, dict(TRUE, p1=406.4, p2=-0.34), ds),
            _rules(law, dict(TRUE, p0=0.0, p1=0.01, p2=0.1), ds))


def case_turns_back(ds, tmp_path):
    N = np.geomspace(1e7, 1e9, 12)
    csv = _csv(tmp_path, "tb", pd.DataFrame({"N": N, "loss": 2.0 + 10.0 * N ** -0.3}), features=["N"],
               target="loss", test="N > 5e8", decreasing=["N"])
    law = _law("p0 + p1/N**p2 + p3*log(N)", csv)
    good = {"p0": 2.0, "p1": 10.0, "p2": 0.3, "p3": 0.0}
    return _rules(law, good, csv), _rules(law, dict(good, p3=4e-4), csv)


def case_accelerates(ds, tmp_path):
    N = np.geomspace(1e7, 1e9, 12)
    csv = _csv(tmp_path, "acc", pd.DataFrame({"N": N, "score": -(2 + 400 / N ** 0.3)}), features=["N"],
               target="score", test="N >= 5e8", increasing=["N"])
    law = _law("p0 + p1*N - p2/N**p3", csv)
    good = {"p0": -2.0, "p1": 0.0, "p2": 400.0, "p3": 0.3}
    return _rules(law, good, csv), _rules(law, dict(good, p1=1e-11), csv)


def case_below_zero(ds, tmp_path):
    law = _law("p0 - p1*log(N) + p3/D**p4", ds)
    ymin, n_max = float(ds.train.y.min()), float(ds.train.X["N"].max())
    gentle = {"p0": ymin + 0.1 * np.log(n_max), "p1": 0.1, "p3": 400.0, "p4": 0.3}
    return _rules(_law("p0 + p1/N**p2 + p3/D**p4", ds), TRUE, ds), _rules(law, gentle, ds)


def case_no_floor(ds, tmp_path):
    N = np.geomspace(1e7, 1e9, 12)
    csv = _csv(tmp_path, "rel", pd.DataFrame({"N": N, "rel_loss": -1.0 - 0.5 * (1 - (N / 1e7) ** -0.3)}),
               features=["N"], target="rel_loss", test="N > 5e8", decreasing=["N"])
    power = _law("p0 + p1/N**p2", csv)
    log_law = _law("p0 - p1*log(N)", csv)
    return (_rules(power, {"p0": -1.5, "p1": 0.5 * 1e7 ** 0.3, "p2": 0.3}, csv),
            _rules(log_law, {"p0": -1.0 + 0.1 * np.log(1e7), "p1": 0.1}, csv))


def case_above_one(ds, tmp_path):
    C = np.geomspace(1e18, 1e21, 12)
    acc = 0.3 + 0.4 / (1 + np.exp(-(np.log(C) - np.log(1e20))))
    csv = _csv(tmp_path, "acc1", pd.DataFrame({"C": C, "acc": acc}), features=["C"], target="acc",
               test="C > 5e20", increasing=["C"])
    sig = _law("p0 + p1/(1 + exp(p2 - log(C)))", csv)
    line = _law("p0 + p1*log(C)", csv)
    return (_rules(sig, {"p0": 0.3, "p1": 0.4, "p2": float(np.log(1e20))}, csv),
            _rules(line, {"p0": 0.3 - 0.02 * np.log(1e18), "p1": 0.02}, csv))


def case_no_optimum(ds, tmp_path):
    D = np.repeat(np.geomspace(1e9, 1e11, 6), 7)
    lr = np.tile(np.geomspace(1e-4, 1e-2, 7), 6)
    loss = 2 + 400 / D ** 0.3 + 0.05 * (np.log(lr) + 7) ** 2
    csv = _csv(tmp_path, "bowl", pd.DataFrame({"D": D, "lr": lr, "loss": loss}), features=["D", "lr"],
               target="loss", test="D >= 5e10", hyperparameters=["lr"], decreasing=["D"])
    bowl = _law("p0 + p1/D**p2 + p3*(log(lr) - p4)**2", csv)
    good = {"p0": 2.0, "p1": 400.0, "p2": 0.3, "p3": 0.05, "p4": -7.0}
    return _rules(bowl, good, csv), _rules(bowl, dict(good, p4=-21.0), csv)


def _screen(ds, text, params, box=False):
    """The screen's verdict; the box (which holds most probe points) only where ``box``."""
    law = _law(text, ds)
    ctx = make_context(SealedDataset(ds), SearchConfig.build(**{"checks.finite_on_box": box}))
    return screen_issue(law, {g: params for g in ds.train.group_names}, ctx.screen, [0])


def case_probe_not_finite(ds, tmp_path):
    n_max = float(ds.train.X["N"].max())
    return ({_screen(ds, "p0 + p1/N**p2 + p3/D**p4", TRUE)},
            {_screen(ds, "p0 + p1*log(p5 - N) + p3/D**p4", dict(TRUE, p1=0.01, p5=1.5 * n_max))})


def case_probe_far(ds, tmp_path):
    n_max = float(ds.train.X["N"].max())
    return ({_screen(ds, "p0 + p1/N**p2 + p3/D**p4", TRUE)},
            {_screen(ds, "p0 + p1*N**p2 + p3/D**p4", dict(TRUE, p1=1.0 / n_max ** 3, p2=3.0))})


def case_trend_probe_not_finite(ds, tmp_path):
    d_max = float(ds.train.X["D"].max())
    return ({_screen(ds, "p0 + p1/N**p2 + p3/D**p4", TRUE)},
            {_screen(ds, "p0 + p1/N**p2 + p3/D**p4 + p5*log(p6 - D)", dict(TRUE, p5=1e-3, p6=1.5 * d_max))})


def case_trend_probe_against(ds, tmp_path):
    d_max = float(ds.train.X["D"].max())
    span = float(np.ptp(ds.train.y))
    return ({_screen(ds, "p0 + p1/N**p2 + p3/D**p4", TRUE)},
            {_screen(ds, "p0 + p1/N**p2 + p5*D**p6", dict(TRUE, p5=0.5 * span / d_max ** 0.5, p6=0.5))})


def case_box_not_finite(ds, tmp_path):
    """Finite on every train row and beyond along each trend; undefined for D below half the
    smallest train D (``D + p5 < 0`` under a fractional power), which the box reaches."""
    d_min = float(ds.train.X["D"].min())
    return ({_screen(ds, "p0 + p1/N**p2 + p3/D**p4", TRUE, box=True)},
            {_screen(ds, "p0 + p1/N**p2 + p3/(D + p5)**p4", dict(TRUE, p5=-0.5 * d_min), box=True)})


@pytest.mark.slow
def test_every_cards_human_law_refit_on_train_is_finite_on_its_box():
    """The box rule must not reject the laws the field publishes."""
    from lawforge.datasets.card import bundled_card_paths, get_card
    from lawforge.datasets.loader import data_available
    from lawforge.fitting.scoring import score_human
    from lawforge.search.checks import Screen, box_issue, make_box_probe

    checked = 0
    for name in sorted(bundled_card_paths()):
        card = get_card(name)
        if not data_available(card):
            continue
        ds = load_dataset(name)
        screen = Screen(box=make_box_probe(ds.train, card.log_bases))
        for h in card.human_laws:
            sc = score_human(ds, "refit", law_name=h.name, restarts=4)
            assert box_issue(sc.law, sc.params, screen) is None, (name, h.name)
            checked += 1
    assert checked >= 5


def _mixture(tmp_path):
    rows = [{"group": g, "r1": r1, "r2": 1 - r1, "loss": 2 + 0.5 * np.log(r1 + 0.5)}
            for g, mixes in [("small", [0.3, 0.4, 0.5, 0.6, 0.7]), ("large", [0.35, 0.45, 0.55, 0.65])]
            for r1 in mixes]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "m.yaml").write_text("name: mix\nfeatures: [r1, r2]\ntargets: [loss]\ngroup: group\n"
                                     "split: {file: m.csv, test: 'r1 > 0.68 and r1 < 0.72'}\n"
                                     "data: {source: path}\nvalidation: {axis: null, fraction: 0.25}\n")
    return load_dataset(str(tmp_path / "m.yaml"))


def case_domain_not_finite(ds, tmp_path):
    mix = _mixture(tmp_path)
    return ({_screen(mix, "p0 + log(r1 + p1)/2", {"p0": 2.0, "p1": 0.5})},
            {_screen(mix, "p0 + log(r1 + p1)/2", {"p0": 2.7, "p1": -0.2})})


def case_domain_far(ds, tmp_path):
    mix = _mixture(tmp_path)
    return ({_screen(mix, "p0 + p1*(r1 - p2)**12", {"p0": 2.0, "p1": 1.0, "p2": 0.5})},
            {_screen(mix, "p0 + p1*(r1 - p2)**12", {"p0": 2.0, "p1": 1e6, "p2": 0.5})})


CASES = {name[len("case_"):].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("case_")}


def test_every_rule_beyond_the_form_has_a_case_here():
    assert sorted(CASES) == sorted(i for i, r in RULES.items() if r.kind != "form")


@pytest.mark.parametrize("rid", sorted(CASES))
def test_a_rule_passes_a_law_that_keeps_it_and_names_itself_on_one_that_breaks_it(rid, chinchilla, tmp_path):
    good, bad = CASES[rid](chinchilla, tmp_path)
    assert rid not in good and good <= {None}, (rid, good)
    assert rid in bad, (rid, bad)


def test_lawforge_rules_lists_the_table_and_python_m_lawforge_runs_the_command(capsys):
    import json
    import subprocess
    import sys

    from lawforge.cli import main

    assert main(["rules", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == set(RULES)
    out = subprocess.run([sys.executable, "-m", "lawforge", "rules", "--markdown"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout == rules_doc()


def test_retired_settings_are_refused_by_set_and_dropped_from_old_runs():
    from lawforge.errors import ConfigError
    from lawforge.search.settings import RETIRED, config_of_run, parse_settings

    for key in ("checks.diminishing_returns", "returns", "cross_trend", "unit_covariance"):
        with pytest.raises(ConfigError, match="retired"):
            parse_settings([f"{key}=true"])
    old = SearchConfig.build().to_dict()
    old["checks"].update(diminishing_returns=True, trends_across_features=False, unit_covariance=0.0)
    assert config_of_run({"settings": old}).to_dict() == SearchConfig.build().to_dict()
    assert config_of_run({"seed": 2, "returns": True, "cross_trend": True}).seed == 2   # a flat, older run
    assert set(RETIRED) <= set(rules_doc().split("`"))


def test_one_reading_of_a_whole_exponent_for_the_grammar_and_the_contract():
    """``D**2.0`` is a whole power for the contract's rules and for the scale starts alike (the
    grammar's copy once read ``Float(2.0)`` as fractional)."""
    import sympy as sp

    from lawforge.search import space as S
    from lawforge.search.contract.form import fractional

    assert not fractional(sp.Float(2.0)) and not fractional(sp.Integer(-1))
    assert fractional(sp.Rational(1, 2)) and fractional(sp.Float(1.5)) and fractional(sp.Symbol("p"))
    assert S.fractional is fractional


@pytest.mark.slow
def test_a_run_records_which_rules_rejected_its_candidates(run_dir):
    """``candidates.jsonl`` names the rule behind each rejection; ``metrics.json`` counts them by
    id and the report shows the counts."""
    import json

    cands = [json.loads(line) for line in (run_dir / "candidates.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    counted: dict[str, int] = {}
    for c in cands:
        if c.get("rule"):
            assert c["status"] in ("unstable", "invalid") and c["rule"] in RULES, c
            counted[c["rule"]] = counted.get(c["rule"], 0) + 1
        if c.get("contract_rule"):
            assert c["contract"] is False and c["contract_rule"] in RULES, c
    assert metrics["rejected_by_rule"] == counted
    assert metrics["rejected_share_by_rule"] == {k: round(v / len(cands), 4) for k, v in counted.items()}
    assert all(c.get("rule") for c in cands if c["status"] == "unstable")
    assert set(metrics["contract_broken_by_rule"]) <= set(RULES)
    if counted:
        assert "rejected by rule" in (run_dir / "report.md").read_text()
