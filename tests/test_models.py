"""Model builders and the likelihoods behind them.

The three likelihood forms of each model must define the same posterior: "sufficient"
must equal "rows" exactly, and "marginal" must equal the Gaussian integral over the
group effects, checked here against SciPy's multivariate normal density. Graphs are
compiled with PyTensor's FAST_COMPILE mode: the numbers are the same as with the
default (Numba) backend, and compilation takes milliseconds instead of seconds.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from conftest import random_point
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from elasticity_lib.data.prepare import GroupStats, prepare_data
from elasticity_lib.inference import add_group_effects, convergence_report
from elasticity_lib.models import (
    DEFAULT_LIKELIHOOD,
    LIKELIHOODS,
    MODEL_KINDS,
    PRIORS,
    REFERENCE_PRIORS,
    build_model,
    model_spec,
)
from elasticity_lib.models.likelihoods import (
    conditional_effects,
    marginal_group_loglik,
    normal_group_loglik,
    residual_sum_of_squares,
)

FAST = {"mode": "FAST_COMPILE"}

POPULATION = ["a0_centred", "a1_std", "b0_centred", "b1_std"]
FREE_RVS = {
    ("baseline", "rows"): ["beta", "alpha_centred", "sigma"],
    ("baseline", "sufficient"): ["beta", "alpha_centred", "sigma"],
    ("multilevel", "rows"): POPULATION + ["sigma_a", "sigma_b", "sigma", "z_a", "z_b"],
    ("multilevel", "sufficient"): POPULATION + ["sigma_a", "sigma_b", "sigma", "z_a", "z_b"],
    ("multilevel", "marginal"): POPULATION + ["sigma_a", "sigma_b", "sigma"],
    ("correlated", "rows"): POPULATION + ["chol_region", "sigma", "z"],
    ("correlated", "sufficient"): POPULATION + ["chol_region", "sigma", "z"],
    ("correlated", "marginal"): POPULATION + ["chol_region", "sigma"],
    ("store_multilevel", "rows"): POPULATION + ["sigma_a", "sigma_b", "z_a", "z_b", "sigma_store_a", "sigma_store_b", "sigma", "z_store_a", "z_store_b"],
    ("store_multilevel", "sufficient"): POPULATION + ["sigma_a", "sigma_b", "z_a", "z_b", "sigma_store_a", "sigma_store_b", "sigma", "z_store_a", "z_store_b"],
    ("store_multilevel", "marginal"): POPULATION + ["sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b", "sigma"],
}
COMBINATIONS = list(FREE_RVS)
# one level integrated out; the store-level model integrates out two (tested in test_fast.py)
ONE_LEVEL_MARGINAL = ["multilevel", "correlated"]


# --- builders: names, dims, coords ---------------------------------------------------


def test_every_kind_and_likelihood_is_covered():
    expected = {(k, lik) for k in MODEL_KINDS for lik in LIKELIHOODS} - {("baseline", "marginal")}
    assert set(COMBINATIONS) == expected
    assert set(DEFAULT_LIKELIHOOD) == set(MODEL_KINDS)


@pytest.mark.parametrize(("kind", "likelihood"), COMBINATIONS)
def test_builders_have_the_expected_variables_dims_and_coords(small_data, kind, likelihood):
    model = build_model(kind, small_data, likelihood)
    assert [v.name for v in model.free_RVs] == FREE_RVS[(kind, likelihood)]
    assert list(model.coords["region"]) == small_data.coords["region"]
    dims = model.named_vars_to_dims
    spec = model_spec(model)
    assert (spec.kind, spec.likelihood, spec.data) == (kind, likelihood, small_data)
    if kind != "baseline":
        for name in ["a0", "b0", "a1", "b1", "sigma_a", "sigma_b"]:
            assert name in model.named_vars, name
        assert dims["alpha_mean"] == ("region",) and dims["beta_mean"] == ("region",)
        assert dims["income_std"] == ("region",)
        k = small_data.centring
        np.testing.assert_allclose(model["income_std"].get_value(), (small_data.income - k.income) / k.income_scale)
    if kind == "correlated":
        assert "rho" in model.named_vars
    if likelihood != "marginal":
        assert dims["alpha"] == ("region",) and dims["beta"] == ("region",)
    if kind == "store_multilevel":
        assert list(model.coords["store"]) == small_data.coords["store"]
        if likelihood != "marginal":
            assert dims["alpha_store"] == ("store",) and dims["beta_store"] == ("store",)
    else:
        assert "store" not in model.coords
    if likelihood == "rows":
        assert list(model.coords["obs"]) == small_data.coords["obs"]
        assert dims["log_quantity"] == ("obs",)
        assert [v.name for v in model.observed_RVs] == ["log_quantity"]
        assert model.potentials == []
    else:
        assert "obs" not in model.coords
        assert model.observed_RVs == []
        assert [p.name for p in model.potentials] == ["loglik"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_default_likelihood_is_used_when_none_is_given(small_data, kind):
    assert model_spec(build_model(kind, small_data)).likelihood == DEFAULT_LIKELIHOOD[kind]


def test_invalid_arguments_are_rejected(small_data, small_table):
    with pytest.raises(ValueError, match=r"unknown model kind 'hierarchical'; choose one of \['baseline'"):
        build_model("hierarchical", small_data)
    with pytest.raises(ValueError, match=r"unknown likelihood 'exact'; choose one of \['rows', 'sufficient', 'marginal'\]"):
        build_model("multilevel", small_data, "exact")
    with pytest.raises(ValueError, match="baseline model has no group-level prior to marginalise"):
        build_model("baseline", small_data, "marginal")
    with pytest.raises(TypeError, match="data must be ModelData from prepare_data, got DataFrame"):
        build_model("multilevel", small_table)
    with pytest.raises(ValueError, match="not made by elasticity_lib.build_model"):
        model_spec(pm.Model())


# --- prior predictive ----------------------------------------------------------------


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_prior_predictive_sampling_on_the_rows_form(small_data, kind):
    model = build_model(kind, small_data, "rows")
    with model:
        prior = pm.sample_prior_predictive(draws=100, random_seed=11, compile_kwargs=FAST)
    y = prior["prior_predictive"]["log_quantity"]
    assert y.dims == ("chain", "draw", "obs") and y.shape == (1, 100, small_data.n_obs)
    assert np.isfinite(y.values).all()
    assert prior["prior"]["beta"].dims == ("chain", "draw", "region")
    # same seed, same draws
    with model:
        again = pm.sample_prior_predictive(draws=100, random_seed=11, compile_kwargs=FAST)
    np.testing.assert_array_equal(again["prior_predictive"]["log_quantity"].values, y.values)


def test_prior_predictive_with_the_default_backend(small_data):
    model = build_model("multilevel", small_data, "rows")
    with model:
        prior = pm.sample_prior_predictive(draws=50, random_seed=3)
    assert prior["prior_predictive"]["log_quantity"].shape == (1, 50, small_data.n_obs)


def rescaled(table, quantity=1000.0, price=100.0, income=1000.0):
    """The same sales in other units: quantities in units, prices in cents, income in dollars."""
    out = table.copy()
    out["quantities"] *= quantity
    out["price"] *= price
    out["median_income"] *= income
    return out.drop(columns=[c for c in ("log_price", "log_quantities") if c in out])


@pytest.mark.parametrize(("kind", "likelihood"), COMBINATIONS)
def test_the_model_does_not_depend_on_units(small_table, kind, likelihood):
    """Quantities x1000, prices x100, income x1000: the same log density at every point.

    The models work on centred log quantity and log price and on standardised income, so
    the sampler sees the same function of the same free variables: the posterior of every
    unit-free quantity (elasticities, scales, correlations) is the same, up to the
    constant log-Jacobian of the change of units in the likelihood.
    """
    data, other = prepare_data(small_table), prepare_data(rescaled(small_table))
    a, b = build_model(kind, data, likelihood), build_model(kind, other, likelihood)
    logp_a, logp_b = a.compile_logp(**FAST), b.compile_logp(**FAST)
    rng = np.random.default_rng(11)
    shift = None
    for _ in range(4):
        point = random_point(a, rng)
        diff = logp_a(point) - logp_b(point)
        shift = diff if shift is None else shift
        assert diff == pytest.approx(shift, abs=1e-7)
    # the elasticities (and the effects on the original scale) follow the change of units
    names = ["beta"] if likelihood != "marginal" else ["beta_mean"]
    if kind != "baseline":
        names += ["b1", "a0"]
    fa = a.compile_fn(a.replace_rvs_by_values([a[n] for n in names]), inputs=a.value_vars, on_unused_input="ignore", **FAST)
    fb = b.compile_fn(b.replace_rvs_by_values([b[n] for n in names]), inputs=b.value_vars, on_unused_input="ignore", **FAST)
    va, vb = dict(zip(names, fa(point))), dict(zip(names, fb(point)))
    np.testing.assert_allclose(va[names[0]], vb[names[0]], rtol=1e-9)
    if kind != "baseline":
        assert vb["b1"] == pytest.approx(va["b1"] / 1000.0, rel=1e-9)
        # log q gains log 1000 and the intercept at log price 0 loses beta * log 100 ... at zero income
        assert np.isfinite(vb["a0"])


def test_reference_set_up_keeps_the_reference_priors(small_data):
    """centre_income=False: a0, a1, b0, b1 sampled on raw income with the reference's priors."""
    model = build_model("multilevel", small_data, "rows", centre_income=False)
    assert {"a0", "a1", "b0", "b1"} <= {v.name for v in model.free_RVs}
    n = 4000
    with model:
        prior = pm.sample_prior_predictive(draws=n, random_seed=5, var_names=["a0", "b1"], compile_kwargs=FAST)
    assert prior["prior"]["a0"].values.std() == pytest.approx(REFERENCE_PRIORS["a0_sd"], rel=5 / np.sqrt(2 * n))
    assert prior["prior"]["b1"].values.std() == pytest.approx(REFERENCE_PRIORS["b1_sd"], rel=5 / np.sqrt(2 * n))


