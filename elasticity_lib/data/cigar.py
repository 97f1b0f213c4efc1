"""A real panel for the models of the book: cigarette demand in 46 US states, 1963-1992.

The data are the ``Cigar`` panel of the R package plm (Baltagi and Levin), shipped with
this package as ``elasticity_lib/data/cigar.csv`` (see ``data/README.md`` for its source,
licence and the check of the state coding). This module

- loads the bundled file (:func:`load_cigar`) and deflates prices and income by the CPI;
- maps it onto the library's tidy schema (:func:`cigar_tidy`): a *store* is a state, a
  *region* is one of the nine US Census divisions, the quantity is packs per capita and
  the price is the real price per pack;
- measures how much of a column's within-state variation is common to all states in a year
  (:func:`year_share_of_within_variance`).

The least-squares benchmarks of the panel-data literature on this panel are in
:mod:`elasticity_lib.baselines`.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "CIGAR_COLUMNS",
    "load_cigar",
    "division_income",
    "cigar_tidy",
    "remove_year_means",
    "year_share_of_within_variance",
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
    """The panel in the library's tidy schema, ready for :func:`~elasticity_lib.data.prepare.prepare_data`.

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
