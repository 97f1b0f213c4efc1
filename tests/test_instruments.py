"""Prices set with an eye on demand: the simulation, the instrumental-variable model, the time split.

The fast tests check the simulation's mechanisms, the configurations' errors, and that the
model's likelihood is what it claims to be: the bivariate normal of SciPy, the same in its
two forms, and the book's multilevel model when there is neither instrument nor control.
The slow tests fit simulated markets and check the elasticities against the truth.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr
from conftest import random_point
from pydantic import ValidationError
from scipy import stats

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.price_setting import EXTRA_COLUMNS, PriceSettingConfig, simulate_priced_market
from elasticity_lib.data.simulation import SimulationConfig, simulate_market
from elasticity_lib.models import SPEC_PREFIX, build_model, fitted_kind, spec_attributes
from elasticity_lib.models.instruments import (
    CONTROLS,
    WEAK_F,
    IVConfig,
    IVDesign,
    IVFitter,
    build_iv_model,
    chain_modes,
    first_stage,
    fit_iv,
    gaussian_loglik,
    gram_matrices,
    initial_point_function,
    last_periods,
    log_predictive_density,
    pointwise_log_likelihood,
    start_values,
    two_stage_by_region,
    two_stage_least_squares,
)
from elasticity_lib.reproducibility import z_threshold
from elasticity_lib.validation.recovery import coverage_threshold

FAST = {"mode": "FAST_COMPILE"}
SMALL = SimulationConfig(n_regions=4, stores_mu=3.0, min_stores=2, time_steps_mu=10.0, min_time_steps=6,
                         price_sigma=0.15)
#: every mechanism on, at moderate strength
MECHANISMS = dict(adjustment_sd=0.15, cost_pass_through=0.1, promotion_rate=0.15, promotion_depth=0.2,
                  promotion_lift=0.3, post_promotion_dip=-0.3, season_amplitude=0.2, season_price_response=0.5)


def priced(anticipation=0.5, seed=11, market=SMALL, **changes):
    config = PriceSettingConfig(market=market, anticipation=anticipation, **{**MECHANISMS, **changes})
    return simulate_priced_market(config, seed=seed)


@pytest.fixture(scope="module")
def small_priced():
    return priced()


@pytest.fixture(scope="module")
def small_iv_data(small_priced):
    return prepare_data(small_priced.to_dataframe())


# --- the simulation -------------------------------------------------------------------

def test_every_mechanism_off_is_the_books_market():
    config = SimulationConfig(n_regions=3)
    table = simulate_priced_market(PriceSettingConfig(market=config), seed=5).to_dataframe()
    book = simulate_market(config, seed=5).to_dataframe()
    pd.testing.assert_frame_equal(table[book.columns], book)
    assert list(table.columns[len(book.columns):]) == EXTRA_COLUMNS


def test_switching_a_mechanism_on_keeps_the_stores_and_the_truth():
    a, b = priced(anticipation=0.0, seed=3), priced(anticipation=0.8, seed=3)
    assert a.truth == b.truth
    ta, tb = a.to_dataframe(), b.to_dataframe()
    pd.testing.assert_frame_equal(ta[["region_store_id", "time_step", "cost_shifter", "promotion"]],
                                  tb[["region_store_id", "time_step", "cost_shifter", "promotion"]])
    assert not np.allclose(ta["price"], tb["price"])


def test_simulation_is_deterministic():
    pd.testing.assert_frame_equal(priced(seed=9).to_dataframe(), priced(seed=9).to_dataframe())


def test_anticipation_sets_the_correlation_of_the_price_adjustment_with_the_shock():
    # only the adjustment moves prices: its correlation with the shock is the setting
    big = SimulationConfig(n_regions=20, stores_mu=20.0, time_steps_mu=40.0)
    m = simulate_priced_market(PriceSettingConfig(market=big, anticipation=0.6, adjustment_sd=0.2), seed=1)
    table = m.to_dataframe()
    base = simulate_market(big, seed=1).to_dataframe()
    adjustment = table["log_price"] - base["log_price"]
    r = np.corrcoef(adjustment, table["demand_shock"])[0, 1]
    se = (1 - 0.6**2) / np.sqrt(len(table))  # sd of a sample correlation
    assert abs(r - 0.6) < 4 * se  # false alarm about 6e-5
    # the shock is the book's noise: Normal(0, noise_sd)
    assert abs(table["demand_shock"].std() / big.noise_sd - 1) < 4 / np.sqrt(2 * len(table))
    assert m.price_shock_correlation() > 0.3


def test_demand_follows_the_stated_equation(small_priced):
    t = small_priced.to_dataframe()
    c = small_priced.config
    truth = small_priced.truth
    alpha = t["region_store_id"].map(truth.store_intercepts).astype(float)
    beta = t["region_store_id"].map(truth.store_elasticities).astype(float)
    season = c.season_amplitude * np.sin(2 * np.pi * t["period"] / c.season_length)
    expected = (alpha + beta * t["log_price"] + season + c.promotion_lift * t["promotion"]
                + c.post_promotion_dip * t["lagged_promotion"] + t["demand_shock"])
    np.testing.assert_allclose(t["log_quantities"], expected, atol=1e-10)


def test_promotions_never_follow_each_other_and_lags_line_up(small_priced):
    t = small_priced.to_dataframe().sort_values(["region_store_id", "period"])
    assert not ((t["promotion"] == 1) & (t["lagged_promotion"] == 1)).any()
    for _, store in t.groupby("region_store_id", observed=True):
        np.testing.assert_array_equal(store["lagged_promotion"].to_numpy()[1:], store["promotion"].to_numpy()[:-1])
    # every store's last row is in the same, latest period
    last = t.groupby("region_store_id", observed=True)["period"].max()
    assert last.nunique() == 1
    assert (t["season"] == t["period"] % small_priced.config.season_length).all()


@pytest.mark.parametrize("field, value", [("anticipation", 1.0), ("adjustment_sd", -0.1), ("promotion_rate", 1.0),
                                          ("post_promotion_dip", 0.2), ("season_length", 1), ("bogus", 1)])
def test_price_setting_config_errors_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        PriceSettingConfig(**{field: value})


@pytest.mark.parametrize("kwargs, field", [({"controls": ("promotion", "promotion")}, "controls"),
                                           ({"controls": ("price",)}, "controls"),
                                           ({"instrument": "season"}, "instrument"),
                                           ({"weak": 3}, "weak")])
def test_iv_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        IVConfig(**kwargs)


def test_missing_or_bad_columns_are_named(small_priced):
    table = small_priced.to_dataframe()
    with pytest.raises(ValueError, match="no column 'cost_shifter'"):
        IVDesign.of(prepare_data(table.drop(columns="cost_shifter")), IVConfig())
    bad = table.assign(promotion=table["promotion"] * 2)
    with pytest.raises(ValueError, match="'promotion'.*0 or 1"):
        build_iv_model(prepare_data(bad), IVConfig(controls=("promotion",)))
    with pytest.raises(ValueError, match="never varies"):
        IVDesign.of(prepare_data(table.assign(cost_shifter=1.0)))


# --- the likelihood -------------------------------------------------------------------

def test_gaussian_loglik_is_the_bivariate_normal(small_iv_data):
    rng = np.random.default_rng(0)
    design = IVDesign.of(small_iv_data, IVConfig(controls=CONTROLS))
    gram = gram_matrices(small_iv_data, design)
    p = gram.shape[1]
    price_coef, demand_coef = rng.normal(size=(2, small_iv_data.n_regions, p)) * 0.3
    price_coef[:, -2], demand_coef[:, -1] = 1.0, 1.0
    sigma, sigma_price, rho = 0.3, 0.12, -0.55
    got = gaussian_loglik(np, gram, price_coef, demand_coef, sigma, sigma_price, rho)
    # residuals row by row, then SciPy
    z, w = design.matrices(small_iv_data.table)
    k = design.centring
    d = np.column_stack([np.ones(small_iv_data.n_obs), z, w, small_iv_data.log_price - k.log_price,
                         small_iv_data.log_quantity - k.log_quantity])
    r = small_iv_data.region_idx
    uv = np.column_stack([(d * demand_coef[r]).sum(1), (d * price_coef[r]).sum(1)])
    cov = [[sigma**2, rho * sigma * sigma_price], [rho * sigma * sigma_price, sigma_price**2]]
    rows = stats.multivariate_normal(mean=[0, 0], cov=cov).logpdf(uv)
    np.testing.assert_allclose(got, np.bincount(r, weights=rows), rtol=1e-10)
    alone = gaussian_loglik(np, gram, None, demand_coef, sigma)
    np.testing.assert_allclose(alone, np.bincount(r, weights=stats.norm(0, sigma).logpdf(uv[:, 0])), rtol=1e-10)


@pytest.mark.parametrize("config", [IVConfig(), IVConfig(controls=CONTROLS), IVConfig(instrument=None),
                                    IVConfig(instrument=None, controls=("promotion", "season"))],
                         ids=["iv", "iv-controls", "demand", "demand-controls"])
def test_sufficient_form_equals_rows_form(small_iv_data, config):
    rows = build_iv_model(small_iv_data, config, likelihood="rows")
    suff = build_iv_model(small_iv_data, config)
    assert {v.name for v in rows.free_RVs} == {v.name for v in suff.free_RVs}
    logp_rows, logp_suff = rows.compile_logp(**FAST), suff.compile_logp(**FAST)
    rng = np.random.default_rng(1)
    for _ in range(5):
        point = random_point(rows, rng)
        assert logp_suff(point) == pytest.approx(logp_rows(point), rel=1e-9, abs=1e-7)


def test_rows_form_is_the_bivariate_normal_of_each_row(small_iv_data):
    """PyMC's log density of the rows form against SciPy at a random point."""
    config = IVConfig(controls=("promotion",))
    model = build_iv_model(small_iv_data, config, likelihood="rows")
    rng = np.random.default_rng(2)
    point = random_point(model, rng)
    observed = model.compile_logp(vars=model.observed_RVs, **FAST)(point)
    names = ["alpha", "beta", "rho", "pi0_centred", "pi_z", "gamma", "gamma_price", "sigma", "sigma_price"]
    outs = model.unobserved_value_vars
    values = dict(zip([v.name for v in outs], model.compile_fn(outs, inputs=model.value_vars, **FAST)(point)))
    assert set(names) <= set(values)
    pi0, pi_z, gamma, gamma_price = (values[n] for n in ["pi0_centred", "pi_z", "gamma", "gamma_price"])
    sigma, sigma_price = float(values["sigma"]), float(values["sigma_price"])
    design = model.iv_design
    z, w = design.matrices(small_iv_data.table)
    r = small_iv_data.region_idx
    x, y = small_iv_data.log_price, small_iv_data.log_quantity
    v = x - (design.centring.log_price + pi0[r] + pi_z * z + w @ gamma_price)
    u = y - (values["alpha"][r] + values["beta"][r] * x + w @ gamma)
    rho = float(values["rho"])
    cov = [[sigma**2, rho * sigma * sigma_price], [rho * sigma * sigma_price, sigma_price**2]]
    expected = stats.multivariate_normal(mean=[0, 0], cov=cov).logpdf(np.column_stack([u, v])).sum()
    assert observed == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("instrument", [None, "cost_shifter"])