# --- log densities: sufficient == rows, marginal == integral over the effects -----------


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_sufficient_log_density_equals_rows(small_data, kind):
    rows = build_model(kind, small_data, "rows")
    suff = build_model(kind, small_data, "sufficient")
    logp_rows = rows.compile_logp(**FAST)
    logp_suff = suff.compile_logp(**FAST)
    rng = np.random.default_rng(1)
    for _ in range(5):
        point = random_point(rows, rng)
        assert logp_suff(point) == pytest.approx(logp_rows(point), rel=1e-8)


def evaluate(model, names, point):
    """Values of named model variables at a point of the unconstrained space."""
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", **FAST)
    return dict(zip(names, fn(point)))


def scipy_marginal_loglik(group_idx, x, y, m_alpha, m_beta, cov, sigma):
    """Sum over groups of log N(y_g | X_g m_g, sigma^2 I + X_g S X_g'), the textbook way."""
    total = 0.0
    for g in range(len(m_alpha)):
        X = np.column_stack([np.ones((group_idx == g).sum()), x[group_idx == g]])
        mean = X @ np.array([m_alpha[g], m_beta[g]])
        c = sigma**2 * np.eye(len(X)) + X @ cov @ X.T
        total += stats.multivariate_normal(mean, c).logpdf(y[group_idx == g])
    return total


