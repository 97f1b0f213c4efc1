"""Figures of fitted models: predictive checks, traces, forests, pair plots and estimates per group.

ArviZ draws what it already knows how to draw (forest, trace, pair and posterior
predictive density plots); matplotlib draws the rest (the prior predictive check and the
bands of quantity against price per region). Every function returns the matplotlib
``Figure``, with a title and labelled axes, so a chapter cell can end with
``fig = plot_...(...)`` and the figure is shown once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from elasticity_lib.data.prepare import ModelData
from elasticity_lib.predict import OBSERVED_NAME

__all__ = [
    "plot_prior_predictive",
    "plot_predictive_bands",
    "plot_trace",
    "plot_forest",
    "plot_population_pair",
    "plot_ppc_models",
    "plot_prior_vs_posterior",
    "plot_state_elasticities",
]

_TRUTH_STYLE = {"color": "crimson", "marker": "D", "s": 28, "zorder": 5, "gid": "truth"}


def _figure(plot_collection) -> Figure:
    return plot_collection.viz["figure"].item()


def _check_draws(num_draws: int) -> int:
    if not isinstance(num_draws, (int, np.integer)) or isinstance(num_draws, bool) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    return int(num_draws)


def _flat(da: xr.DataArray) -> np.ndarray:
    """Draws of a DataArray stacked into the first axis: (sample, ...)."""
    return da.stack(sample=("chain", "draw")).transpose("sample", ...).values


def plot_prior_predictive(prior: xr.DataTree, data: ModelData, *, region=None, num_draws: int = 50,
                          seed: int = 0, title: str = "Prior predictive check") -> Figure:
    """Two panels that show what the priors imply before seeing the data.

    Left: the distribution of log quantity in ``num_draws`` simulated data sets, against
    the observed one. Right: the prior's demand lines ``alpha + beta * log price`` of one
    region (default: the region with the fewest rows) over its observed prices, with its
    observations. ``prior`` is the output of
    :func:`elasticity_lib.predict.sample_prior_predictive`.
    """
    num_draws = _check_draws(num_draws)
    for group in ("prior", "prior_predictive"):
        if group not in prior.children:
            raise ValueError(f"the DataTree has no '{group}' group; use sample_prior_predictive")
    regions = list(data.coords["region"])
    if region is None:
        region = regions[int(np.argmin(np.bincount(data.region_idx, minlength=len(regions))))]
    if region not in regions:
        raise ValueError(f"unknown region {region!r}; the data have regions {regions}")
    r = regions.index(region)
    sims = _flat(prior["prior_predictive"][OBSERVED_NAME])
    rng = np.random.default_rng(seed)
    pick = rng.choice(sims.shape[0], size=min(num_draws, sims.shape[0]), replace=False)

    fig, (ax_dist, ax_lines) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    observed = data.log_quantity
    lo = min(np.quantile(sims[pick], 0.01), observed.min())
    hi = max(np.quantile(sims[pick], 0.99), observed.max())
    bins = np.linspace(lo, hi, 60)
    centres = 0.5 * (bins[1:] + bins[:-1])
    for i, k in enumerate(pick):
        dens, _ = np.histogram(sims[k], bins=bins, density=True)
        ax_dist.plot(centres, dens, color="C0", alpha=0.25, lw=1, label="prior predictive" if i == 0 else None)
    dens, _ = np.histogram(observed, bins=bins, density=True)
    ax_dist.plot(centres, dens, color="black", lw=2, label="observed")
    ax_dist.set_xlabel("log quantity")
    ax_dist.set_ylabel("density")
    ax_dist.set_title(f"Simulated data sets ({len(pick)} draws) vs observed")
    ax_dist.legend()

    alpha = _flat(prior["prior"]["alpha"])[:, r]
    beta = _flat(prior["prior"]["beta"])[:, r]
    mask = data.region_idx == r
    x = np.linspace(data.log_price[mask].min(), data.log_price[mask].max(), 20)
    for i, k in enumerate(pick):
        ax_lines.plot(x, alpha[k] + beta[k] * x, color="C0", alpha=0.3, lw=1, label="prior demand line" if i == 0 else None)
    ax_lines.scatter(data.log_price[mask], data.log_quantity[mask], color="black", s=10, label="observed", zorder=3)
    ax_lines.set_xlabel("log price")
    ax_lines.set_ylabel("log quantity")
    ax_lines.set_title(f"Prior demand lines, region {region}")
    ax_lines.legend()
    fig.suptitle(title)
    return fig


def plot_predictive_bands(bands: xr.Dataset, data: ModelData, *, col_wrap: int = 3,
                          title: str = "Posterior predictive bands of quantity against price") -> Figure:
    """One panel per region: observed sales, the median demand curve and two bands.

    ``bands`` comes from :func:`elasticity_lib.predict.predictive_bands` (or from
    :func:`~elasticity_lib.predict.quantity_bands` on its price grid). The dark band
    is the uncertainty about the region's demand curve, the light band where a new
    week's quantity is expected to fall (both at the bands' probability).
    """
    median = "curve_median" if "curve_median" in bands else "median"
    needed = ["price", median, "curve_lower", "curve_upper", "pred_lower", "pred_upper"]
    missing = [v for v in needed if v not in bands]
    if missing:
        raise ValueError(f"bands lack variables {missing}; use predictive_bands or quantity_bands")
    regions = list(bands["region"].values)
    if len(regions) != data.n_regions:
        raise ValueError(f"bands have {len(regions)} regions but the data have {data.n_regions}")
    prob = bands.attrs.get("prob", None)
    pct = f"{100 * prob:.0f}% " if prob is not None else ""
    n_rows = int(np.ceil(len(regions) / col_wrap))
    fig, axes = plt.subplots(n_rows, col_wrap, figsize=(4 * col_wrap, 3.2 * n_rows), layout="constrained", squeeze=False)
    price = np.exp(data.log_price)
    quantity = np.exp(data.log_quantity)
    for i, ax in enumerate(axes.flat):
        if i >= len(regions):
            ax.remove()
            continue
        b = bands.isel(region=i)
        mask = data.region_idx == i
        ax.fill_between(b["price"], b["pred_lower"], b["pred_upper"], color="C0", alpha=0.2,
                        label=f"{pct}predictive band")
        ax.fill_between(b["price"], b["curve_lower"], b["curve_upper"], color="C0", alpha=0.5,
                        label=f"{pct}band of the curve")
        ax.plot(b["price"], b[median], color="C0", lw=1.5, label="median curve")
        ax.scatter(price[mask], quantity[mask], s=6, color="black", alpha=0.6, label="observed")
        ax.set_title(f"region {regions[i]} (income {data.income[i]:.1f}, n={int(mask.sum())})", fontsize=10)
        ax.set_xlabel("price")
        ax.set_ylabel("quantity (thousands)")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    return fig


def plot_trace(idata: xr.DataTree, var_names: Sequence[str], *, title: str = "Trace plot") -> Figure:
    """ArviZ's trace plot (posterior density per chain | draws), with a title."""
    pc = az.plot_trace_dist(idata, var_names=list(var_names), figure_kwargs={"layout": "constrained"})
    fig = _figure(pc)
    fig.suptitle(title)
    return fig