def test_controls_left_out_keep_their_prior_and_leave_the_rest_alone(small_iv_data, instrument):
    """A model with a control's column zeroed is the model without it, times the control's prior."""
    full = build_iv_model(small_iv_data, IVConfig(instrument=instrument, controls=("promotion", "lagged_promotion")))
    sub = build_iv_model(small_iv_data, IVConfig(instrument=instrument, controls=("lagged_promotion",)))
    pm.set_data({"gram": gram_matrices(small_iv_data, full.iv_design, without=("promotion",))}, model=full)
    logp_full, logp_sub = full.compile_logp(**FAST), sub.compile_logp(**FAST)
    rng = np.random.default_rng(5)
    for _ in range(3):
        point = random_point(full, rng)
        reduced = {k: (v[1:] if k.startswith("gamma") else v) for k, v in point.items()}
        left_out = sum(stats.norm(0, 1).logpdf(v[0]) for k, v in point.items() if k.startswith("gamma"))
        assert logp_full(point) == pytest.approx(logp_sub(reduced) + left_out, rel=1e-10)


def test_demand_alone_without_controls_is_the_books_multilevel_model(small_iv_data):
    ours = build_iv_model(small_iv_data, IVConfig(instrument=None), likelihood="rows")
    book = build_model("multilevel", small_iv_data, likelihood="rows")
    assert {v.name for v in ours.free_RVs} == {v.name for v in book.free_RVs}
    rng = np.random.default_rng(3)
    logp_ours, logp_book = ours.compile_logp(**FAST), book.compile_logp(**FAST)
    for _ in range(5):
        point = random_point(book, rng)
        assert logp_ours(point) == pytest.approx(logp_book(point), rel=1e-10)


