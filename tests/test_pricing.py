"""Tests of optimal prices under posterior uncertainty."""

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from elasticity_lib.pricing import (
    _log_mean_exp,
    choose_prices,
    expected_profit,
    expected_profit_curve,
    optimal_price,
    price_posterior,
    profit_bands,
)

COST = 1.0


def effects_from(alpha, beta, sigma, groups=("g",)):
    """Effects Dataset from arrays of draws: alpha, beta (draws, groups), sigma (draws,)."""
    alpha, beta = np.atleast_2d(np.asarray(alpha, float).T).T, np.atleast_2d(np.asarray(beta, float).T).T
    sigma = np.asarray(sigma, float)
    return xr.Dataset(
        {"alpha": (("chain", "draw", "group"), alpha[None]), "beta": (("chain", "draw", "group"), beta[None]),
         "sigma": (("chain", "draw"), sigma[None])},
        coords={"group": list(groups)},
    )


@pytest.mark.parametrize("eta", [-1.2, -1.8, -3.0, -5.0])
@pytest.mark.parametrize("cost", [0.5, 1.0, 2.0])
def test_markup_rule_matches_a_numeric_optimiser(eta, cost):
    analytic = float(optimal_price(eta, cost))
    res = minimize_scalar(lambda p: -expected_profit(p, cost, 2.0, eta, 0.3), bounds=(cost, 50 * cost),
                          method="bounded", options={"xatol": 1e-10})
    assert analytic == pytest.approx(res.x, rel=1e-6)
    assert analytic > cost


def test_optimal_price_rejects_inelastic_demand_and_bad_cost():
    with pytest.raises(ValueError, match="< -1"):
        optimal_price([-2.0, -0.8], 1.0)
    with pytest.raises(ValueError, match="< -1"):
        optimal_price(-1.0, 1.0)
    with pytest.raises(ValueError, match="cost"):
        optimal_price(-2.0, 0.0)


def test_degenerate_posterior_gives_the_analytic_optimum():
    n = 50
    eff = effects_from(np.full(n, 2.0), np.full(n, -3.0), np.full(n, 0.3))
    table = choose_prices(eff, COST, (0.5, 3.0))
    assert table.loc["g", "bayes_price"] == pytest.approx(1.5, rel=1e-6)
    assert table.loc["g", "plugin_price"] == pytest.approx(1.5, rel=1e-12)
    assert table.loc["g", "regret"] == pytest.approx(0.0, abs=1e-9)
    post = price_posterior(eff, COST)
    assert post.loc["g", "price_median"] == pytest.approx(1.5)
    assert post.loc["g", "profit_median"] == pytest.approx(float(expected_profit(1.5, COST, 2.0, -3.0, 0.3)))


def _bayes_price_normal(mean, cov, sigma, cost, bounds):
    """Independent computation for jointly Normal (alpha, beta): closed-form posterior mean demand."""
    def neg(p):
        x = np.log(p)
        m = mean[0] + mean[1] * x + sigma**2 / 2
        v = cov[0, 0] + 2 * x * cov[0, 1] + x**2 * cov[1, 1]
        return -(p - cost) * np.exp(m + v / 2)
    return minimize_scalar(neg, bounds=bounds, method="bounded", options={"xatol": 1e-10}).x


@pytest.mark.slow
def test_bayes_price_matches_the_closed_form_for_normal_draws():
    rng = np.random.default_rng(0)
    mean = np.array([2.5, -2.2])
    cov = np.array([[0.09, 0.0], [0.0, 0.25]])
    draws = rng.multivariate_normal(mean, cov, size=100_000)
    eff = effects_from(draws[:, 0], draws[:, 1], np.full(len(draws), 0.3))
    table = choose_prices(eff, COST, (0.8, 3.0))
    expected = _bayes_price_normal(mean, cov, 0.3, COST, (0.8, 3.0))
    assert table.loc["g", "bayes_price"] == pytest.approx(expected, abs=0.01)
    # the plug-in optimum ignores the uncertainty and lands elsewhere
    assert table.loc["g", "plugin_price"] == pytest.approx(float(optimal_price(draws[:, 1].mean(), COST)))
    assert table.loc["g", "bayes_price"] - table.loc["g", "plugin_price"] > 0.05
    assert table.loc["g", "regret"] > 0
    curve = expected_profit_curve(eff, COST, np.linspace(0.8, 3.0, 221))
    assert table.loc["g", "bayes_expected_profit"] >= float(curve.max()) - 1e-12


