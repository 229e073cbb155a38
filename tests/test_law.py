
import numpy as np
import pytest
import sympy as sp
import torch

from lawforge.errors import LawError
from lawforge.laws.expr import numpy_backend, parse_expression, torch_backend
from lawforge.laws.law import Law, Param, law_from_text

VARS = {"N": "N", "D": "D"}


def test_parse_and_infer_params():
    law = Law("E + A/N**alpha + B/D**beta", VARS, target_names=["loss"])
    assert law.param_names == ["A", "B", "E", "alpha", "beta"]
    assert law.n_params == 5
    x = {"N": np.array([1e8, 1e9]), "D": np.array([1e10, 1e11])}
    out = law.predict(x, {"A": 400.0, "B": 410.0, "E": 1.7, "alpha": 0.34, "beta": 0.28})
    expected = 1.7 + 400 / x["N"] ** 0.34 + 410 / x["D"] ** 0.28
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-13)


@pytest.mark.parametrize("text, match", [
    ("E + A/M**alpha", "unknown symbol 'M'"),
    ("E + foo(N)", "unknown function 'foo'"),
    ("__import__('os').system('touch /tmp/x')", "not allowed|unknown function"),
    ("E + (A/N", "syntax error"),
    ("N.__class__", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("[N for N in N]", "not allowed"),
    ("E + 'text'", "numeric"),
    ("exp", "without a call"),
    ("", "empty"),
    ("max(N)", "at least 2"),
])
def test_parse_rejects_bad_expressions(text, match):
    with pytest.raises(LawError, match=match):
        Law(text, VARS, params={"E": 1, "A": 1, "alpha": 0.5}, target_names=["loss"])


def test_injection_text_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    for text in [f"__import__('os').system('touch {marker}')",
                 f"exp(N) if open('{marker}', 'w') else 1",
                 "().__class__.__bases__[0].__subclasses__()"]:
        with pytest.raises(LawError):
            parse_expression(text, ["N"])
    assert not marker.exists()


def test_unknown_symbol_with_inference_suggests_variable():
    with pytest.raises(LawError, match="did you mean 'num_params'"):
        Law("E + A/num_param**a", {"num_params": "num_params"}, target_names=["loss"])


def test_huge_expression_rejected():
    with pytest.raises(LawError, match="characters long|syntax nodes"):
        parse_expression("+".join(["N"] * 3000), ["N"])


def test_parameter_limit_enforced():
    law = Law("E + A/N**alpha + B/D**beta", VARS, target_names=["loss"])
    law.check_limit(5, "d")
    with pytest.raises(LawError, match="5 parameters per group; tiny allows at most 4"):
        law.check_limit(4, "tiny")


def test_param_specs_and_validation():
    law = Law("E + A/N**alpha", VARS, params={"E": 1.5, "A": {"init": 10, "bounds": [0, None]},
                                               "alpha": {"init": 0.3, "lower": 0, "upper": 2}},
              target_names=["loss"])
    assert law.params[1].lower == 0 and law.params[1].upper == float("inf")
    with pytest.raises(LawError, match="outside its bounds"):
        Param.from_spec("a", {"init": 5, "bounds": [0, 1]})
    with pytest.raises(LawError, match="did you mean 'bounds'"):
        Param.from_spec("a", {"bound": [0, 1]})
    with pytest.raises(LawError, match="do not appear"):
        Law("E + A/N", VARS, params={"E": 1, "A": 1, "Z": 1}, target_names=["loss"])


def test_multi_target_and_definitions():
    law = Law({"l1": "c1 + k1*exp(t*r)", "l2": "c2 + s*q"}, {"r": "r"},
              params=["c1", "k1", "t", "c2"], where={"q": "r**2 + 1", "s": "k1*2"})
    assert law.target_names == ["l1", "l2"]
    out = law.predict({"r": np.array([0.0, 1.0])}, {"c1": 1.0, "k1": 2.0, "t": 0.5, "c2": 3.0})
    np.testing.assert_allclose(out[:, 0], 1 + 2 * np.exp(0.5 * np.array([0, 1.0])))
    np.testing.assert_allclose(out[:, 1], 3 + 4 * np.array([1.0, 2.0]))


def test_law_from_text_statements():
    law = law_from_text("Dp = D/2; loss = E + A/Dp**b", VARS, ["loss"])
    assert set(law.param_names) == {"E", "A", "b"}
    with pytest.raises(LawError, match="no expression for target 'l2'"):
        law_from_text("l1 = a*N", VARS, ["l1", "l2"])


def test_numpy_and_torch_agree_and_jacobian_matches_finite_differences():
    law = Law("(A/(N*(k*log(D) + 1)))**alpha + E + max(N, D)*0 + tanh(k)", VARS, target_names=["y"])
    prog, pairs = law.jacobian_program
    rng = np.random.default_rng(0)
    env_np = {"N": rng.uniform(1e8, 1e9, 5), "D": rng.uniform(2, 8, 5)}
    vals = {"A": 1.3e8, "k": 0.4, "alpha": 0.2, "E": 1.4}
    env_np.update({k: np.float64(v) for k, v in vals.items()})
    out_np = prog.run(numpy_backend(), env_np)
    env_t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in env_np.items()}
    out_t = prog.run(torch_backend(), env_t)
    for a, b in zip(out_np, out_t):
        np.testing.assert_allclose(np.broadcast_to(a, (5,)), torch.as_tensor(b).expand(5).numpy(), rtol=1e-12)
    names = law.param_names
    for (t, k), d in zip(pairs, out_np[1:]):
        h = 1e-6 * max(abs(vals[names[k]]), 1)
        up = dict(vals); up[names[k]] += h
        dn = dict(vals); dn[names[k]] -= h
        fd = (law.predict(env_np, up)[:, 0] - law.predict(env_np, dn)[:, 0]) / (2 * h)
        np.testing.assert_allclose(np.broadcast_to(d, (5,)), fd, rtol=1e-5, atol=1e-9)