def at_log_price_zero(cov_centred, x_c):
    """Covariance of (intercept at log price 0, slope) from that of (intercept at x_c, slope)."""
    shear = np.array([[1.0, -x_c], [0.0, 1.0]])
    return shear @ cov_centred @ shear.T


def marginal_parts(kind, data, values):
    """Groups, prior means and prior covariance of the integrated-out effects of each kind.

    The models define region deviations at the mean log price; the effects they report
    (and the likelihood's design [1, log p]) have the intercept at log price 0.
    """
    x_c = data.centring.log_price
    if kind == "multilevel":
        cov = np.diag([values["sigma_a"] ** 2, values["sigma_b"] ** 2])
        return data.region_idx, values["alpha_mean"], values["beta_mean"], at_log_price_zero(cov, x_c)
    if kind == "correlated":
        l00, l10, l11 = values["chol_region"]
        chol = np.array([[l00, 0.0], [l10, l11]])
        return data.region_idx, values["alpha_mean"], values["beta_mean"], at_log_price_zero(chol @ chol.T, x_c)
    raise ValueError(kind)


NEEDED = {
    "multilevel": ["alpha_mean", "beta_mean", "sigma_a", "sigma_b", "sigma"],
    "correlated": ["alpha_mean", "beta_mean", "chol_region", "sigma"],
}


