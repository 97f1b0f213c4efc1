"""The figures of chapters 1-3: titles, axis labels, facets, lines and bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from elasticity_lib.data.simulation import SimulationConfig, simulate_market  # noqa: E402
from elasticity_lib.plots.market import (  # noqa: E402
    plot_demand_and_elasticity,
    plot_income_by_region,
    plot_loglog_fits,
    plot_price_quantity_facets,
    plot_store_series,
    plot_truth_vs_income,
)
from elasticity_lib.theory import linear_elasticity  # noqa: E402


@pytest.fixture(scope="module")
def market():
    return simulate_market(SimulationConfig(n_regions=4, stores_mu=3.0, time_steps_mu=8.0), seed=11)


@pytest.fixture(scope="module")
def df(market):
    return market.to_dataframe()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _assert_labelled(ax: Axes) -> None:
    assert ax.get_title(), "panel without a title"
    assert ax.get_xlabel(), f"panel {ax.get_title()!r} without an x label"
    assert ax.get_ylabel(), f"panel {ax.get_title()!r} without a y label"


def test_demand_and_elasticity_panels_and_curves():
    price = np.linspace(0.5, 3.0, 40)
    fig = plot_demand_and_elasticity(price, linear=(5.0, -1.2), loglog=(3.0, -1.5))
    assert isinstance(fig, Figure)
    ax_q, ax_e = fig.axes
    for ax in (ax_q, ax_e):
        _assert_labelled(ax)
    lines = {line.get_label(): line for line in ax_e.get_lines()}
    linear_line = next(v for k, v in lines.items() if k.startswith("linear"))
    loglog_line = next(v for k, v in lines.items() if k.startswith("log-log"))
    np.testing.assert_allclose(linear_line.get_ydata(), linear_elasticity(price, 5.0, -1.2))
    np.testing.assert_allclose(loglog_line.get_ydata(), -1.5)
    assert len(ax_q.get_legend().get_texts()) == 2


def test_demand_and_elasticity_rejects_a_single_price():
    with pytest.raises(ValueError, match="at least two prices"):
        plot_demand_and_elasticity([1.0], linear=(5.0, -1.0), loglog=(1.0, -1.0))


def test_truth_vs_income(market, df):
    income = df.groupby("region_id", observed=True)["median_income"].first()
    fig = plot_truth_vs_income(market.truth, income)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        _assert_labelled(ax)
    # The scattered points are the true values at each region's own income.
    offsets = fig.axes[1].collections[0].get_offsets()
    truth = market.truth.region_table()
    np.testing.assert_allclose(offsets[:, 0], income.to_numpy())
    np.testing.assert_allclose(offsets[:, 1], truth["elasticity"].to_numpy())


def test_truth_vs_income_rejects_wrong_regions(market):
    with pytest.raises(ValueError, match="indexed by the simulated region ids"):
        plot_truth_vs_income(market.truth, pd.Series([1.0, 2.0], index=[0, 99]))


def test_store_series_one_line_per_store(df):
    region = df["region_id"].cat.categories[0]
    fig = plot_store_series(df, region)
    n_stores = df.loc[df["region_id"] == region, "store_id"].nunique()
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_title() and ax.get_ylabel()
        assert len(ax.get_lines()) >= n_stores
    assert fig.axes[1].get_xlabel()
    assert f"{n_stores} stores" in fig.axes[0].get_title()
    assert fig.axes[1].xaxis_inverted()


def test_store_series_unknown_region(df):
    with pytest.raises(ValueError, match="region_id 99 has no rows"):
        plot_store_series(df, 99)


@pytest.mark.parametrize("log", [False, True])
def test_price_quantity_facets_one_per_region(df, log):
    fig = plot_price_quantity_facets(df, log=log)
    n_regions = df["region_id"].nunique()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_regions
    assert fig.get_suptitle()
    for region, ax in zip(df["region_id"].cat.categories, fig.axes, strict=True):
        assert ax.get_title().startswith(f"region {region}: ")
        n = int((df["region_id"] == region).sum())
        assert len(ax.collections[0].get_offsets()) == n
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert ("log price" in labels) == log


@pytest.mark.slow
def test_nine_regions_make_a_three_by_three_grid():
    df = simulate_market(SimulationConfig(stores_mu=2.0, time_steps_mu=3.0), seed=3).to_dataframe()
    fig = plot_price_quantity_facets(df)
    assert len(fig.axes) == 9
    positions = {(round(ax.get_position().x0, 3), round(ax.get_position().y0, 3)) for ax in fig.axes}
    assert len({x for x, _ in positions}) == 3 and len({y for _, y in positions}) == 3


def test_loglog_fits_slopes_are_least_squares(df):
    ax = plot_loglog_fits(df)
    _assert_labelled(ax)
    regions = list(df["region_id"].cat.categories)
    fitted = [line for line in ax.get_lines() if line.get_label().startswith("region")]
    assert len(fitted) == len(regions)
    for region, line in zip(regions, fitted, strict=True):
        rows = df[df["region_id"] == region]
        slope, intercept = np.polyfit(rows["log_price"], rows["log_quantities"], 1)
        x, y = line.get_xdata(), line.get_ydata()
        np.testing.assert_allclose(y, intercept + slope * x, rtol=1e-6, atol=1e-9)


def test_loglog_fits_colour_follows_income(df):
    ax = plot_loglog_fits(df)
    income = df.groupby("region_id", observed=True)["median_income"].first()
    fitted = [line for line in ax.get_lines() if line.get_label().startswith("region")]
    colours = dict(zip(income.index, (to_rgba(line.get_color()) for line in fitted), strict=True))
    cmap = plt.get_cmap("viridis")
    np.testing.assert_allclose(colours[income.idxmin()], cmap(0.0), atol=0.01)
    np.testing.assert_allclose(colours[income.idxmax()], cmap(0.9), atol=0.01)


def test_income_by_region(df):
    ax = plot_income_by_region(df)
    _assert_labelled(ax)
    heights = [p.get_height() for p in ax.patches]
    colours = [p.get_facecolor() for p in ax.patches]
    np.testing.assert_allclose(colours[int(np.argmax(heights))], plt.get_cmap("viridis")(0.9))
    expected = df.groupby("region_id", observed=True)["median_income"].first().to_numpy()
    np.testing.assert_allclose(heights, expected)
    stores = df.groupby("region_id", observed=True)["store_id"].nunique().to_numpy()
    labels = [t.get_text() for t in ax.texts]
    assert [int(t.split(" stores")[0]) for t in labels] == list(stores)


@pytest.mark.parametrize(
    ("func", "column"),
    [(plot_loglog_fits, "log_price"), (plot_income_by_region, "median_income"),
     (plot_price_quantity_facets, "quantities")],
)
def test_missing_column_is_named(df, func, column):
    with pytest.raises(ValueError, match=f"missing required column.*'{column}'"):
        func(df.drop(columns=[column]))


def test_empty_table_is_rejected(df):
    with pytest.raises(ValueError, match="no rows"):
        plot_income_by_region(df.iloc[:0])