def test_exports():
    law = Law("E + A/N**alpha", VARS, target_names=["loss"])
    assert isinstance(law.to_sympy()["loss"], sp.Expr)
    tex = law.to_latex()
    assert "\\alpha" in tex and "loss" in tex
    py = law.to_python()
    assert py.startswith("import numpy") and "def law(N, D, *, " in py
    again = Law(law.to_string(), VARS, target_names=["loss"])
    assert sp.simplify(again.exprs["loss"] - law.exprs["loss"]) == 0
    d = law.to_dict()
    assert Law.from_dict(d).param_names == law.param_names


@pytest.mark.parametrize("text", [
    "E + A/N**alpha + B/D**beta",
    "(A/(N*(k*log(D) + 1)))**alpha + E",
    "sqrt(A*N + k) + abs(D - E)*tanh(alpha*D)",
    "max(A*N, k*D) + min(E, alpha)",
    "exp(-alpha*log(N))*A/(D**k + E)",
    "log(A + N**alpha)**2 + 1/(k*D + E)",
    "(A*N)**(alpha*D/10) + E**2",
])
def test_forward_mode_partials_equal_sympy_derivatives(text):
    """The program's partials (forward mode over its instructions) agree with sympy's symbolic
    derivatives, compiled the old way, at random points."""
    from lawforge.laws.expr import compile_exprs, make_symbol

    law = Law(text, VARS, target_names=["y"])
    prog, pairs = law.jacobian_program
    expr = law.exprs["y"]
    derivs = {k: sp.diff(expr, make_symbol(p)) for k, p in enumerate(law.param_names)}
    rng = np.random.default_rng(1)
    env = {"N": rng.uniform(1.5, 9, 7), "D": rng.uniform(1.5, 9, 7)}
    env.update({p: np.float64(rng.uniform(0.2, 0.9)) for p in law.param_names})
    out = prog.run(numpy_backend(), env)
    ref = compile_exprs([expr] + list(derivs.values()), law._inputs).run(numpy_backend(), env)
    got = {k: np.broadcast_to(o, (7,)) for (t, k), o in zip(pairs, out[1:])}
    for k, d in derivs.items():
        want = np.broadcast_to(ref[1 + k], (7,))
        np.testing.assert_allclose(got.get(k, np.zeros(7)), want, rtol=1e-10, atol=1e-12,
                                   err_msg=f"d/d{law.param_names[k]} of {text}")


def test_linear_parameters_are_the_jointly_affine_unbounded_ones():
    law = Law("E + A*N**(-alpha) + B*exp(-beta*D)", VARS, target_names=["y"])
    names = law.param_names
    assert sorted(names[k] for k in law.linear_params) == ["A", "B", "E"]
    law2 = law.with_params({"A": {"init": 1.0, "bounds": [0, None]}})
    assert sorted(law2.param_names[k] for k in law2.linear_params) == ["B", "E"]
    prod = Law("E + A*B*N", VARS, target_names=["y"])   # affine in A and in B, not jointly
    assert len(prod.linear_params) == 2 and {prod.param_names[k] for k in prod.linear_params} & {"A", "B"} != {"A", "B"}


def test_laws_print_in_reading_order():
    """The floor first and each term's coefficient first, as researchers write laws; the text
    parses back to the same expression."""
    law = Law("D**b*B + E + N**(-a)*A", VARS, target_names=["loss"])
    assert law.to_string() == "E + A/N**a + B*D**b"
    law = Law("D**p4*lr**p5*p3 + N**p1*p0 + p6 + p2*log(D)/sqrt(D)", {"D": "D", "N": "N", "lr": "lr"},
              target_names=["loss"])
    text = law.to_string()
    assert text.startswith("p6 + p3*D**p4*lr**p5 + p0*N**p1")
    assert Law(text, {"D": "D", "N": "N", "lr": "lr"}, target_names=["loss"]).exprs["loss"] == law.exprs["loss"]
    assert law.to_latex().split(" = ", 1)[1].startswith(r"p_{6} + p_{3} D^{p_{4}} lr^{p_{5}} + p_{0} N^{p_{1}}")