@pytest.mark.parametrize("kind", ONE_LEVEL_MARGINAL)
def test_marginal_log_density_is_the_gaussian_integral(small_data, kind):
    model = build_model(kind, small_data, "marginal")
    logp = model.compile_logp(**FAST)
    prior_logp = model.compile_logp(vars=model.free_RVs, **FAST)
    rng = np.random.default_rng(2)
    for _ in range(4):
        point = random_point(model, rng)
        values = evaluate(model, NEEDED[kind], point)
        groups, m_a, m_b, cov = marginal_parts(kind, small_data, values)
        expected = scipy_marginal_loglik(groups, small_data.log_price, small_data.log_quantity, m_a, m_b, cov, values["sigma"])
        assert logp(point) == pytest.approx(prior_logp(point) + expected, rel=1e-8)


def test_marginal_multilevel_log_density_from_scratch(small_data):
    # Every term by hand with SciPy: the priors of the book on the centred scale (with the
    # log-Jacobian of the log transform of each scale) plus the marginal likelihood of the
    # rows, whose region effects have the intercept at log price 0.
    model = build_model("multilevel", small_data, "marginal")
    logp = model.compile_logp(**FAST)
    k = small_data.centring
    inc = (small_data.income - k.income) / k.income_scale
    rng = np.random.default_rng(3)
    for _ in range(4):
        p = random_point(model, rng)
        a0c, a1s, b0c, b1s = (float(p[n]) for n in ["a0_centred", "a1_std", "b0_centred", "b1_std"])
        sa, sb, s = (float(np.exp(p[f"{n}_log__"])) for n in ["sigma_a", "sigma_b", "sigma"])
        prior = (
            stats.norm(0, PRIORS["a0_sd"]).logpdf(a0c) + stats.norm(0, PRIORS["a1_sd"]).logpdf(a1s)
            + stats.norm(0, PRIORS["b0_sd"]).logpdf(b0c) + stats.norm(0, PRIORS["b1_sd"]).logpdf(b1s)
            + sum(stats.expon(scale=1 / PRIORS["region_sd_rate"]).logpdf(v) + np.log(v) for v in (sa, sb))
            + stats.expon(scale=1 / PRIORS["sigma_rate"]).logpdf(s) + np.log(s)
        )
        m_beta = b0c + b1s * inc
        m_alpha = k.log_quantity + a0c + a1s * inc - k.log_price * m_beta
        lik = scipy_marginal_loglik(
            small_data.region_idx, small_data.log_price, small_data.log_quantity,
            m_alpha, m_beta, at_log_price_zero(np.diag([sa**2, sb**2]), k.log_price), s,
        )
        assert logp(p) == pytest.approx(prior + lik, rel=1e-8)


# --- the likelihood functions against SciPy and brute force --------------------------


@st.composite
def group_problems(draw):
    """One group's rows plus a prior N(m, S) on its (intercept, slope) and a noise sd."""
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.4, size=n)
    y = rng.normal(1.0, 1.0, size=n)
    m = rng.normal(0.0, 1.0, size=2)
    sd = rng.uniform(0.05, 1.0, size=2)
    rho = draw(st.floats(-0.95, 0.95))
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    sigma = draw(st.floats(0.05, 2.0))
    return x, y, m, cov, sigma


