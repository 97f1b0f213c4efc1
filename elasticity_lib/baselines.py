"""Least-squares references for the Bayesian models: one regression per group (no pooling).

:func:`no_pooling_fits` regresses log quantity on log price separately for every store
with ordinary least squares (statsmodels), the "no pooling" end of the book's comparisons:
each store's elasticity from its own rows alone, with a t-interval. It is the only
per-group least-squares fit in the library; the simulated stores of the store-level
chapter and the states of the cigarette panel (a state is a store there) both use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._checks import check_probability
from .prepare import ModelData

__all__ = ["no_pooling_fits"]


def no_pooling_fits(data: ModelData, prob: float = 0.94) -> pd.DataFrame:
    """One OLS regression of log quantity on log price per store, with ``prob`` t-intervals.

    Returns one row per store (index: store label, in the order of ``data.coords["store"]``)
    with the store's ``region``, number of rows ``n_obs``, OLS ``intercept`` and elasticity
    (``estimate``), the elasticity's standard error ``se`` and its equal-tailed t-interval
    (``lower``, ``upper``). A store with fewer than three rows has no residual degrees of
    freedom, and one whose price never changes has no slope: both raise a ``ValueError``
    naming the stores.
    """
    import statsmodels.api as sm

    check_probability(prob)
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
