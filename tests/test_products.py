"""Tests of the multi-product model: the table, its statistics, the marginal likelihood and the draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy import stats

from elasticity_lib import build_model, model_spec
from elasticity_lib.data.product_simulation import ProductMarketConfig, category_elasticities, simulate_products
from elasticity_lib.models import spec_attributes
from elasticity_lib.models.products import (
    PRODUCT_LIKELIHOODS,
    ProductData,
    add_store_effects,
    build_product_model,
    prepare_product_data,
    store_posterior_moments,
)

TINY = ProductMarketConfig(n_products=3, n_tiers=2, n_regions=2, stores_per_region=2, n_weeks=12)
PROMOS = ["deal", "feature"]
FAST = {"mode": "FAST_COMPILE"}


@pytest.fixture(scope="module")
def tiny_market():
    return simulate_products(TINY, seed=11)


@pytest.fixture
def tiny_table(tiny_market) -> pd.DataFrame:
    return tiny_market.table()


@pytest.fixture(scope="module")
def tiny_data(tiny_market) -> ProductData:
    return prepare_product_data(tiny_market.table(), promotions=PROMOS, covariates=["income"])


def prepare(table, **kw):
    return prepare_product_data(table, **{"promotions": PROMOS, "covariates": ["income"], **kw})


# --- the table -------------------------------------------------------------------------------


def test_statistics_are_the_sums_over_each_pairs_rows(tiny_data, tiny_table):
    d = tiny_data
    t = tiny_table
    K = d.n_products
    x_bar = np.log(t["price"]).groupby(t["product"]).mean().loc[d.products].to_numpy()
    y_bar = np.log(t["quantity"]).groupby(t["product"]).mean().loc[d.products].to_numpy()
    for s_i, store in enumerate(d.stores):
        wide = t[t["store"] == store].pivot(index="week", columns="product", values="price")[d.products]
        for k, product in enumerate(d.products):
            rows = t[(t["store"] == store) & (t["product"] == product)].sort_values("week")
            x = np.column_stack([np.ones(len(rows)), np.log(wide.loc[rows["week"]].to_numpy()) - x_bar,
                                 rows[PROMOS].to_numpy(float)])
            y = np.log(rows["quantity"].to_numpy()) - y_bar[k]
            np.testing.assert_allclose(d.stats_xx[s_i, k], x.T @ x, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(d.stats_xy[s_i, k], x.T @ y, rtol=1e-10, atol=1e-10)
            assert d.stats_yy[s_i, k] == pytest.approx(y @ y, rel=1e-10)
            assert d.stats_n[s_i, k] == len(rows)
            sel = d.selection[k]
            np.testing.assert_allclose(d.stats_ww[s_i, k], (x.T @ x)[np.ix_(sel, sel)], atol=1e-10)
    assert d.selection.shape == (K, 2 + len(PROMOS))
    assert d.unused_columns == ["region"]


def test_units_do_not_matter(tiny_table, tiny_data):
    other = tiny_table.assign(price=tiny_table["price"] * 100, quantity=tiny_table["quantity"] * 1000,
                              income=tiny_table["income"] * 1000)
    d2 = prepare(other)
    for name in ("stats_xx", "stats_xy", "stats_yy", "covariates_std"):
        np.testing.assert_allclose(getattr(d2, name), getattr(tiny_data, name), rtol=1e-9, atol=1e-9)
    m1, m2 = build_product_model(tiny_data), build_product_model(d2)
    point = m1.initial_point()
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in point.items()}
    assert m1.compile_logp(**FAST)(point) == pytest.approx(m2.compile_logp(**FAST)(point), rel=1e-9)


def test_merged_table_with_other_columns_is_accepted_and_they_are_listed(tiny_table):
    d = prepare(tiny_table.assign(profit=0.3, educ=1.0))
    assert set(d.unused_columns) == {"region", "profit", "educ"}
    assert len(d.table) == len(tiny_table)
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['region', 'profit'\]"):
        prepare(tiny_table.assign(profit=0.3), on_other_columns="error")


def test_a_missing_named_column_is_named(tiny_table):
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['display'\]"):
        prepare(tiny_table, promotions=["deal", "display"])


@pytest.mark.parametrize("column,value,message", [
    ("price", 0.0, "column 'price' must be strictly positive"),
    ("price", -1.0, "column 'price' must be strictly positive"),
    ("price", np.inf, "column 'price' has infinite values"),
    ("price", np.nan, "column 'price' has NaN"),
    ("quantity", 0.0, "column 'quantity' must be strictly positive"),
    ("deal", 2.0, "promotion column 'deal' must be 0/1 or a share in"),
    ("feature", np.nan, "column 'feature' must hold finite numbers"),
    ("income", np.inf, "column 'income' must hold finite numbers"),
])
def test_bad_values_are_named_with_their_row(tiny_table, column, value, message):
    bad = tiny_table.copy()
    bad.loc[7, column] = value
    with pytest.raises(ValueError, match=message) as err:
        prepare(bad)
    assert "7" in str(err.value)


def test_a_covariate_varying_within_a_store_is_an_error(tiny_table):
    bad = tiny_table.copy()
    bad.loc[3, "income"] += 1.0
    with pytest.raises(ValueError, match=r"covariate 'income' varies within store 1"):
        prepare(bad)


def test_repeated_rows_are_an_error(tiny_table):
    bad = pd.concat([tiny_table, tiny_table.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"\(store, week, product\) must be unique; store 1, week 2"):
        prepare(bad)


def test_a_product_missing_in_some_weeks_is_listed(tiny_table):
    gone = (tiny_table["store"] == 2) & (tiny_table["product"] == "P3") & tiny_table["week"].isin([4, 9])
    with pytest.raises(ValueError, match=r"store 2 lacks product 'P3' in weeks \[4, 9\]") as err:
        prepare(tiny_table[~gone])
    assert "2 store-week(s) are incomplete" in str(err.value)


def test_too_little_data_names_every_shortfall(tiny_table):
    one_store = tiny_table[tiny_table["store"] == 1]
    with pytest.raises(ValueError, match="1 store"):
        prepare(one_store)
    short = tiny_table[(tiny_table["store"] != 3) | (tiny_table["week"] <= 2)]
    with pytest.raises(ValueError, match=r"stores with fewer than 3 weeks: \[3 \(2 weeks\)\]"):
        prepare(short)
    with pytest.raises(ValueError, match="a category needs at least 2"):
        prepare(tiny_table[tiny_table["product"] == "P1"])


def test_names_given_twice_or_as_table_columns_are_errors(tiny_table):
    with pytest.raises(ValueError, match="both as promotions and as covariates"):
        prepare(tiny_table, covariates=["deal"])
    with pytest.raises(ValueError, match="cannot use the table's own columns"):
        prepare(tiny_table, covariates=["price"])


def test_nothing_is_dropped_or_altered(tiny_table, tiny_data):
    pd.testing.assert_frame_equal(tiny_data.table[tiny_table.columns], tiny_table, check_dtype=False)
    assert tiny_data.n_obs == len(tiny_table)


# --- the likelihood --------------------------------------------------------------------------


def _fn(model, outs):
    """A function of a point on the model's value variables."""
    return model.compile_fn(model.replace_rvs_by_values(outs), inputs=model.value_vars, on_unused_input="ignore",
                            point_fn=True, **FAST)


