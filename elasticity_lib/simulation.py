"""Simulate a market from the book's data generating process.

All randomness flows through one :class:`numpy.random.Generator`, and every quantity is
drawn for all regions, stores or observations at once, so a reference-sized market takes
milliseconds and the same seed always gives the same table, byte for byte.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .entities import Market, Region, SimulationTruth, Sku, Store, store_label

__all__ = ["SimulationConfig", "simulate_market", "store_deviation_price", "REFERENCE_SEED", "gamma_shape_scale", "negative_binomial_n_p"]

#: Seed of the reference run: the sum of the character codes of its name.
REFERENCE_SEED = sum(map(ord, "multilevel_elasticities_single_sku"))


class SimulationConfig(BaseModel):
    """Parameters of the data generating process; the defaults are the reference values.

    Counts are ``NegativeBinomial(mu, alpha) + minimum``; incomes are ``Gamma(mu, sigma)
    + offset``; region intercepts and elasticities are Normal around linear functions of
    income. ``store_intercept_sd`` and ``store_elasticity_sd`` add store deviations around
    the region values (0 in the reference, so all stores of a region share its elasticity).

    Store deviations are drawn independently at the log of ``store_deviation_price``
    (``None``: ``price_mu``, the typical price), where the three-level model
    (``store_multilevel``) defines them: ``store_intercept_sd`` is the sd of a store's
    expected log quantity around its region's at that price, not at a price of 1. A
    store's intercept at log price 0 is then its region's plus ``u_a -
    log(store_deviation_price) * u_b``, for independent deviations ``u_a`` and ``u_b``.
    Drawn independently at log price 0 instead, deviations of sd 0.1 and 0.3 would be
    correlated about 0.77 at the typical price, a dependence the model assumes away.
    """

    # allow_inf_nan=False: an infinite scale or mean is never a valid setting
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_regions: PositiveInt = 9
    stores_mu: PositiveFloat = 10.0
    stores_alpha: PositiveFloat = 3.0
    min_stores: PositiveInt = 2
    income_mu: PositiveFloat = 5.0
    income_sigma: PositiveFloat = 2.0
    income_offset: NonNegativeFloat = 1.0
    time_steps_mu: PositiveFloat = 20.0
    time_steps_alpha: PositiveFloat = 5.0
    min_time_steps: PositiveInt = 2
    intercept_base: float = Field(default=1.0, allow_inf_nan=False)
    intercept_income_slope: float = Field(default=0.3, allow_inf_nan=False)
    intercept_sd: NonNegativeFloat = 0.02
    elasticity_base: float = Field(default=-0.1, allow_inf_nan=False)
    elasticity_income_slope: float = Field(default=-0.6, allow_inf_nan=False)
    elasticity_sd: NonNegativeFloat = 0.02
    store_intercept_sd: NonNegativeFloat = 0.0
    store_elasticity_sd: NonNegativeFloat = 0.0
    store_deviation_price: PositiveFloat | None = None
    price_mu: PositiveFloat = 1.5
    price_sigma: PositiveFloat = 0.25
    noise_sd: PositiveFloat = 0.3
    item_id: NonNegativeInt = 0


def negative_binomial_n_p(mu: float, alpha: float) -> tuple[float, float]:
    """NumPy's ``(n, p)`` for a negative binomial with mean ``mu`` and dispersion ``alpha``."""
    return alpha, alpha / (alpha + mu)


def gamma_shape_scale(mu: float, sigma: float) -> tuple[float, float]:
    """NumPy's ``(shape, scale)`` for a gamma with mean ``mu`` and standard deviation ``sigma``."""
    return (mu / sigma) ** 2, sigma**2 / mu


def store_deviation_price(config: SimulationConfig) -> float:
    """The price at which store deviations are drawn: ``store_deviation_price``, else ``price_mu``."""
    return config.price_mu if config.store_deviation_price is None else config.store_deviation_price


