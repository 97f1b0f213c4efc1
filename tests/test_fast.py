"""What makes the fits fast must not change what they compute.

* The "sufficient" and "marginal" forms carry no array of one value per row: their
  log-density graph is the same, node for node, for a market ten times as long.
* The "marginal" form (group effects integrated out, then drawn from their exact
  conditional) gives the posterior of the row-level model, within Monte Carlo error.
* PSIS-LOO from the pointwise log-likelihood computed after sampling equals
  :func:`arviz.loo` on PyMC's own pointwise log-likelihood of the row-level model, for
  the same posterior draws.

That the "sufficient" log-density equals the row-level one at random points, for every
model kind, is checked in ``test_models.py``; speed itself is measured by
``benchmarks/inference.py``, not here.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytest
import xarray as xr
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import ancestors
from scipy import stats

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market
from elasticity_lib.inference import add_group_effects, convergence_report, fit
from elasticity_lib.models import build_model
from elasticity_lib.predict import add_log_likelihood, pointwise_log_likelihood

FAST = {"mode": "FAST_COMPILE"}
FAST_FORMS = [
    ("baseline", "sufficient"),
    ("multilevel", "sufficient"),
    ("multilevel", "marginal"),
    ("correlated", "sufficient"),
    ("correlated", "marginal"),
    ("store_multilevel", "sufficient"),
    ("store_multilevel", "marginal"),
]

#: A market small enough to fit twice in seconds, large enough for a sharp posterior.
COMPARE_CONFIG = SimulationConfig(n_regions=5, stores_mu=4.0, time_steps_mu=10.0)
COMPARE_SEED = 31


def _market(time_steps_mu: float):
    # Store counts and incomes are drawn before the histories, so with one seed a longer
    # mean history changes the number of rows and nothing else about the market's shape.
    config = COMPARE_CONFIG.model_copy(update={"time_steps_mu": time_steps_mu})
    return prepare_data(simulate_market(config, seed=COMPARE_SEED).to_dataframe())


@pytest.fixture(scope="module")
def short_and_long():
    short, long = _market(10.0), _market(100.0)
    assert (short.n_regions, short.n_stores) == (long.n_regions, long.n_stores)
    assert long.n_obs > 8 * short.n_obs
    return short, long


def _data_arrays(model):
    """Shapes of the constants and shared (``pm.Data``) arrays the log-density depends on."""
    graph = model.logp()
    return [np.shape(v.data if isinstance(v, Constant) else v.get_value())
            for v in ancestors([graph]) if isinstance(v, (Constant, SharedVariable))]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "likelihood"), FAST_FORMS)
def test_fast_forms_hold_no_array_per_row(short_and_long, kind, likelihood):
    short, long = short_and_long
    shapes = {}
    for name, data in [("short", short), ("long", long)]:
        model = build_model(kind, data, likelihood)
        shapes[name] = _data_arrays(model)
        # nothing in the graph has the length of the table
        assert all(data.n_obs not in shape for shape in shapes[name]), (kind, likelihood, name)
        assert "obs" not in model.coords
    # and the graph is the same for ten times the rows: same arrays, same compiled nodes
    assert sorted(shapes["short"]) == sorted(shapes["long"])
    n_nodes = [len(build_model(kind, d, likelihood).compile_logp(**FAST).f.maker.fgraph.apply_nodes) for d in (short, long)]
    assert n_nodes[0] == n_nodes[1]


def test_the_row_form_does_hold_arrays_per_row(short_and_long):
    # the check above can fail: the row-level model carries the rows
    short, _ = short_and_long
    shapes = _data_arrays(build_model("multilevel", short, "rows"))
    assert any(short.n_obs in shape for shape in shapes)


# --- the reference set-up is a different prior, not a different likelihood -----------


@pytest.mark.parametrize(("kind", "likelihood"), [("multilevel", "rows"), ("multilevel", "marginal"),
                                                  ("correlated", "sufficient"), ("store_multilevel", "marginal")])
@pytest.mark.slow
def test_reference_set_up_has_the_same_likelihood(short_and_long, kind, likelihood):
    # centre_income=False samples a0, a1, b0, b1 on the original scale with the reference's
    # priors; the book's models sample centred coordinates with their own priors. At
    # corresponding points (same original-scale lines and deviations) the two
    # log-densities differ only by their priors: the likelihoods agree.
    data = short_and_long[0]
    raw = build_model(kind, data, likelihood, centre_income=False)
    ours = build_model(kind, data, likelihood)
    assert "a0" in [v.name for v in raw.free_RVs] and "a0_centred" in [v.name for v in ours.free_RVs]
    names = ["alpha_mean", "beta_mean"]
    f_raw = raw.compile_fn(raw.replace_rvs_by_values([raw[n] for n in names]), inputs=raw.value_vars,
                           on_unused_input="ignore", **FAST)
    f_ours = ours.compile_fn(ours.replace_rvs_by_values([ours[n] for n in names]), inputs=ours.value_vars,
                             on_unused_input="ignore", **FAST)
    point = {k: v + 0.3 for k, v in ours.initial_point().items()}
    m_alpha, m_beta = f_ours(point)
    # the raw line through the same region means: least squares on the income (exact for 2 regions+)
    design = np.column_stack([np.ones(data.n_regions), data.income])
    (a0, a1), *_ = np.linalg.lstsq(design, m_alpha, rcond=None)
    (b0, b1), *_ = np.linalg.lstsq(design, m_beta, rcond=None)
    raw_point = {k: v for k, v in point.items() if k not in ("a0_centred", "a1_std", "b0_centred", "b1_std")}
    raw_point.update(a0=np.asarray(a0), a1=np.asarray(a1), b0=np.asarray(b0), b1=np.asarray(b1))
    np.testing.assert_allclose(f_raw(raw_point)[1], m_beta, rtol=1e-9)
    np.testing.assert_allclose(f_raw(raw_point)[0], m_alpha, rtol=1e-9)


def test_centre_income_must_be_a_bool(short_and_long):
    with pytest.raises(ValueError, match="centre_income must be True or False, got 'no'"):
        build_model("multilevel", short_and_long[0], centre_income="no")


# --- the marginal form against the row-level model, by sampling -------------------------

COMPARED = ["a0", "a1", "b0", "b1", "sigma", "sigma_a", "sigma_b", "alpha", "beta"]


@pytest.fixture(scope="module")
def two_fits(short_and_long):
    """The multilevel model fitted in its fast default form and in its row-level form."""
    data = short_and_long[0]
    marginal = fit(build_model("multilevel", data, "marginal"))
    # the non-centred row-level form needs small steps on a market this small
    rows = fit(build_model("multilevel", data, "rows"), target_accept=0.99)
    return data, marginal, rows


def test_marginal_form_fit_is_healthy(two_fits):
    _, marginal, _ = two_fits
    report = convergence_report(marginal)
    assert report.divergences == 0
    assert report.max_rhat <= 1.01
    assert report.min_ess_bulk >= 1000


def test_marginal_and_row_posteriors_agree_within_monte_carlo_error(two_fits):
    # Two independent fits of the same posterior: each difference of posterior means
    # (and of posterior sds) is within 4 of its Monte Carlo standard errors, combined.
    # The exact draws of alpha and beta from their conditional make the marginal fit's
    # region effects comparable with the row model's sampled ones.
    _, marginal, rows = two_fits
    a = az.summary(marginal, var_names=COMPARED, round_to="none")
    b = az.summary(rows, var_names=COMPARED, round_to="none")
    assert list(a.index) == list(b.index) and len(a) == 7 + 2 * COMPARE_CONFIG.n_regions
    z_mean = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    z_sd = (a["sd"] - b["sd"]) / np.sqrt(a["mcse_sd"] ** 2 + b["mcse_sd"] ** 2)
    assert np.all(np.abs(z_mean) < 4), z_mean.round(2).to_dict()
    assert np.all(np.abs(z_sd) < 4), z_sd.round(2).to_dict()


def test_posterior_comparison_detects_a_shifted_elasticity(two_fits):
    # the comparison has power: shifting the marginal fit's elasticities by one posterior
    # sd of the smallest region breaks it
    _, marginal, rows = two_fits
    post = marginal["posterior"].to_dataset()
    shift = float(post["beta"].std(("chain", "draw")).min())
    moved = xr.DataTree.from_dict({"posterior": post.assign(beta=post["beta"] + shift)})
    a = az.summary(moved, var_names=["beta"], round_to="none")
    b = az.summary(rows, var_names=["beta"], round_to="none")
    z_mean = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    assert np.any(np.abs(z_mean) > 4)


# --- LOO without a stored likelihood --------------------------------------------------


@pytest.mark.slow
def test_loo_from_post_hoc_likelihood_equals_pymc_on_the_row_model(two_fits):
    data, marginal, _ = two_fits
    assert "log_likelihood" not in marginal.children
    ours = az.loo(add_log_likelihood(marginal.copy(), data))

    # The same draws on the row-level model: its free variables are the standardised
    # region deviations, which follow from the drawn effects.
    post = marginal["posterior"].to_dataset()
    # deviations are defined at the mean log price: alpha - alpha_mean = sigma_a z_a - x_c sigma_b z_b
    x_c = data.centring.log_price
    post["z_b"] = (post["beta"] - post["beta_mean"]) / post["sigma_b"]
    post["z_a"] = (post["alpha"] - post["alpha_mean"] + x_c * (post["beta"] - post["beta_mean"])) / post["sigma_a"]
    with build_model("multilevel", data, "rows"):
        pymc_ll = pm.compute_log_likelihood(xr.DataTree.from_dict({"posterior": post}),
                                            extend_inferencedata=False, progressbar=False)
    # az.loo's relative efficiency uses every posterior variable: keep the fit's own
    reference = marginal.copy()
    reference["log_likelihood"] = pymc_ll
    ref = az.loo(reference)

    np.testing.assert_allclose(pointwise_log_likelihood(marginal, data).values,
                               pymc_ll["log_quantity"].values, rtol=0, atol=1e-10)
    assert ours.elpd == pytest.approx(ref.elpd, rel=1e-10)
    assert ours.p == pytest.approx(ref.p, rel=1e-8)
    np.testing.assert_allclose(ours.pareto_k.values, ref.pareto_k.values, rtol=0, atol=1e-10)


# --- the store-level model: stores and regions both integrated out --------------------


def _at_log_price_zero(cov_centred, x_c):
    """Covariance of (intercept at log price 0, slope) from that of (intercept at x_c, slope)."""
    shear = np.array([[1.0, -x_c], [0.0, 1.0]])
    return shear @ cov_centred @ shear.T


def _nested_brute_force(data, m_alpha, m_beta, s_cov, t_cov, sigma):
    """Per region: the rows' Gaussian (all stores of the region), and the joint conditional
    of (region effect, store effects) given those rows, by dense linear algebra."""
    out = []
    for r in range(data.n_regions):
        stores = np.flatnonzero(data.store_region_idx == r)
        rows = np.isin(data.store_idx, stores)
        x, y, s_of_row = data.log_price[rows], data.log_quantity[rows], data.store_idx[rows]
        X = np.column_stack([np.ones(len(x)), x])
        # effects phi = (region effect, then each store's deviation), y = Z phi + noise
        k = len(stores)
        Z = np.zeros((len(x), 2 * (k + 1)))
        Z[:, :2] = X
        for j, s in enumerate(stores):
            Z[s_of_row == s, 2 * (j + 1):2 * (j + 2)] = X[s_of_row == s]
        prior_mean = np.concatenate([[m_alpha[r], m_beta[r]], np.zeros(2 * k)])
        prior_cov = np.zeros((2 * (k + 1), 2 * (k + 1)))
        prior_cov[:2, :2] = s_cov
        for j in range(k):
            prior_cov[2 * (j + 1):2 * (j + 2), 2 * (j + 1):2 * (j + 2)] = t_cov
        cov_y = sigma**2 * np.eye(len(x)) + Z @ prior_cov @ Z.T
        loglik = stats.multivariate_normal(Z @ prior_mean, cov_y).logpdf(y)
        gain = prior_cov @ Z.T @ np.linalg.inv(cov_y)
        post_mean = prior_mean + gain @ (y - Z @ prior_mean)
        post_cov = prior_cov - gain @ Z @ prior_cov
        # store effect = region effect + deviation
        to_effects = np.zeros((2 * (k + 1), 2 * (k + 1)))
        to_effects[:2, :2] = np.eye(2)
        for j in range(k):
            to_effects[2 * (j + 1):2 * (j + 2), :2] = np.eye(2)
            to_effects[2 * (j + 1):2 * (j + 2), 2 * (j + 1):2 * (j + 2)] = np.eye(2)
        out.append((stores, loglik, to_effects @ post_mean, to_effects @ post_cov @ to_effects.T))
    return out


@pytest.mark.slow
def test_store_level_marginal_is_the_two_level_gaussian_integral(small_data):
    model = build_model("store_multilevel", small_data, "marginal")
    logp = model.compile_logp(**FAST)
    prior_logp = model.compile_logp(vars=model.free_RVs, **FAST)
    names = ["alpha_mean", "beta_mean", "sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b", "sigma"]
    fn = model.compile_fn(model.replace_rvs_by_values([model[n] for n in names]), inputs=model.value_vars,
                          on_unused_input="ignore", **FAST)
    rng = np.random.default_rng(8)
    for _ in range(4):
        point = {k: v + rng.normal(0.0, 0.7, np.shape(v)) for k, v in model.initial_point().items()}
        v = dict(zip(names, fn(point)))
        x_c = small_data.centring.log_price
        parts = _nested_brute_force(small_data, v["alpha_mean"], v["beta_mean"],
                                    _at_log_price_zero(np.diag([v["sigma_a"] ** 2, v["sigma_b"] ** 2]), x_c),
                                    _at_log_price_zero(np.diag([v["sigma_store_a"] ** 2, v["sigma_store_b"] ** 2]), x_c),
                                    v["sigma"])
        expected = sum(p[1] for p in parts)
        assert logp(point) == pytest.approx(prior_logp(point) + expected, rel=1e-8)


def test_store_level_effects_are_drawn_from_their_exact_conditional(small_data):
    # One fixed set of population parameters and scales per chain, 3,000 draws each: the
    # drawn region and store effects match the dense-algebra conditional (means within 5
    # standard errors, covariances within 5 standard errors of a sample covariance).
    n = 3000
    rng = np.random.default_rng(9)
    model = build_model("store_multilevel", small_data, "marginal")
    chains = [{"alpha_mean": rng.normal(1.0, 0.2, small_data.n_regions), "beta_mean": rng.normal(-3.0, 0.5, small_data.n_regions),
               "sigma_a": rng.uniform(0.05, 0.3), "sigma_b": rng.uniform(0.1, 0.6), "sigma_store_a": rng.uniform(0.05, 0.3),
               "sigma_store_b": rng.uniform(0.1, 0.6), "sigma": rng.uniform(0.2, 0.5)} for _ in range(2)]
    ds = {name: xr.DataArray(np.stack([np.broadcast_to(c[name], (n, *np.shape(c[name]))) for c in chains]),
                             dims=("chain", "draw", *(("region",) if np.ndim(chains[0][name]) else ())))
          for name in chains[0]}
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset(ds, coords={"region": small_data.coords["region"]})})
    post = add_group_effects(idata, model, seed=5)["posterior"]
    assert post["alpha_store"].dims == ("chain", "draw", "store") and post["beta"].dims == ("chain", "draw", "region")
    for c, p in enumerate(chains):
        x_c = small_data.centring.log_price
        parts = _nested_brute_force(small_data, p["alpha_mean"], p["beta_mean"],
                                    _at_log_price_zero(np.diag([p["sigma_a"] ** 2, p["sigma_b"] ** 2]), x_c),
                                    _at_log_price_zero(np.diag([p["sigma_store_a"] ** 2, p["sigma_store_b"] ** 2]), x_c),
                                    p["sigma"])
        for r, (stores, _, mean, cov) in enumerate(parts):
            drawn = [post["alpha"].values[c, :, r], post["beta"].values[c, :, r]]
            for s in stores:
                drawn += [post["alpha_store"].values[c, :, s], post["beta_store"].values[c, :, s]]
            drawn = np.column_stack(drawn)
            se_mean = np.sqrt(np.diag(cov) / n)
            assert np.all(np.abs(drawn.mean(0) - mean) < 5 * se_mean), (c, r)
            # the 2x2 blocks: each effect's own covariance, and region with store
            sample_cov = np.cov(drawn.T)
            se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
            assert np.all(np.abs(sample_cov - cov) < 5 * se_cov), (c, r)


def test_store_level_draws_do_not_depend_on_the_order_of_stores(small_data):
    # Region draws add up each region's stores; with the stores listed in another order
    # (not grouped by region) the sums, and so the region draws, must be the same.
    import dataclasses

    perm = np.random.default_rng(3).permutation(small_data.n_stores)  # old store k -> new position perm[k]
    region_of_new = np.empty_like(small_data.store_region_idx)
    region_of_new[perm] = small_data.store_region_idx
    assert np.any(np.diff(region_of_new) < 0)
    shuffled = dataclasses.replace(small_data, store_idx=perm[small_data.store_idx], store_region_idx=region_of_new,
                                   coords={**small_data.coords, "store": list(np.asarray(small_data.coords["store"])[np.argsort(perm)])})
    rng = np.random.default_rng(4)
    post = xr.Dataset({"alpha_mean": (("chain", "draw", "region"), rng.normal(1.0, 0.1, (2, 50, small_data.n_regions))),
                       "beta_mean": (("chain", "draw", "region"), rng.normal(-3.0, 0.2, (2, 50, small_data.n_regions))),
                       **{k: (("chain", "draw"), rng.uniform(0.05, 0.3, (2, 50)))
                          for k in ["sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b"]},
                       "sigma": (("chain", "draw"), rng.uniform(0.2, 0.4, (2, 50)))},
                      coords={"region": small_data.coords["region"]})
    draws = [add_group_effects(xr.DataTree.from_dict({"posterior": post}), build_model("store_multilevel", d), seed=1)["posterior"]
             for d in (small_data, shuffled)]
    np.testing.assert_allclose(draws[0]["beta"].values, draws[1]["beta"].values, rtol=1e-10)
    np.testing.assert_allclose(draws[0]["alpha"].values, draws[1]["alpha"].values, rtol=1e-10)


def test_sampling_settings_send_large_models_to_nutpie_and_respect_a_named_sampler():
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.data.simulation import SimulationConfig, simulate_market
    from elasticity_lib.inference import NUTPIE_FROM_TERMS, SAMPLING_DEFAULTS, sampling_settings
    from elasticity_lib.models import build_model

    config = SimulationConfig(n_regions=60, time_steps_mu=3.0, min_time_steps=1)
    data = prepare_data(simulate_market(config, seed=5).to_dataframe())
    assert data.n_stores >= NUTPIE_FROM_TERMS > data.n_regions
    assert sampling_settings(build_model("store_multilevel", data))["nuts_sampler"] == "nutpie"
    assert sampling_settings(build_model("multilevel", data))["nuts_sampler"] == SAMPLING_DEFAULTS["nuts_sampler"]
    named = sampling_settings(build_model("store_multilevel", data), nuts_sampler="pymc", draws=10)
    assert named["nuts_sampler"] == "pymc" and named["draws"] == 10


def test_a_kind_can_add_its_own_sampler_settings(small_data):
    from elasticity_lib.inference import KIND_SAMPLING, SAMPLING_DEFAULTS, sampling_settings
    from elasticity_lib.models import build_model

    correlated = sampling_settings(build_model("correlated", small_data))
    assert correlated["target_accept"] == KIND_SAMPLING["correlated"]["target_accept"] > SAMPLING_DEFAULTS["target_accept"]
    assert sampling_settings(build_model("multilevel", small_data))["target_accept"] == SAMPLING_DEFAULTS["target_accept"]
    # what the caller names wins over the kind's settings
    assert sampling_settings(build_model("correlated", small_data), target_accept=0.8)["target_accept"] == 0.8