def one_group(x, y) -> GroupStats:
    return GroupStats.from_arrays(np.zeros(len(x), dtype=int), x, y, 1)


@given(group_problems())
def test_normal_group_loglik_matches_scipy(problem):
    x, y, m, _, sigma = problem
    stats_ = one_group(x, y)
    expected = stats.norm(m[0] + m[1] * x, sigma).logpdf(y).sum()
    assert normal_group_loglik(np, stats_, m[0], m[1], sigma)[0] == pytest.approx(expected, rel=1e-9)
    assert residual_sum_of_squares(stats_, m[0], m[1])[0] == pytest.approx(np.sum((y - m[0] - m[1] * x) ** 2), rel=1e-9, abs=1e-12)


@given(group_problems())
def test_marginal_group_loglik_matches_scipy(problem):
    x, y, m, cov, sigma = problem
    X = np.column_stack([np.ones_like(x), x])
    expected = stats.multivariate_normal(X @ m, sigma**2 * np.eye(len(x)) + X @ cov @ X.T).logpdf(y)
    got = marginal_group_loglik(np, one_group(x, y), m[0], m[1], cov[0, 0], cov[0, 1], cov[1, 1], sigma)
    assert got[0] == pytest.approx(expected, rel=1e-8)


@given(group_problems())
def test_conditional_effects_match_gaussian_conditioning(problem):
    x, y, m, cov, sigma = problem
    X = np.column_stack([np.ones_like(x), x])
    # posterior of theta ~ N(m, S) given y ~ N(X theta, sigma^2 I), by plain linear algebra
    precision = np.linalg.inv(cov) + X.T @ X / sigma**2
    post_cov = np.linalg.inv(precision)
    post_mean = post_cov @ (np.linalg.solve(cov, m) + X.T @ y / sigma**2)
    mean_a, mean_b, c11, c12, c22 = conditional_effects(one_group(x, y), m[0], m[1], cov[0, 0], cov[0, 1], cov[1, 1], sigma)
    np.testing.assert_allclose([mean_a[0], mean_b[0]], post_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose([c11[0], c12[0], c22[0]], [post_cov[0, 0], post_cov[0, 1], post_cov[1, 1]], rtol=1e-8, atol=1e-12)


def test_likelihoods_broadcast_over_draws_and_groups(small_data):
    stats_ = small_data.region_stats
    m_a = np.linspace(0.5, 1.5, 3)[:, None] + np.zeros(small_data.n_regions)
    out = conditional_effects(stats_, m_a, -2.0, 0.01, 0.0, 0.04, 0.3)
    # means follow the prior means (draws x groups); covariances do not depend on them
    assert np.shape(out[0]) == np.shape(out[1]) == (3, small_data.n_regions)
    assert all(np.shape(v) == (small_data.n_regions,) for v in out[2:])
    for i in range(3):
        single = conditional_effects(stats_, m_a[i], -2.0, 0.01, 0.0, 0.04, 0.3)
        np.testing.assert_allclose(out[0][i], single[0])
        np.testing.assert_allclose(out[1][i], single[1])
    loglik = marginal_group_loglik(np, stats_, m_a, -2.0, 0.01, 0.0, 0.04, np.array([[0.3], [0.4], [0.5]]))
    assert loglik.shape == (3, small_data.n_regions)


# --- drawing the integrated-out effects ----------------------------------------------


def brute_force_conditional(x, y, m, cov, sigma):
    X = np.column_stack([np.ones_like(x), x])
    post_cov = np.linalg.inv(np.linalg.inv(cov) + X.T @ X / sigma**2)
    return post_cov @ (np.linalg.solve(cov, m) + X.T @ y / sigma**2), post_cov


def synthetic_posterior(kind, data, n_draws, rng):
    """A posterior with two chains, each holding one fixed set of population parameters."""
    chains = []
    for _ in range(2):
        p = {
            "alpha_mean": rng.normal(1.0, 0.2, data.n_regions), "beta_mean": rng.normal(-3.0, 0.5, data.n_regions),
            "sigma": rng.uniform(0.2, 0.5),
        }
        if kind == "multilevel":
            p |= {"sigma_a": rng.uniform(0.05, 0.3), "sigma_b": rng.uniform(0.1, 0.6)}
        else:
            p |= {"chol_region": np.array([rng.uniform(0.05, 0.3), rng.normal(0.0, 0.2), rng.uniform(0.1, 0.5)])}
        chains.append(p)
    ds = {}
    for name in chains[0]:
        arr = np.stack([np.broadcast_to(np.asarray(c[name]), (n_draws, *np.shape(c[name]))) for c in chains])
        extra = {"alpha": ("region",), "beta": ("region",), "alpha_mean": ("region",), "beta_mean": ("region",),
                 "chol_region": ("chol_region_dim_0",)}.get(name, ())
        ds[name] = xr.DataArray(arr, dims=("chain", "draw", *extra))
    posterior = xr.Dataset(ds, coords={"chain": [0, 1], "draw": np.arange(n_draws), "region": data.coords["region"]})
    return xr.DataTree.from_dict({"posterior": posterior}), chains


@pytest.mark.parametrize("kind", ONE_LEVEL_MARGINAL)
def test_added_group_effects_follow_their_exact_conditional(small_data, kind):
    # 3,000 exact draws per chain: each posterior mean is within 5 standard errors
    # sqrt(C_ii / n) of the brute-force conditional mean, and each sample covariance
    # within 5 of its standard errors (sqrt((C_ii C_jj + C_ij^2) / n) for a bivariate normal).
    n = 3000
    rng = np.random.default_rng(7)
    model = build_model(kind, small_data, "marginal")
    idata, chains = synthetic_posterior(kind, small_data, n, rng)
    idata = add_group_effects(idata, model, seed=123)
    a_name, b_name, dim = "alpha", "beta", "region"
    post = idata["posterior"]
    assert post[a_name].dims == ("chain", "draw", dim) and post[b_name].dims == ("chain", "draw", dim)
    assert list(post[a_name][dim].values) == small_data.coords[dim]
    groups = small_data.region_idx
    for c, p in enumerate(chains):
        values = {k: np.asarray(v) for k, v in p.items()}
        groups_, m_a, m_b, cov = marginal_parts(kind, small_data, values)
        for g in range(len(m_a)):
            rows = groups == g
            mean, post_cov = brute_force_conditional(small_data.log_price[rows], small_data.log_quantity[rows], np.array([m_a[g], m_b[g]]), cov, p["sigma"])
            draws = np.column_stack([post[a_name].values[c, :, g], post[b_name].values[c, :, g]])
            se_mean = np.sqrt(np.diag(post_cov) / n)
            assert np.all(np.abs(draws.mean(0) - mean) < 5 * se_mean), (kind, c, g)
            sample_cov = np.cov(draws.T)
            se_cov = np.sqrt((np.outer(np.diag(post_cov), np.diag(post_cov)) + post_cov**2) / n)
            assert np.all(np.abs(sample_cov - post_cov) < 5 * se_cov), (kind, c, g)
    # the seed makes the added draws reproducible
    again = add_group_effects(synthetic_posterior(kind, small_data, n, np.random.default_rng(7))[0], model, seed=123)
    np.testing.assert_array_equal(again["posterior"][b_name].values, post[b_name].values)


def test_add_group_effects_rejects_models_without_marginalised_effects(small_data):
    idata, _ = synthetic_posterior("multilevel", small_data, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="model kind 'baseline' has no marginalised effects"):
        add_group_effects(idata, build_model("baseline", small_data, "sufficient"))


# --- convergence report --------------------------------------------------------------


def fake_trace(rng, shift: float = 0.0, n_divergent: int = 0):
    chains, draws = 4, 500
    theta = rng.normal(size=(chains, draws, 3))
    theta[0, :, 1] += shift  # one chain of one coordinate away from the others
    diverging = np.zeros((chains, draws), dtype=bool)
    diverging.ravel()[:n_divergent] = True
    posterior = xr.Dataset({
        "mu": (("chain", "draw"), rng.normal(size=(chains, draws))),
        "theta": (("chain", "draw", "k"), theta),
        "fixed": (("chain", "draw"), np.ones((chains, draws))),  # constant: left out of the report
    }, coords={"chain": np.arange(chains), "draw": np.arange(draws), "k": ["x", "y", "z"]})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), diverging)})})


