"""Tests of the three-level store model and of the store-level comparison tools."""

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import arviz as az
from scipy import stats as st

from elasticity_lib.inference import add_group_effects
from elasticity_lib.models import build_model
from elasticity_lib.prepare import prepare_data
from elasticity_lib.simulation import SimulationConfig, simulate_market
from elasticity_lib.stores import (
    error_by_size,
    error_table,
    no_pooling_fits,
    posterior_estimates,
    region_only_estimates,
    store_errors,
)


@pytest.fixture(scope="module")
def data():
    config = SimulationConfig(n_regions=3, stores_mu=4.0, store_intercept_sd=0.1, store_elasticity_sd=0.3)
    return prepare_data(simulate_market(config, seed=17).to_dataframe())


def _point(model, rng):
    """A random point in the unconstrained space of a model."""
    return {v.name: rng.normal(0, 0.5, size=model.initial_point()[v.name].shape) + model.initial_point()[v.name]
            for v in model.value_vars}


def test_store_model_rows_and_sufficient_likelihoods_agree(data):
    rows = build_model("store_multilevel", data, likelihood="rows")
    suff = build_model("store_multilevel", data, likelihood="sufficient")
    f_rows, f_suff = rows.compile_logp(), suff.compile_logp()
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = _point(rows, rng)
        assert f_rows(point) == pytest.approx(f_suff(point), rel=1e-10)


def test_store_model_marginal_likelihood_matches_scipy(data):
    """The integrated-out store effects give each store's rows a multivariate normal."""
    model = build_model("store_multilevel", data, likelihood="marginal")
    outs = [model["loglik"], model["alpha"], model["beta"], model["sigma_store_a"], model["sigma_store_b"], model["sigma"]]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False)
    rng = np.random.default_rng(1)
    for _ in range(2):
        loglik, alpha, beta, sa, sb, sigma = fn(**_point(model, rng))
        expected = 0.0
        for k in range(data.n_stores):
            mask = data.store_idx == k
            x = np.column_stack([np.ones(mask.sum()), data.log_price[mask]])
            r = data.store_region_idx[k]
            mean = x @ np.array([alpha[r], beta[r]])
            cov = sigma**2 * np.eye(mask.sum()) + x @ np.diag([sa**2, sb**2]) @ x.T
            expected += st.multivariate_normal(mean, cov).logpdf(data.log_quantity[mask])
        assert float(loglik) == pytest.approx(expected, rel=1e-9)


def test_store_effects_drawn_from_their_exact_conditional(data):
    """With fixed hyperparameters, add_group_effects must reproduce the conjugate posterior."""
    model = build_model("store_multilevel", data, likelihood="marginal")
    n_draws, n_reg = 20000, data.n_regions
    alpha = np.array([2.0, 2.5, 3.0])[:n_reg]
    beta = np.array([-2.0, -3.0, -4.0])[:n_reg]
    sa, sb, sigma = 0.1, 0.3, 0.3
    const = lambda v, *shape: np.broadcast_to(v, (1, n_draws, *shape)).copy()  # noqa: E731
    idata = az.from_dict(
        {"posterior": {"alpha": const(alpha, n_reg), "beta": const(beta, n_reg), "sigma_store_a": const(sa),
                       "sigma_store_b": const(sb), "sigma": const(sigma)}},
        dims={"alpha": ["region"], "beta": ["region"]}, coords={"region": data.coords["region"]})
    idata = add_group_effects(idata, model, seed=3)
    draws = np.stack([idata.posterior["alpha_store"].values[0], idata.posterior["beta_store"].values[0]], axis=-1)
    for k in (0, data.n_stores - 1):
        mask = data.store_idx == k
        x = np.column_stack([np.ones(mask.sum()), data.log_price[mask]])
        r = data.store_region_idx[k]
        prior_prec = np.diag([1 / sa**2, 1 / sb**2])
        cov = np.linalg.inv(prior_prec + x.T @ x / sigma**2)
        mean = cov @ (prior_prec @ np.array([alpha[r], beta[r]]) + x.T @ data.log_quantity[mask] / sigma**2)
        se = np.sqrt(np.diag(cov) / n_draws)
        np.testing.assert_array_less(np.abs(draws[:, k].mean(axis=0) - mean), 4 * se)
        np.testing.assert_allclose(np.cov(draws[:, k].T), cov, rtol=0.05, atol=1e-3 * cov.max())
    assert list(idata.posterior["beta_store"]["store"].values) == list(data.coords["store"])


