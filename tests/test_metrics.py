import math

import numpy as np
import pytest

from lawforge.errors import LawforgeError
from lawforge.laws.metrics import compute_metrics


def test_single_target_hand_computed():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 5.0])
    # population variance of y = 1.25; mse = 1/4; nmse = 0.2; R2 = 0.8
    # nmae: mean|err| = 0.25; mean|y - 2.5| = 1.0 -> 0.25
    m = compute_metrics(y, p)
    assert m.nmse == pytest.approx(0.2)
    assert m.r2 == pytest.approx(0.8)
    assert m.nmae == pytest.approx(0.25)
    assert m.status == "ok" and m.n == 4


def test_multi_target_is_mean_over_targets():
    y = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    p = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [5.0, 40.0]])
    m = compute_metrics(y, p)
    assert m.nmse == pytest.approx((0.2 + 0.0) / 2)
    assert m.r2 == pytest.approx(0.9)
    assert m.nmae == pytest.approx((0.25 + 0.0) / 2)


def test_variance_is_population_variance_of_evaluated_rows_only():
    y = np.array([0.0, 2.0])
    p = np.array([1.0, 1.0])
    # var (ddof=0) = 1, mse = 1 -> R2 = 0 (with ddof=1 it would be 0.5)
    assert compute_metrics(y, p).r2 == pytest.approx(0.0)


def test_failure_scores_minus_one_and_clipping():
    y = np.array([1.0, 2.0, 3.0])
    m = compute_metrics(y, np.array([1.0, np.nan, 3.0]))
    assert m.r2 == -1.0 and m.status == "failed" and math.isnan(m.nmse)
    m = compute_metrics(y, np.array([1.0, 2.0, np.inf]))
    assert m.r2 == -1.0
    bad = compute_metrics(y, np.array([100.0, -100.0, 50.0]))
    assert bad.r2 == -1.0 and bad.r2_raw < -1.0 and bad.status == "ok"


def test_constant_target_and_shape_errors():
    with pytest.raises(LawforgeError, match="constant"):
        compute_metrics(np.ones(3), np.ones(3))
    with pytest.raises(LawforgeError, match="shape"):
        compute_metrics(np.ones(3), np.ones(4))