def _population_values(model, point):
    names = ["coef_mean", "coef_covariate", "elasticity", "store_chol", "sigma"]
    return dict(zip(names, _fn(model, [model[n] for n in names])(point)))


def _prior_mean(d: ProductData, v) -> np.ndarray:
    return v["coef_mean"][None] + np.einsum("kdc,sc->skd", v["coef_covariate"], d.covariates_std)


def _cross(v) -> np.ndarray:
    cross = v["elasticity"].copy()
    np.fill_diagonal(cross, 0.0)
    return cross


def _dense_marginal(d: ProductData, v) -> float:
    """Sum over (store, product) of log N(y; X b + W m, sigma² I + W Σ Wᵀ), dense, with scipy."""
    m = _prior_mean(d, v)
    cross = _cross(v)
    total = 0.0
    for s in range(d.n_stores):
        for k in range(d.n_products):
            rows = (d.row_store == s) & (d.row_product == k)
            x, y = d.rows_x[rows], d.rows_y[rows]
            w = x[:, d.selection[k]]
            b = np.concatenate([[0.0], cross[k], np.zeros(d.n_promotions)])
            sigma_ = v["store_chol"][k] @ v["store_chol"][k].T
            cov = v["sigma"][k] ** 2 * np.eye(len(y)) + w @ sigma_ @ w.T
            total += stats.multivariate_normal(x @ b + w @ m[s, k], cov).logpdf(y)
    return float(total)


