"""A real panel for the models of the book: cigarette demand in 46 US states, 1963-1992.

The data are the ``Cigar`` panel of the R package plm (Baltagi and Levin), shipped with
this package as ``elasticity_lib/data/cigar.csv`` (see ``data/README.md`` for its source,
licence and the check of the state coding). This module

- loads the bundled file (:func:`load_cigar`) and deflates prices and income by the CPI;
- maps it onto the library's tidy schema (:func:`cigar_tidy`): a *store* is a state, a
  *region* is one of the nine US Census divisions, the quantity is packs per capita and
  the price is the real price per pack;
- computes the least-squares benchmarks of the panel-data literature with statsmodels
  (:func:`static_ols`, :func:`dynamic_ols`, :func:`cross_section_ols`), with standard
  errors clustered by state.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "CIGAR_COLUMNS",
    "load_cigar",
    "division_income",
    "cigar_tidy",
    "remove_year_means",
    "OlsEstimate",
    "static_ols",
    "dynamic_ols",
    "cross_section_ols",
    "long_run_elasticity",
    "year_share_of_within_variance",
    "average_elasticity",
    "plot_state_elasticities",
]

#: Columns of the bundled file, as documented in ``data/README.md``.
CIGAR_COLUMNS = ["state", "state_abbr", "state_name", "census_region", "census_division", "year", "price",
                 "pop", "pop16", "cpi", "ndi", "sales", "pimin"]


def load_cigar() -> pd.DataFrame:
    """The bundled Cigar panel with real (1983-dollar) prices and income added.

    Added columns: ``year`` becomes the calendar year (1963-1992); ``real_price`` is the
    price per pack in 1983 dollars (``price / cpi``: cents to dollars and CPI 1983 = 100
    cancel); ``real_pimin`` the same for the lowest price in a neighbouring state;
    ``real_income`` is per-capita disposable income in thousands of 1983 dollars
    (``ndi / cpi / 10``); ``packs`` is packs sold per capita (``sales``).
    """
    with resources.files("elasticity_lib").joinpath("data", "cigar.csv").open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh)
    missing = [c for c in CIGAR_COLUMNS if c not in df.columns]
    if missing:  # pragma: no cover - guards a corrupted installation
        raise ValueError(f"the bundled cigar.csv lacks columns {missing}")
    df = df[CIGAR_COLUMNS].copy()
    df["year"] = 1900 + df["year"]
    df["real_price"] = df["price"] / df["cpi"]
    df["real_pimin"] = df["pimin"] / df["cpi"]
    df["real_income"] = df["ndi"] / df["cpi"] / 10.0
    df["packs"] = df["sales"]
    return df


def division_income(df: pd.DataFrame) -> pd.Series:
    """Each Census division's income covariate.

    It is the median over the division's states of each state's real per-capita income averaged over all years (thousands of 1983 dollars).
    """
    state_mean = df.groupby(["census_division", "state_abbr"])["real_income"].mean()
    return state_mean.groupby(level="census_division").median().rename("median_income")


def remove_year_means(df: pd.DataFrame, columns=("real_price", "packs")) -> pd.DataFrame:
    """Divide each column by its geometric mean over the states in the same year.

    In logs this subtracts the year's cross-state mean, which removes everything common
    to all states in a year (national trends in tastes, health news, federal taxes):
    the log-log slope on the result is the slope of a model with year effects.
    """
    out = df.copy()
    for col in columns:
        log = np.log(out[col])
        out[col] = np.exp(log - log.groupby(out["year"]).transform("mean"))
    return out


def cigar_tidy(df: pd.DataFrame | None = None, *, year_effects: bool = False) -> pd.DataFrame:
    """The panel in the library's tidy schema, ready for :func:`~elasticity_lib.prepare.prepare_data`.

    ``region_id`` is the Census division, ``store_id`` the state's postal abbreviation,
    ``price`` the real price per pack (1983 dollars), ``quantities`` packs per capita,
    ``median_income`` the division's income covariate (:func:`division_income`) and
    ``time_step`` counts down to 0 in 1992. With ``year_effects=True`` price and quantity
    are first divided by their yearly geometric means across states
    (:func:`remove_year_means`), so both become relative to the national level of the year.
    """
    df = load_cigar() if df is None else df
    income = division_income(df)
    if year_effects:
        df = remove_year_means(df)
    tidy = pd.DataFrame({
        "item_id": 0,
        "price": df["real_price"].to_numpy(),
        "quantities": df["packs"].to_numpy(),
        "time_step": (df["year"].max() - df["year"]).to_numpy(),
        "store_id": df["state_abbr"].to_numpy(),
        "region_id": df["census_division"].to_numpy(),
        "median_income": df["census_division"].map(income).to_numpy(),
        "year": df["year"].to_numpy(),
        "census_region": df["census_region"].to_numpy(),
    })
    tidy["region_store_id"] = "r-" + tidy["region_id"] + "_s-" + tidy["store_id"]
    return tidy


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


def year_share_of_within_variance(df: pd.DataFrame, column: str) -> float:
    """Share of the within-state variance of ``log(column)`` that common year effects explain.

    The log series is demeaned by state; the share is the R² of those deviations on year
    dummies, i.e. how much of a state's movement over time it shares with every other
    state in the same year. A value near 1 means that within-state variation is mostly a
    national trend.
    """
    log = np.log(df[column])
    within = log - log.groupby(df["state_abbr"]).transform("mean")
    common = within.groupby(df["year"]).transform("mean")
    return float(1 - ((within - common) ** 2).sum() / (within**2).sum())


def average_elasticity(idata, data):
    """Posterior draws of the elasticity averaged over states (each state counts once).

    For the division-level model a state takes its division's elasticity; for the
    three-level model it has its own (``beta_store``).
    """
    import xarray as xr

    post = idata["posterior"].dataset
    if "beta_store" in post:
        return post["beta_store"].mean("store")
    per_state = post["beta"].isel(region=xr.DataArray(data.store_region_idx, dims="store"))
    return per_state.mean("store")


def plot_state_elasticities(partial: pd.DataFrame, separate: pd.DataFrame, ax=None):
    """State elasticities: separate least squares per state against the three-level model.

    No pooling against partial pooling, with 94% intervals, states sorted by division.

    ``partial`` is indexed by state with ``mean``, ``hdi94_low``, ``hdi94_high`` (a
    :func:`elasticity_lib.summaries.posterior_table`) and ``division``; ``separate`` is
    :func:`elasticity_lib.baselines.no_pooling_fits` of the panel, indexed by state.
    """
    import matplotlib.pyplot as plt

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