def _as_draws(model, points) -> xr.Dataset:
    """Posterior-like draws (one chain) of every free variable and deterministic at the given points."""
    outs = model.unobserved_value_vars
    fn = model.compile_fn(outs, inputs=model.value_vars, **FAST)
    values = [dict(zip([v.name for v in outs], fn(p))) for p in points]
    dims = {"alpha": ["region"], "beta": ["region"], "pi0_centred": ["region"], "gamma": ["control"],
            "gamma_price": ["control"]}
    names = ["alpha", "beta", "sigma", "rho", "pi0_centred", "pi_z", "sigma_price", "gamma", "gamma_price"]
    return xr.Dataset({n: (["chain", "draw", *dims.get(n, [])], np.stack([v[n] for v in values])[None])
                       for n in names if n in values[0]},
                      coords={"region": list(model.coords["region"]), "control": list(model.coords["control"] or [])})


@pytest.mark.parametrize("config", [IVConfig(controls=CONTROLS), IVConfig(instrument=None, controls=("promotion",))],
                         ids=["iv", "demand"])
def test_pointwise_log_likelihood_matches_pymc(small_iv_data, config):
    model = build_iv_model(small_iv_data, config, likelihood="rows")
    rng = np.random.default_rng(4)
    points = [random_point(model, rng) for _ in range(3)]
    # the control-function form: demand given price does not involve every variable (sigma_price)
    elementwise = model.compile_fn(model.logp(vars=[model["log_quantity"]], sum=False)[0], inputs=model.value_vars,
                                   on_unused_input="ignore", **FAST)
    expected = np.stack([elementwise(p) for p in points])
    ours = pointwise_log_likelihood(_as_draws(model, points), small_iv_data, model.iv_design)
    np.testing.assert_allclose(ours.values[0], expected, rtol=1e-9)
    lpd = log_predictive_density(_as_draws(model, points), small_iv_data, model.iv_design)
    np.testing.assert_allclose(lpd, np.log(np.exp(expected).mean(axis=0)), rtol=1e-9)


