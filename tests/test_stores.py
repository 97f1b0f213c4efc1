"""Tests of the three-level store model and of the store-level comparison tools."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market
from elasticity_lib.inference import add_group_effects
from elasticity_lib.models import build_model
from elasticity_lib.store_estimates import (
    error_by_size,
    error_table,
    no_pooling_fits,
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


@pytest.mark.slow
def test_store_model_rows_and_sufficient_likelihoods_agree(data):
    rows = build_model("store_multilevel", data, likelihood="rows")
    suff = build_model("store_multilevel", data, likelihood="sufficient")
    f_rows, f_suff = rows.compile_logp(), suff.compile_logp()
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = _point(rows, rng)
        assert f_rows(point) == pytest.approx(f_suff(point), rel=1e-10)


def _region_rows(data, j):
    """Rows of region j: design [1, x], log quantities and the position of each row's store."""
    mask = data.region_idx == j
    x = np.column_stack([np.ones(mask.sum()), data.log_price[mask]])
    stores = np.unique(data.store_idx[mask])
    return x, data.log_quantity[mask], np.searchsorted(stores, data.store_idx[mask]), stores


@pytest.mark.slow
def test_store_model_marginal_likelihood_matches_scipy(data):
    """With store and region effects integrated out, a region's rows are jointly Normal:
    covariance sigma^2 I + (rows of one store) x T x' + (all rows of the region) x S x'."""
    model = build_model("store_multilevel", data, likelihood="marginal")
    names = ["loglik", "alpha_mean", "beta_mean", "sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b", "sigma"]
    fn = model.compile_fn([model[n] for n in names], inputs=model.value_vars, on_unused_input="ignore",
                          point_fn=False)
    rng = np.random.default_rng(1)
    for _ in range(2):
        loglik, m_a, m_b, sa, sb, ta, tb, sigma = fn(**_point(model, rng))
        expected = 0.0
        for j in range(data.n_regions):
            x, y, store_pos, _ = _region_rows(data, j)
            same_store = store_pos[:, None] == store_pos[None, :]
            # deviations are defined at the mean log price; the design has the intercept at 0
            shear = np.array([[1.0, -data.centring.log_price], [0.0, 1.0]])
            cov = (sigma**2 * np.eye(len(y)) + same_store * (x @ shear @ np.diag([ta**2, tb**2]) @ shear.T @ x.T)
                   + x @ shear @ np.diag([sa**2, sb**2]) @ shear.T @ x.T)
            expected += st.multivariate_normal(x @ np.array([m_a[j], m_b[j]]), cov).logpdf(y)
        assert float(loglik) == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_store_effects_drawn_from_their_exact_conditional(data):
    """With fixed hyperparameters, add_group_effects must reproduce the joint Gaussian
    posterior of a region's effects and its stores' effects (brute-force linear algebra)."""
    model = build_model("store_multilevel", data, likelihood="marginal")
    n_draws, n_reg = 20000, data.n_regions
    m_a, m_b = np.array([2.0, 2.5, 3.0]), np.array([-2.0, -3.0, -4.0])
    sa, sb, ta, tb, sigma = 0.2, 0.3, 0.1, 0.3, 0.3
    const = lambda v, *shape: np.broadcast_to(v, (1, n_draws, *shape)).copy()  # noqa: E731
    idata = az.from_dict(
        {"posterior": {"alpha_mean": const(m_a, n_reg), "beta_mean": const(m_b, n_reg), "sigma_a": const(sa),
                       "sigma_b": const(sb), "sigma_store_a": const(ta), "sigma_store_b": const(tb),
                       "sigma": const(sigma)}},
        dims={"alpha_mean": ["region"], "beta_mean": ["region"]}, coords={"region": data.coords["region"]})
    idata = add_group_effects(idata, model, seed=3)
    post = idata.posterior
    assert list(post["beta_store"]["store"].values) == list(data.coords["store"])
    for j in (0, n_reg - 1):
        x, y, store_pos, stores = _region_rows(data, j)
        k = len(stores)
        # theta = (region effects, store 1 effects, ..., store k effects); u_s = r + d_s
        shear = np.array([[1.0, -data.centring.log_price], [0.0, 1.0]])
        S, T = shear @ np.diag([sa**2, sb**2]) @ shear.T, shear @ np.diag([ta**2, tb**2]) @ shear.T
        prior_cov = np.kron(np.ones((k + 1, k + 1)), S) + np.kron(np.diag([0.0] + [1.0] * k), T)
        prior_mean = np.tile([m_a[j], m_b[j]], k + 1)
        design = np.zeros((len(y), 2 * (k + 1)))
        for i, s in enumerate(store_pos):
            design[i, 2 * (s + 1): 2 * (s + 2)] = x[i]
        cov = np.linalg.inv(np.linalg.inv(prior_cov) + design.T @ design / sigma**2)
        mean = cov @ (np.linalg.solve(prior_cov, prior_mean) + design.T @ y / sigma**2)
        region = data.coords["region"][j]
        draws = [post["alpha"].sel(region=region).values[0], post["beta"].sel(region=region).values[0]]
        for s in stores:
            label = data.coords["store"][s]
            draws += [post["alpha_store"].sel(store=label).values[0], post["beta_store"].sel(store=label).values[0]]
        draws = np.column_stack(draws)
        se = np.sqrt(np.diag(cov) / n_draws)
        np.testing.assert_array_less(np.abs(draws.mean(axis=0) - mean), 4 * se)
        np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.06, atol=0.02 * np.abs(cov).max())


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
        assert row["resid_sd"] == pytest.approx(np.sqrt(rss[0] / dof), rel=1e-9)


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
    flat = region.values.reshape(-1, 3)
    stores = region_only_estimates(region, data, prob=0.8)
    assert list(stores.index) == list(data.coords["store"])
    for k in range(data.n_stores):
        j = data.store_region_idx[k]
        np.testing.assert_allclose(stores.iloc[k][["mean", "eti80_low", "eti80_high"]].to_numpy(dtype=float),
                                   [flat[:, j].mean(), np.quantile(flat[:, j], 0.1), np.quantile(flat[:, j], 0.9)])
    # a posterior table enters store_errors as it is: its mean and the interval its attrs name
    truth = pd.Series(-3.0, index=stores.index)
    errors = store_errors({"region only": stores}, truth, pd.Series(10, index=stores.index))
    np.testing.assert_allclose(errors["estimate"], stores["mean"])
    np.testing.assert_allclose(errors["lower"], stores["eti80_low"])
    np.testing.assert_allclose(errors["upper"], stores["eti80_high"])
    with pytest.raises(ValueError, match="no attrs 'prob' and 'interval'"):
        store_errors({"bare": stores[["mean"]].copy().pipe(lambda f: setattr(f, "attrs", {}) or f)}, truth,
                     pd.Series(10, index=stores.index))


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