def simulate_market(config: SimulationConfig | None = None, *, seed: int | np.random.Generator) -> Market:
    """Draw a market from the data generating process of the book.

    Each region's intercept and elasticity are drawn once per region (the reference code
    drew them again at every time step), each region keeps its own income (the reference
    paired incomes with the wrong regions), and store ids are unique across the market so
    that the labels ``r-{region}_s-{store}`` never collide.
    """
    config = config or SimulationConfig()
    rng = np.random.default_rng(seed)
    c = config

    n_stores = rng.negative_binomial(*negative_binomial_n_p(c.stores_mu, c.stores_alpha), size=c.n_regions)
    n_stores = n_stores + c.min_stores
    income = rng.gamma(*gamma_shape_scale(c.income_mu, c.income_sigma), size=c.n_regions) + c.income_offset
    alpha = rng.normal(c.intercept_base + c.intercept_income_slope * income, c.intercept_sd)
    beta = rng.normal(c.elasticity_base + c.elasticity_income_slope * income, c.elasticity_sd)

    total_stores = int(n_stores.sum())
    store_region = np.repeat(np.arange(c.n_regions), n_stores)
    n_steps = rng.negative_binomial(*negative_binomial_n_p(c.time_steps_mu, c.time_steps_alpha), size=total_stores)
    n_steps = n_steps + c.min_time_steps
    # deviations independent at the reference log price x_ref: the intercept at log price 0
    # moves by u_a - x_ref * u_b (with sds 0 both are exactly 0 and stores share their region's)
    x_ref = float(np.log(store_deviation_price(c)))
    u_a = rng.normal(0.0, 1.0, size=total_stores) * c.store_intercept_sd
    u_b = rng.normal(0.0, 1.0, size=total_stores) * c.store_elasticity_sd
    store_alpha = alpha[store_region] + (u_a - x_ref * u_b)
    store_beta = beta[store_region] + u_b

    n_rows = int(n_steps.sum())
    row_store = np.repeat(np.arange(total_stores), n_steps)
    price = rng.gamma(*gamma_shape_scale(c.price_mu, c.price_sigma), size=n_rows)
    log_q = rng.normal(store_alpha[row_store] + store_beta[row_store] * np.log(price), c.noise_sd)
    quantities = np.exp(log_q)

    bounds = np.concatenate([[0], np.cumsum(n_steps)])
    regions = []
    store_id = 0
    truth_store_alpha: dict[str, float] = {}
    truth_store_beta: dict[str, float] = {}
    for r in range(c.n_regions):
        stores = []
        for _ in range(int(n_stores[r])):
            lo, hi = bounds[store_id], bounds[store_id + 1]
            sku = Sku(id=c.item_id, prices=tuple(price[lo:hi].tolist()), quantities=tuple(quantities[lo:hi].tolist()))
            stores.append(Store(id=store_id, skus=(sku,)))
            label = store_label(r, store_id)
            truth_store_alpha[label] = float(store_alpha[store_id])
            truth_store_beta[label] = float(store_beta[store_id])
            store_id += 1
        regions.append(Region(id=r, median_income=float(income[r]), stores=tuple(stores)))

    truth = SimulationTruth(
        intercept_base=c.intercept_base,
        intercept_income_slope=c.intercept_income_slope,
        elasticity_base=c.elasticity_base,
        elasticity_income_slope=c.elasticity_income_slope,
        intercept_sd=c.intercept_sd,
        elasticity_sd=c.elasticity_sd,
        store_intercept_sd=c.store_intercept_sd,
        store_elasticity_sd=c.store_elasticity_sd,
        store_deviation_price=store_deviation_price(c),
        noise_sd=c.noise_sd,
        region_intercepts={r: float(alpha[r]) for r in range(c.n_regions)},
        region_elasticities={r: float(beta[r]) for r in range(c.n_regions)},
        store_intercepts=truth_store_alpha,
        store_elasticities=truth_store_beta,
    )
    return Market(regions=tuple(regions), truth=truth)
