"""Simulate a market whose prices are set by someone who expects demand.

The book's data generating process (:mod:`~elasticity_lib.data.simulation`) draws prices at
random, independently of demand, and so every elasticity the book estimates is a causal
one. Real prices are set by people who expect demand. This module adds, on top of a
market from :func:`~elasticity_lib.data.simulation.simulate_market`, the ways a price setter
and customers make price and demand move together:

* **anticipation**: in every store and period the price setter sees part of the demand
  shock coming and moves the price with it (a price adjustment whose correlation with
  the shock is ``anticipation``);
* **a cost shifter** (a regional wholesale cost index that changes every period) that
  moves the price but not demand: the instrument of
  :mod:`~elasticity_lib.models.instruments`;
* **temporary promotions** that cut the price, lift demand beyond the price cut
  (displays, features) and are followed by a **post-promotion dip** (customers stocked
  up); a store never runs two promotions in a row;
* **seasonality**: a demand cycle over the calendar that the price setter follows too.

With every setting at its default (zero) the market is the book's market, row for row:
each setting switches one mechanism on. Demand keeps the book's form,
``log q = alpha_s + beta_s log p + u`` plus the season, promotion and post-promotion
terms, so the true elasticities are those of the underlying market's truth.

Everything is drawn for all rows at once from one seeded generator (the promotion
calendar period by period, for all stores together), so the same seed always gives the
same table, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

from elasticity_lib.data.entities import Market, Region, Sku, Store, store_label
from elasticity_lib.data.simulation import SimulationConfig, simulate_market

__all__ = ["EXTRA_COLUMNS", "PriceSettingConfig", "PricedMarket", "simulate_priced_market", "CHAPTER_SETTING",
           "CHAPTER_SEED"]

#: Key of the random stream of the price-setting mechanisms (beside the market's seed).
_STREAM = sum(map(ord, "price_setting"))

#: Columns that :meth:`PricedMarket.to_dataframe` adds to the tidy table.
EXTRA_COLUMNS = ["period", "season", "cost_shifter", "promotion", "lagged_promotion", "demand_shock"]


class PriceSettingConfig(BaseModel):
    """How prices respond to demand; every mechanism is off (0) by default.

    ``market`` is the underlying market (regions, stores, histories, true intercepts and
    elasticities, and ``noise_sd``, the sd of the demand shock ``u``). On the log scale
    the price of store ``s`` in period ``t`` becomes

    ``log p = log p0 + cost_pass_through * z_rt - promotion_depth * promo
    + season_price_response * season(t) + adjustment_sd * (anticipation * u / noise_sd
    + sqrt(1 - anticipation^2) * v)``

    with ``p0`` the book's random price, ``z_rt`` the standard normal cost shifter of the
    store's region in period ``t`` and ``v`` standard normal, so that the price
    adjustment correlates with the demand shock exactly by ``anticipation``. Demand
    becomes

    ``log q = alpha_s + beta_s log p + season(t) + promotion_lift * promo
    + post_promotion_dip * promo(t - 1) + u``

    with ``season(t) = season_amplitude * sin(2 pi t / season_length)``. Promotions start
    with probability ``promotion_rate`` in any period that does not follow one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    market: SimulationConfig = SimulationConfig()
    anticipation: float = Field(default=0.0, ge=-0.99, le=0.99)
    adjustment_sd: NonNegativeFloat = 0.0
    cost_pass_through: float = Field(default=0.0, allow_inf_nan=False)
    promotion_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    promotion_depth: NonNegativeFloat = 0.0
    promotion_lift: float = Field(default=0.0, allow_inf_nan=False)
    post_promotion_dip: float = Field(default=0.0, le=0.0)
    season_length: int = Field(default=12, ge=2)
    season_amplitude: NonNegativeFloat = 0.0
    season_price_response: float = Field(default=0.0, allow_inf_nan=False)


#: The market of the chapter "When prices are not random" (and of the calibration of the
#: instrumental-variable model): the book's market with histories of at least 12 periods
#: (so that a hold-out of the last periods leaves every store a past) and a narrower
#: spread of the book's random prices, with every mechanism switched on. The chapter
#: varies ``anticipation``.
CHAPTER_SETTING = PriceSettingConfig(
    market=SimulationConfig(min_time_steps=12, price_sigma=0.15),
    anticipation=0.6, adjustment_sd=0.15, cost_pass_through=0.1, promotion_rate=0.15, promotion_depth=0.2,
    promotion_lift=0.3, post_promotion_dip=-0.3, season_amplitude=0.2, season_price_response=0.5,
)
#: Seed of the chapter's market.
CHAPTER_SEED = sum(map(ord, "when_prices_are_not_random"))