def test_convergence_report_on_well_mixed_draws():
    report = convergence_report(fake_trace(np.random.default_rng(0)))
    # 2,000 independent draws: r_hat near 1 and ESS near 2,000
    assert report.divergences == 0
    assert report.max_rhat < 1.01
    assert report.min_ess_bulk > 1000 and report.min_ess_tail > 1000
    assert report.ok()
    assert not report.ok(min_ess=5000)
    assert "divergences: 0" in str(report)


def test_convergence_report_flags_divergences_and_stuck_chains():
    divergent = convergence_report(fake_trace(np.random.default_rng(1), n_divergent=3))
    assert divergent.divergences == 3 and not divergent.ok()
    # an allowance of divergences (the command line's binomial gate) passes 3, not 2
    assert divergent.ok(max_divergences=3) and not divergent.ok(max_divergences=2)
    with pytest.raises(ValueError, match="max_divergences must be at least 0"):
        divergent.ok(max_divergences=-1)
    stuck = convergence_report(fake_trace(np.random.default_rng(2), shift=3.0))
    assert stuck.max_rhat > 1.1 and not stuck.ok()
    assert stuck.worst_rhat.startswith("theta") and "y" in stuck.worst_rhat


def test_convergence_report_flags_nan_rhat_on_varying_elements_and_skips_constant_ones():
    import xarray as xr

    from elasticity_lib.inference import convergence_report

    rng = np.random.default_rng(3)
    draws = rng.normal(size=(4, 300, 2))
    draws[..., 0] = 1.0  # constant by construction, like a correlation diagonal
    post = xr.Dataset({"c": (("chain", "draw", "k"), draws)})
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((4, 300), bool))})
    report = convergence_report(xr.DataTree.from_dict({"posterior": post, "sample_stats": stats}))
    assert np.isfinite(report.max_rhat) and report.max_rhat < 1.05
    assert report.worst_rhat.startswith("c[")

    draws[0, 0, 1] = np.nan  # a broken chain must not hide behind NaN-skipping
    post = xr.Dataset({"c": (("chain", "draw", "k"), draws)})
    report = convergence_report(xr.DataTree.from_dict({"posterior": post, "sample_stats": stats}))
    assert not report.ok()


