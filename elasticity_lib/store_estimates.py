"""Store-level elasticities: three ways to estimate them and how to score them.

No pooling fits one ordinary least squares regression of log quantity on log price per
store, with t-intervals (:func:`elasticity_lib.baselines.no_pooling_fits`, re-exported
here). A posterior enters as its :func:`~elasticity_lib.summaries.posterior_table` (mean and
interval of each store). Region-only gives every store the elasticity of its region from the
two-level model (:func:`region_only_estimates`). The three-level model (``store_multilevel``) shrinks
each store toward its region by an amount learnt from the data. :func:`store_errors`
and :func:`error_table` compare any of them with the simulated truth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from elasticity_lib._checks import check_probability
from elasticity_lib.baselines import no_pooling_fits
from elasticity_lib.data.prepare import ModelData
from elasticity_lib.summaries import interval_columns, posterior_table

__all__ = [
    "no_pooling_fits",
    "region_only_estimates",
    "store_errors",
    "error_table",
    "error_by_size",
]

_ESTIMATE_COLUMNS = ["estimate", "lower", "upper"]


_check_prob = check_probability


def _estimate_columns(name: str, est: pd.DataFrame) -> pd.DataFrame:
    """``estimate``, ``lower``, ``upper`` of one approach's table.

    Either the columns themselves (:func:`~elasticity_lib.baselines.no_pooling_fits`) or a
    :func:`~elasticity_lib.summaries.posterior_table`, whose ``mean`` is the estimate and
    whose interval columns are named by its ``attrs`` (``prob``, ``interval``).
    """
    if "mean" in est.columns and "estimate" not in est.columns:
        if "prob" not in est.attrs or "interval" not in est.attrs:
            raise ValueError(f"estimates[{name!r}] has a 'mean' column but no attrs 'prob' and 'interval'; "
                             "pass a summaries.posterior_table")
        low, high = interval_columns(est.attrs["prob"], est.attrs["interval"])
        est = est.rename(columns={"mean": "estimate", low: "lower", high: "upper"})
    lacking = [c for c in _ESTIMATE_COLUMNS if c not in est.columns]
    if lacking:
        raise ValueError(f"estimates[{name!r}] lacks the columns {lacking}")
    return est


def region_only_estimates(region_draws: xr.DataArray, data: ModelData, prob: float = 0.94) -> pd.DataFrame:
    """Every store gets its region's posterior table row (dims of the draws: chain, draw, region).

    The rows of :func:`~elasticity_lib.summaries.posterior_table` with its equal-tailed
    ``prob`` interval, one per store, indexed by store.
    """
    per_region = posterior_table(region_draws, "region", prob=prob, interval="equal-tailed")
    missing = [r for r in data.coords["region"] if r not in per_region.index]
    if missing:
        raise ValueError(f"region_draws lack the regions {missing} of the data")
    regions = [data.coords["region"][j] for j in data.store_region_idx]
    out = per_region.loc[regions].copy()
    out.index = pd.Index(list(data.coords["store"]), name="store")
    out.attrs = dict(per_region.attrs)
    return out


def store_errors(estimates: Mapping[str, pd.DataFrame], truth: pd.Series, n_obs: pd.Series) -> pd.DataFrame:
    """Long table of each approach's estimate, interval and error for every store.

    ``estimates`` maps an approach name to a frame indexed by store: one with ``estimate``,
    ``lower`` and ``upper`` (:func:`~elasticity_lib.baselines.no_pooling_fits`), or a
    :func:`~elasticity_lib.summaries.posterior_table` (its mean and interval); ``truth`` and ``n_obs`` are indexed by store. Every approach
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
        est = _estimate_columns(name, est)
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