@dataclass(frozen=True)
class PricedMarket:
    """A simulated market with endogenous prices, and the columns that explain them.

    ``market`` holds the prices, quantities and true parameters (the elasticities are
    those of the underlying market); ``extra`` has one row per row of
    ``market.to_dataframe()``, in the same order, with the columns of
    :data:`EXTRA_COLUMNS`: the calendar ``period`` (0 is the oldest; every store's last
    observation is in the same, latest period), its ``season`` (``period mod
    season_length``), the region's ``cost_shifter``, the ``promotion`` and
    ``lagged_promotion`` flags (0 or 1; the lag of a store's first row is the promotion
    of the period before its history starts), and the ``demand_shock`` ``u`` that a
    retailer never sees (kept for checks, not for models).
    """

    market: Market
    extra: pd.DataFrame
    config: PriceSettingConfig

    @property
    def truth(self):
        """The true parameters (:class:`~elasticity_lib.data.entities.SimulationTruth`)."""
        return self.market.truth

    def to_dataframe(self) -> pd.DataFrame:
        """The tidy table of :meth:`Market.to_dataframe` with the :data:`EXTRA_COLUMNS` added."""
        table = self.market.to_dataframe()
        return pd.concat([table, self.extra.set_index(table.index)], axis=1)

    def price_shock_correlation(self) -> float:
        """Correlation, over all rows, between log price and the demand shock: 0 when prices are exogenous."""
        table = self.to_dataframe()
        return float(np.corrcoef(table["log_price"], table["demand_shock"])[0, 1])


def _promotion_calendar(rng: np.random.Generator, rate: float, n_stores: int, n_periods: int) -> np.ndarray:
    """Promotion flags of every store in periods -1..n_periods-1, never two in a row (bool array)."""
    promo = np.zeros((n_stores, n_periods + 1), dtype=bool)
    if rate == 0:
        return promo
    draws = rng.random((n_stores, n_periods + 1)) < rate
    promo[:, 0] = draws[:, 0]
    for t in range(1, n_periods + 1):
        promo[:, t] = draws[:, t] & ~promo[:, t - 1]
    return promo


def simulate_priced_market(config: PriceSettingConfig | None = None, *, seed: int | np.random.Generator) -> PricedMarket:
    """Draw a market whose prices respond to expected demand (see :class:`PriceSettingConfig`).

    The underlying market is ``simulate_market(config.market, seed=seed)``; the
    price-setting mechanisms draw from a second stream derived from ``seed`` (or from the
    same generator, when one is passed), so switching a mechanism on changes neither the
    stores nor the true parameters. With every mechanism off, prices and quantities are
    exactly those of ``simulate_market(config.market, seed=seed)``.
    """
    config = config or PriceSettingConfig()
    c = config
    base = simulate_market(c.market, seed=seed)
    # the mechanisms draw from their own stream: switching one on changes nothing underneath
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([int(seed), _STREAM])
    table = base.to_dataframe()
    truth = base.truth

    labels = table["region_store_id"].astype(str).to_numpy()
    store_codes, stores = pd.factorize(labels, sort=False)
    region = table["region_id"].astype(int).to_numpy()
    n_periods = int(table["time_step"].max()) + 1
    period = n_periods - 1 - table["time_step"].to_numpy(dtype=int)
    season = period % c.season_length
    season_effect = c.season_amplitude * np.sin(2 * np.pi * period / c.season_length)

    log_p0 = table["log_price"].to_numpy()
    store_alpha = np.array([truth.store_intercepts[s] for s in stores])[store_codes]
    store_beta = np.array([truth.store_elasticities[s] for s in stores])[store_codes]
    # the book's noise: the demand shock of every row
    shock = table["log_quantities"].to_numpy() - store_alpha - store_beta * log_p0

    n_rows = len(table)
    n_regions = int(region.max()) + 1
    cost = rng.standard_normal((n_regions, n_periods))[region, period]
    other = rng.standard_normal(n_rows)
    calendar = _promotion_calendar(rng, c.promotion_rate, len(stores), n_periods)
    promo = calendar[store_codes, period + 1]
    lag = calendar[store_codes, period]

    noise_sd = c.market.noise_sd
    adjustment = c.adjustment_sd * (c.anticipation * shock / noise_sd + np.sqrt(1 - c.anticipation**2) * other)
    log_p = (log_p0 + c.cost_pass_through * cost - c.promotion_depth * promo
             + c.season_price_response * season_effect + adjustment)
    log_q = (store_alpha + store_beta * log_p + season_effect + c.promotion_lift * promo
             + c.post_promotion_dip * lag + shock)
    price_moves = bool(c.adjustment_sd or c.cost_pass_through or (c.promotion_rate and c.promotion_depth)
                       or (c.season_price_response and c.season_amplitude))
    demand_moves = bool(c.season_amplitude or (c.promotion_rate and (c.promotion_lift or c.post_promotion_dip)))
    # with the mechanisms off, keep the book's numbers exactly (exp(log x) may differ in the last bit)
    price = np.exp(log_p) if price_moves else table["price"].to_numpy()
    quantities = np.exp(log_q) if price_moves or demand_moves else table["quantities"].to_numpy()

    regions = []
    for r in base.regions:
        new_stores = []
        for s in r.stores:
            rows = labels == store_label(r.id, s.id)
            sku = Sku(id=s.skus[0].id, prices=tuple(price[rows].tolist()), quantities=tuple(quantities[rows].tolist()))
            new_stores.append(Store(id=s.id, skus=(sku,)))
        regions.append(Region(id=r.id, median_income=r.median_income, stores=tuple(new_stores)))
    market = Market(regions=tuple(regions), truth=truth)
    extra = pd.DataFrame({
        "period": period, "season": season, "cost_shifter": cost,
        "promotion": promo.astype(int), "lagged_promotion": lag.astype(int), "demand_shock": shock,
    })
    return PricedMarket(market=market, extra=extra[EXTRA_COLUMNS], config=config)
