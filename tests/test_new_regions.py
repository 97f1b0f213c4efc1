"""Tests of new-region predictions, their demand bands and held-out refits."""

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

from elasticity_lib.data.prepare import Centring, prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market
from elasticity_lib.models import build_model
from elasticity_lib.predict import quantity_bands
from elasticity_lib.validation.holdout import (
    HoldoutRefitter,
    holdout_coverage,
    new_region_draws,
    predict_regions,
)

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
@pytest.mark.parametrize("kind", ["baseline", "multilevel", "correlated"])
@pytest.mark.parametrize("removed", ["region", "stores"])
def test_shared_model_on_a_subset_equals_the_model_of_the_reduced_table(small_market, kind, removed):
    """The data a refitter swaps in (statistics, centring, weights of a subset) give the reduced table's density."""
    from conftest import random_point

    from elasticity_lib.models import WEIGHTED_FORMS

    df = small_market.to_dataframe()
    full = prepare_data(df)
    if removed == "region":  # every row of region 1 (the baseline keeps its weight-0 region's prior)
        keep = (df["region_id"] != 1).to_numpy()
    else:  # the first two stores of every region, so each region keeps some rows
        first = df.groupby("region_id")["store_id"].transform(lambda s: s.isin(pd.unique(s)[:2]))
        keep = ~first.to_numpy()
    sub = full.subset(keep)
    likelihood = dict(WEIGHTED_FORMS)[kind]
    fast = build_model(kind, full, likelihood, shared_data=True, group_weights=np.ones(full.n_regions))
    weight = (sub.region_stats.n > 0).astype(float)
    k = sub.centring
    values = {f"stat_{f}": getattr(sub.region_stats, f) for f in ("n", "mx", "my", "cxx", "cxy", "cyy")}
    values.update({f"centre_{name}": getattr(k, name) for name in ("log_price", "log_quantity", "income", "income_scale")})
    values.update(group_weight=weight, income_std=(full.income - k.income) / k.income_scale)
    pm.set_data({name: value for name, value in values.items() if name in fast.named_vars}, model=fast)
    reduced = prepare_data(df[keep])
    assert k == reduced.centring
    ref = build_model(kind, reduced, likelihood)
    rng = np.random.default_rng(1)
    for _ in range(3):
        point = random_point(ref, rng)
        if removed == "region" and kind == "baseline":
            # the full model also has region 1's parameters, whose (prior) density the reduced model lacks
            full_point = {name: np.insert(v, 1, 0.3) if np.ndim(v) else v for name, v in point.items()}
            lost = sum(float(pm.logp(fast[name], np.insert(v, 1, 0.3)).eval()[1])
                       for name, v in point.items() if np.ndim(v))
            assert _logp_at(fast, full_point) - lost == pytest.approx(_logp_at(ref, point), rel=1e-10)
        else:
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
    assert refitter.kind == "multilevel" and refitter.sample_kwargs["target_accept"] == 0.9
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


