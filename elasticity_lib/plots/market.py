"""Figures of the first chapters: elasticity theory, the simulated truth and the EDA.

Every function draws with matplotlib and seaborn, gives each panel a title and axis
labels, and returns the matplotlib :class:`~matplotlib.figure.Figure` (or
:class:`~matplotlib.axes.Axes` where an ``ax`` can be passed in) without showing it, so a
notebook displays it and a test can inspect it. Tables are the tidy market table of
:meth:`elasticity_lib.data.entities.Market.to_dataframe` or a user's table with the same columns.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from elasticity_lib.data.entities import SimulationTruth
from elasticity_lib.data.prepare import require_columns
from elasticity_lib.theory import linear_demand, linear_elasticity, loglog_demand, loglog_elasticity

__all__ = [
    "plot_demand_and_elasticity",
    "plot_truth_vs_income",
    "plot_store_series",
    "plot_price_quantity_facets",
    "plot_loglog_fits",
    "plot_income_by_region",
]

_LABELS = {
    "price": "price",
    "quantities": "quantity (thousands of units)",
    "log_price": "log price",
    "log_quantities": "log quantity",
}


def _region_order(df: pd.DataFrame) -> list:
    """Region ids in their categorical order (or sorted), keeping only regions with rows."""
    present = set(df["region_id"].dropna().unique())
    if isinstance(df["region_id"].dtype, pd.CategoricalDtype):
        return [r for r in df["region_id"].cat.categories if r in present]
    return sorted(present)


def _income_colours(income: pd.Series) -> dict:
    """Viridis colour per region from its median income: dark is poor, yellow is rich."""
    low, high = income.min(), income.max()
    cmap = plt.get_cmap("viridis")
    return {r: cmap(0.5 if high == low else 0.9 * (v - low) / (high - low)) for r, v in income.items()}


def plot_demand_and_elasticity(
    price: ArrayLike,
    linear: tuple[float, float],
    loglog: tuple[float, float],
) -> Figure:
    """Demand and elasticity against price for a linear and a log-log demand curve.

    ``linear = (a, b)`` gives ``y = a + b * price`` and ``loglog = (a, b)`` gives
    ``y = a * price**b``. The left panel shows both demand curves, the right panel their
    elasticities: constant for the log-log curve, growing in magnitude with the price for
    the linear one.
    """
    x = np.asarray(price, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"price must be a one-dimensional grid of at least two prices, got shape {x.shape}")
    curves = {
        rf"linear: $y = {linear[0]:.3g} {'-' if linear[1] < 0 else '+'} {abs(linear[1]):.3g}\,x$": (
            linear_demand(x, *linear),
            linear_elasticity(x, *linear),
        ),
        rf"log-log: $y = {loglog[0]:.3g}\,x^{{{loglog[1]:.3g}}}$": (
            loglog_demand(x, *loglog),
            loglog_elasticity(x, *loglog),
        ),
    }
    fig, (ax_q, ax_e) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
    for (label, (quantity, elasticity)), color in zip(curves.items(), sns.color_palette(n_colors=2), strict=True):
        ax_q.plot(x, quantity, color=color, label=label)
        ax_e.plot(x, elasticity, color=color, label=label)
    ax_q.set(title="Demand curves", xlabel="price x", ylabel="quantity y")
    ax_e.set(title="Price elasticity of demand", xlabel="price x", ylabel=r"elasticity $\eta$")
    ax_e.axhline(-1.0, color="grey", linestyle=":", linewidth=1, label="unit elasticity")
    ax_q.legend()
    ax_e.legend()
    return fig


def plot_truth_vs_income(truth: SimulationTruth, income: pd.Series) -> Figure:
    """True region intercepts and elasticities against median income, with the population lines.

    ``income`` holds each region's median income, indexed by region id (for instance
    ``df.groupby("region_id", observed=True)["median_income"].first()``); it must cover
    exactly the regions of ``truth``.
    """
    table = truth.region_table()
    income = pd.Series(income, dtype=float)
    if set(income.index) != set(table.index):
        raise ValueError(
            f"income must be indexed by the simulated region ids {sorted(table.index)}, got {sorted(income.index)}"
        )
    table = table.assign(median_income=income.reindex(table.index).to_numpy())
    grid = np.linspace(table["median_income"].min(), table["median_income"].max(), 50)
    panels = [
        ("intercept", truth.intercept_base, truth.intercept_income_slope, "True region intercepts",
         r"intercept $\alpha_j$"),
        ("elasticity", truth.elasticity_base, truth.elasticity_income_slope, "True region elasticities",
         r"elasticity $\beta_j$"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
    for ax, (column, base, slope, title, ylabel) in zip(axes, panels, strict=True):
        sign = "-" if slope < 0 else "+"
        line_label = rf"population line ${base:g} {sign} {abs(slope):g}\,\mathrm{{income}}$"
        ax.plot(grid, base + slope * grid, color="grey", linestyle="--", label=line_label)
        ax.scatter(table["median_income"], table[column], color="C0", zorder=3, label="region")
        for region_id, row in table.iterrows():
            ax.annotate(str(region_id), (row["median_income"], row[column]), textcoords="offset points",
                        xytext=(5, 5), fontsize=9)
        ax.set(title=title, xlabel="median income of the region", ylabel=ylabel)
        ax.legend()
    return fig


def plot_store_series(df: pd.DataFrame, region_id) -> Figure:
    """Price and quantity over time, one line per store, for the stores of one region.

    ``time_step`` counts down to 0 at each store's most recent observation; the x axis is
    reversed so that time runs from left to right.
    """
    require_columns(df, ["region_id", "region_store_id", "time_step", "price", "quantities"])
    rows = df[df["region_id"] == region_id]
    if len(rows) == 0:
        raise ValueError(f"region_id {region_id!r} has no rows; regions present: {_region_order(df)}")
    rows = rows.assign(region_store_id=rows["region_store_id"].astype(str))
    n_stores = rows["region_store_id"].nunique()
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, layout="constrained")
    for ax, column in zip(axes, ["price", "quantities"], strict=True):
        sns.lineplot(data=rows, x="time_step", y=column, hue="region_store_id", marker="o", markersize=4,
                     ax=ax, legend=column == "price")
        ax.set(title=f"{_LABELS[column].split(' (')[0].capitalize()} over time, {n_stores} stores of region {region_id}",
               ylabel=_LABELS[column])
    axes[0].set_xlabel("")
    axes[1].set_xlabel("time step (0 = most recent observation)")
    axes[1].invert_xaxis()
    axes[0].legend(title="store", ncols=max(1, (n_stores + 9) // 10), fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_price_quantity_facets(df: pd.DataFrame, *, log: bool = False, col_wrap: int = 3) -> Figure:
    """Scatter of quantity against price, one facet per region (``log=True``: both in logs).

    The facets share the price axis; each has its own quantity axis, so that a single
    extreme quantity does not flatten the other regions.
    """
    x, y = ("log_price", "log_quantities") if log else ("price", "quantities")
    require_columns(df, ["region_id", "median_income", x, y])
    if col_wrap < 1:
        raise ValueError(f"col_wrap must be at least 1, got {col_wrap}")
    order = _region_order(df)
    income = df.groupby("region_id", observed=True)["median_income"].first()
    grid = sns.FacetGrid(df, col="region_id", col_order=order, col_wrap=col_wrap, height=2.2, aspect=1.15,
                         sharex=True, sharey=False)
    grid.map_dataframe(sns.scatterplot, x=x, y=y, s=12, alpha=0.5, edgecolor="none")
    for region_id, ax in zip(order, grid.axes.flat, strict=False):
        n_rows = int((df["region_id"] == region_id).sum())
        ax.set_title(f"region {region_id}: income {income[region_id]:.1f}, n = {n_rows}", fontsize=9)
    grid.set_axis_labels(_LABELS[x], _LABELS[y])
    what = "Log quantity against log price" if log else "Quantity against price"
    grid.figure.suptitle(f"{what}, by region", y=1.02)
    return grid.figure


def plot_loglog_fits(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Log quantity against log price with a least-squares line per region, on one panel.

    The slope of each line is that region's elasticity estimated on its own (no pooling).
    Regions are coloured by median income (viridis: dark is poor, yellow is rich).
    """
    require_columns(df, ["region_id", "median_income", "log_price", "log_quantities"])
    order = _region_order(df)
    income = df.groupby("region_id", observed=True)["median_income"].first()
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    colours = _income_colours(income)
    for region_id in order:
        rows = df[df["region_id"] == region_id]
        sns.regplot(data=rows, x="log_price", y="log_quantities", ci=None, ax=ax, color=colours[region_id],
                    scatter_kws={"s": 8, "alpha": 0.3},
                    line_kws={"linewidth": 2, "label": f"region {region_id} (income {income[region_id]:.1f})"})
    ax.set(title="Log quantity against log price, least-squares line per region",
           xlabel=_LABELS["log_price"], ylabel=_LABELS["log_quantities"])
    ax.legend(title="region, coloured by income", ncols=3, fontsize=8, loc="lower left")
    return ax


def plot_income_by_region(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Median income of each region, each bar labelled with its number of stores and rows.

    Bars are coloured by income with the same scale as :func:`plot_loglog_fits`.
    """
    require_columns(df, ["region_id", "store_id", "median_income"])
    order = _region_order(df)
    summary = df.groupby("region_id", observed=True).agg(
        median_income=("median_income", "first"), stores=("store_id", "nunique"), rows=("median_income", "size")
    ).reindex(order)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    positions = np.arange(len(order))
    colours = _income_colours(summary["median_income"])
    bars = ax.bar(positions, summary["median_income"], color=[colours[r] for r in order])
    ax.bar_label(bars, labels=[f"{s} stores\n{n} rows" for s, n in zip(summary["stores"], summary["rows"],
                                                                         strict=True)], fontsize=8)
    ax.set_xticks(positions, [str(r) for r in order])
    ax.set(title="Median income by region", xlabel="region", ylabel="median income")
    ax.margins(y=0.2)
    return ax