def test_inelastic_draws_are_counted_and_excluded():
    rng = np.random.default_rng(1)
    n = 4000
    beta = np.column_stack([rng.normal(-1.3, 0.4, n), rng.normal(-3.0, 0.1, n)])
    alpha = np.full((n, 2), 2.0)
    eff = effects_from(alpha, beta, np.full(n, 0.3), groups=("weak", "strong"))
    post = price_posterior(eff, COST, prob=0.9)
    share = (beta[:, 0] >= -1).mean()
    assert 0.1 < share < 0.4
    assert post.loc["weak", "share_no_optimum"] == pytest.approx(share)
    assert post.loc["weak", "n_finite"] == (beta[:, 0] < -1).sum()
    finite_prices = COST * beta[beta[:, 0] < -1, 0] / (1 + beta[beta[:, 0] < -1, 0])
    assert post.loc["weak", "price_median"] == pytest.approx(np.median(finite_prices))
    assert post.loc["weak", "price_upper"] == pytest.approx(np.quantile(finite_prices, 0.95))
    assert post.loc["strong", "share_no_optimum"] == 0.0
    assert np.isfinite(post.to_numpy(dtype=float)).all()
    chosen = choose_prices(eff, COST, (0.7, 2.5))
    assert np.isfinite(chosen.select_dtypes("number").to_numpy()).all()
    assert chosen.loc["weak", "share_no_optimum"] == pytest.approx(share)
    bands = profit_bands(eff, COST, np.linspace(0.7, 2.5, 5))
    assert np.isfinite(bands.select_dtypes("number").to_numpy()).all()


def test_no_finite_optimum_anywhere_raises_but_a_range_still_chooses():
    n = 100
    eff = effects_from(np.full(n, 2.0), np.linspace(-0.9, -0.5, n), np.full(n, 0.3))
    with pytest.raises(ValueError, match="group 'g': every posterior draw has elasticity >= -1"):
        price_posterior(eff, COST)
    chosen = choose_prices(eff, COST, (0.7, 2.5))
    # profit rises with price for inelastic demand: both choices sit at the top of the range
    assert chosen.loc["g", "bayes_price"] == pytest.approx(2.5)
    assert chosen.loc["g", "plugin_price"] == 2.5
    assert not chosen.loc["g", "plugin_unconstrained"]
    assert chosen.loc["g", "bayes_at_bound"] and chosen.loc["g", "plugin_at_bound"]


def test_profit_bands_against_direct_quantiles():
    rng = np.random.default_rng(2)
    n = 3000
    alpha, beta, sigma = rng.normal(2.0, 0.1, n), rng.normal(-2.5, 0.2, n), np.abs(rng.normal(0.3, 0.01, n))
    eff = effects_from(alpha, beta, sigma)
    prices = np.array([1.0, 1.5, 2.0])
    bands = profit_bands(eff, COST, prices, prob=0.8)
    for i, p in enumerate(prices):
        profit = (p - COST) * np.exp(alpha + beta * np.log(p) + sigma**2 / 2)
        assert bands["profit_lower"].iloc[i] == pytest.approx(np.quantile(profit, 0.1))
        assert bands["profit_upper"].iloc[i] == pytest.approx(np.quantile(profit, 0.9))
        assert bands["expected"].iloc[i] == pytest.approx(profit.mean(), rel=1e-10)


def test_input_errors():
    eff = effects_from(np.full(10, 2.0), np.full(10, -3.0), np.full(10, 0.3))
    with pytest.raises(ValueError, match="price_range"):
        choose_prices(eff, COST, (2.0, 1.0))
    with pytest.raises(ValueError, match="prices"):
        expected_profit_curve(eff, COST, [1.0, 0.0])
    with pytest.raises(ValueError, match="'sigma'"):
        price_posterior(eff.drop_vars("sigma"), COST)
    with pytest.raises(ValueError, match="non-finite"):
        price_posterior(eff.assign(alpha=eff["alpha"] * np.inf), COST)


def test_log_mean_exp_matches_scipy_and_does_not_overflow():
    x = np.random.default_rng(3).normal(0, 50, size=(500, 4)) + np.array([0.0, 700.0, -700.0, 1000.0])
    np.testing.assert_allclose(_log_mean_exp(x), logsumexp(x, axis=0) - np.log(500), rtol=1e-12)
    assert np.isfinite(_log_mean_exp(x)).all()


