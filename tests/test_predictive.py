"""Predictive quantities computed from posterior draws, checked against PyMC's own answers."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from scipy import stats

from elasticity_lib.inference import fit
from elasticity_lib.models import build_model
from elasticity_lib.predict import (
    OBSERVED_NAME,
    add_log_likelihood,
    add_posterior_predictive,
    pointwise_log_likelihood,
    posterior_predictive_draws,
    predictive_bands,
    price_grid,
    row_effects,
    sample_prior_predictive,
)


@pytest.fixture(scope="module")
def rows_fit(small_data):
    """A short fit of the row-level baseline model (PyMC's sampler: no Numba warm-up)."""
    model = build_model("baseline", small_data, likelihood="rows")
    idata = fit(model, nuts_sampler="pymc", chains=2, draws=1000, tune=500, cores=1, random_seed=7)
    return model, idata


def _prior_as_posterior(kind, data, draws=200, seed=3):
    """Prior draws relabelled as a posterior: any parameter values test a deterministic map."""
    prior = sample_prior_predictive(kind, data, draws=draws, random_seed=seed)
    return xr.DataTree.from_dict({"posterior": prior["prior"].to_dataset()})


# --- prior predictive ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["baseline", "multilevel", "correlated"])
def test_prior_predictive_groups_and_shapes(small_data, kind):
    prior = sample_prior_predictive(kind, small_data, draws=50, random_seed=1)
    assert {"prior", "prior_predictive", "observed_data"} <= set(prior.children)
    sims = prior["prior_predictive"][OBSERVED_NAME]
    assert sims.dims == ("chain", "draw", "obs")
    assert sims.shape == (1, 50, small_data.n_obs)
    assert prior["prior"]["beta"].sizes["region"] == small_data.n_regions
    np.testing.assert_array_equal(prior["observed_data"][OBSERVED_NAME].values, small_data.log_quantity)


@pytest.mark.slow
def test_prior_predictive_is_seeded(small_data):
    a = sample_prior_predictive("multilevel", small_data, draws=20, random_seed=5)
    b = sample_prior_predictive("multilevel", small_data, draws=20, random_seed=5)
    c = sample_prior_predictive("multilevel", small_data, draws=20, random_seed=6)
    np.testing.assert_array_equal(a["prior_predictive"][OBSERVED_NAME].values, b["prior_predictive"][OBSERVED_NAME].values)
    assert not np.allclose(a["prior_predictive"][OBSERVED_NAME].values, c["prior_predictive"][OBSERVED_NAME].values)


@pytest.mark.slow
def test_prior_predictive_follows_the_baseline_prior(small_data):
    prior = sample_prior_predictive("baseline", small_data, draws=4000, random_seed=2)
    beta = prior["prior"]["beta"].values.ravel()
    # Normal(0, 1.5): the sample sd of 36,000 draws is within a few percent
    assert abs(beta.std() - 1.5) < 0.05
    assert abs(beta.mean()) < 0.05


@pytest.mark.parametrize("draws", [0, -3, 2.5, True])
def test_prior_predictive_rejects_bad_draws(small_data, draws):
    with pytest.raises(ValueError, match="draws"):
        sample_prior_predictive("baseline", small_data, draws=draws)


# --- pointwise log-likelihood -----------------------------------------------------------

@pytest.mark.slow
def test_log_likelihood_equals_pymc_on_a_fit(rows_fit, small_data):
    model, idata = rows_fit
    ours = pointwise_log_likelihood(idata, small_data)
    with model:
        ref = pm.compute_log_likelihood(idata, extend_inferencedata=False, progressbar=False)[OBSERVED_NAME]
    assert ours.dims == ref.dims == ("chain", "draw", "obs")
    np.testing.assert_allclose(ours.values, ref.values, rtol=0, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multilevel", "correlated", "store_multilevel"])
def test_log_likelihood_equals_pymc_for_other_kinds(small_data, kind):
    """Deterministic group effects, and store-level effects for the three-level model."""
    idata = _prior_as_posterior(kind, small_data)
    model = build_model(kind, small_data, likelihood="rows")
    with model:
        ref = pm.compute_log_likelihood(idata, extend_inferencedata=False, progressbar=False)[OBSERVED_NAME]
    ours = pointwise_log_likelihood(idata, small_data)
    # prior draws reach log densities of -1e5, where 1e-10 is below double precision
    np.testing.assert_allclose(ours.values, ref.values, rtol=1e-13, atol=1e-10)


def test_log_likelihood_equals_scipy(rows_fit, small_data):
    _, idata = rows_fit
    post = idata["posterior"]
    a = post["alpha"].values[..., small_data.region_idx]
    b = post["beta"].values[..., small_data.region_idx]
    s = post["sigma"].values[..., None]
    ref = stats.norm.logpdf(small_data.log_quantity, a + b * small_data.log_price, s)
    np.testing.assert_allclose(pointwise_log_likelihood(idata, small_data).values, ref, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_add_log_likelihood_enables_loo_on_a_fast_fit(small_data):
    """A fit of the 'sufficient' form stores no likelihood; LOO works after adding it and
    matches LOO on the same draws with PyMC's pointwise likelihood."""
    import arviz as az

    idata = fit(build_model("baseline", small_data), nuts_sampler="pymc", chains=2, draws=500, tune=500,
                cores=1, random_seed=11)
    assert "log_likelihood" not in idata.children
    with pytest.raises(TypeError):
        az.loo(idata)
    add_log_likelihood(idata, small_data)
    ours = az.loo(idata)
    with build_model("baseline", small_data, likelihood="rows"):
        ref_ll = pm.compute_log_likelihood(idata, extend_inferencedata=False, progressbar=False)
    ref = idata.copy()
    ref["log_likelihood"] = ref_ll
    assert ours.elpd == pytest.approx(az.loo(ref).elpd, abs=1e-8)
    assert list(idata["log_likelihood"].data_vars) == [OBSERVED_NAME]
    assert idata["log_likelihood"][OBSERVED_NAME].dims == ("chain", "draw", "obs")


# --- posterior predictive -------------------------------------------------------------

def _mc_tolerance(sd, n, p):
    """Four standard errors of the difference of two independent p-quantile estimates of a Normal."""
    z = stats.norm.ppf(p)
    se = np.sqrt(p * (1 - p) / n) / stats.norm.pdf(z) * sd
    return 4 * np.sqrt(2) * se


def _pymc_predictions(model, idata, data, log_price, group, seed):
    """PyMC's own posterior predictive draws of log quantity at new prices (the reference answer).

    The model's data are swapped for the new prices and restored afterwards, so the
    module-scoped fit can be reused by later tests.
    """
    with model:
        pm.set_data({"log_price": log_price, "group_idx": group}, coords={"obs": np.arange(len(group))})
        ref = pm.sample_posterior_predictive(idata, var_names=[OBSERVED_NAME], predictions=True,
                                             random_seed=seed, progressbar=False)
        pm.set_data({"log_price": data.log_price, "group_idx": data.region_idx}, coords={"obs": data.coords["obs"]})
    return ref["predictions"][OBSERVED_NAME].values.reshape(-1, len(group))


@pytest.mark.slow
def test_posterior_predictive_matches_pymc_with_set_data(rows_fit, small_data):
    """Draws at new prices agree with pm.sample_posterior_predictive after pm.set_data."""
    model, idata = rows_fit
    grid = price_grid(small_data, n_points=5)
    group = np.repeat(np.arange(small_data.n_regions), 5)
    log_price = np.log(grid.values.ravel())
    theirs = _pymc_predictions(model, idata, small_data, log_price, group, seed=21)
    ours = posterior_predictive_draws(idata, group, log_price, seed=21).values.reshape(-1, len(group))
    n = ours.shape[0]
    sd = theirs.std(axis=0)
    np.testing.assert_array_less(np.abs(ours.mean(0) - theirs.mean(0)), 4 * np.sqrt(2) * sd / np.sqrt(n))
    np.testing.assert_allclose(ours.std(0), sd, rtol=0.1)
    for p in (0.03, 0.5, 0.97):
        diff = np.abs(np.quantile(ours, p, axis=0) - np.quantile(theirs, p, axis=0))
        np.testing.assert_array_less(diff, _mc_tolerance(sd, n, p))


@pytest.mark.slow
def test_predictive_bands_match_pymc(rows_fit, small_data):
    model, idata = rows_fit
    bands = predictive_bands(idata, small_data, n_points=4, prob=0.9, seed=5)
    group = np.repeat(np.arange(small_data.n_regions), 4)
    log_price = np.log(bands["price"].values.ravel())
    theirs = _pymc_predictions(model, idata, small_data, log_price, group, seed=8)
    n, sd = theirs.shape[0], theirs.std(axis=0)
    for name, p in (("pred_lower", 0.05), ("pred_upper", 0.95)):
        ours = np.log(bands[name].values.ravel())
        np.testing.assert_array_less(np.abs(ours - np.quantile(theirs, p, axis=0)), _mc_tolerance(sd, n, p))


def test_predictive_bands_median_curve_is_exact(rows_fit, small_data):
    """The curve quantities are functions of the posterior draws alone (no noise)."""
    _, idata = rows_fit
    bands = predictive_bands(idata, small_data, n_points=3, prob=0.8, seed=1)
    post = idata["posterior"]
    for r in range(small_data.n_regions):
        x = np.log(bands["price"].values[r])
        curve = np.exp(post["alpha"].values[..., r, None] + post["beta"].values[..., r, None] * x).reshape(-1, 3)
        np.testing.assert_allclose(bands["median"].values[r], np.quantile(curve, 0.5, axis=0), rtol=1e-12)
        np.testing.assert_allclose(bands["curve_lower"].values[r], np.quantile(curve, 0.1, axis=0), rtol=1e-12)
        np.testing.assert_allclose(bands["curve_upper"].values[r], np.quantile(curve, 0.9, axis=0), rtol=1e-12)


def test_predictive_bands_order_and_seed(rows_fit, small_data):
    _, idata = rows_fit
    a = predictive_bands(idata, small_data, n_points=6, seed=3)
    b = predictive_bands(idata, small_data, n_points=6, seed=3)
    c = predictive_bands(idata, small_data, n_points=6, seed=4)
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a["pred_lower"], c["pred_lower"])
    assert (a["pred_lower"] < a["curve_lower"]).all() and (a["curve_lower"] <= a["median"]).all()
    assert (a["median"] <= a["curve_upper"]).all() and (a["curve_upper"] < a["pred_upper"]).all()
    assert a.sizes == {"region": small_data.n_regions, "point": 6}
    assert a.attrs["prob"] == 0.94


def test_price_grid_spans_each_region(small_data):
    grid = price_grid(small_data, n_points=7)
    price = np.exp(small_data.log_price)
    for r in range(small_data.n_regions):
        mask = small_data.region_idx == r
        assert grid.values[r, 0] == pytest.approx(price[mask].min())
        assert grid.values[r, -1] == pytest.approx(price[mask].max())
        assert np.all(np.diff(grid.values[r]) >= 0)


@pytest.mark.parametrize("n_points", [1, 0, 2.0])
def test_price_grid_rejects_bad_sizes(small_data, n_points):
    with pytest.raises(ValueError, match="n_points"):
        price_grid(small_data, n_points=n_points)


def test_predictive_bands_rejects_bad_prob(rows_fit, small_data):
    with pytest.raises(ValueError, match="prob"):
        predictive_bands(rows_fit[1], small_data, prob=1.0)


@pytest.mark.slow
def test_add_posterior_predictive_matches_pymc_on_observed_rows(rows_fit, small_data):
    model, idata = rows_fit
    mine = add_posterior_predictive(idata.copy(), small_data, seed=9)
    with model:
        ref = pm.sample_posterior_predictive(idata, random_seed=9, progressbar=False)
    ours = mine["posterior_predictive"][OBSERVED_NAME]
    theirs = ref["posterior_predictive"][OBSERVED_NAME]
    assert ours.dims == theirs.dims == ("chain", "draw", "obs")
    n = ours.sizes["chain"] * ours.sizes["draw"]
    sd = theirs.std(("chain", "draw")).values
    diff = np.abs(ours.mean(("chain", "draw")).values - theirs.mean(("chain", "draw")).values)
    np.testing.assert_array_less(diff, 4 * np.sqrt(2) * sd / np.sqrt(n))
    np.testing.assert_array_equal(mine["observed_data"][OBSERVED_NAME].values, small_data.log_quantity)
    np.testing.assert_array_equal(ref["observed_data"][OBSERVED_NAME].values, small_data.log_quantity)


def test_add_posterior_predictive_is_seeded_and_keeps_other_groups(rows_fit, small_data):
    _, idata = rows_fit
    a = add_posterior_predictive(idata.copy(), small_data, seed=1)
    b = add_posterior_predictive(idata.copy(), small_data, seed=1)
    c = add_posterior_predictive(idata.copy(), small_data, seed=2)
    np.testing.assert_array_equal(a["posterior_predictive"][OBSERVED_NAME], b["posterior_predictive"][OBSERVED_NAME])
    assert not np.allclose(a["posterior_predictive"][OBSERVED_NAME], c["posterior_predictive"][OBSERVED_NAME])
    assert {"posterior", "sample_stats"} <= set(a.children)


@pytest.mark.slow
def test_store_level_fits_use_store_effects(small_data):
    idata = _prior_as_posterior("store_multilevel", small_data, draws=10)
    mu, _ = row_effects(idata, small_data.store_idx, small_data.log_price)
    post = idata["posterior"]
    expected = (post["alpha_store"].values[..., small_data.store_idx]
                + post["beta_store"].values[..., small_data.store_idx] * small_data.log_price)
    np.testing.assert_allclose(mu.values, expected, rtol=1e-12)


# --- bad input ------------------------------------------------------------------------

def test_row_effects_rejects_bad_input(rows_fit):
    _, idata = rows_fit
    n = idata["posterior"].sizes["region"]
    with pytest.raises(ValueError, match="outside"):
        row_effects(idata, [0, n], [0.1, 0.2])
    with pytest.raises(ValueError, match="integer"):
        row_effects(idata, [0.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        row_effects(idata, [0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        row_effects(idata, [0, 1], [0.1, np.nan])


def test_missing_effects_are_reported(small_data):
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"sigma": (("chain", "draw"), np.ones((1, 3)))})})
    with pytest.raises(ValueError, match="'alpha' and 'beta'"):
        pointwise_log_likelihood(tree, small_data)
    with pytest.raises(ValueError, match="no 'posterior'"):
        pointwise_log_likelihood(xr.DataTree(), small_data)


def test_device_arrays_from_jax_samplers_are_accepted(rows_fit, small_data):
    """NumPyro fits hold JAX arrays, which xarray cannot index with 2-D indexers."""
    jnp = pytest.importorskip("jax.numpy")
    _, idata = rows_fit
    post = idata["posterior"].to_dataset()
    on_device = xr.Dataset({k: (v.dims, jnp.asarray(v.values)) for k, v in post.data_vars.items()}, coords=post.coords)
    tree = xr.DataTree.from_dict({"posterior": on_device})
    # (JAX may hold the draws in single precision unless 64-bit mode is on)
    xr.testing.assert_allclose(predictive_bands(tree, small_data, n_points=3, seed=2),
                               predictive_bands(idata, small_data, n_points=3, seed=2), rtol=1e-5)
    np.testing.assert_allclose(pointwise_log_likelihood(tree, small_data).values,
                               pointwise_log_likelihood(idata, small_data).values, rtol=1e-5, atol=1e-5)
