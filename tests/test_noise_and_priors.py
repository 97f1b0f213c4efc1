"""A residual sd per store, and the priors of the group scales.

The store-level model with ``noise="by_store"`` must define one posterior in its three
forms: "sufficient" equals "rows" at every point, and "marginal" equals the Gaussian
integral over region and store effects with each row's noise variance that of its
store (dense linear algebra with SciPy). The store and region effects drawn after a
marginal fit must follow their exact conditional given the per-store sds. Scale priors
are validated by pydantic and must reach the model.
"""

from __future__ import annotations

import json

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from conftest import random_point
from pydantic import ValidationError
from scipy import stats

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.inference import add_group_effects
from elasticity_lib.models import (
    NOISE_MODELS,
    PRIORS,
    ExponentialPrior,
    HalfNormalPrior,
    ModelSpec,
    ScalePriors,
    build_model,
    spec_attributes,
)
from elasticity_lib.predict import OBSERVED_NAME, pointwise_log_likelihood
from elasticity_lib.pricing import price_posterior

FAST = {"mode": "FAST_COMPILE"}
LIKELIHOODS = ["rows", "sufficient", "marginal"]


def _values(model, names, point):
    fn = model.compile_fn(model.replace_rvs_by_values([model[n] for n in names]), inputs=model.value_vars,
                          on_unused_input="ignore", **FAST)
    return dict(zip(names, fn(point)))


def _at_log_price_zero(cov_centred, x_c):
    shear = np.array([[1.0, -x_c], [0.0, 1.0]])
    return shear @ cov_centred @ shear.T


def _dense_two_level(data, m_alpha, m_beta, s_cov, t_cov, sigma_store):
    """Per region: log N(rows) with region and store effects integrated out, and the joint
    conditional of (region effect, store effects), each row with its store's noise sd."""
    out = []
    for r in range(data.n_regions):
        stores = np.flatnonzero(data.store_region_idx == r)
        rows = np.isin(data.store_idx, stores)
        x, y, s_of_row = data.log_price[rows], data.log_quantity[rows], data.store_idx[rows]
        X = np.column_stack([np.ones(len(x)), x])
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
        cov_y = np.diag(sigma_store[s_of_row] ** 2) + Z @ prior_cov @ Z.T
        loglik = stats.multivariate_normal(Z @ prior_mean, cov_y).logpdf(y)
        gain = prior_cov @ Z.T @ np.linalg.inv(cov_y)
        post_mean = prior_mean + gain @ (y - Z @ prior_mean)
        post_cov = prior_cov - gain @ Z @ prior_cov
        to_effects = np.eye(2 * (k + 1))
        for j in range(k):
            to_effects[2 * (j + 1):2 * (j + 2), :2] = np.eye(2)
        out.append((stores, loglik, to_effects @ post_mean, to_effects @ post_cov @ to_effects.T))
    return out


# --- a residual sd per store ------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_by_store_noise_has_one_sd_per_store(small_data, likelihood):
    model = build_model("store_multilevel", small_data, likelihood, noise="by_store")
    free = {v.name for v in model.free_RVs}
    assert {"sigma_0", "tau_sigma", "log_sigma"} <= free and "sigma" not in free
    assert model.named_vars_to_dims["sigma"] == ("store",)
    assert model.elasticity_spec.noise == "by_store"
    common = build_model("store_multilevel", small_data, likelihood)
    assert "sigma" in {v.name for v in common.free_RVs} and common.elasticity_spec.noise == "common"


def test_by_store_sufficient_log_density_equals_rows(small_data):
    rows = build_model("store_multilevel", small_data, "rows", noise="by_store")
    suff = build_model("store_multilevel", small_data, "sufficient", noise="by_store")
    logp_rows, logp_suff = rows.compile_logp(**FAST), suff.compile_logp(**FAST)
    rng = np.random.default_rng(21)
    for _ in range(5):
        point = random_point(rows, rng)
        assert logp_suff(point) == pytest.approx(logp_rows(point), rel=1e-8)


def test_by_store_marginal_is_the_two_level_gaussian_integral(small_data):
    model = build_model("store_multilevel", small_data, "marginal", noise="by_store")
    logp = model.compile_logp(**FAST)
    prior_logp = model.compile_logp(vars=model.free_RVs, **FAST)
    names = ["alpha_mean", "beta_mean", "sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b", "sigma"]
    rng = np.random.default_rng(22)
    x_c = small_data.centring.log_price
    for _ in range(4):
        point = random_point(model, rng)
        v = _values(model, names, point)
        assert np.ptp(np.log(v["sigma"])) > 0.1  # the stores' sds really differ
        parts = _dense_two_level(small_data, v["alpha_mean"], v["beta_mean"],
                                 _at_log_price_zero(np.diag([v["sigma_a"] ** 2, v["sigma_b"] ** 2]), x_c),
                                 _at_log_price_zero(np.diag([v["sigma_store_a"] ** 2, v["sigma_store_b"] ** 2]), x_c),
                                 v["sigma"])
        assert logp(point) == pytest.approx(prior_logp(point) + sum(p[1] for p in parts), rel=1e-8)


