"""Store-level elasticities: three ways to estimate them and how to score them.

No pooling fits one ordinary least squares regression of log quantity on log price per
store (statsmodels), with t-intervals. Region-only gives every store the elasticity of its
region from the two-level model. The three-level model (``store_multilevel``) shrinks
each store toward its region by an amount learnt from the data. :func:`store_errors`
and :func:`error_table` compare any of them with the simulated truth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import statsmodels.api as sm
import xarray as xr

from ._checks import check_probability
from .prepare import ModelData

__all__ = [
    "no_pooling_fits",
    "posterior_estimates",
    "region_only_estimates",
    "store_errors",
    "error_table",
    "error_by_size",
]

_ESTIMATE_COLUMNS = ["estimate", "lower", "upper"]


_check_prob = check_probability


def no_pooling_fits(data: ModelData, prob: float = 0.94) -> pd.DataFrame:
    """One OLS regression of log quantity on log price per store, with ``prob`` t-intervals.

    Returns one row per store (index: store label, in the order of ``data.coords["store"]``)
    with the store's region, number of rows, OLS intercept and elasticity, the
    elasticity's standard error and its equal-tailed t-interval (``lower``, ``upper``).
    A store with fewer than three rows has no residual degrees of freedom, and one whose
    price never changes has no slope: both raise a ``ValueError`` naming the stores.
    """
    _check_prob(prob)
    stores = list(data.coords["store"])
    n = data.store_stats.n
    too_small = [s for s, k in zip(stores, n) if k < 3]
    if too_small:
        raise ValueError(
            f"stores {too_small[:5]} have fewer than 3 rows: an intercept and a slope leave no "
            "residual degrees of freedom for an interval"
        )
    spread = pd.Series(data.log_price).groupby(data.store_idx).agg(np.ptp).reindex(range(len(stores)))
    flat = [s for s, c in zip(stores, spread.to_numpy()) if c == 0]
    if flat:
        raise ValueError(f"stores {flat[:5]} have a constant price: their elasticity cannot be estimated")
    rows = []
    for k, store in enumerate(stores):
        mask = data.store_idx == k
        design = sm.add_constant(data.log_price[mask], has_constant="add")
        res = sm.OLS(data.log_quantity[mask], design).fit()
        lower, upper = res.conf_int(alpha=1 - prob)[1]
        rows.append({
            "store": store,
            "region": data.coords["region"][data.store_region_idx[k]],
            "n_obs": int(n[k]),
            "intercept": float(res.params[0]),
            "estimate": float(res.params[1]),
            "se": float(res.bse[1]),
            "lower": float(lower),
            "upper": float(upper),
        })
    return pd.DataFrame(rows).set_index("store")


def posterior_estimates(draws: xr.DataArray, prob: float = 0.94, dim: str = "store") -> pd.DataFrame:
    """Posterior mean and equal-tailed ``prob`` interval of each element of ``dim``."""
    _check_prob(prob)
    if dim not in draws.dims:
        raise ValueError(f"draws have dims {draws.dims}, not {dim!r}")
    draws = draws.as_numpy()  # samplers may hand back JAX arrays
    tail = (1 - prob) / 2
    q = draws.quantile([tail, 1 - tail], dim=("chain", "draw"))
    return pd.DataFrame(
        {
            "estimate": draws.mean(("chain", "draw")).transpose(dim).values,
            "lower": q.isel(quantile=0).transpose(dim).values,
            "upper": q.isel(quantile=1).transpose(dim).values,
        },
        index=pd.Index(draws[dim].values.tolist(), name=dim),
    )


def region_only_estimates(region_draws: xr.DataArray, data: ModelData, prob: float = 0.94) -> pd.DataFrame:
    """Every store gets its region's posterior mean and interval (dims chain, draw, region)."""
    per_region = posterior_estimates(region_draws, prob=prob, dim="region")
    missing = [r for r in data.coords["region"] if r not in per_region.index]
    if missing:
        raise ValueError(f"region_draws lack the regions {missing} of the data")
    regions = [data.coords["region"][j] for j in data.store_region_idx]
    out = per_region.loc[regions].copy()
    out.index = pd.Index(list(data.coords["store"]), name="store")
    return out


def store_errors(estimates: Mapping[str, pd.DataFrame], truth: pd.Series, n_obs: pd.Series) -> pd.DataFrame:
    """Long table of each approach's estimate, interval and error for every store.

    ``estimates`` maps an approach name to a frame indexed by store with ``estimate``,
    ``lower`` and ``upper``; ``truth`` and ``n_obs`` are indexed by store. Every approach
    must cover exactly the stores of ``truth``.
    """
    if not estimates:
        raise ValueError("estimates must name at least one approach")
    stores = list(truth.index)
    missing_n = [s for s in stores if s not in n_obs.index]
    if missing_n:
        raise ValueError(f"n_obs lacks the stores {missing_n[:5]}")
    frames = []
    for name, est in estimates.items():
        lacking = [c for c in _ESTIMATE_COLUMNS if c not in est.columns]
        if lacking:
            raise ValueError(f"estimates[{name!r}] lacks the columns {lacking}")
        if set(est.index) != set(stores):
            extra = sorted(set(est.index) - set(stores), key=str)[:5]
            absent = sorted(set(stores) - set(est.index), key=str)[:5]
            raise ValueError(f"estimates[{name!r}] does not cover the true stores: missing {absent}, extra {extra}")
        frame = est.loc[stores, _ESTIMATE_COLUMNS].copy()
        bad = ~np.isfinite(frame.to_numpy(dtype=float)).all(axis=1)
        if bad.any():
            raise ValueError(f"estimates[{name!r}] has non-finite values for stores {list(frame.index[bad])[:5]}")
        frame.insert(0, "approach", name)
        frame["truth"] = truth.loc[stores].to_numpy(dtype=float)
        frame["n_obs"] = n_obs.loc[stores].to_numpy()
        frame["error"] = frame["estimate"] - frame["truth"]
        frame["covered"] = (frame["lower"] <= frame["truth"]) & (frame["truth"] <= frame["upper"])
        frame["width"] = frame["upper"] - frame["lower"]
        frames.append(frame)
    out = pd.concat(frames)
    out.index.name = "store"
    return out.reset_index()


def error_table(errors: pd.DataFrame) -> pd.DataFrame:
    """RMSE, interval coverage and mean interval width per approach (from :func:`store_errors`)."""
    grouped = errors.groupby("approach", sort=False)
    return pd.DataFrame({
        "rmse": grouped["error"].apply(lambda e: float(np.sqrt(np.mean(e**2)))),
        "coverage": grouped["covered"].mean(),
        "mean_width": grouped["width"].mean(),
        "n_stores": grouped.size(),
    })


def error_by_size(errors: pd.DataFrame, bins) -> pd.DataFrame:
    """RMSE per approach within bins of the number of rows per store (rows: bins)."""
    binned = errors.assign(rows=pd.cut(errors["n_obs"], bins=bins))
    if binned["rows"].isna().any():
        outside = sorted(binned.loc[binned["rows"].isna(), "n_obs"].unique())
        raise ValueError(f"bins {list(bins)} do not cover the store sizes {outside[:5]}")
    rmse = binned.groupby(["rows", "approach"], observed=True, sort=False)["error"].apply(
        lambda e: float(np.sqrt(np.mean(e**2))))
    table = rmse.unstack("approach")
    table = table[list(dict.fromkeys(errors["approach"]))].sort_index()
    table.insert(0, "n_stores", binned.groupby("rows", observed=True)["store"].nunique().loc[table.index])
    return table