def test_spec_attributes_are_plain_values(small_data):
    import json

    from elasticity_lib.models import ModelSpec, spec_attributes

    attrs = spec_attributes(ModelSpec("store_multilevel", "marginal", small_data))
    assert attrs["elasticity_kind"] == "store_multilevel" and attrs["elasticity_likelihood"] == "marginal"
    assert attrs["elasticity_income_center"] == pytest.approx(small_data.income_center)
    assert len(attrs["elasticity_stores"]) == small_data.n_stores
    json.dumps(attrs)  # only strings, numbers and lists


def test_shared_data_options_are_checked(small_data):
    with pytest.raises(ValueError, match="shared_data applies to the fast forms"):
        build_model("baseline", small_data, "rows", shared_data=True)
    with pytest.raises(ValueError, match="shared_data applies to the fast forms"):
        build_model("correlated", small_data, "rows", shared_data=True)
    with pytest.raises(ValueError, match="group_weights apply to the region-level fast forms"):
        build_model("store_multilevel", small_data, group_weights=np.ones(small_data.n_regions))
    with pytest.raises(ValueError, match="one per region"):
        build_model("multilevel", small_data, group_weights=[1.0])
    model = build_model("multilevel", small_data, shared_data=True, group_weights=np.ones(small_data.n_regions))
    assert {"stat_n", "stat_cyy", "group_weight", "income_std", "centre_log_price"} <= set(model.named_vars)