@pytest.fixture(scope="module")
def random_points(tiny_data):
    model = build_product_model(tiny_data)
    rng = np.random.default_rng(5)
    start = model.initial_point()
    return model, [{k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in start.items()} for _ in range(4)]


def test_marginal_log_density_matches_a_dense_multivariate_normal(tiny_data, random_points):
    model, points = random_points
    potential = _fn(model, [model.potentials[0]])
    for point in points:
        v = _population_values(model, point)
        assert float(potential(point)[0]) == pytest.approx(_dense_marginal(tiny_data, v), rel=1e-8)


def test_marginal_is_the_row_level_model_with_its_store_vectors_integrated_out(tiny_data, random_points):
    """log p(y) = log p(y | θ) + log p(θ) - log p(θ | y) at any θ: rows model, prior and exact conditional."""
    model, points = random_points
    potential = _fn(model, [model.potentials[0]])
    rows = build_product_model(tiny_data, "rows")
    obs_logp = _fn(rows, [rows.logp(vars=rows.observed_RVs)])
    theta_fn = _fn(rows, [rows["store_coef"]])
    rng = np.random.default_rng(8)
    for point in points:
        v = _population_values(model, point)
        rows_point = {**point, "z_store": rng.normal(size=(tiny_data.n_stores, tiny_data.n_products, 4))}
        theta = theta_fn(rows_point)[0]
        m = _prior_mean(tiny_data, v)
        mean, chol_prec = store_posterior_moments(tiny_data, m, _cross(v), v["store_chol"], v["sigma"])
        log_prior = log_post = 0.0
        for s in range(tiny_data.n_stores):
            for k in range(tiny_data.n_products):
                cov = v["store_chol"][k] @ v["store_chol"][k].T
                log_prior += stats.multivariate_normal(m[s, k], cov).logpdf(theta[s, k])
                post_cov = np.linalg.inv(chol_prec[s, k] @ chol_prec[s, k].T)
                log_post += stats.multivariate_normal(mean[s, k], post_cov).logpdf(theta[s, k])
        identity = float(obs_logp(rows_point)[0]) + log_prior - log_post
        assert float(potential(point)[0]) == pytest.approx(identity, rel=1e-8)


def test_sufficient_and_rows_forms_agree(tiny_data):
    rows, suff = build_product_model(tiny_data, "rows"), build_product_model(tiny_data, "sufficient")
    rng = np.random.default_rng(2)
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in suff.initial_point().items()}
        assert rows.compile_logp(**FAST)(point) == pytest.approx(suff.compile_logp(**FAST)(point), rel=1e-9)


def test_the_posterior_moments_are_the_dense_gaussian_update(tiny_data, random_points):
    model, points = random_points
    v = _population_values(model, points[0])
    m = _prior_mean(tiny_data, v)
    cross = _cross(v)
    mean, chol_prec = store_posterior_moments(tiny_data, m, cross, v["store_chol"], v["sigma"])
    d = tiny_data
    for s, k in [(0, 0), (3, 2)]:
        rows = (d.row_store == s) & (d.row_product == k)
        x, y = d.rows_x[rows], d.rows_y[rows]
        w = x[:, d.selection[k]]
        r = y - x @ np.concatenate([[0.0], cross[k], np.zeros(d.n_promotions)])
        prior_cov = v["store_chol"][k] @ v["store_chol"][k].T
        # the joint Gaussian of (θ, r), conditioned on r
        cov_r = v["sigma"][k] ** 2 * np.eye(len(y)) + w @ prior_cov @ w.T
        gain = prior_cov @ w.T @ np.linalg.inv(cov_r)
        np.testing.assert_allclose(mean[s, k], m[s, k] + gain @ (r - w @ m[s, k]), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.linalg.inv(chol_prec[s, k] @ chol_prec[s, k].T),
                                   prior_cov - gain @ w @ prior_cov, rtol=1e-7, atol=1e-10)


