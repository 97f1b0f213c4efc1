"""Least-squares references for the Bayesian models: one regression per group (no pooling).

:func:`no_pooling_fits` regresses log quantity on log price separately for every store
with ordinary least squares (statsmodels), the "no pooling" end of the book's comparisons:
each store's elasticity from its own rows alone, with a t-interval. It is the only
per-group least-squares fit in the library; the simulated stores of the store-level
chapter and the states of the cigarette panel (a state is a store there) both use it.

The econometric references on the cigarette panel (:mod:`elasticity_lib.data.cigar`) are
here too: pooled and fixed-effects regressions with standard errors clustered by state
(:func:`static_ols`, :func:`dynamic_ols` with its :func:`long_run_elasticity`, and the
:func:`cross_section_ols` of one year), fitted with statsmodels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from elasticity_lib._checks import check_probability
from elasticity_lib.data.prepare import ModelData

__all__ = ["no_pooling_fits", "OlsEstimate", "static_ols", "dynamic_ols", "long_run_elasticity", "cross_section_ols"]


def no_pooling_fits(data: ModelData, prob: float = 0.94) -> pd.DataFrame:
    """One OLS regression of log quantity on log price per store, with ``prob`` t-intervals.

    Returns one row per store (index: store label, in the order of ``data.coords["store"]``)
    with the store's ``region``, number of rows ``n_obs``, OLS ``intercept`` and elasticity
    (``estimate``), the elasticity's standard error ``se``, its equal-tailed t-interval
    (``lower``, ``upper``) and the fit's residual sd ``resid_sd`` (root of the residual sum of
    squares over ``n_obs - 2``). A store with fewer than three rows has no residual degrees of
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
            "resid_sd": float(np.sqrt(res.scale)),
        })
    return pd.DataFrame(rows).set_index("store")


@dataclass(frozen=True)
class OlsEstimate:
    """One least-squares fit: coefficients and state-clustered standard errors."""

    name: str
    params: pd.Series
    se: pd.Series
    n_obs: int
    n_clusters: int
    cov: pd.DataFrame

    @property
    def price(self) -> float:
        """The price elasticity (coefficient of log price)."""
        return float(self.params["log_price"])

    @property
    def price_se(self) -> float:
        """Standard error of the price elasticity."""
        return float(self.se["log_price"])


def _log_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "log_packs": np.log(df["packs"]),
        "log_price": np.log(df["real_price"]),
        "log_income": np.log(df["real_income"]),
        "log_pimin": np.log(df["real_pimin"]),
        "state": df["state_abbr"],
        "year": df["year"],
    }, index=df.index)


_EFFECTS = {"none": "", "state": " + C(state)", "state+year": " + C(state) + C(year)"}


def _fit(name: str, formula: str, frame: pd.DataFrame) -> OlsEstimate:
    import statsmodels.formula.api as smf

    groups = pd.factorize(frame["state"])[0]
    res = smf.ols(formula, data=frame).fit(cov_type="cluster", cov_kwds={"groups": groups})
    keep = [p for p in res.params.index if not p.startswith("C(")]
    return OlsEstimate(name=name, params=res.params[keep], se=res.bse[keep], n_obs=int(res.nobs),
                       n_clusters=int(len(np.unique(groups))), cov=res.cov_params().loc[keep, keep])


def static_ols(df: pd.DataFrame, effects: str = "none", income: bool = True) -> OlsEstimate:
    """Static log-log demand by least squares: ``log packs ~ log price [+ log income] + effects``.

    ``effects`` is ``"none"`` (pooled), ``"state"`` (state fixed effects, the within
    estimator) or ``"state+year"`` (two-way fixed effects). Standard errors are clustered
    by state.
    """
    if effects not in _EFFECTS:
        raise ValueError(f"effects must be one of {list(_EFFECTS)}, got {effects!r}")
    rhs = "log_price" + (" + log_income" if income else "")
    return _fit(f"static, {effects}", f"log_packs ~ {rhs}{_EFFECTS[effects]}", _log_frame(df))


def dynamic_ols(df: pd.DataFrame, effects: str = "state") -> OlsEstimate:
    """Partial-adjustment demand, the specification of Baltagi's textbook example.

    ``log packs_t ~ log packs_{t-1} + log price + log income + log neighbour price +
    effects``.

    The first year of each state is lost to the lag. These least-squares fits ignore the
    bias of a lagged outcome with fixed effects and the endogeneity of price; they serve
    to show how short- and long-run elasticities differ, not as final estimates.
    """
    if effects not in _EFFECTS:
        raise ValueError(f"effects must be one of {list(_EFFECTS)}, got {effects!r}")
    frame = _log_frame(df.sort_values(["state_abbr", "year"]))
    prev = frame.groupby("state")["log_packs"].shift(1)
    gap = frame.groupby("state")["year"].diff()
    frame = frame.assign(log_packs_lag=prev)[gap == 1]
    formula = f"log_packs ~ log_packs_lag + log_price + log_income + log_pimin{_EFFECTS[effects]}"
    return _fit(f"dynamic, {effects}", formula, frame)


def long_run_elasticity(est: OlsEstimate) -> tuple[float, float]:
    """Long-run price elasticity ``b / (1 - g)`` of a partial-adjustment fit, with its SE.

    The standard error is the delta method's (``b`` the price, ``g`` the lag coefficient).
    """
    b, g = float(est.params["log_price"]), float(est.params["log_packs_lag"])
    if g >= 1:
        raise ValueError(f"lag coefficient {g:.3f} >= 1: demand never settles, no long-run elasticity")
    grad = np.array([1 / (1 - g), b / (1 - g) ** 2])
    cov = est.cov.loc[["log_price", "log_packs_lag"], ["log_price", "log_packs_lag"]].to_numpy()
    return b / (1 - g), float(np.sqrt(grad @ cov @ grad))


def cross_section_ols(df: pd.DataFrame, year: int = 1992) -> OlsEstimate:
    """One year's cross-section: log packs per person aged 16+ on log real price.

    For 1992 this is the regression that the AER package documents as Baltagi (2002),
    *Econometrics*, Table 3.3 (data ``CigarettesB``). Conventional (not clustered)
    standard errors, one row per state.
    """
    import statsmodels.formula.api as smf

    one = df[df["year"] == year]
    if one.empty:
        raise ValueError(f"no rows for year {year}; the panel covers {df['year'].min()}-{df['year'].max()}")
    frame = pd.DataFrame({"log_packs16": np.log(one["sales"] * one["pop"] / one["pop16"]),
                          "log_price": np.log(one["real_price"])})
    res = smf.ols("log_packs16 ~ log_price", data=frame).fit()
    return OlsEstimate(name=f"cross-section {year}", params=res.params, se=res.bse, n_obs=int(res.nobs),
                       n_clusters=int(res.nobs), cov=res.cov_params())