# --- first stage and time split ---------------------------------------------------------

def test_first_stage_f_is_the_squared_t_statistic(small_iv_data):
    config = IVConfig(controls=CONTROLS)
    fs = first_stage(small_iv_data, config)
    z, w = IVDesign.of(small_iv_data, config).matrices(small_iv_data.table)
    x = np.column_stack([np.eye(small_iv_data.n_regions)[small_iv_data.region_idx], w, z])
    coef, *_ = np.linalg.lstsq(x, small_iv_data.log_price, rcond=None)
    resid = small_iv_data.log_price - x @ coef
    s2 = resid @ resid / (len(resid) - x.shape[1])
    se = np.sqrt(s2 * np.linalg.inv(x.T @ x)[-1, -1])
    assert fs.coefficient == pytest.approx(coef[-1], rel=1e-9)
    assert fs.std_error == pytest.approx(se, rel=1e-8)
    assert fs.f_statistic == pytest.approx((coef[-1] / se) ** 2, rel=1e-8)
    assert not fs.weak  # pass-through 0.1 per sd against price noise of about 0.2


def test_an_instrument_that_does_not_move_prices_is_weak():
    data = prepare_data(priced(cost_pass_through=0.0, seed=12).to_dataframe())
    fs = first_stage(data)
    # F is then F(1, n - p) distributed: above WEAK_F with probability 0.2%
    assert fs.weak and stats.f.sf(WEAK_F, 1, fs.n_obs - 10) < 0.005


def test_last_periods(small_priced):
    table = small_priced.to_dataframe()
    mask = last_periods(table, 3)
    per_store = pd.Series(mask).groupby(table["region_store_id"].astype(str).to_numpy()).sum()
    assert (per_store == 3).all()
    assert (table.loc[mask, "time_step"] < 3).all()
    with pytest.raises(ValueError, match="no rows before their last"):
        last_periods(table, int(table.groupby("region_store_id", observed=True).size().min()))
    with pytest.raises(ValueError, match="k must be"):
        last_periods(table, 0)