def test_exact_draws_have_the_conditional_moments(tiny_data, random_points):
    """Many draws at one parameter value: their mean and covariance match the analytic ones."""
    import xarray as xr

    model, points = random_points
    v = _population_values(model, points[1])
    n = 4000
    post = {name: (("chain", "draw", *dims), np.broadcast_to(v[name], (1, n, *np.shape(v[name]))))
            for name, dims in [("coef_mean", ("product", "coefficient")),
                               ("coef_covariate", ("product", "coefficient", "covariate")),
                               ("elasticity", ("product", "price_of")),
                               ("store_chol", ("product", "coefficient", "coefficient_")), ("sigma", ("product",))]}
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset(post)})
    idata = add_store_effects(idata, model_spec(model), seed=3)
    draws = idata["posterior"]["store_coef"].values[0]           # (n, S, K, D)
    mean, chol_prec = store_posterior_moments(tiny_data, _prior_mean(tiny_data, v), _cross(v), v["store_chol"],
                                              v["sigma"])
    cov = np.linalg.inv(chol_prec @ np.swapaxes(chol_prec, -1, -2))
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    # each mean within 4.5 standard errors: 48 comparisons, false alarm about 3e-4 in all
    z = (draws.mean(0) - mean) / (sd / np.sqrt(n))
    assert np.abs(z).max() < 4.5
    # the sample covariance of one pair against the analytic one (relative error of a variance ~ sqrt(2/n))
    emp = np.cov(draws[:, 1, 2].T)
    np.testing.assert_allclose(np.diag(emp), np.diag(cov[1, 2]), rtol=5 * np.sqrt(2 / n))
    assert "own_elasticity" in idata["posterior"]


# --- the model as build_model knows it -------------------------------------------------------


def test_build_model_knows_the_kind_and_the_spec_is_recorded(tiny_data):
    for likelihood in PRODUCT_LIKELIHOODS:
        model = build_model("multiproduct", tiny_data, likelihood)
        assert model_spec(model).kind == "multiproduct" and model_spec(model).likelihood == likelihood
    attrs = spec_attributes(model_spec(build_model("multiproduct", tiny_data)))
    assert attrs["elasticity_kind"] == "multiproduct"
    assert attrs["elasticity_products"] == ["P1", "P2", "P3"]
    assert len(attrs["elasticity_log_price_center"]) == 3
    with pytest.raises(TypeError, match="ProductData"):
        build_model("multiproduct", object())
    with pytest.raises(ValueError, match="unknown likelihood"):
        build_model("multiproduct", tiny_data, "dense")


def test_model_without_promotions_or_covariates(tiny_table):
    d = prepare_product_data(tiny_table)
    model = build_product_model(d)
    assert d.coefficients == ["intercept", "own_price"]
    assert np.isfinite(model.compile_logp(**FAST)(model.initial_point()))
    assert "coef_covariate" not in model.named_vars


# --- the simulation --------------------------------------------------------------------------


def test_simulation_is_seeded_and_complete():
    a, b = simulate_products(TINY, seed=4), simulate_products(TINY, seed=4)
    pd.testing.assert_frame_equal(a.sales, b.sales)
    c = simulate_products(TINY, seed=5)
    assert not np.allclose(a.sales["quantity"], c.sales["quantity"])
    S = TINY.n_regions * TINY.stores_per_region
    assert len(a.sales) == S * TINY.n_weeks * TINY.n_products
    assert a.truth.store_own.shape == (S, TINY.n_products)


def test_the_elasticity_matrix_has_substitutes_and_complements():
    cfg = ProductMarketConfig(n_products=6, n_tiers=2)
    e = category_elasticities(cfg)
    assert np.all(np.diag(e) < -1)
    assert e[0, 1] == cfg.substitute_within_tier and e[0, 5] == cfg.substitute_across_tiers
    assert e[4, 5] == e[5, 4] == cfg.complement < 0


