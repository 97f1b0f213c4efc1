"""Store-level elasticities: three ways to estimate them and how to score them.

No pooling fits one ordinary least squares regression of log quantity on log price per
store, with t-intervals (:func:`elasticity_lib.baselines.no_pooling_fits`, re-exported
here). :func:`posterior_estimates` puts any posterior in the same columns. Region-only gives every store the elasticity of its
region from the two-level model. The three-level model (``store_multilevel``) shrinks
each store toward its region by an amount learnt from the data. :func:`store_errors`
and :func:`error_table` compare any of them with the simulated truth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from ._checks import check_probability
from .baselines import no_pooling_fits
from .prepare import ModelData
from .summaries import interval_columns, posterior_table

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


def posterior_estimates(draws: xr.DataArray, prob: float = 0.94, dim: str = "store") -> pd.DataFrame:
    """Posterior mean and equal-tailed ``prob`` interval of each element of ``dim``.

    The columns ``estimate``, ``lower`` and ``upper`` of :func:`store_errors`, taken from
    :func:`elasticity_lib.summaries.posterior_table` with ``interval="equal-tailed"``.
    """
    _check_prob(prob)
    table = posterior_table(draws, dim, prob=prob, interval="equal-tailed")
    low, high = interval_columns(prob, "equal-tailed")
    return table.rename(columns={"mean": "estimate", low: "lower", high: "upper"})[_ESTIMATE_COLUMNS]


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
