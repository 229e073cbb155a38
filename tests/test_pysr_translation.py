import shutil

import numpy as np
import pytest

from lawforge.errors import LawError
from lawforge.search.pysr_backend import (constants_to_params, equation_to_text, law_from_equation,
                                          law_from_template, laws_from_hall_of_fame, normalise_numbers)

VARS = {"N": "num_params", "P": "parallel_size"}
VMAP = {"x1": "N", "x2": "P"}


def test_julia_literals():
    assert normalise_numbers("1.5f0 + 2.0f-3*x1 - 3e5 + 1.0e-5") == "1.5 + 2.0e-3*x1 - 3e5 + 1.0e-5"


def test_equation_translation_and_constants_become_parameters():
    text = equation_to_text("(x1 ^ -0.25f0) * 12.5 + 1.7", VMAP)
    assert text == "(N ** -0.25) * 12.5 + 1.7"
    t2, c = constants_to_params("N ** 2 + 3.5*N ** 0.5")
    assert t2 == "N ** 2 + c0*N ** c1" and c == {"c0": 3.5, "c1": 0.5}


def test_hall_of_fame_table(tmp_path):
    hof = tmp_path / "hall_of_fame.csv"
    hof.write_text("Complexity,Loss,Equation\n"
                   "1,0.52,2.3f0\n"
                   "5,0.031,\"1.9f0 + (x1 ^ -0.07f0)\"\n"
                   "9,0.0042,\"(x1 * ((log(x2) * 0.41f0) + 1.0f0)) ^ -0.19f0 * 37.2 + 1.4\"\n"
                   "7,0.01,\"exp(x3 * 2.0)\"\n")
    rows = laws_from_hall_of_fame(hof, VMAP, VARS, "loss")
    assert [r[0] for r in rows] == [1, 5, 9, 7]
    assert rows[0][2] is None and "uses no variable" in rows[0][3]          # a constant is not a law
    assert rows[3][2] is None and "unknown symbol 'x3'" in rows[3][3]  # unknown variable
    law = rows[2][2]
    assert law.n_params == 5
    x = {"num_params": np.array([1e9]), "parallel_size": np.array([4.0])}
    init = {p.name: p.init for p in law.params}
    expected = (1e9 * (np.log(4.0) * 0.41 + 1.0)) ** -0.19 * 37.2 + 1.4
    np.testing.assert_allclose(law.predict(x, init)[0, 0], expected, rtol=1e-12)


def test_template_with_per_group_parameters():
    combine = "f(x1, x2) * p1[category] + p2[category]"
    law, starts = law_from_template(combine, {"f": "(#1 * (log(#2) * 0.4f0 + 1.0f0)) ^ -0.2f0"}, VMAP, VARS,
                                    "loss", parameters={"p1": [30.0, 12.0], "p2": [1.4, 0.5]},
                                    groups=["pile", "stack"])
    assert {"p1", "p2"} <= set(law.param_names)
    assert starts["stack"]["p1"] == 12.0 and starts["pile"]["p2"] == 1.4
    x = {"num_params": np.array([1e9]), "parallel_size": np.array([2.0])}
    got = law.predict(x, starts["stack"])[0, 0]
    assert got == pytest.approx((1e9 * (np.log(2.0) * 0.4 + 1.0)) ** -0.2 * 12.0 + 0.5, rel=1e-12)
    with pytest.raises(LawError, match="2 groups"):
        law_from_template(combine, {"f": "#1"}, VMAP, VARS, "loss", parameters={"p1": [1.0], "p2": [1, 2]},
                          groups=["a", "b"])
    with pytest.raises(LawError, match="#3"):
        law_from_template(combine, {"f": "#3 * 2.0"}, VMAP, VARS, "loss")


def test_injection_in_pysr_output_is_not_executed(tmp_path):
    marker = tmp_path / "x"
    with pytest.raises(LawError):
        law_from_equation(f"__import__('os').system('touch {marker}') + 1.0", VMAP, VARS, "loss")
    assert not marker.exists()


@pytest.mark.pysr
@pytest.mark.skipif(shutil.which("julia") is None, reason="PySR needs Julia, which cannot be installed on these machines")
def test_live_pysr_run():  # pragma: no cover
    from lawforge.search.pysr_backend import require_pysr

    assert require_pysr() is not None