def test_store_own_elasticities_follow_income():
    m = simulate_products(ProductMarketConfig(n_regions=6, stores_per_region=20, store_own_sd=0.05), seed=1)
    income = m.stores.set_index("store").loc[m.truth.stores, "income"].to_numpy()
    z = (income - income.mean()) / income.std()
    slope = np.polyfit(z, m.truth.store_own[:, 0], 1)[0]
    assert slope == pytest.approx(m.truth.own_income_slope, abs=0.03)


@pytest.mark.parametrize("change,message", [
    ({"n_products": 1}, "greater than or equal to 2"),
    ({"n_tiers": 9, "n_products": 3}, "cannot exceed n_products"),
    ({"deal_probability": 1.5}, "less than or equal to 1"),
    ({"noise_sd": float("inf")}, "finite"),
    ({"colour": "red"}, "Extra inputs"),
])
def test_simulation_config_is_validated(change, message):
    with pytest.raises(ValueError, match=message):
        ProductMarketConfig(**change)


def test_prior_predictive_of_the_rows_form_runs(tiny_data):
    with build_product_model(tiny_data, "rows"):
        prior = pm.sample_prior_predictive(draws=5, random_seed=1, compile_kwargs=FAST)
    assert prior["prior_predictive"]["log_quantity"].shape == (1, 5, tiny_data.n_obs)


# --- fits (slow) -----------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_draws_the_store_vectors_and_records_the_spec(tiny_data):
    from elasticity_lib import fit

    idata = fit(build_model("multiproduct", tiny_data), chains=2, draws=200, tune=300, random_seed=1)
    post = idata["posterior"]
    assert post["store_coef"].shape == (2, 200, tiny_data.n_stores, tiny_data.n_products, 4)
    np.testing.assert_array_equal(post["own_elasticity"].values, post["store_coef"].values[..., 1])
    assert idata.attrs["elasticity_kind"] == "multiproduct"
    assert post.attrs["elasticity_products"] == tiny_data.products


@pytest.mark.slow
def test_marginal_and_row_level_posteriors_agree(tiny_data):
    """Same posterior: population means and store own elasticities within Monte Carlo error."""
    import arviz as az

    from elasticity_lib import fit
    from elasticity_lib.reproducibility import z_threshold

    fits = {lik: fit(build_model("multiproduct", tiny_data, lik), random_seed=3, nuts_sampler="nutpie")
            for lik in ("marginal", "rows")}
    names = ["elasticity", "sigma", "store_coef"]
    summaries = {lik: az.summary(f["posterior"].dataset[names], kind="all", round_to="none")
                 for lik, f in fits.items()}
    a, b = summaries["marginal"], summaries["rows"]
    z = (a["mean"] - b["mean"]) / np.hypot(a["mcse_mean"], b["mcse_mean"])
    assert np.abs(z).max() < z_threshold(len(z))


# --- promotion lifts that do not vary by store (store_varying) -------------------------------

VARYING = ["intercept", "own_price"]


@pytest.fixture(scope="module")
def varying_points(tiny_data):
    model = build_product_model(tiny_data, store_varying=VARYING)
    rng = np.random.default_rng(6)
    start = model.initial_point()
    return model, [{k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in start.items()} for _ in range(3)]


def _dense_marginal_varying(d: ProductData, v, varying) -> float:
    """As :func:`_dense_marginal`, with the fixed coefficients at their population mean in each store."""
    m = _prior_mean(d, v)
    cross = _cross(v)
    fixed = [i for i in range(d.n_coefficients) if i not in varying]
    total = 0.0
    for s in range(d.n_stores):
        for k in range(d.n_products):
            rows = (d.row_store == s) & (d.row_product == k)
            x, y = d.rows_x[rows], d.rows_y[rows]
            b = np.concatenate([[0.0], cross[k], np.zeros(d.n_promotions)])
            b[d.selection[k, fixed]] += m[s, k, fixed]
            w = x[:, d.selection[k, varying]]
            sigma_ = v["store_chol"][k] @ v["store_chol"][k].T
            cov = v["sigma"][k] ** 2 * np.eye(len(y)) + w @ sigma_ @ w.T
            total += stats.multivariate_normal(x @ b + w @ m[s, k, varying], cov).logpdf(y)
    return float(total)