def test_by_store_prior_of_the_sds_is_the_stated_log_normal(small_data):
    # Every term of the noise prior by hand: sigma_0 and tau_sigma with the log-Jacobian of
    # their log transform, and log sigma_s ~ Normal(log sigma_0, tau_sigma).
    model = build_model("store_multilevel", small_data, "marginal", noise="by_store")
    noise_logp = model.compile_logp(vars=[model["sigma_0"], model["tau_sigma"], model["log_sigma"]], **FAST)
    rng = np.random.default_rng(23)
    for _ in range(3):
        p = random_point(model, rng)
        s0, tau = float(np.exp(p["sigma_0_log__"])), float(np.exp(p["tau_sigma_log__"]))
        expected = (stats.expon(scale=1 / PRIORS["sigma_rate"]).logpdf(s0) + np.log(s0)
                    + stats.expon(scale=1 / PRIORS["sigma_spread_rate"]).logpdf(tau) + np.log(tau)
                    + stats.norm(np.log(s0), tau).logpdf(p["log_sigma"]).sum())
        assert noise_logp(p) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_by_store_model_does_not_depend_on_units(small_table, likelihood):
    """Quantities x1000, prices x100, income x1000: the log density shifts by a constant."""
    other = small_table.copy()
    other["quantities"] *= 1000.0
    other["price"] *= 100.0
    other["median_income"] *= 1000.0
    other = other.drop(columns=[c for c in ("log_price", "log_quantities") if c in other])
    a = build_model("store_multilevel", prepare_data(small_table), likelihood, noise="by_store")
    b = build_model("store_multilevel", prepare_data(other), likelihood, noise="by_store")
    logp_a, logp_b = a.compile_logp(**FAST), b.compile_logp(**FAST)
    rng = np.random.default_rng(24)
    diffs = [logp_a(p) - logp_b(p) for p in (random_point(a, rng) for _ in range(4))]
    assert np.ptp(diffs) < 1e-7


def test_by_store_effects_are_drawn_from_their_exact_conditional(small_data):
    # Fixed parameters per chain with very different store sds: the drawn region and store
    # effects match the dense conditional (means and covariances within 5 standard errors).
    n = 3000
    rng = np.random.default_rng(25)
    model = build_model("store_multilevel", small_data, "marginal", noise="by_store")
    chains = [{"alpha_mean": rng.normal(1.0, 0.2, small_data.n_regions),
               "beta_mean": rng.normal(-3.0, 0.5, small_data.n_regions),
               "sigma_a": rng.uniform(0.05, 0.3), "sigma_b": rng.uniform(0.1, 0.6),
               "sigma_store_a": rng.uniform(0.05, 0.3), "sigma_store_b": rng.uniform(0.1, 0.6),
               "sigma": rng.uniform(0.05, 0.8, small_data.n_stores)} for _ in range(2)]
    dims = {"alpha_mean": ("region",), "beta_mean": ("region",), "sigma": ("store",)}
    ds = {name: xr.DataArray(np.stack([np.broadcast_to(c[name], (n, *np.shape(c[name]))) for c in chains]),
                             dims=("chain", "draw", *dims.get(name, ())))
          for name in chains[0]}
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset(
        ds, coords={"region": small_data.coords["region"], "store": small_data.coords["store"]})})
    post = add_group_effects(idata, model, seed=6)["posterior"]
    x_c = small_data.centring.log_price
    for c, p in enumerate(chains):
        parts = _dense_two_level(small_data, p["alpha_mean"], p["beta_mean"],
                                 _at_log_price_zero(np.diag([p["sigma_a"] ** 2, p["sigma_b"] ** 2]), x_c),
                                 _at_log_price_zero(np.diag([p["sigma_store_a"] ** 2, p["sigma_store_b"] ** 2]), x_c),
                                 p["sigma"])
        for r, (stores, _, mean, cov) in enumerate(parts):
            drawn = [post["alpha"].values[c, :, r], post["beta"].values[c, :, r]]
            for s in stores:
                drawn += [post["alpha_store"].values[c, :, s], post["beta_store"].values[c, :, s]]
            drawn = np.column_stack(drawn)
            assert np.all(np.abs(drawn.mean(0) - mean) < 5 * np.sqrt(np.diag(cov) / n)), (c, r)
            se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
            assert np.all(np.abs(np.cov(drawn.T) - cov) < 5 * se_cov), (c, r)


def test_pointwise_log_likelihood_uses_each_stores_sd(small_data):
    model = build_model("store_multilevel", small_data, "rows", noise="by_store")
    with model:
        prior = pm.sample_prior_predictive(draws=50, random_seed=4, compile_kwargs=FAST)
    idata = xr.DataTree.from_dict({"posterior": prior["prior"].to_dataset()})
    with model:
        ref = pm.compute_log_likelihood(idata, extend_inferencedata=False, progressbar=False)[OBSERVED_NAME]
    ours = pointwise_log_likelihood(idata, small_data)
    assert ours.dims == ("chain", "draw", "obs")
    np.testing.assert_allclose(ours.values, ref.values, rtol=1e-12, atol=1e-10)