def test_unknown_seasons_in_new_rows_are_an_error(small_iv_data):
    design = IVDesign.of(small_iv_data, IVConfig(controls=("season",)))
    table = small_iv_data.table.assign(season=99)
    with pytest.raises(ValueError, match="seasons \\[99"):
        design.matrices(table)


# --- two-stage start, chain check, build_model ---------------------------------------------

def test_two_stage_least_squares_is_the_textbook_estimator(small_iv_data):
    """The control-function regression against (X' P_Z X)^-1 X' P_Z y, with P_Z the instruments' projection."""
    design = IVDesign.of(small_iv_data, IVConfig(controls=CONTROLS))
    ts = two_stage_least_squares(small_iv_data, design)
    z, w = design.matrices(small_iv_data.table)
    regions = np.eye(small_iv_data.n_regions)[small_iv_data.region_idx]
    x, y = small_iv_data.log_price, small_iv_data.log_quantity
    big_x, big_z = np.column_stack([regions, w, x]), np.column_stack([regions, w, z])
    proj = big_z @ np.linalg.pinv(big_z.T @ big_z) @ big_z.T
    coef = np.linalg.solve(big_x.T @ proj @ big_x, big_x.T @ proj @ y)
    assert ts.beta == pytest.approx(coef[-1], rel=1e-8)
    resid = y - big_x @ coef
    cov = resid @ resid / (len(y) - big_x.shape[1]) * np.linalg.inv(big_x.T @ proj @ big_x)
    assert ts.beta_se == pytest.approx(np.sqrt(cov[-1, -1]), rel=1e-6)
    assert ts.first_stage["pi_z"] == pytest.approx(first_stage(small_iv_data, design.config).coefficient, rel=1e-9)
    with pytest.raises(ValueError, match="needs a design with an instrument"):
        two_stage_least_squares(small_iv_data, IVDesign.of(small_iv_data, IVConfig(instrument=None)))


def test_region_two_stage_recovers_the_structural_equation_without_noise(small_priced, small_iv_data):
    """With the demand shock removed, the region elasticities of the simulation come back exactly."""
    table = small_priced.to_dataframe()
    design = IVDesign.of(small_iv_data, IVConfig(controls=CONTROLS))
    exact = two_stage_by_region(small_iv_data, design, small_iv_data.log_quantity - table["demand_shock"].to_numpy())
    truth = small_priced.truth.region_table()["elasticity"].to_numpy()
    np.testing.assert_allclose(exact["betas"], truth, rtol=1e-8)
    noisy = two_stage_by_region(small_iv_data, design)
    assert noisy["se"] > 0 and abs(noisy["mean"] - truth.mean()) < 5 * noisy["se"]


def test_chains_start_at_the_two_stage_estimate(small_iv_data):
    model = build_iv_model(small_iv_data, IVConfig(controls=("promotion",)))
    start = start_values(small_iv_data, model.iv_design)
    assert set(start) == {"pi0_centred", "gamma_price", "pi_z", "sigma_price", "kappa", "sigma_e"}
    f = initial_point_function(model, start)
    names = [model.rvs_to_values[rv].name for rv in model.free_RVs]
    sizes = [int(np.prod(model.initial_point()[n].shape)) for n in names]
    slots = dict(zip(names, np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])))
    a, b = f(1), f(2)
    assert a.shape == (sum(sizes),)
    for name, value in start.items():
        key = f"{name}_log__" if name in ("sigma_price", "sigma_e") else name
        expected = np.log(value) if key.endswith("_log__") else value
        np.testing.assert_allclose(a[slots[key]], np.ravel(expected))
        np.testing.assert_allclose(b[slots[key]], np.ravel(expected))
    assert not np.allclose(a[slots["z_b"]], b[slots["z_b"]])  # the rest is jittered by seed
    # nutpie asks for the chains' starts from several threads at once
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        starts = list(pool.map(f, range(200)))
    assert all(p.shape == a.shape and np.isfinite(p).all() for p in starts)
    np.testing.assert_array_equal(starts[1], a)
    with pytest.raises(ValueError, match="does not have"):
        initial_point_function(model, {"nope": 1.0})
    with pytest.raises(ValueError, match="must be positive"):
        initial_point_function(model, {"sigma_e": -1.0})