def test_store_varying_names_the_coefficients_and_sets_the_dims(tiny_data):
    model = build_product_model(tiny_data, store_varying=VARYING)
    assert model.named_vars_to_dims["store_sd"] == ("product", "varying")
    assert list(model.coords["varying"]) == VARYING
    assert _fn(model, [model["store_chol"]])(model.initial_point())[0].shape == (3, 2, 2)
    default = build_product_model(tiny_data)
    assert default.named_vars_to_dims["store_sd"] == ("product", "coefficient")
    same = build_product_model(tiny_data, store_varying=tiny_data.coefficients)
    assert same.named_vars_to_dims["store_sd"] == ("product", "coefficient")
    with pytest.raises(ValueError, match=r"unknown coefficient\(s\) \['display'\]"):
        build_product_model(tiny_data, store_varying=["own_price", "display"])
    with pytest.raises(ValueError, match="more than once"):
        build_product_model(tiny_data, store_varying=["own_price", "own_price"])
    with pytest.raises(ValueError, match="at least one"):
        build_product_model(tiny_data, store_varying=[])
    with pytest.raises(ValueError, match="multiproduct' only"):
        build_model("multilevel", tiny_data, store_varying=VARYING)


def test_marginal_with_fixed_promotions_matches_a_dense_multivariate_normal(tiny_data, varying_points):
    model, points = varying_points
    potential = _fn(model, [model.potentials[0]])
    for point in points:
        v = _population_values(model, point)
        assert v["store_chol"].shape == (3, 2, 2)
        assert float(potential(point)[0]) == pytest.approx(_dense_marginal_varying(tiny_data, v, [0, 1]), rel=1e-8)


def test_marginal_with_fixed_promotions_is_the_row_level_model_integrated(tiny_data, varying_points):
    """log p(y) = log p(y | θ) + log p(θ) - log p(θ | y), with θ the store-varying coefficients only."""
    model, points = varying_points
    potential = _fn(model, [model.potentials[0]])
    rows = build_product_model(tiny_data, "rows", store_varying=VARYING)
    obs_logp = _fn(rows, [rows.logp(vars=rows.observed_RVs)])
    theta_fn = _fn(rows, [rows["store_coef"]])
    rng = np.random.default_rng(9)
    for point in points:
        v = _population_values(model, point)
        rows_point = {**point, "z_store": rng.normal(size=(tiny_data.n_stores, tiny_data.n_products, 2))}
        theta = theta_fn(rows_point)[0]
        m = _prior_mean(tiny_data, v)
        np.testing.assert_allclose(theta[..., 2:], m[..., 2:])       # the lifts are their population mean
        mean, chol_prec = store_posterior_moments(tiny_data, m, _cross(v), v["store_chol"], v["sigma"], [0, 1])
        np.testing.assert_array_equal(mean[..., 2:], m[..., 2:])
        log_prior = log_post = 0.0
        for s in range(tiny_data.n_stores):
            for k in range(tiny_data.n_products):
                cov = v["store_chol"][k] @ v["store_chol"][k].T
                log_prior += stats.multivariate_normal(m[s, k, :2], cov).logpdf(theta[s, k, :2])
                post_cov = np.linalg.inv(chol_prec[s, k] @ chol_prec[s, k].T)
                log_post += stats.multivariate_normal(mean[s, k, :2], post_cov).logpdf(theta[s, k, :2])
        identity = float(obs_logp(rows_point)[0]) + log_prior - log_post
        assert float(potential(point)[0]) == pytest.approx(identity, rel=1e-8)


def test_sufficient_and_rows_forms_agree_with_fixed_promotions(tiny_data):
    rows = build_product_model(tiny_data, "rows", store_varying=VARYING)
    suff = build_product_model(tiny_data, "sufficient", store_varying=VARYING)
    rng = np.random.default_rng(4)
    for _ in range(2):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in suff.initial_point().items()}
        assert rows.compile_logp(**FAST)(point) == pytest.approx(suff.compile_logp(**FAST)(point), rel=1e-9)


