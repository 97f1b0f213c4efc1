"""The simulator: reproducible, validated, and faithful to the configured distributions.

Moment checks use one large simulated market (many regions, so every region-level
quantity has about 1,500 draws and every row-level one several hundred thousand). Each
tolerance is a multiple ``Z`` of the standard error implied by the sample size: with
``Z = 5`` a correct simulator fails a given check with probability below 1e-6, while a
wrong parametrisation (swapped mean and sd, a rate for a scale, the reference's
scrambled incomes) moves the statistic by tens of standard errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from elasticity_lib.data.entities import TIDY_COLUMNS
from elasticity_lib.data.simulation import (
    POOLING_SCENARIO,
    POOLING_SEED,
    POOLING_THIN_REGION,
    REFERENCE_SEED,
    SimulationConfig,
    expected_log_price,
    gamma_shape_scale,
    negative_binomial_n_p,
    simulate_market,
    simulate_pooling_market,
    store_deviation_price,
)
from elasticity_lib.models import to_original_covariance
from elasticity_lib.reproducibility import z_threshold

Z = 5.0  # standard errors allowed for each moment check (false alarm < 1e-6 per check)

BIG_CONFIG = SimulationConfig(n_regions=1500, store_intercept_sd=0.05, store_elasticity_sd=0.15)
BIG_SEED = 987654


def table_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def assert_mean(sample: np.ndarray, expected: float, sd: float, what: str) -> None:
    """Sample mean within Z standard errors (sd / sqrt(n)) of the expected mean."""
    sample = np.asarray(sample, dtype=float)
    se = sd / np.sqrt(sample.size)
    assert abs(sample.mean() - expected) < Z * se, f"{what}: mean {sample.mean():.5f}, expected {expected} +/- {Z * se:.5f}"


def assert_variance(sample: np.ndarray, expected: float, what: str) -> None:
    """Sample variance within Z standard errors of the expected variance.

    The standard error of a sample variance is sqrt((mu4 - sigma^4) / n); the fourth
    central moment mu4 is estimated from the sample itself (a plug-in estimate, accurate
    at these sample sizes).
    """
    sample = np.asarray(sample, dtype=float)
    dev = sample - sample.mean()
    var = dev.var(ddof=1)
    se = np.sqrt((np.mean(dev**4) - var**2) / sample.size)
    assert abs(var - expected) < Z * se, f"{what}: variance {var:.5f}, expected {expected:.5f} +/- {Z * se:.5f}"


# --- configuration -------------------------------------------------------------------


def test_defaults_are_the_reference_values():
    c = SimulationConfig()
    assert (c.n_regions, c.stores_mu, c.stores_alpha, c.min_stores) == (9, 10.0, 3.0, 2)
    assert (c.income_mu, c.income_sigma, c.income_offset) == (5.0, 2.0, 1.0)
    assert (c.time_steps_mu, c.time_steps_alpha, c.min_time_steps) == (20.0, 5.0, 2)
    assert (c.intercept_base, c.intercept_income_slope, c.intercept_sd) == (1.0, 0.3, 0.02)
    assert (c.elasticity_base, c.elasticity_income_slope, c.elasticity_sd) == (-0.1, -0.6, 0.02)
    assert (c.store_intercept_sd, c.store_elasticity_sd, c.store_deviation_price) == (0.0, 0.0, None)
    assert store_deviation_price(c) == c.price_mu
    assert (c.price_mu, c.price_sigma, c.noise_sd) == (1.5, 0.25, 0.3)
    assert (c.region_correlation, c.deviation_log_price) == (0.0, 0.0)
    assert (c.stores_per_region, c.time_steps_mu_per_region) == (None, None)
    assert REFERENCE_SEED == sum(ord(ch) for ch in "multilevel_elasticities_single_sku")


BAD_CONFIGS = {
    "negative noise sd": ({"noise_sd": -0.3}, r"(?s)noise_sd\n.*greater than 0"),
    "zero noise sd": ({"noise_sd": 0.0}, r"(?s)noise_sd\n.*greater than 0"),
    "negative region sd": ({"elasticity_sd": -0.01}, r"(?s)elasticity_sd\n.*greater than or equal to 0"),
    "negative store sd": ({"store_intercept_sd": -1.0}, r"(?s)store_intercept_sd\n.*greater than or equal to 0"),
    "zero store deviation price": ({"store_deviation_price": 0.0}, r"(?s)store_deviation_price\n.*greater than 0"),
    "infinite store deviation price": ({"store_deviation_price": float("inf")}, r"(?s)store_deviation_price\n.*finite number"),
    "zero regions": ({"n_regions": 0}, r"(?s)n_regions\n.*greater than 0"),
    "zero minimum stores": ({"min_stores": 0}, r"(?s)min_stores\n.*greater than 0"),
    "non-positive price mean": ({"price_mu": 0.0}, r"(?s)price_mu\n.*greater than 0"),
    "infinite noise sd": ({"noise_sd": float("inf")}, r"(?s)noise_sd\n.*finite number"),
    "infinite store mean": ({"stores_mu": float("inf")}, r"(?s)stores_mu\n.*finite number"),
    "NaN slope": ({"elasticity_income_slope": float("nan")}, r"(?s)elasticity_income_slope\n.*finite number"),
    "fractional region count": ({"n_regions": 2.5}, r"(?s)n_regions\n.*integer"),
    "extra field": ({"n_products": 3}, r"(?s)n_products\n.*Extra inputs are not permitted"),
    "correlation of 1": ({"region_correlation": 1.0}, r"(?s)region_correlation\n.*less than 1"),
    "correlation below -1": ({"region_correlation": -1.5}, r"(?s)region_correlation\n.*greater than -1"),
    "infinite deviation log price": ({"deviation_log_price": float("inf")}, r"(?s)deviation_log_price\n.*finite"),
    "store counts for too few regions": ({"stores_per_region": (2, 3)},
                                         r"stores_per_region needs one value per region: n_regions is 9"),
    "zero stores in a region": ({"n_regions": 2, "stores_per_region": (2, 0)},
                                r"(?s)stores_per_region\.1\n.*greater than 0"),
    "history means for too many regions": ({"n_regions": 2, "time_steps_mu_per_region": (4.0, 20.0, 20.0)},
                                           r"time_steps_mu_per_region needs one value per region: n_regions is 2"),
    "negative history mean": ({"n_regions": 2, "time_steps_mu_per_region": (4.0, -1.0)},
                              r"(?s)time_steps_mu_per_region\.1\n.*greater than 0"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_invalid_config_is_rejected_with_the_field_name(case):
    kwargs, pattern = BAD_CONFIGS[case]
    with pytest.raises(ValidationError, match=pattern):
        SimulationConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        SimulationConfig().n_regions = 3


def test_parametrisation_helpers_match_scipy():
    n, p = negative_binomial_n_p(10.0, 3.0)
    assert stats.nbinom(n, p).mean() == pytest.approx(10.0)
    assert stats.nbinom(n, p).var() == pytest.approx(10.0 + 10.0**2 / 3.0)
    shape, scale = gamma_shape_scale(5.0, 2.0)
    assert stats.gamma(shape, scale=scale).mean() == pytest.approx(5.0)
    assert stats.gamma(shape, scale=scale).std() == pytest.approx(2.0)


# --- reproducibility -----------------------------------------------------------------


def test_same_seed_gives_byte_identical_tables():
    first = simulate_market(seed=REFERENCE_SEED)
    second = simulate_market(SimulationConfig(), seed=REFERENCE_SEED)
    a, b = first.to_dataframe(), second.to_dataframe()
    assert table_bytes(a) == table_bytes(b)
    np.testing.assert_array_equal(pd.util.hash_pandas_object(a), pd.util.hash_pandas_object(b))
    assert first.truth == second.truth
    # a Generator seeded the same way is the same stream
    third = simulate_market(seed=np.random.default_rng(REFERENCE_SEED)).to_dataframe()
    assert table_bytes(third) == table_bytes(a)


def test_reference_run_has_the_documented_size():
    # The book describes this table; a change in the simulator must show up here.
    df = simulate_market(seed=REFERENCE_SEED).to_dataframe()
    assert list(df.columns) == TIDY_COLUMNS
    assert len(df) == 2469
    assert df["region_id"].nunique() == 9
    assert df["region_store_id"].nunique() == 103
    stores_per_region = df.groupby("region_id", observed=True)["region_store_id"].nunique()
    assert stores_per_region.idxmin() == 1 and stores_per_region.min() == 4
    assert (df["region_id"] == 1).sum() == 69


#: SHA-256 of the reference market's CSV table, as the simulator wrote it before the
#: correlated deviations and per-region counts existed: the defaults must not move a byte.
REFERENCE_TABLE_SHA256 = "e3b10be404129ce9253aa1a4d8cf74e221c9416f55a2cf6f0a6c182b362c54cb"


def test_defaults_keep_the_reference_market_byte_for_byte():
    import hashlib

    df = simulate_market(seed=REFERENCE_SEED).to_dataframe()
    assert hashlib.sha256(table_bytes(df)).hexdigest() == REFERENCE_TABLE_SHA256
    truth = simulate_market(seed=REFERENCE_SEED).truth
    assert (truth.region_correlation, truth.deviation_log_price) == (0.0, 0.0)


def test_fixing_the_drawn_counts_gives_the_same_market():
    # store counts are drawn even when fixed, so the rest of the stream is unchanged
    market = simulate_market(seed=REFERENCE_SEED)
    counts = tuple(len(r.stores) for r in market.regions)
    fixed = simulate_market(SimulationConfig(stores_per_region=counts), seed=REFERENCE_SEED)
    assert table_bytes(fixed.to_dataframe()) == table_bytes(market.to_dataframe())
    other = simulate_market(SimulationConfig(stores_per_region=(2,) + counts[1:]), seed=REFERENCE_SEED)
    assert len(other.regions[0].stores) == 2
    assert [len(r.stores) for r in other.regions[1:]] == list(counts[1:])


def test_per_region_history_means():
    config = SimulationConfig(n_regions=2, stores_per_region=(600, 600), time_steps_mu_per_region=(4.0, 30.0))
    df = simulate_market(config, seed=5).to_dataframe()
    steps = df.groupby(["region_id", "region_store_id"], observed=True).size()
    for region, mu in enumerate(config.time_steps_mu_per_region):
        n, p = negative_binomial_n_p(mu, config.time_steps_alpha)
        sd = float(stats.nbinom(n, p).std())
        assert_mean(steps.loc[region].to_numpy(), mu + config.min_time_steps, sd, f"history length of region {region}")


@pytest.mark.parametrize("log_price", [0.0, 0.4])
def test_correlated_deviations_recover_the_configured_correlation(log_price):
    """The sample correlation of the deviation pairs over many regions recovers rho.

    Fisher's transform atanh(r) of the sample correlation of n bivariate Normal pairs is
    Normal around atanh(rho) with sd 1 / sqrt(n - 3); a distance of z_threshold(1, 1e-3)
    (3.3) such sds is a false alarm of one in a thousand. The sds are checked the same way
    (sd of a sample sd: sigma / sqrt(2 (n - 1)), same threshold); each of the six checks of
    this test has its own one-in-a-thousand false alarm.
    """
    n = 4000
    config = SimulationConfig(n_regions=n, stores_per_region=(2,) * n, time_steps_mu_per_region=(1.0,) * n,
                              intercept_sd=0.3, elasticity_sd=0.2, region_correlation=-0.6,
                              deviation_log_price=log_price)
    market = simulate_market(config, seed=11)
    income = pd.Series({r.id: r.median_income for r in market.regions})
    z = z_threshold(1, 1e-3)
    # at the configured log price: the configured values; at log price 0: the translated ones
    for at in (log_price, 0.0):
        dev = market.truth.region_deviation_table(income, at)
        expected = market.truth.region_deviations(at)
        r = np.corrcoef(dev["intercept_deviation"], dev["elasticity_deviation"])[0, 1]
        assert abs(np.arctanh(r) - np.arctanh(expected["rho"])) * np.sqrt(n - 3) < z, (at, r, expected)
        for col, key in [("intercept_deviation", "sigma_a"), ("elasticity_deviation", "sigma_b")]:
            se = expected[key] / np.sqrt(2 * (n - 1))
            assert abs(dev[col].std(ddof=1) - expected[key]) < z * se, (at, col)
    assert market.truth.region_deviations()["rho"] == -0.6


def test_translated_deviations_agree_with_the_models_translation():
    # region_deviations moves the intercept deviation along the price axis; the models'
    # to_original_covariance moves a covariance at the mean log price to log price 0
    truth = simulate_market(SimulationConfig(n_regions=2, intercept_sd=0.3, elasticity_sd=0.2,
                                             region_correlation=-0.6, deviation_log_price=0.4), seed=1).truth
    at_centre = truth.region_deviations(0.35)
    s11, s22 = at_centre["sigma_a"] ** 2, at_centre["sigma_b"] ** 2
    s12 = at_centre["rho"] * at_centre["sigma_a"] * at_centre["sigma_b"]
    v11, v12, v22 = to_original_covariance(s11, s12, s22, 0.35)
    at_zero = truth.region_deviations(0.0)
    assert np.sqrt(v11) == pytest.approx(at_zero["sigma_a"])
    assert v12 / np.sqrt(v11 * v22) == pytest.approx(at_zero["rho"])
    assert truth.region_deviations(0.4) == pytest.approx({"sigma_a": 0.3, "sigma_b": 0.2, "rho": -0.6})
    # without a correlation, independent deviations at a price of 1 are correlated elsewhere
    reference = simulate_market(seed=REFERENCE_SEED).truth
    x = 0.39
    assert reference.region_deviations(x)["rho"] == pytest.approx(x / np.sqrt(1 + x**2))


def test_expected_log_price_matches_scipy():
    shape, scale = gamma_shape_scale(1.5, 0.25)
    exact = stats.gamma(shape, scale=scale).expect(np.log)
    assert expected_log_price(1.5, 0.25) == pytest.approx(exact, rel=1e-9)


def test_pooling_scenario_has_a_thin_region_and_correlated_deviations():
    market = simulate_pooling_market()
    assert market == simulate_market(POOLING_SCENARIO, seed=POOLING_SEED)
    df = market.to_dataframe()
    rows = df.groupby("region_id", observed=True).size()
    stores = df.groupby("region_id", observed=True)["region_store_id"].nunique()
    assert rows.idxmin() == POOLING_THIN_REGION and rows.min() <= 16
    assert stores[POOLING_THIN_REGION] == 2
    assert rows.drop(POOLING_THIN_REGION).min() >= 5 * rows.min()
    truth = market.truth
    assert (truth.intercept_sd, truth.elasticity_sd, truth.region_correlation) == (0.3, 0.3, -0.6)
    # at the data's mean log price (where the models define rho) the truth is still -0.6
    at_data = truth.region_deviations(df["log_price"].mean())
    assert at_data["rho"] == pytest.approx(-0.6, abs=0.01)
    # the thin region lies off both lines in the direction the correlation expects
    income = df.groupby("region_id", observed=True)["median_income"].first()
    thin = truth.region_deviation_table(income).loc[POOLING_THIN_REGION]
    assert thin["intercept_deviation"] > 0.3 and thin["elasticity_deviation"] < -0.24


@pytest.mark.slow
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_different_seeds_give_different_tables(seed_a, seed_b):
    config = SimulationConfig(n_regions=2)
    a = table_bytes(simulate_market(config, seed=seed_a).to_dataframe())
    b = table_bytes(simulate_market(config, seed=seed_b).to_dataframe())
    assert (a == b) == (seed_a == seed_b)


# --- distributions -------------------------------------------------------------------


@pytest.fixture(scope="module")
def big():
    market = simulate_market(BIG_CONFIG, seed=BIG_SEED)
    df = market.to_dataframe()
    truth = market.truth
    regions = truth.region_table()
    regions["income"] = [r.median_income for r in market.regions]
    regions["n_stores"] = [len(r.stores) for r in market.regions]
    store_truth = truth.store_table()
    store_truth["region_id"] = [int(label.split("_")[0][2:]) for label in store_truth.index]
    store_truth["n_steps"] = df.groupby("region_store_id", observed=True).size().reindex(store_truth.index).to_numpy()
    return market, df, regions, store_truth


def test_store_counts_are_negative_binomial_plus_minimum(big):
    _, _, regions, _ = big
    c = BIG_CONFIG
    var = c.stores_mu + c.stores_mu**2 / c.stores_alpha
    counts = regions["n_stores"].to_numpy()
    assert counts.min() >= c.min_stores
    assert_mean(counts, c.stores_mu + c.min_stores, np.sqrt(var), "stores per region")
    assert_variance(counts, var, "stores per region")


def test_incomes_are_gamma_plus_offset(big):
    _, df, regions, _ = big
    c = BIG_CONFIG
    income = regions["income"].to_numpy()
    assert income.min() > c.income_offset
    assert_mean(income, c.income_mu + c.income_offset, c.income_sigma, "income")
    assert_variance(income, c.income_sigma**2, "income")
    # every row carries its own region's income (the reference scrambled this mapping)
    per_row = df.groupby("region_id", observed=True)["median_income"].agg(["min", "max"])
    np.testing.assert_array_equal(per_row["min"].to_numpy(), income)
    np.testing.assert_array_equal(per_row["max"].to_numpy(), income)


def test_time_steps_are_negative_binomial_plus_minimum(big):
    _, df, _, stores_ = big
    c = BIG_CONFIG
    var = c.time_steps_mu + c.time_steps_mu**2 / c.time_steps_alpha
    steps = stores_["n_steps"].to_numpy()
    assert steps.min() >= c.min_time_steps
    assert_mean(steps, c.time_steps_mu + c.min_time_steps, np.sqrt(var), "time steps per store")
    assert_variance(steps, var, "time steps per store")
    # time_step counts down to 0, so each store's largest step is its length minus one
    top = df.groupby("region_store_id", observed=True)["time_step"].max().reindex(stores_.index)
    np.testing.assert_array_equal(top.to_numpy(), steps - 1)


def test_prices_are_gamma(big):
    _, df, _, _ = big
    c = BIG_CONFIG
    price = df["price"].to_numpy()
    assert_mean(price, c.price_mu, c.price_sigma, "price")
    assert_variance(price, c.price_sigma**2, "price")
    # the whole distribution, not only two moments: a KS test at the 1e-4 level
    shape, scale = gamma_shape_scale(c.price_mu, c.price_sigma)
    assert stats.kstest(price, stats.gamma(shape, scale=scale).cdf).pvalue > 1e-4


@pytest.mark.slow
def test_log_quantity_noise_has_the_configured_sd(big):
    _, df, _, stores_ = big
    c = BIG_CONFIG
    label = df["region_store_id"].astype(str)
    mean = stores_["intercept"].reindex(label).to_numpy() + stores_["elasticity"].reindex(label).to_numpy() * df["log_price"].to_numpy()
    resid = df["log_quantities"].to_numpy() - mean
    assert_mean(resid, 0.0, c.noise_sd, "log-quantity residual")
    # sd of a sample sd of n normal draws is sigma / sqrt(2 (n - 1))
    se_sd = c.noise_sd / np.sqrt(2 * (resid.size - 1))
    assert abs(resid.std(ddof=1) - c.noise_sd) < Z * se_sd
    # and the residuals are independent of price (the slope is the store's own)
    assert abs(np.corrcoef(resid, df["log_price"])[0, 1]) < Z / np.sqrt(resid.size)


def region_and_store_effect_checks(regions, stores_, c):
    # region effects scatter around the income lines with the configured sds
    a_dev = regions["intercept"] - (c.intercept_base + c.intercept_income_slope * regions["income"])
    b_dev = regions["elasticity"] - (c.elasticity_base + c.elasticity_income_slope * regions["income"])
    n = len(regions)
    for dev, sd, what in [(a_dev, c.intercept_sd, "region intercept"), (b_dev, c.elasticity_sd, "region elasticity")]:
        assert_mean(dev, 0.0, sd, what)
        assert abs(dev.std(ddof=1) - sd) < Z * sd / np.sqrt(2 * (n - 1)), what
    # store effects scatter around their region's effects, the intercept's at the reference price
    dev_a, dev_b = store_deviations(regions, stores_, c)
    for dev, sd, what in [(dev_a, c.store_intercept_sd, "store intercept at the reference price"),
                          (dev_b, c.store_elasticity_sd, "store elasticity")]:
        assert_mean(dev, 0.0, sd, what)
        assert abs(dev.std(ddof=1) - sd) < Z * sd / np.sqrt(2 * (dev.size - 1)), what


def store_deviations(regions, stores_, c, log_price=None):
    """Each store's deviation from its region: log quantity at ``log_price`` (default: the
    configured reference price, where the deviations are drawn) and elasticity."""
    x = np.log(store_deviation_price(c)) if log_price is None else log_price
    own = regions.loc[stores_["region_id"]]
    dev_b = stores_["elasticity"].to_numpy() - own["elasticity"].to_numpy()
    dev_a = stores_["intercept"].to_numpy() + x * stores_["elasticity"].to_numpy() - (
        own["intercept"].to_numpy() + x * own["elasticity"].to_numpy())
    return dev_a, dev_b


def test_store_deviations_are_independent_at_the_reference_price(big):
    # The three-level model defines store deviations at the mean log price, as independent
    # intercept and slope deviations; the simulator draws them the same way at log(price_mu).
    # The sample correlation of n independent pairs has sd 1/sqrt(n), so |r| < Z/sqrt(n)
    # fails a correct simulator with probability below 1e-6 (about 18,000 stores here).
    market, _, regions, stores_ = big
    c = BIG_CONFIG
    assert c.store_deviation_price is None and market.truth.store_deviation_price == c.price_mu
    dev_a, dev_b = store_deviations(regions, stores_, c)
    bound = Z / np.sqrt(dev_a.size)
    assert abs(np.corrcoef(dev_a, dev_b)[0, 1]) < bound
    # at log price 0 the same deviations are correlated, -x sd_b / sqrt(sd_a^2 + (x sd_b)^2)
    # (-0.77 here): a simulator drawing them independently there fails the check above
    x = np.log(c.price_mu)
    expected = -x * c.store_elasticity_sd / np.hypot(c.store_intercept_sd, x * c.store_elasticity_sd)
    at_zero, _ = store_deviations(regions, stores_, c, log_price=0.0)
    assert abs(np.corrcoef(at_zero, dev_b)[0, 1] - expected) < 0.02


@pytest.mark.parametrize("price", [1.0, 3.0])
def test_store_deviation_price_sets_where_deviations_are_independent(price):
    c = BIG_CONFIG.model_copy(update={"n_regions": 500, "store_deviation_price": price})
    market = simulate_market(c, seed=BIG_SEED + 1)
    assert market.truth.store_deviation_price == price
    regions = market.truth.region_table()
    stores_ = market.truth.store_table()
    stores_["region_id"] = [int(label.split("_")[0][2:]) for label in stores_.index]
    dev_a, dev_b = store_deviations(regions, stores_, c)
    assert abs(np.corrcoef(dev_a, dev_b)[0, 1]) < Z / np.sqrt(dev_a.size)
    assert abs(dev_a.std(ddof=1) - c.store_intercept_sd) < Z * c.store_intercept_sd / np.sqrt(2 * (dev_a.size - 1))
    # and only the store intercepts move: the region effects and the prices are the same draws
    base = simulate_market(c.model_copy(update={"store_deviation_price": None}), seed=BIG_SEED + 1)
    assert base.truth.region_intercepts == market.truth.region_intercepts
    assert base.truth.store_elasticities == market.truth.store_elasticities
    np.testing.assert_array_equal(base.to_dataframe()["price"], market.to_dataframe()["price"])


def test_region_and_store_effects_have_the_configured_scales(big):
    _, _, regions, stores_ = big
    region_and_store_effect_checks(regions, stores_, BIG_CONFIG)


def test_without_store_sds_stores_share_their_region_effects():
    # the reference setting: one intercept and one elasticity per region, drawn once
    market = simulate_market(seed=3)
    truth = market.truth
    for region in market.regions:
        for store in region.stores:
            label = f"r-{region.id}_s-{store.id}"
            assert truth.store_intercepts[label] == truth.region_intercepts[region.id]
            assert truth.store_elasticities[label] == truth.region_elasticities[region.id]


def test_store_ids_are_unique_across_the_market(big):
    market, _, _, _ = big
    ids = [s.id for r in market.regions for s in r.stores]
    assert len(ids) == len(set(ids))
