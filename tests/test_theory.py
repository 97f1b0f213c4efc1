"""Analytic elasticities of the demand curves against finite differences (numpy.gradient)."""

import numpy as np
import pytest

from elasticity_lib.theory import (
    linear_demand,
    linear_elasticity,
    loglog_demand,
    loglog_elasticity,
    numerical_elasticity,
)

PRICES = np.linspace(0.5, 3.0, 2001)


@pytest.mark.parametrize(("a", "b"), [(5.0, -1.2), (10.0, -0.5), (2.0, 0.7)])
def test_linear_elasticity_matches_finite_differences(a, b):
    numeric = numerical_elasticity(PRICES, linear_demand(PRICES, a, b))
    np.testing.assert_allclose(linear_elasticity(PRICES, a, b), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("a", "b"), [(3.0, -2.5), (1.0, -0.3), (0.2, 1.5)])
def test_loglog_elasticity_is_the_exponent_everywhere(a, b):
    numeric = numerical_elasticity(PRICES, loglog_demand(PRICES, a, b))
    np.testing.assert_allclose(numeric, b, rtol=1e-9)
    np.testing.assert_array_equal(loglog_elasticity(PRICES, a, b), np.full(PRICES.shape, b))


def test_linear_elasticity_closed_form_values():
    # y = 4 - x: at x = 1, eta = -1 * 1 / 3; at x = 2, eta = -2 / 2 = -1 (unit elastic).
    np.testing.assert_allclose(linear_elasticity([1.0, 2.0, 3.0], 4.0, -1.0), [-1 / 3, -1.0, -3.0])


def test_linear_elasticity_grows_in_magnitude_with_price():
    eta = linear_elasticity(PRICES, 5.0, -1.2)
    assert np.all(np.diff(eta) < 0)


def test_numerical_elasticity_on_uneven_grid():
    x = np.sort(np.random.default_rng(7).uniform(0.5, 3.0, 500))
    x = np.unique(x)
    numeric = numerical_elasticity(x, linear_demand(x, 6.0, -1.0))
    np.testing.assert_allclose(numeric, linear_elasticity(x, 6.0, -1.0), rtol=1e-3)


def test_numerical_elasticity_agrees_with_numpy_gradient_directly():
    x = np.geomspace(0.5, 3.0, 50)
    y = linear_demand(x, 5.0, -1.0)
    expected = np.gradient(np.log(y), np.log(x), edge_order=2)
    np.testing.assert_array_equal(numerical_elasticity(x, y), expected)


def test_linear_demand_rejects_non_positive_quantity():
    with pytest.raises(ValueError, match=r"not positive at price 5\.0"):
        linear_demand([1.0, 5.0], 4.0, -1.0)
    with pytest.raises(ValueError, match="not positive"):
        linear_elasticity([1.0, 4.0], 4.0, -1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_prices_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="price must be finite and strictly positive"):
        loglog_elasticity([1.0, bad], 1.0, -2.0)


def test_loglog_needs_positive_scale():
    with pytest.raises(ValueError, match="a > 0"):
        loglog_demand([1.0], 0.0, -2.0)


def test_numerical_elasticity_input_checks():
    with pytest.raises(ValueError, match="strictly increasing; price\\[2\\]"):
        numerical_elasticity([1.0, 2.0, 2.0], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        numerical_elasticity([1.0, 2.0], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="at least two points"):
        numerical_elasticity([1.0], [3.0])
    with pytest.raises(ValueError, match="quantity must be finite and strictly positive; got -1.0 at position 1"):
        numerical_elasticity([1.0, 2.0], [3.0, -1.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        numerical_elasticity([[1.0, 2.0]], [[3.0, 1.0]])