def test_one_store_varying_coefficient_uses_a_half_normal_sd(tiny_data, random_points):
    model = build_product_model(tiny_data, store_varying="own_price")
    assert "sd_store_0" in model.named_vars and "chol_store_0" not in model.named_vars
    rng = np.random.default_rng(12)
    point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in model.initial_point().items()}
    v = _population_values(model, point)
    potential = _fn(model, [model.potentials[0]])
    assert float(potential(point)[0]) == pytest.approx(_dense_marginal_varying(tiny_data, v, [1]), rel=1e-8)


def test_exact_draws_with_fixed_promotions(tiny_data, varying_points):
    """The store draws: lifts equal to their population mean, the varying part with the analytic moments."""
    import xarray as xr

    model, points = varying_points
    v = _population_values(model, points[0])
    n = 3000
    post = {name: (("chain", "draw", *dims), np.broadcast_to(v[name], (1, n, *np.shape(v[name]))))
            for name, dims in [("coef_mean", ("product", "coefficient")),
                               ("coef_covariate", ("product", "coefficient", "covariate")),
                               ("elasticity", ("product", "price_of")),
                               ("store_chol", ("product", "varying", "varying_")), ("sigma", ("product",))]}
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset(post, coords={"varying": VARYING,
                                                                         "varying_": VARYING})})
    idata = add_store_effects(idata, model_spec(model), seed=5)
    draws = idata["posterior"]["store_coef"].values[0]           # (n, S, K, D)
    m = _prior_mean(tiny_data, v)
    mean, chol_prec = store_posterior_moments(tiny_data, m, _cross(v), v["store_chol"], v["sigma"], [0, 1])
    np.testing.assert_allclose(draws[..., 2:], np.broadcast_to(m[..., 2:], draws[..., 2:].shape))
    cov = np.linalg.inv(chol_prec @ np.swapaxes(chol_prec, -1, -2))
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    # each mean within 4.5 standard errors: 24 comparisons, false alarm about 2e-4 in all
    z = (draws[..., :2].mean(0) - mean[..., :2]) / (sd / np.sqrt(n))
    assert np.abs(z).max() < 4.5


@pytest.mark.slow
def test_fit_with_lifts_by_product_draws_the_store_vectors(tiny_data):
    from elasticity_lib import fit

    idata = fit(build_model("multiproduct", tiny_data, store_varying=VARYING), chains=2, draws=200, tune=300,
                random_seed=2)
    post = idata["posterior"]
    assert post["store_sd"].dims[-1] == "varying" and list(post["varying"].values) == VARYING
    coef = post["store_coef"]
    assert coef.shape == (2, 200, tiny_data.n_stores, tiny_data.n_products, 4)
    # the lifts are the population mean at each store's income; the own elasticities vary by store
    mean = post["coef_mean"] + (post["coef_covariate"] * xr_covariates(tiny_data)).sum("covariate")
    np.testing.assert_allclose(coef.sel(coefficient=PROMOS).values,
                               mean.sel(coefficient=PROMOS).transpose("chain", "draw", "store", "product",
                                                                     "coefficient").values, rtol=1e-10, atol=1e-12)
    assert float(post["own_elasticity"].std(("chain", "draw")).min()) > 0


def xr_covariates(d: ProductData):
    import xarray as xr

    return xr.DataArray(d.covariates_std, dims=("store", "covariate"), coords={"store": d.stores,
                                                                                "covariate": d.covariates})
# --- covariates on some store coefficients only -----------------------------------------------