def _fake_fit(offset_chain=None, offset=0.0):
    rng = np.random.default_rng(0)
    logp = rng.normal(500.0, 4.0, size=(4, 300))
    beta = rng.normal(-3.0, 0.05, size=(4, 300, 3))
    if offset_chain is not None:
        logp[offset_chain] -= 100 * offset
        beta[offset_chain] += offset
    return xr.DataTree.from_dict({
        "posterior": xr.Dataset({"beta": (("chain", "draw", "region"), beta)}),
        "sample_stats": xr.Dataset({"logp": (("chain", "draw"), logp)})})


def test_chain_modes_flags_a_chain_in_another_mode():
    assert not chain_modes(_fake_fit())["disagrees"].any()
    modes = chain_modes(_fake_fit(2, 5.0))
    assert list(modes.index[modes["disagrees"]]) == [2]
    assert modes.loc[2, "logp_gap_sd"] > 100 and modes.loc[2, "elasticity_gap_sd"] > 50


def test_build_model_makes_the_iv_model(small_iv_data):
    config = IVConfig(controls=("promotion",))
    model = build_model("iv", small_iv_data, iv_config=config)
    direct = build_iv_model(small_iv_data, config)
    assert model.elasticity_spec.kind == "iv" and model.elasticity_spec.likelihood == "sufficient"
    point = random_point(direct, np.random.default_rng(6))
    assert model.compile_logp(**FAST)(point) == pytest.approx(direct.compile_logp(**FAST)(point), rel=1e-12)
    attrs = spec_attributes(model.elasticity_spec)
    assert attrs[SPEC_PREFIX + "kind"] == "iv" and attrs[SPEC_PREFIX + "instrument"] == "cost_shifter"
    assert attrs[SPEC_PREFIX + "controls"] == ["promotion"]
    assert build_model("iv", small_iv_data, "rows").elasticity_spec.likelihood == "rows"
    with pytest.raises(ValueError, match="shared_data"):
        build_model("iv", small_iv_data, shared_data=True)
    with pytest.raises(ValueError, match="needs an IVConfig with an instrument"):
        build_model("iv", small_iv_data, iv_config=IVConfig(instrument=None))
    with pytest.raises(ValueError, match="iv_config applies to kind='iv' only"):
        build_model("multilevel", small_iv_data, iv_config=config)
    assert "scale_priors" not in spec_attributes(build_model("multilevel", small_iv_data).elasticity_spec)


@pytest.mark.slow
def test_fit_of_build_model_iv_records_its_spec(small_iv_data):
    config = IVConfig(controls=("promotion",))
    idata = fit_iv(build_model("iv", small_iv_data, iv_config=config), draws=200, tune=200, chains=2,
                   nuts_sampler="nutpie", progressbar=False)
    assert fitted_kind(idata) == "iv"
    assert idata.attrs[SPEC_PREFIX + "instrument"] == "cost_shifter"
    assert list(idata["posterior"].attrs[SPEC_PREFIX + "controls"]) == ["promotion"]
    assert {"kappa", "sigma_e", "rho", "sigma", "beta"} <= set(idata["posterior"].data_vars)


# --- recovery (slow) ----------------------------------------------------------------------

RECOVERY_MARKET = SimulationConfig(min_time_steps=12, price_sigma=0.15)
#: anticipation strengths at which the instrument must recover the truth, up to prices that
#: follow the demand shock closely (0.9, where the joint model has a second mode)
STRENGTHS = (0.0, 0.3, 0.6, 0.9)
#: markets (seeds) per strength; the naive model is fitted to the first
MARKET_SEEDS = (2026, 7, 11)


@pytest.fixture(scope="module")
def recovery_fits():
    """Instrumented fits of one market design per seed and anticipation strength; naive fits of the first seed."""
    logging.getLogger("pymc").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found")
    naive, iv = IVFitter(IVConfig(instrument=None, controls=CONTROLS)), IVFitter(IVConfig(controls=CONTROLS))
    out = {}
    for seed in MARKET_SEEDS:
        for strength in STRENGTHS:
            m = priced(anticipation=strength, seed=seed, market=RECOVERY_MARKET)
            data = prepare_data(m.to_dataframe())
            truth = m.truth.region_table()["elasticity"].to_numpy()
            out[strength, seed] = (truth, naive.fit(data, seed=7) if seed == MARKET_SEEDS[0] else None,
                                   iv.fit(data, seed=8))
    return out