def _brute_force_elpd(data, idata, held_out):
    """sum_i log mean_s Normal(y_i | alpha_s[r_i] + beta_s[r_i] x_i, sigma_s), written out row by row."""
    from scipy.special import logsumexp

    post = idata["posterior"]
    total = 0.0
    for i in np.flatnonzero(held_out):
        j = data.region_idx[i]
        a = post["alpha"].isel(region=j).values.ravel()
        b = post["beta"].isel(region=j).values.ravel()
        s = post["sigma"].values.ravel()
        logp = -0.5 * ((data.log_quantity[i] - a - b * data.log_price[i]) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        total += logsumexp(logp) - np.log(len(a))
    return total


def test_leave_region_out_scores_each_region_from_its_income(small_market, refitter):
    from elasticity_lib.reproducibility import sampler_seed
    from elasticity_lib.validation.holdout import leave_region_out

    data = prepare_data(small_market.to_dataframe())
    scores = leave_region_out(data, refitter=refitter)
    assert list(scores.folds.index) == [f"region {r}" for r in data.coords["region"]]
    assert scores.folds["rows"].sum() == data.n_obs and scores.unit == "region"
    assert np.isfinite(scores.folds["elpd"]).all() and (scores.folds["mcse"] > 0).all()
    assert scores.elpd == pytest.approx(scores.folds["elpd"].sum())
    # region 0 by brute force, from the same seeded refit and draws of its effects
    label, held_out = "region 0", data.region_idx == 0
    held = refitter.fit_rows(data, ~held_out, seed=sampler_seed(f"loro_fit_{label}"),
                             effects_seed=sampler_seed(f"loro_effects_{label}"))
    assert scores.folds.loc[label, "elpd"] == pytest.approx(_brute_force_elpd(data, held, held_out), rel=1e-9)
    # a region without rows is predicted from its income: its effects follow the new-region distribution
    new = new_region_draws(held, {"held_out": data.income[0]}, seed=4).sel(region="held_out")
    for var in ("alpha", "beta"):
        ours, theirs = held["posterior"][var].isel(region=0).values.ravel(), new[var].values.ravel()
        tol = 5 * np.sqrt((ours.var() + theirs.var()) / len(ours) * 4)  # generous for autocorrelated draws
        assert ours.mean() == pytest.approx(theirs.mean(), abs=tol)
        assert ours.std() == pytest.approx(theirs.std(), rel=0.25)
    with pytest.raises(ValueError, match="no population distribution"):
        leave_region_out(data, kind="baseline")
    with pytest.raises(ValueError, match="not the correlated model"):
        leave_region_out(data, kind="correlated", refitter=refitter)


@pytest.mark.slow
def test_leave_store_out_predicts_a_store_from_its_region(small_market):
    from elasticity_lib.reproducibility import sampler_seed
    from elasticity_lib.validation.holdout import leave_store_out, store_folds

    data = prepare_data(small_market.to_dataframe())
    refitter = HoldoutRefitter(draws=300, tune=300, chains=2, kind="baseline")
    scores = leave_store_out(data, kind="baseline", n_folds=3, fold_seed=0, refitter=refitter)
    assert scores.folds["rows"].sum() == data.n_obs and scores.unit == "store"
    assert sorted(scores.pointwise["row"]) == list(range(data.n_obs))
    label, held_out = store_folds(data, 3, seed=0)[1]
    held = refitter.fit_rows(data, ~held_out, seed=sampler_seed(f"loso_fit_{label}"))
    assert scores.folds.loc[label, "elpd"] == pytest.approx(_brute_force_elpd(data, held, held_out), rel=1e-9)
    # the standard error treats stores as the units
    per_store = scores.pointwise.groupby("store")["elpd"].sum()
    assert scores.se == pytest.approx(np.sqrt(len(per_store) * per_store.var(ddof=1)))


def test_time_holdout_predicts_the_last_steps_from_the_past(small_market, refitter):
    from elasticity_lib.reproducibility import sampler_seed
    from elasticity_lib.validation.holdout import time_holdout, time_holdout_fold

    data = prepare_data(small_market.to_dataframe())
    scores = time_holdout(data, 3, refitter=refitter)
    ((label, held_out),) = time_holdout_fold(data, 3)
    assert scores.folds.loc[label, "rows"] == held_out.sum()
    held = refitter.fit_rows(data, ~held_out, seed=sampler_seed(f"time_holdout_fit_{label}"),
                             effects_seed=sampler_seed(f"time_holdout_effects_{label}"))
    assert scores.elpd == pytest.approx(_brute_force_elpd(data, held, held_out), rel=1e-9)


def test_time_holdout_fold_holds_out_each_stores_last_steps(small_market):
    from elasticity_lib.validation.holdout import time_holdout_fold

    df = small_market.to_dataframe().sample(frac=1.0, random_state=0)  # row order must not matter
    data = prepare_data(df)
    steps = data.table["time_step"].to_numpy()
    for k, min_train in ((1, 2), (3, 2), (10, 5)):
        ((label, held_out),) = time_holdout_fold(data, k, min_train=min_train)
        assert label == f"last {k} steps"
        for s in range(data.n_stores):
            mine = data.store_idx == s
            n_held = min(k, max(mine.sum() - min_train, 0))
            assert held_out[mine].sum() == n_held
            if n_held:  # the held-out steps are the store's latest ones
                assert steps[mine & held_out].min() > steps[mine & ~held_out].max()


def test_time_holdout_fold_errors(small_market):
    from elasticity_lib.validation.holdout import time_holdout_fold

    data = prepare_data(small_market.to_dataframe())
    for k in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="k must be a whole number"):
            time_holdout_fold(data, k)
    with pytest.raises(ValueError, match="min_train must be a whole number"):
        time_holdout_fold(data, 2, min_train=0)
    longest = int(np.bincount(data.store_idx).max())
    with pytest.raises(ValueError, match=f"no store has more than min_train={longest} rows"):
        time_holdout_fold(data, 2, min_train=longest)
    without_time = prepare_data(small_market.to_dataframe().drop(columns="time_step"))
    with pytest.raises(ValueError, match="no 'time_step' column"):
        time_holdout_fold(without_time, 2)