def test_covariate_coefficients_are_validated(tiny_table):
    d = prepare(tiny_table, covariate_coefficients=["own_price", "intercept"])
    assert d.shifted_coefficients == ["intercept", "own_price"]      # the model's order
    assert prepare(tiny_table).shifted_coefficients == ["intercept", "own_price", *PROMOS]
    assert prepare(tiny_table).covariate_coefficients is None
    with pytest.raises(ValueError, match=r"covariate_coefficients must name .*'promo'"):
        prepare(tiny_table, covariate_coefficients=["own_price", "promo"])
    with pytest.raises(ValueError, match=r"covariate_coefficients must name"):
        prepare(tiny_table, covariate_coefficients=[])
    with pytest.raises(ValueError, match=r"names \['own_price'\] more than once"):
        prepare(tiny_table, covariate_coefficients=["own_price", "own_price"])
    with pytest.raises(ValueError, match="needs covariates"):
        prepare_product_data(tiny_table, promotions=PROMOS, covariate_coefficients=["own_price"])


@pytest.fixture(scope="module")
def restricted():
    table = simulate_products(TINY, seed=11).table()
    codes, _ = pd.factorize(table["store"], sort=True)
    table["distance"] = (codes * 5 % 7).astype(float)                 # a second store covariate
    d = prepare_product_data(table, promotions=PROMOS, covariates=["income", "distance"],
                             covariate_coefficients=["intercept", "own_price"])
    return d, build_product_model(d)


def _restricted_values(d, model, point) -> dict:
    v = _population_values(model, point)
    full = np.zeros((d.n_products, d.n_coefficients, d.n_covariates))
    full[:, :2] = v["coef_covariate"]                                 # intercept and own price, in that order
    return {**v, "coef_covariate": full}


def test_restricted_covariates_shift_only_the_named_coefficients(restricted):
    d, model = restricted
    assert model.named_vars_to_dims["coef_covariate"] == ("product", "covariate_coefficient", "covariate")
    assert list(model.coords["covariate_coefficient"]) == ["intercept", "own_price"]
    assert model["coef_covariate"].eval().shape == (d.n_products, 2, 2)
    potential = _fn(model, [model.potentials[0]])
    rng = np.random.default_rng(21)
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in model.initial_point().items()}
        v = _restricted_values(d, model, point)
        assert float(potential(point)[0]) == pytest.approx(_dense_marginal(d, v), rel=1e-8)
    rows = build_product_model(d, "rows")
    assert rows.compile_logp(**FAST)(point | {"z_store": np.zeros((d.n_stores, d.n_products, 4))}) == pytest.approx(
        build_product_model(d, "sufficient").compile_logp(**FAST)(
            point | {"z_store": np.zeros((d.n_stores, d.n_products, 4))}), rel=1e-9)


def test_restricted_covariates_exact_draws_use_the_shifted_prior_mean(restricted):
    import xarray as xr

    d, model = restricted
    point = {k: v + 0.3 for k, v in model.initial_point().items()}
    v = _restricted_values(d, model, point)
    sampled = _population_values(model, point)["coef_covariate"]
    post = {"coef_mean": (("chain", "draw", "product", "coefficient"), v["coef_mean"][None, None]),
            "coef_covariate": (("chain", "draw", "product", "covariate_coefficient", "covariate"), sampled[None, None]),
            "elasticity": (("chain", "draw", "product", "price_of"), v["elasticity"][None, None]),
            "store_chol": (("chain", "draw", "product", "coefficient", "coefficient_"), v["store_chol"][None, None]),
            "sigma": (("chain", "draw", "product"), v["sigma"][None, None])}
    idata = add_store_effects(xr.DataTree.from_dict({"posterior": xr.Dataset(post)}), model_spec(model), seed=3)
    assert idata["posterior"]["store_coef"].shape == (1, 1, d.n_stores, d.n_products, 4)
    # the store vectors are drawn around the prior mean with the slopes in their places (zero on the promotions)
    from elasticity_lib.models.products import _draw_values

    m, *_ = _draw_values(idata["posterior"].dataset, d)
    np.testing.assert_allclose(m[0], _prior_mean(d, v), rtol=1e-12, atol=1e-12)
    assert np.ptp(m[0][..., 2:], axis=0).max() == 0.0                 # promotions: one mean for all stores
    assert np.ptp(m[0][..., 1], axis=0).min() > 0                     # own price: shifted store by store
    assert spec_attributes(model_spec(model))["elasticity_covariate_coefficients"] == ["intercept", "own_price"]
