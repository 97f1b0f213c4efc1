"""Tests of new-region predictions, their demand bands and held-out refits."""

import arviz as az
import numpy as np
import pymc as pm
import pytest
import xarray as xr

from elasticity_lib.models import build_model
from elasticity_lib.new_regions import (
    HoldoutRefitter,
    holdout_coverage,
    new_region_draws,
    predict_regions,
)
from elasticity_lib.predictive import quantity_bands
from elasticity_lib.prepare import Centring, prepare_data
from elasticity_lib.simulation import SimulationConfig, simulate_market

CHAINS, DRAWS = 2, 2000
REGIONS = [0, 1, 2]


def fake_posterior(kind: str, seed: int = 0, log_price_center: float = 0.0):
    """A posterior-shaped DataTree with spread-out draws (no sampling needed).

    It records, as ``fit`` does, the log price at which the model defines region
    deviations (``elasticity_log_price_center``); the model kind is not recorded.
    """
    rng = np.random.default_rng(seed)
    shape = (CHAINS, DRAWS)
    post = {
        "a0": rng.normal(1.0, 0.1, shape), "a1": rng.normal(0.3, 0.02, shape),
        "b0": rng.normal(-0.1, 0.2, shape), "b1": rng.normal(-0.6, 0.05, shape),
        "sigma": np.abs(rng.normal(0.3, 0.01, shape)),
        "alpha": rng.normal(2.5, 0.1, (*shape, len(REGIONS))),
        "beta": rng.normal(-3.0, 0.2, (*shape, len(REGIONS))),
    }
    if kind == "correlated":
        l00 = np.abs(rng.normal(0.2, 0.03, shape))
        l10 = rng.normal(-0.15, 0.03, shape)
        l11 = np.abs(rng.normal(0.25, 0.03, shape))
        post["chol_region"] = np.stack([l00, l10, l11], axis=-1)
    else:
        post["sigma_a"] = np.abs(rng.normal(0.2, 0.03, shape))
        post["sigma_b"] = np.abs(rng.normal(0.4, 0.05, shape))
    dims = {"alpha": ["region"], "beta": ["region"], "chol_region": ["chol_region_dim_0"]}
    tree = az.from_dict({"posterior": post}, dims=dims, coords={"region": REGIONS})
    tree.attrs["elasticity_log_price_center"] = log_price_center
    tree["posterior"].attrs["elasticity_log_price_center"] = log_price_center
    return tree


def test_known_regions_are_exactly_their_posterior_draws():
    idata = fake_posterior("multilevel")
    pred = predict_regions(idata, {"new": 4.0}, kind="multilevel", seed=1)
    for var in ("alpha", "beta"):
        known = pred[var].sel(region=pred["observed"]).transpose("chain", "draw", "region")
        np.testing.assert_array_equal(known.values, idata.posterior[var].transpose("chain", "draw", "region").values)
    assert pred["region"].values.tolist() == [*map(str, REGIONS), "new"]
    np.testing.assert_array_equal(pred["beta"].sel(region="1").values, idata.posterior["beta"].sel(region=1).values)
    assert pred["observed"].values.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(pred["sigma"].values, idata.posterior["sigma"].values)


def test_predictions_are_reproducible_and_seed_dependent():
    idata = fake_posterior("multilevel")
    a = new_region_draws(idata, {"new": 4.0}, kind="multilevel", seed=7)
    b = new_region_draws(idata, {"new": 4.0}, kind="multilevel", seed=7)
    c = new_region_draws(idata, {"new": 4.0}, kind="multilevel", seed=8)
    xr.testing.assert_equal(a, b)
    assert not np.array_equal(a["beta"].values, c["beta"].values)


