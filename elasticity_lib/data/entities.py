"""Validated entities of the business setting: SKUs, stores, regions and a market.

The entities mirror the data generating process of the book: one product (SKU) is sold
in many stores, each store belongs to exactly one region, and each region has a median
income. Every entity validates its own invariants so that a malformed market cannot be
built, and every entity renders to the tidy table that the rest of the library consumes.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Sku", "Store", "Region", "Market", "SimulationTruth", "TIDY_COLUMNS", "store_label"]

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]

#: Columns of the tidy market table, in order.
TIDY_COLUMNS = [
    "item_id",
    "price",
    "quantities",
    "time_step",
    "store_id",
    "region_store_id",
    "region_id",
    "median_income",
    "log_price",
    "log_quantities",
]


def store_label(region_id: int, store_id: int) -> str:
    """Label that identifies a store across the whole market: ``r-{region}_s-{store}``."""
    return f"r-{region_id}_s-{store_id}"


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sku(_Entity):
    """Price and quantity history of one product in one store, oldest observation first.

    ``quantities`` are in thousands of units. Both series must be non-empty, strictly
    positive, finite and of equal length, because the models work on their logarithms.
    """

    id: int = Field(ge=0)
    prices: tuple[PositiveFinite, ...] = Field(min_length=1)
    quantities: tuple[PositiveFinite, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> Sku:
        if len(self.prices) != len(self.quantities):
            raise ValueError(
                f"prices and quantities must have equal length, got {len(self.prices)} "
                f"prices and {len(self.quantities)} quantities"
            )
        return self


def _check_unique(ids: list[int], what: str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what} ids must be unique, id {i} appears more than once")
        seen.add(i)


class Store(_Entity):
    """A store and the SKUs it sells (the book uses one SKU per store)."""

    id: int = Field(ge=0)
    skus: tuple[Sku, ...] = Field(min_length=1)

    @field_validator("skus")
    @classmethod
    def _unique_skus(cls, skus: tuple[Sku, ...]) -> tuple[Sku, ...]:
        _check_unique([s.id for s in skus], "sku")
        return skus


class Region(_Entity):
    """A region: its median income (the covariate of the multilevel models) and stores."""

    id: int = Field(ge=0)
    median_income: PositiveFinite
    stores: tuple[Store, ...] = Field(min_length=1)

    @field_validator("stores")
    @classmethod
    def _unique_stores(cls, stores: tuple[Store, ...]) -> tuple[Store, ...]:
        _check_unique([s.id for s in stores], "store")
        return stores


class SimulationTruth(_Entity):
    """The parameter values that generated a simulated market.

    Region-level values are indexed by region id, store-level values by the store label
    ``r-{region}_s-{store}``. Population values are the coefficients of the income
    regressions on the original (uncentred) income scale.

    ``intercept_sd``, ``elasticity_sd`` and ``region_correlation`` describe the region
    deviations from the income lines, with the intercept deviation taken at the log price
    ``deviation_log_price`` (0, a price of 1, unless the simulation said otherwise);
    :meth:`region_deviations` restates them at any other log price, such as the mean log
    price at which the models define them.

    Store intercepts are at log price 0 like the region ones. Store deviations from the
    region were drawn independently at ``store_deviation_price``: there, a store's log
    quantity ``intercept + elasticity * log(store_deviation_price)`` deviates from its
    region's with sd ``store_intercept_sd``, independently of its elasticity deviation
    (sd ``store_elasticity_sd``).
    """

    intercept_base: float
    intercept_income_slope: float
    elasticity_base: float
    elasticity_income_slope: float
    intercept_sd: float
    elasticity_sd: float
    region_correlation: float = 0.0
    deviation_log_price: float = 0.0
    store_intercept_sd: float
    store_elasticity_sd: float
    store_deviation_price: float
    noise_sd: float
    region_intercepts: dict[int, float]
    region_elasticities: dict[int, float]
    store_intercepts: dict[str, float]
    store_elasticities: dict[str, float]

    def region_deviations(self, log_price: float | None = None) -> dict[str, float]:
        """True sds and correlation of the region deviations, intercept taken at ``log_price``.

        A region's intercept at log price ``x`` is its intercept at ``x0 =
        deviation_log_price`` plus ``(x - x0)`` times its elasticity, so the deviation pair
        maps linearly, ``(d_a + (x - x0) d_b, d_b)``, and its covariance as ``T S T'``.
        The models define the deviations at the data's mean log price; passing it here
        gives the values they estimate (``sigma_a``, ``sigma_b``, ``rho``). Without
        ``log_price`` the values are those the simulation drew. The correlation is NaN
        when either sd is 0.
        """
        shift = 0.0 if log_price is None else float(log_price) - self.deviation_log_price
        s11 = self.intercept_sd**2
        s22 = self.elasticity_sd**2
        s12 = self.region_correlation * self.intercept_sd * self.elasticity_sd
        v11 = s11 + 2 * shift * s12 + shift**2 * s22
        v12 = s12 + shift * s22
        sd_a, sd_b = float(np.sqrt(v11)), float(np.sqrt(s22))
        rho = v12 / (sd_a * sd_b) if sd_a > 0 and sd_b > 0 else float("nan")
        return {"sigma_a": sd_a, "sigma_b": sd_b, "rho": float(rho)}

    def region_deviation_table(self, income: pd.Series, log_price: float | None = None) -> pd.DataFrame:
        """Each region's true deviations from the income lines, the intercept's at ``log_price``.

        ``income`` holds the median incomes indexed by region id. The intercept deviation
        is the region's intercept at ``log_price`` (by default ``deviation_log_price``)
        minus the intercept line's value there, ``a0 + a1 m + log_price (b0 + b1 m)``.
        """
        table = self.region_table()
        income = pd.Series(income, dtype=float)
        if set(income.index) != set(table.index):
            raise ValueError(f"income must be indexed by the simulated region ids {sorted(table.index)}, "
                             f"got {sorted(income.index)}")
        m = income.reindex(table.index).to_numpy()
        x = self.deviation_log_price if log_price is None else float(log_price)
        line_b = self.elasticity_base + self.elasticity_income_slope * m
        line_a = self.intercept_base + self.intercept_income_slope * m + x * line_b
        return pd.DataFrame(
            {
                "intercept_deviation": table["intercept"].to_numpy() + x * table["elasticity"].to_numpy() - line_a,
                "elasticity_deviation": table["elasticity"].to_numpy() - line_b,
            },
            index=table.index,
        )

    def region_table(self) -> pd.DataFrame:
        """True region intercepts and elasticities, one row per region id."""
        ids = sorted(self.region_intercepts)
        return pd.DataFrame(
            {
                "intercept": [self.region_intercepts[i] for i in ids],
                "elasticity": [self.region_elasticities[i] for i in ids],
            },
            index=pd.Index(ids, name="region_id"),
        )

    def store_table(self) -> pd.DataFrame:
        """True store intercepts and elasticities, one row per store label."""
        labels = list(self.store_intercepts)
        return pd.DataFrame(
            {
                "intercept": [self.store_intercepts[s] for s in labels],
                "elasticity": [self.store_elasticities[s] for s in labels],
            },
            index=pd.Index(labels, name="region_store_id"),
        )


class Market(_Entity):
    """All regions of the market, plus the simulation truth when the market is simulated."""

    regions: tuple[Region, ...] = Field(min_length=1)
    truth: SimulationTruth | None = None

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: tuple[Region, ...]) -> tuple[Region, ...]:
        _check_unique([r.id for r in regions], "region")
        owner: dict[int, int] = {}
        for region in regions:
            for store in region.stores:
                if store.id in owner:
                    raise ValueError(
                        f"store ids must be unique across the market: store {store.id} "
                        f"appears in regions {owner[store.id]} and {region.id}"
                    )
                owner[store.id] = region.id
        return regions

    def to_dataframe(self) -> pd.DataFrame:
        """The tidy market table: one row per store, SKU and time step.

        ``time_step`` counts down to 0 at each store's most recent observation, ids are
        categorical, and ``region_store_id`` is unique across the market.
        """
        parts: dict[str, list[np.ndarray]] = {c: [] for c in TIDY_COLUMNS if not c.startswith("log_")}
        for region in self.regions:
            for store in region.stores:
                for sku in store.skus:
                    n = len(sku.prices)
                    parts["item_id"].append(np.full(n, sku.id))
                    parts["price"].append(np.asarray(sku.prices, dtype=float))
                    parts["quantities"].append(np.asarray(sku.quantities, dtype=float))
                    parts["time_step"].append(np.arange(n - 1, -1, -1))
                    parts["store_id"].append(np.full(n, store.id))
                    parts["region_store_id"].append(np.full(n, store_label(region.id, store.id), dtype=object))
                    parts["region_id"].append(np.full(n, region.id))
                    parts["median_income"].append(np.full(n, region.median_income))
        df = pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})
        labels = list(dict.fromkeys(df["region_store_id"]))
        # one label per (region, store) pair: two pairs sharing a label would merge stores
        n_pairs = len(df[["region_id", "store_id"]].drop_duplicates())
        if len(labels) != n_pairs:  # pragma: no cover - store_label is injective on valid ids
            raise ValueError(f"region_store_id labels collide: {n_pairs} stores but {len(labels)} labels")
        df["log_price"] = np.log(df["price"])
        df["log_quantities"] = np.log(df["quantities"])
        for col in ["item_id", "store_id", "region_id"]:
            df[col] = pd.Categorical(df[col], categories=sorted(df[col].unique()))
        df["region_store_id"] = pd.Categorical(df["region_store_id"], categories=labels)
        return df[TIDY_COLUMNS]