def _beta(idata):
    post = idata["posterior"]["beta"]
    return post.mean(("chain", "draw")).values, post


@pytest.mark.slow
@pytest.mark.parametrize("seed", MARKET_SEEDS)
@pytest.mark.parametrize("strength", STRENGTHS)
def test_instrument_recovers_the_elasticities(recovery_fits, strength, seed):
    truth, _, iv = recovery_fits[strength, seed]
    _, post = _beta(iv)
    assert not chain_modes(iv)["disagrees"].any()
    assert iv.attrs[SPEC_PREFIX + "chains_agree"] == 1
    lo, hi = post.quantile([0.03, 0.97], dim=("chain", "draw")).values
    covered = int(((truth >= lo) & (truth <= hi)).sum())
    # a calibrated posterior covers at least this many of the 9 regions except with probability 1e-3
    assert covered >= coverage_threshold(len(truth), 0.94, 1e-3)
    # the mean elasticity lies within z posterior sds of the truth (false alarm 1e-3 over every fit)
    average = post.mean("region")
    z = z_threshold(len(STRENGTHS) * len(MARKET_SEEDS), 1e-3)
    assert abs(float(average.mean()) - truth.mean()) <= z * float(average.std())
    assert int(iv["sample_stats"]["diverging"].sum()) <= 10


@pytest.mark.slow
@pytest.mark.parametrize("strength", [s for s in STRENGTHS if s > 0])
def test_naive_model_is_biased_towards_zero_where_the_instrument_is_not(recovery_fits, strength):
    truth, naive, iv = recovery_fits[strength, MARKET_SEEDS[0]]
    mean_naive, post_naive = _beta(naive)
    mean_iv, _ = _beta(iv)
    # the naive model's intervals miss most regions on the side of zero
    lo, hi = post_naive.quantile([0.03, 0.97], dim=("chain", "draw")).values
    assert int(((truth >= lo) & (truth <= hi)).sum()) < coverage_threshold(len(truth), 0.94, 1e-3)
    assert (mean_naive - truth).mean() > 0.1
    assert abs((mean_iv - truth).mean()) < (mean_naive - truth).mean() / 3


@pytest.mark.slow
def test_instrument_agrees_with_the_naive_model_when_prices_are_exogenous(recovery_fits):
    _, naive, iv = recovery_fits[0.0, MARKET_SEEDS[0]]
    a, b = naive["posterior"]["beta"], iv["posterior"]["beta"]
    diff = (a.mean(("chain", "draw")) - b.mean(("chain", "draw"))).values
    # both posteriors measure the same elasticity; the instrumented one is wider. The
    # difference of two estimates from the same data is at most the wider posterior sd
    # in spread, so 3.9 of them bounds it with a false alarm of 1e-4 per region
    sd = np.maximum(a.std(("chain", "draw")).values, b.std(("chain", "draw")).values)
    assert (np.abs(diff) <= 3.9 * sd).all()
    rho = iv["posterior"]["rho"]
    lo, hi = rho.quantile([0.0005, 0.9995]).values
    assert lo < 0 < hi


@pytest.mark.slow
def test_iv_calibration_run_tabulates_every_market_and_parameter(small_iv_data):
    from elasticity_lib.models.instruments import run_iv_sbc

    design = IVDesign.of(small_iv_data, IVConfig())
    result = run_iv_sbc(small_iv_data, design, 2, seed=3, fit_seed=4, draws=100, tune=100, chains=2, cores=1,
                        n_ranked=49)
    ranks, fits = result.ranks, result.fits
    n_params = ranks["parameter"].nunique()
    assert len(ranks) == 2 * n_params and sorted(ranks["market"].unique()) == [0, 1]
    assert ranks["rank"].between(0, 49).all() and (ranks["post_sd"] > 0).all()
    assert {"beta", "rho"} <= set(ranks["group"])
    assert list(fits["market"]) == [0, 1] and (fits["seconds"] > 0).all()