def _pymc_new_region(idata, income, kind):
    """Independent computation: PyMC posterior predictive of new variables."""
    with pm.Model() as m:
        a0, a1 = pm.Flat("a0"), pm.Flat("a1")
        b0, b1 = pm.Flat("b0"), pm.Flat("b1")
        mean = pm.math.stack([a0 + a1 * income, b0 + b1 * income])
        if kind == "correlated":
            chol, _, _ = pm.LKJCholeskyCov("chol_region", n=2, eta=2.0, sd_dist=pm.HalfNormal.dist(1.0, shape=2))
            pm.MvNormal("effects_new", mu=mean, chol=chol)
        else:
            sa, sb = pm.HalfFlat("sigma_a"), pm.HalfFlat("sigma_b")
            pm.Normal("effects_new", mu=mean, sigma=pm.math.stack([sa, sb]))
    pp = pm.sample_posterior_predictive(idata, model=m, var_names=["effects_new"], random_seed=11, progressbar=False)
    return pp.posterior_predictive["effects_new"].values.reshape(-1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multilevel", "correlated"])
def test_new_region_moments_match_an_independent_pymc_computation(kind):
    income = 3.5
    idata = fake_posterior(kind)
    ours = new_region_draws(idata, {"new": income}, kind=kind, seed=3)
    ours = np.column_stack([ours[v].values.ravel() for v in ("alpha", "beta")])
    ref = _pymc_new_region(idata, income, kind)
    n = len(ours)
    for k in range(2):
        se = np.sqrt(ours[:, k].var() / n + ref[:, k].var() / n)
        assert abs(ours[:, k].mean() - ref[:, k].mean()) < 4 * se
        assert ours[:, k].std() == pytest.approx(ref[:, k].std(), rel=0.06)
    corr_ours = np.corrcoef(ours.T)[0, 1]
    corr_ref = np.corrcoef(ref.T)[0, 1]
    assert abs(corr_ours - corr_ref) < 0.05
    if kind == "correlated":
        assert corr_ours < -0.2  # the draws carry the correlation of the Cholesky factor
    else:
        assert abs(corr_ours) < 0.1


@pytest.mark.parametrize("kind", ["multilevel", "correlated"])
def test_new_region_moments_match_the_mixture_formula(kind):
    """Mean = E[line]; variance = Var[line] + E[deviation variance] (law of total variance)."""
    income = 6.0
    idata = fake_posterior(kind, seed=5)
    post = idata.posterior
    pred = new_region_draws(idata, {"new": income}, kind=kind, seed=4)["beta"].values.ravel()
    line = (post["b0"] + post["b1"] * income).values.ravel()
    if kind == "correlated":
        dev_var = (post["chol_region"][..., 1] ** 2 + post["chol_region"][..., 2] ** 2).values.ravel()
    else:
        dev_var = (post["sigma_b"] ** 2).values.ravel()
    mean, var = line.mean(), line.var() + dev_var.mean()
    assert abs(pred.mean() - mean) < 4 * np.sqrt(var / pred.size)
    assert pred.var() == pytest.approx(var, rel=0.06)


def test_new_region_intercepts_carry_the_deviation_defined_at_the_centre_price():
    """Deviations live at the mean log price x_c: alpha = line_a + d_a - x_c d_b at log price 0."""
    income, x_c = 6.0, 0.4
    idata = fake_posterior("multilevel", seed=6, log_price_center=x_c)
    post = idata.posterior
    pred = new_region_draws(idata, {"new": income}, kind="multilevel", seed=4)["alpha"].values.ravel()
    line = (post["a0"] + post["a1"] * income).values.ravel()
    dev_var = (post["sigma_a"] ** 2 + x_c**2 * post["sigma_b"] ** 2).values.ravel()
    var = line.var() + dev_var.mean()
    assert abs(pred.mean() - line.mean()) < 4 * np.sqrt(var / pred.size)
    assert pred.var() == pytest.approx(var, rel=0.06)
    # a fit that does not record x_c cannot be predicted from silently
    del idata.attrs["elasticity_log_price_center"], idata["posterior"].attrs["elasticity_log_price_center"]
    with pytest.raises(ValueError, match="log_price_center"):
        new_region_draws(idata, {"new": income}, kind="multilevel", seed=4)


def test_new_region_input_errors():
    idata = fake_posterior("multilevel")
    with pytest.raises(ValueError, match="baseline"):
        new_region_draws(idata, {"new": 4.0}, kind="baseline", seed=1)
    with pytest.raises(ValueError, match=r"new_incomes\['new'\]"):
        new_region_draws(idata, {"new": -1.0}, kind="multilevel", seed=1)
    with pytest.raises(ValueError, match="non-empty"):
        new_region_draws(idata, {}, kind="multilevel", seed=1)
    with pytest.raises(ValueError, match="chol_region"):
        new_region_draws(idata, {"new": 4.0}, kind="correlated", seed=1)
    with pytest.raises(ValueError, match="already fitted"):
        predict_regions(idata, {1: 4.0}, kind="multilevel", seed=1)


def test_quantity_bands_without_noise_follow_the_demand_curve():
    idata = fake_posterior("multilevel")
    post = idata.posterior.to_dataset()
    effects = xr.Dataset({
        "alpha": xr.full_like(post["alpha"], 2.0),
        "beta": xr.full_like(post["beta"], -3.0),
        "sigma": xr.zeros_like(post["sigma"]),
    })
    prices = np.array([0.8, 1.0, 1.7])
    bands = quantity_bands(effects, prices, seed=1)
    expected = np.tile(np.exp(2.0 - 3.0 * np.log(prices)), len(REGIONS))
    for col in ("curve_median", "curve_lower", "curve_upper", "pred_lower", "pred_upper", "expected"):
        np.testing.assert_allclose(bands[col].values.ravel(), expected, rtol=1e-12)


def test_quantity_bands_expected_quantity_is_the_lognormal_mean():
    idata = fake_posterior("multilevel")
    effects = predict_regions(idata, kind="multilevel", seed=1)
    bands = quantity_bands(effects, [1.2], prob=0.5, seed=2).isel(point=0)
    post = idata.posterior
    mu = post["alpha"] + post["beta"] * np.log(1.2)
    expected = np.exp(mu + post["sigma"] ** 2 / 2).mean(("chain", "draw")).values
    np.testing.assert_allclose(bands["expected"], expected, rtol=1e-12)
    np.testing.assert_allclose(bands["curve_median"], np.exp(mu).median(("chain", "draw")).values, rtol=1e-12)
    assert (bands["pred_lower"] < bands["curve_lower"]).all() and (bands["curve_upper"] < bands["pred_upper"]).all()
    assert (bands["curve_lower"] < bands["curve_median"]).all() and (bands["curve_median"] < bands["curve_upper"]).all()
    with pytest.raises(ValueError, match="prices"):
        quantity_bands(effects, [1.0, -2.0], seed=1)
    with pytest.raises(ValueError, match="prob"):
        quantity_bands(effects, [1.0], prob=1.5, seed=1)


@pytest.fixture(scope="module")
def small_market():
    return simulate_market(SimulationConfig(n_regions=4, stores_mu=4.0), seed=21)


def _logp_at(model, point):
    fn = model.compile_logp()
    return float(fn(point))


@pytest.mark.slow
def test_holdout_model_equals_the_multilevel_model_without_the_region(small_market):
    """Weight 0 on a region == refitting prepare_data(table without the region)."""
    df = small_market.to_dataframe()
    full = prepare_data(df)
    held = 2
    reduced = prepare_data(df[df["region_id"] != held])
    fast = build_model("multilevel", full, "marginal", shared_data=True, group_weights=np.ones(full.n_regions))
    weight = np.array([r != held for r in full.coords["region"]], dtype=float)
    k = Centring.of(full.region_stats, full.income, weight)
    pm.set_data({"group_weight": weight, "income_std": (full.income - k.income) / k.income_scale,
                 **{f"centre_{name}": getattr(k, name) for name in ("log_price", "log_quantity", "income", "income_scale")}},
                model=fast)
    ref = build_model("multilevel", reduced, likelihood="marginal")
    # both are centred on the data without the region, so the same free values give the same density
    assert fast["centre_log_price"].get_value() == pytest.approx(reduced.centring.log_price)
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = {"a0_centred": rng.normal(0.0, 0.3), "a1_std": rng.normal(0.3, 0.1), "b0_centred": rng.normal(-3, 0.3),
                 "b1_std": rng.normal(-1.0, 0.1), "sigma_a_log__": rng.normal(-3, 0.3),
                 "sigma_b_log__": rng.normal(-3, 0.3), "sigma_log__": rng.normal(-1.2, 0.1)}
        assert _logp_at(fast, point) == pytest.approx(_logp_at(ref, point), rel=1e-10)


@pytest.mark.slow
def test_holdout_model_with_all_regions_equals_build_model(small_market):
    data = prepare_data(small_market.to_dataframe())
    fast = build_model("multilevel", data, "marginal", shared_data=True, group_weights=np.ones(data.n_regions))
    ref = build_model("multilevel", data, likelihood="marginal")
    point = {"a1_std": 0.25, "b1_std": -0.5, "a0_centred": 0.2, "b0_centred": -3.0,
             "sigma_a_log__": -2.5, "sigma_b_log__": -3.1, "sigma_log__": -1.1}
    assert _logp_at(fast, point) == pytest.approx(_logp_at(ref, point), rel=1e-12)


@pytest.fixture(scope="module")
def refitter():
    return HoldoutRefitter(draws=300, tune=300, chains=2)


def test_refitter_is_reproducible_and_checks_its_input(small_market, refitter):
    data = prepare_data(small_market.to_dataframe())
    a = refitter.fit(data, 1, seed=5)
    b = refitter.fit(data, 1, seed=5)
    np.testing.assert_array_equal(a.posterior["b1"].values, b.posterior["b1"].values)
    with pytest.raises(ValueError, match="held_out region 9"):
        refitter.fit(data, 9, seed=5)
    other = prepare_data(simulate_market(SimulationConfig(n_regions=3), seed=2).to_dataframe())
    with pytest.raises(ValueError, match="compiled for 4 regions"):
        refitter.fit(other, 0, seed=5)


def test_holdout_coverage_table(small_market, refitter):
    table = holdout_coverage([("m", small_market)], seed=3, refitter=refitter)
    truth = small_market.truth.region_elasticities
    assert table["region"].tolist() == sorted(truth)
    np.testing.assert_allclose(table["true_elasticity"], [truth[r] for r in table["region"]])
    assert (table["lower"] < table["pred_mean"]).all() and (table["pred_mean"] < table["upper"]).all()
    inside = (table["lower"] <= table["true_elasticity"]) & (table["true_elasticity"] <= table["upper"])
    assert table["covered"].tolist() == inside.tolist()
    # the held-out prediction uses the income line, so it tracks the truth across regions
    assert np.corrcoef(table["pred_mean"], table["true_elasticity"])[0, 1] > 0.9
    again = holdout_coverage([("m", small_market)], seed=3, refitter=refitter)
    assert again.equals(table)


@pytest.mark.slow
def test_posteriors_held_in_jax_arrays_are_accepted():
    """NumPyro fits can leave JAX arrays in the posterior; results must not depend on it."""
    jnp = pytest.importorskip("jax.numpy")
    idata = fake_posterior("multilevel")
    post = idata.posterior.to_dataset()
    as_jax = post.copy(data={k: jnp.asarray(v.values) for k, v in post.data_vars.items()})
    expected = predict_regions(idata, {"new": 4.0}, kind="multilevel", seed=1)
    got = predict_regions(as_jax, {"new": 4.0}, kind="multilevel", seed=1)
    # (JAX may hold float32 unless 64-bit mode is on, hence the tolerances)
    np.testing.assert_allclose(got["beta"].values, expected["beta"].values, rtol=1e-6)
    jax_effects = got.copy(data={k: jnp.asarray(v.values) for k, v in got.data_vars.items()})
    bands = quantity_bands(jax_effects.sel(region=["1", "new"]), [1.0, 1.5], seed=2)
    ref = quantity_bands(expected.sel(region=["1", "new"]), [1.0, 1.5], seed=2)
    xr.testing.assert_allclose(bands, ref, rtol=1e-5)


def test_the_kind_is_read_from_the_fit_when_not_given():
    """A result records its model kind; predictions need not be told it again."""
    from elasticity_lib.models import SPEC_PREFIX, fitted_kind

    idata = fake_posterior("correlated")
    with pytest.raises(ValueError, match="pass kind="):
        predict_regions(idata, {"new": 4.0}, seed=1)
    idata.attrs[SPEC_PREFIX + "kind"] = "correlated"
    assert fitted_kind(idata) == "correlated"
    told = predict_regions(idata, {"new": 4.0}, kind="correlated", seed=1)
    read = predict_regions(idata, {"new": 4.0}, seed=1)
    xr.testing.assert_identical(told, read)
    # the recorded kind is checked like a given one
    idata.attrs[SPEC_PREFIX + "kind"] = "baseline"
    with pytest.raises(ValueError, match="no population distribution"):
        predict_regions(idata, {"new": 4.0}, seed=1)


def test_leave_region_out_scores_each_region_from_its_income(small_market, refitter):
    from scipy.special import logsumexp

    from elasticity_lib.new_regions import leave_region_out
    from elasticity_lib.reproducibility import sampler_seed

    data = prepare_data(small_market.to_dataframe())
    scores = leave_region_out(data, refitter=refitter)
    assert list(scores.index) == list(data.coords["region"])
    assert scores["rows"].sum() == data.n_obs
    assert np.isfinite(scores["elpd"]).all() and (scores["mcse"] > 0).all()
    # region 0 by brute force, from the same seeded refit and prediction
    region, j = data.coords["region"][0], 0
    held = refitter.fit(data, region, seed=sampler_seed(f"loro_fit_{region}"))
    eff = new_region_draws(held, {"held_out": data.income[j]}, seed=sampler_seed(f"loro_effects_{region}"))
    a, b = (eff[v].sel(region="held_out").values.ravel() for v in ("alpha", "beta"))
    s = held["posterior"]["sigma"].values.ravel()
    rows = data.region_idx == j
    x, y = data.log_price[rows], data.log_quantity[rows]
    logp = -0.5 * ((y[None, :] - a[:, None] - b[:, None] * x[None, :]) / s[:, None]) ** 2 \
        - np.log(s[:, None]) - 0.5 * np.log(2 * np.pi)
    expected = (logsumexp(logp, axis=0) - np.log(len(a))).sum()
    assert scores.loc[region, "elpd"] == pytest.approx(expected, rel=1e-9)