def test_store_folds_deal_whole_stores_across_regions(small_market):
    from elasticity_lib.validation.holdout import store_folds

    data = prepare_data(small_market.to_dataframe())
    exact = store_folds(data)
    assert len(exact) == data.n_stores and all(m.sum() == (data.store_idx == s).sum() for s, (_, m) in enumerate(exact))
    folds = store_folds(data, 4, seed=1)
    masks = np.array([m for _, m in folds])
    assert (masks.sum(axis=0) == 1).all()  # every row in exactly one fold
    stores_per_fold = [np.unique(data.store_idx[m]) for m in masks]
    assert sorted(np.concatenate(stores_per_fold)) == list(range(data.n_stores))  # stores are not split
    sizes = [len(s) for s in stores_per_fold]
    assert max(sizes) - min(sizes) <= 1
    for j in range(data.n_regions):  # a region with at least 4 stores has one in every fold
        if (data.store_region_idx == j).sum() >= 4:
            assert all((data.region_idx[m] == j).any() for m in masks)
    again, other = store_folds(data, 4, seed=1), store_folds(data, 4, seed=2)
    assert all((a == b).all() for (_, a), (_, b) in zip(folds, again))
    assert any((a != b).any() for (_, a), (_, b) in zip(folds, other))
    for bad in (1, data.n_stores + 1, 2.0):
        with pytest.raises(ValueError, match="n_folds must be a whole number"):
            store_folds(data, bad, seed=0)
    with pytest.raises(ValueError, match="needs a seed"):
        store_folds(data, 3)


def _fake_cv(kind, elpd_by_row, stores, mcse=0.1):
    from elasticity_lib.validation.holdout import CrossValidation

    pointwise = pd.DataFrame({"row": np.arange(len(elpd_by_row)), "fold": "f", "region": 0, "store": stores,
                              "elpd": elpd_by_row})
    folds = pd.DataFrame({"rows": [len(elpd_by_row)], "elpd": [sum(elpd_by_row)], "mcse": [mcse],
                          "divergences": [0]}, index=pd.Index(["f"], name="fold"))
    return CrossValidation(kind=kind, pointwise=pointwise, folds=folds, unit="store")


def test_compare_cross_validations_differences_per_unit():
    from elasticity_lib.validation.holdout import compare_cross_validations

    rng = np.random.default_rng(0)
    stores = np.repeat(["a", "b", "c", "d", "e"], 3)
    good = rng.normal(-1.0, 0.5, 15)
    bad = good - rng.normal(0.3, 0.2, 15)
    table = compare_cross_validations({"bad": _fake_cv("x", bad, stores, 0.2), "good": _fake_cv("y", good, stores)})
    assert list(table.index) == ["good", "bad"]
    d = pd.Series(good - bad).groupby(stores).sum()
    assert table.loc["bad", "elpd_diff"] == pytest.approx(d.sum())
    assert table.loc["bad", "dse"] == pytest.approx(np.sqrt(5 * d.var(ddof=1)))
    assert table.loc["good", "elpd_diff"] == 0 and table.loc["good", "dse"] == 0
    assert table.loc["bad", "diff_mcse"] == pytest.approx(np.hypot(0.1, 0.2))
    assert table.loc["good", "se"] == pytest.approx(np.sqrt(5 * pd.Series(good).groupby(stores).sum().var(ddof=1)))
    with pytest.raises(ValueError, match="do not hold out the same rows"):
        compare_cross_validations({"good": _fake_cv("y", good, stores), "short": _fake_cv("z", good[:9], stores[:9])})


def test_cross_validate_checks_its_folds(small_market):
    from elasticity_lib.validation.holdout import cross_validate, region_folds

    data = prepare_data(small_market.to_dataframe())
    baseline = HoldoutRefitter(kind="baseline")
    with pytest.raises(ValueError, match="baseline model has no prediction for a region"):
        cross_validate(data, region_folds(data)[:1], refitter=baseline, unit="region", seed_stream="t")
    with pytest.raises(ValueError, match="unit must be"):
        cross_validate(data, region_folds(data), refitter=baseline, unit="week", seed_stream="t")
    with pytest.raises(ValueError, match="boolean mask"):
        cross_validate(data, [("none", np.zeros(data.n_obs, dtype=bool))], refitter=baseline, unit="row",
                       seed_stream="t")
    with pytest.raises(ValueError, match="refits the kinds"):
        HoldoutRefitter(kind="store_multilevel")