def test_no_pooling_matches_least_squares_and_t_intervals(data):
    fits = no_pooling_fits(data, prob=0.9)
    assert list(fits.index) == list(data.coords["store"])
    for k in (0, 5, data.n_stores - 1):
        mask = data.store_idx == k
        x = np.column_stack([np.ones(mask.sum()), data.log_price[mask]])
        y = data.log_quantity[mask]
        coef, rss, *_ = np.linalg.lstsq(x, y, rcond=None)
        dof = mask.sum() - 2
        se = np.sqrt(rss[0] / dof * np.linalg.inv(x.T @ x)[1, 1])
        half = st.t.ppf(0.95, dof) * se
        row = fits.iloc[k]
        assert row["n_obs"] == mask.sum()
        assert row["estimate"] == pytest.approx(coef[1], rel=1e-9)
        assert row["se"] == pytest.approx(se, rel=1e-9)
        assert (row["lower"], row["upper"]) == pytest.approx((coef[1] - half, coef[1] + half), rel=1e-9)


def test_no_pooling_rejects_stores_too_small_or_flat():
    df = simulate_market(SimulationConfig(n_regions=2), seed=4).to_dataframe()
    first = df["region_store_id"].iloc[0]
    small = df[(df["region_store_id"] != first) | (df["time_step"] < 2)]
    with pytest.raises(ValueError, match=f"{first}.*fewer than 3 rows"):
        no_pooling_fits(prepare_data(small))
    flat = df.copy()
    flat.loc[flat["region_store_id"] == first, "price"] = 1.5
    with pytest.raises(ValueError, match=f"{first}.*constant price"):
        no_pooling_fits(prepare_data(flat.drop(columns=["log_price"])))


def test_posterior_and_region_only_estimates(data):
    rng = np.random.default_rng(2)
    region = az.from_dict({"posterior": {"beta": rng.normal([-2.0, -3.0, -4.0], 0.1, (2, 500, 3))}},
                          dims={"beta": ["region"]}, coords={"region": data.coords["region"]}).posterior["beta"]
    per_region = posterior_estimates(region, prob=0.8, dim="region")
    flat = region.values.reshape(-1, 3)
    np.testing.assert_allclose(per_region["estimate"], flat.mean(axis=0))
    np.testing.assert_allclose(per_region["lower"], np.quantile(flat, 0.1, axis=0))
    np.testing.assert_allclose(per_region["upper"], np.quantile(flat, 0.9, axis=0))
    stores = region_only_estimates(region, data, prob=0.8)
    assert list(stores.index) == list(data.coords["store"])
    for k in range(data.n_stores):
        r = data.coords["region"][data.store_region_idx[k]]
        assert stores.iloc[k].tolist() == per_region.loc[r].tolist()
    with pytest.raises(ValueError, match="'store'"):
        posterior_estimates(region, dim="store")


def test_error_table_and_bins_by_hand():
    truth = pd.Series([1.0, 2.0, 3.0, 4.0], index=["a", "b", "c", "d"])
    n_obs = pd.Series([5, 10, 30, 40], index=truth.index)
    good = pd.DataFrame({"estimate": [1.1, 2.0, 2.8, 4.0], "lower": [0.9, 1.5, 2.6, 3.0],
                         "upper": [1.3, 2.5, 2.95, 5.0]}, index=truth.index)
    bad = good.assign(estimate=good["estimate"] + 1.0)
    errors = store_errors({"good": good, "bad": bad.loc[["d", "c", "b", "a"]]}, truth, n_obs)
    table = error_table(errors)
    assert list(table.index) == ["good", "bad"]
    assert table.loc["good", "rmse"] == pytest.approx(np.sqrt((0.01 + 0 + 0.04 + 0) / 4))
    assert table.loc["good", "coverage"] == pytest.approx(0.75)  # store c: 3.0 is outside [2.6, 2.95]
    assert table.loc["good", "mean_width"] == pytest.approx((0.4 + 1.0 + 0.35 + 2.0) / 4)
    assert table.loc["bad", "rmse"] == pytest.approx(np.sqrt(((0.1 + 1) ** 2 + 1 + (0.8) ** 2 + 1) / 4))
    by_size = error_by_size(errors, bins=[0, 10, 50])
    assert by_size["n_stores"].tolist() == [2, 2]
    assert by_size["good"].iloc[0] == pytest.approx(np.sqrt(0.01 / 2))
    with pytest.raises(ValueError, match="do not cover"):
        error_by_size(errors, bins=[0, 20, 35])
    with pytest.raises(ValueError, match="missing \\['d'\\]"):
        store_errors({"x": good.loc[["a", "b", "c"]]}, truth, n_obs)
    with pytest.raises(ValueError, match="non-finite"):
        store_errors({"x": good.assign(upper=[1.3, np.inf, 2.95, 5.0])}, truth, n_obs)