def plot_forest(idatas: xr.DataTree | Mapping[str, xr.DataTree], var_name: str = "beta", *,
                truth: Sequence[float] | None = None, title: str = "Region elasticities",
                xlabel: str = "elasticity", prob: float = 0.94) -> Figure:
    """Forest plot of one region-level variable for one or several models.

    Thick bars are 50% and thin bars ``prob`` highest density intervals. Several models
    (a dict of name to fit) are drawn side by side, one colour each. ``truth`` (one value
    per region, in coordinate order) is marked by a red vertical segment across the
    region's rows.
    """
    multiple = not isinstance(idatas, xr.DataTree)  # (a DataTree is itself a Mapping)
    fits = idatas if multiple else {"model": idatas}
    for name, idata in fits.items():
        if "posterior" not in idata.children or var_name not in idata["posterior"].data_vars:
            raise ValueError(f"model {name!r} has no posterior variable {var_name!r}")
    pc = az.plot_forest(dict(fits) if multiple else idatas, var_names=[var_name], combined=True,
                        ci_kind="hdi", ci_probs=(0.5, prob), figure_kwargs={"layout": "constrained"})
    if multiple:
        pc.add_legend("model")
    fig = _figure(pc)
    ax = pc.viz["plot"].sel(column="forest").item()
    if truth is not None:
        points = pc.viz["point_estimate"][var_name]
        dim = [d for d in points.dims if d != "model"][0]
        truth = np.asarray(truth, dtype=float)
        if truth.shape != (points.sizes[dim],):
            raise ValueError(f"truth must have one value per {dim} ({points.sizes[dim]}), got shape {truth.shape}")
        for i in range(points.sizes[dim]):
            artists = np.atleast_1d(points.isel({dim: i}).values)
            ys = [a.get_offsets()[0, 1] for a in artists]
            # a red segment through all the models' rows of this coordinate, behind the intervals
            ax.plot([truth[i], truth[i]], [min(ys) - 0.3, max(ys) + 0.3], color=_TRUTH_STYLE["color"],
                    lw=2, zorder=0, gid="truth", label="true value" if i == 0 else None)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel(xlabel)
    fig.suptitle(title)
    return fig


def plot_population_pair(idata: xr.DataTree, truth: Mapping[str, float], *,
                         var_names: Sequence[str] = ("a0", "a1", "b0", "b1"),
                         title: str = "Population parameters and their true values") -> Figure:
    """Pair plot of population parameters with the simulation's true values marked.

    Diagonal panels carry a red vertical line at the true value, the others a red diamond
    at the true pair.
    """
    var_names = list(var_names)
    missing = [v for v in var_names if v not in truth]
    if missing:
        raise ValueError(f"truth lacks values for {missing}")
    pm_ = az.plot_pair(idata, var_names=var_names, figure_kwargs={"layout": "constrained"})
    plots = pm_.viz["plot"]
    names_x = list(plots["var_name_x"].values)
    names_y = list(plots["var_name_y"].values)
    for i, vy in enumerate(names_y):
        for j, vx in enumerate(names_x):
            ax = plots.isel(row_index=i, col_index=j).item()
            if ax is None or not ax.get_visible() or not ax.axison:
                continue
            if i == j:
                ax.axvline(truth[vx], color=_TRUTH_STYLE["color"], lw=1.5, gid="truth")
            elif i > j:
                ax.scatter([truth[vx]], [truth[vy]], **_TRUTH_STYLE)
    fig = _figure(pm_)
    fig.suptitle(title)
    return fig