# --- many products ---------------------------------------------------------------------------

from scipy.optimize import minimize  # noqa: E402

from elasticity_lib.pricing import (  # noqa: E402
    category_demand,
    category_optimal_prices,
    category_profit,
    own_price_only_prices,
)

E5 = np.array([[-3.0, 0.4, 0.4, 0.1, 0.1], [0.4, -2.75, 0.4, 0.1, 0.1], [0.4, 0.4, -2.5, 0.1, 0.1],
               [0.1, 0.1, 0.1, -2.25, -0.3], [0.1, 0.1, 0.1, -0.3, -2.0]])
C5 = np.array([2.4, 2.1, 1.8, 1.5, 1.2])
P0 = np.array([4.0, 3.5, 3.0, 2.5, 2.0])
Q0 = np.array([60.0, 55.0, 50.0, 45.0, 40.0])


def test_category_demand_is_constant_elasticity():
    q = category_demand(P0, E5, P0, Q0)
    np.testing.assert_allclose(q, Q0)
    up = P0.copy()
    up[1] *= 1.01
    ratio = category_demand(up, E5, P0, Q0) / Q0
    np.testing.assert_allclose(np.log(ratio) / np.log(1.01), E5[:, 1], rtol=1e-12)


@pytest.mark.parametrize("width", [1.2, 1.6, 3.0])
def test_category_optimum_matches_a_numeric_optimiser(width):
    """As good as the best of four Powell searches; the same prices where the search is easy.

    In a wide range the profit has several local maxima (pushing one substitute's price to
    the top of the range pays), and Powell may stop at a worse one: there only the profit
    is compared.
    """
    lo, hi = P0 / width, P0 * width
    ours = category_optimal_prices(E5, C5, P0, Q0, lo, hi)
    best = None
    for start in (P0, lo * 1.01, hi / 1.01, np.sqrt(lo * hi)):
        res = minimize(lambda p: -category_profit(p, C5, E5, P0, Q0), start, method="Powell",
                       bounds=list(zip(lo, hi)), options={"xtol": 1e-10, "ftol": 1e-14, "maxiter": 100000})
        best = res if best is None or res.fun < best.fun else best
    assert category_profit(ours, C5, E5, P0, Q0) >= -best.fun - 1e-6 * abs(best.fun)
    if width < 2:
        np.testing.assert_allclose(ours, best.x, rtol=1e-4)
    assert np.all(ours >= lo - 1e-12) and np.all(ours <= hi + 1e-12)


def test_without_cross_effects_the_optimum_is_the_markup_rule():
    diag = np.diag(np.diag(E5))
    ours = category_optimal_prices(diag, C5, P0, Q0, P0 / 10, P0 * 10)
    np.testing.assert_allclose(ours, own_price_only_prices(diag, C5), rtol=1e-6)
    np.testing.assert_allclose(own_price_only_prices(E5, C5), C5 * np.diag(E5) / (1 + np.diag(E5)))


def test_ignoring_substitutes_underprices_and_earns_less():
    lo, hi = P0 / 1.6, P0 * 1.6
    joint = category_optimal_prices(E5, C5, P0, Q0, lo, hi)
    alone = own_price_only_prices(E5, C5, lo, hi)
    assert category_profit(joint, C5, E5, P0, Q0) > category_profit(alone, C5, E5, P0, Q0)
    assert np.all(joint[:3] > alone[:3])           # the premium substitutes are priced higher jointly


def test_category_inputs_are_validated():
    with pytest.raises(ValueError, match="square matrix"):
        category_optimal_prices(E5[:4], C5, P0, Q0, P0 / 2, P0 * 2)
    with pytest.raises(ValueError, match="cost must be 5 finite"):
        category_optimal_prices(E5, -C5, P0, Q0, P0 / 2, P0 * 2)
    with pytest.raises(ValueError, match="0 < lower < upper"):
        category_optimal_prices(E5, C5, P0, Q0, P0 * 2, P0 / 2)
    with pytest.raises(ValueError, match="elasticity must be < -1"):
        own_price_only_prices(np.array([[-0.5, 0.1], [0.1, -2.0]]), np.ones(2))
    with pytest.raises(ValueError, match="both lower and upper"):
        own_price_only_prices(E5, C5, lower=P0)