def test_pricing_refuses_a_residual_sd_per_store(small_data):
    rng = np.random.default_rng(0)
    effects = xr.Dataset({"alpha": (("chain", "draw", "region"), rng.normal(5, 0.1, (1, 20, 2))),
                          "beta": (("chain", "draw", "region"), rng.normal(-2, 0.1, (1, 20, 2))),
                          "sigma": (("chain", "draw", "store"), rng.uniform(0.1, 0.2, (1, 20, 3)))})
    with pytest.raises(ValueError, match="residual sd per store"):
        price_posterior(effects, cost=1.0)


def test_noise_is_checked(small_data):
    assert NOISE_MODELS == ("common", "by_store")
    with pytest.raises(ValueError, match="unknown noise 'by_region'"):
        build_model("store_multilevel", small_data, noise="by_region")
    with pytest.raises(ValueError, match="store_multilevel model only"):
        build_model("multilevel", small_data, noise="by_store")


def test_spec_attributes_record_noise_and_scale_priors(small_data):
    model = build_model("store_multilevel", small_data, noise="by_store",
                        scale_priors={"sigma_b": {"family": "halfnormal", "sd": 0.5}})
    attrs = spec_attributes(model.elasticity_spec)
    assert attrs["elasticity_noise"] == "by_store"
    priors = json.loads(attrs["elasticity_scale_priors"])
    assert priors["sigma_b"] == {"family": "halfnormal", "sd": 0.5}
    assert priors["sigma_store_b"] == {"family": "exponential", "rate": PRIORS["store_sd_rate"]}
    assert spec_attributes(ModelSpec("store_multilevel", "marginal", small_data))["elasticity_noise"] == "common"
    assert "elasticity_noise" not in spec_attributes(build_model("multilevel", small_data).elasticity_spec)


# --- priors of the group scales ------------------------------------------------------------


@pytest.mark.parametrize(("priors", "field"), [
    ({"sigma_b": {"family": "exponential", "rate": 0.0}}, "sigma_b.exponential.rate"),
    ({"sigma_store_b": {"family": "halfnormal", "sd": -0.5}}, "sigma_store_b.halfnormal.sd"),
    ({"sigma_b": {"family": "halfnormal", "sd": float("inf")}}, "sigma_b.halfnormal.sd"),
    ({"sigma_b": {"family": "gamma", "alpha": 2.0}}, "sigma_b"),
    ({"sigma_b": {"family": "halfnormal", "rate": 2.0}}, "sigma_b.halfnormal"),
    ({"sigma_c": {"family": "halfnormal", "sd": 0.5}}, "sigma_c"),
])
def test_invalid_scale_priors_name_the_field(small_data, priors, field):
    with pytest.raises(ValidationError) as err:
        build_model("store_multilevel", small_data, scale_priors=priors)
    assert field in str(err.value)


def test_scale_priors_must_belong_to_the_kind(small_data):
    with pytest.raises(ValueError, match="sigma_store_b"):
        build_model("multilevel", small_data, scale_priors={"sigma_store_b": HalfNormalPrior(sd=0.5)})
    with pytest.raises(ValueError, match="'correlated' does not have"):
        build_model("correlated", small_data, scale_priors=ScalePriors(sigma_b=HalfNormalPrior(sd=0.5)))
    build_model("correlated", small_data, scale_priors={})  # nothing asked, nothing to refuse


@pytest.mark.parametrize("kind", ["multilevel", "store_multilevel"])
def test_scale_priors_reach_the_model(small_data, kind):
    priors = ScalePriors(sigma_b=HalfNormalPrior(sd=0.5), sigma_a=ExponentialPrior(rate=3.0))
    if kind == "store_multilevel":
        priors = priors.model_copy(update={"sigma_store_b": HalfNormalPrior(sd=0.2)})
    model = build_model(kind, small_data, scale_priors=priors)
    default = build_model(kind, small_data)
    rng = np.random.default_rng(26)
    expected = {"sigma_a": stats.expon(scale=1 / 3.0), "sigma_b": stats.halfnorm(scale=0.5),
                "sigma_store_a": stats.expon(scale=1 / PRIORS["store_sd_rate"]),
                "sigma_store_b": stats.halfnorm(scale=0.2)}
    names = ["sigma_a", "sigma_b"] + (["sigma_store_a", "sigma_store_b"] if kind == "store_multilevel" else [])
    for _ in range(3):
        point = random_point(model, rng)
        for name in names:
            v = float(np.exp(point[f"{name}_log__"]))
            logp = model.compile_logp(vars=[model[name]], **FAST)(point)
            assert logp == pytest.approx(expected[name].logpdf(v) + np.log(v), rel=1e-8), name
        # the default is the PRIORS exponential
        v = float(np.exp(point["sigma_b_log__"]))
        default_logp = default.compile_logp(vars=[default["sigma_b"]], **FAST)(point)
        assert default_logp == pytest.approx(stats.expon(scale=1 / PRIORS["region_sd_rate"]).logpdf(v) + np.log(v))