def ppc_tree(idatas: Mapping[str, xr.DataTree]) -> xr.DataTree:
    """One DataTree whose predictive and observed variables are named after the models."""
    pp, obs = {}, {}
    for name, idata in idatas.items():
        for group in ("posterior_predictive", "observed_data"):
            if group not in idata.children or OBSERVED_NAME not in idata[group].data_vars:
                raise ValueError(f"model {name!r} has no {group}/{OBSERVED_NAME}; use add_posterior_predictive")
        pp[name] = idata["posterior_predictive"][OBSERVED_NAME].variable
        obs[name] = idata["observed_data"][OBSERVED_NAME].variable
    sizes = {v.shape for v in pp.values()}
    if len(sizes) > 1:
        raise ValueError(f"models have posterior predictive draws of different shapes {sorted(sizes)}")
    return xr.DataTree.from_dict({"posterior_predictive": xr.Dataset(pp), "observed_data": xr.Dataset(obs)})


def plot_ppc_models(idatas: Mapping[str, xr.DataTree], *, num_samples: int = 50,
                    title: str = "Posterior predictive checks") -> Figure:
    """Posterior predictive density of log quantity against the data, one panel per model.

    Each fit needs the groups added by
    :func:`elasticity_lib.predict.add_posterior_predictive`.
    """
    num_samples = _check_draws(num_samples)
    tree = ppc_tree(idatas)
    pc = az.plot_ppc_dist(tree, num_samples=num_samples, kind="kde",
                          figure_kwargs={"figsize": (4 * len(idatas), 3.5), "layout": "constrained"})
    for name in idatas:
        ax = pc.get_viz("plot", var_name=name)
        ax.set_xlabel("log quantity")
        ax.set_ylabel("density")
    fig = _figure(pc)
    fig.suptitle(title)
    return fig


def plot_prior_vs_posterior(prior: xr.DataTree, idata: xr.DataTree, var_names: Sequence[str], *,
                            title: str = "Prior and posterior") -> Figure:
    """Prior and posterior density of each variable in one panel (ArviZ's plot_prior_posterior).

    ``prior`` is the output of :func:`elasticity_lib.predict.sample_prior_predictive`;
    ``idata`` is not modified. A posterior much narrower than its prior means the data
    informed the parameter; one that looks like its prior means they did not.
    """
    var_names = list(var_names)
    missing = [v for v in var_names if v not in prior["prior"].data_vars or v not in idata["posterior"].data_vars]
    if missing:
        raise ValueError(f"variables {missing} are missing from the prior or the posterior")
    both = xr.DataTree.from_dict({
        "posterior": idata["posterior"].to_dataset()[var_names],
        "prior": prior["prior"].to_dataset()[var_names],
    })
    pc = az.plot_prior_posterior(both, var_names=var_names,
                                 figure_kwargs={"figsize": (4.5 * len(var_names), 3.2), "layout": "constrained"})
    for name in var_names:
        ax = pc.get_viz("plot", var_name=name)
        ax.set_xlabel(name)
        ax.set_ylabel("density")
    fig = _figure(pc)
    fig.suptitle(title)
    return fig


def plot_state_elasticities(partial: pd.DataFrame, separate: pd.DataFrame, ax=None):
    """State elasticities: separate least squares per state against the three-level model.

    No pooling against partial pooling, with 94% intervals, states sorted by division.

    ``partial`` is indexed by state with ``mean``, ``hdi94_low``, ``hdi94_high`` (a
    :func:`elasticity_lib.summaries.posterior_table`) and ``division``; ``separate`` is
    :func:`elasticity_lib.baselines.no_pooling_fits` of the panel, indexed by state.
    """
    order = partial.sort_values(["division", "mean"]).index
    y = np.arange(len(order))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 10), layout="constrained")
    sep = separate.loc[order]
    ax.errorbar(sep["estimate"], y + 0.2, xerr=1.88 * sep["se"], fmt="o", ms=3, color="0.6",
                label="separate least squares per state (±1.88 se)")
    part = partial.loc[order]
    ax.errorbar(part["mean"], y - 0.2, xerr=[part["mean"] - part["hdi94_low"], part["hdi94_high"] - part["mean"]],
                fmt="o", ms=3, color="C0", label="three-level model (94% HDI)")
    ax.set_yticks(y, [f"{s} ({d})" for s, d in zip(order, part["division"])], fontsize=7)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlabel("price elasticity of packs per capita")
    ax.set_title("State elasticities: no pooling against partial pooling")
    ax.legend(loc="lower left", fontsize=8)
    return ax
