"""Simulate a market from the book's data generating process.

All randomness flows through one :class:`numpy.random.Generator`, and every quantity is
drawn for all regions, stores or observations at once, so a reference-sized market takes
milliseconds and the same seed always gives the same table, byte for byte.
"""

from __future__ import annotations

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from scipy.special import digamma

from elasticity_lib.data.entities import Market, Region, SimulationTruth, Sku, Store, store_label

__all__ = [
    "SimulationConfig", "simulate_market", "store_deviation_price", "REFERENCE_SEED", "gamma_shape_scale",
    "negative_binomial_n_p", "expected_log_price", "POOLING_SCENARIO", "POOLING_SEED", "POOLING_THIN_REGION",
    "simulate_pooling_market",
]

#: Seed of the reference run: the sum of the character codes of its name.
REFERENCE_SEED = sum(map(ord, "multilevel_elasticities_single_sku"))


class SimulationConfig(BaseModel):
    """Parameters of the data generating process; the defaults are the reference values.

    Counts are ``NegativeBinomial(mu, alpha) + minimum``; incomes are ``Gamma(mu, sigma)
    + offset``; region intercepts and elasticities are Normal around linear functions of
    income. ``store_intercept_sd`` and ``store_elasticity_sd`` add store deviations around
    the region values (0 in the reference, so all stores of a region share its elasticity).

    The region deviations are independent in the reference. ``region_correlation`` draws
    them as a bivariate Normal with that correlation instead, the intercept deviation
    taken at the log price ``deviation_log_price`` (0, a price of 1, by default; the
    models define their deviations at the mean log price, see :func:`expected_log_price`).
    ``intercept_sd`` is then the sd of the intercepts at that log price; the income line
    of the intercept stays the line at log price 0. ``stores_per_region`` fixes each
    region's number of stores and ``time_steps_mu_per_region`` the mean length of its
    stores' histories (both one value per region), in place of the market-wide draws.
    With the defaults (0, 0, None, None) the market is the reference's, byte for byte.

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
    region_correlation: float = Field(default=0.0, gt=-1.0, lt=1.0, allow_inf_nan=False)
    deviation_log_price: float = Field(default=0.0, allow_inf_nan=False)
    stores_per_region: tuple[PositiveInt, ...] | None = None
    time_steps_mu_per_region: tuple[PositiveFloat, ...] | None = None

    @model_validator(mode="after")
    def _one_value_per_region(self) -> SimulationConfig:
        for name in ("stores_per_region", "time_steps_mu_per_region"):
            values = getattr(self, name)
            if values is not None and len(values) != self.n_regions:
                raise ValueError(f"{name} needs one value per region: n_regions is {self.n_regions} "
                                 f"but {name} has {len(values)} values {values}")
        return self


def negative_binomial_n_p(mu: float, alpha: float) -> tuple[float, float]:
    """NumPy's ``(n, p)`` for a negative binomial with mean ``mu`` and dispersion ``alpha``."""
    return alpha, alpha / (alpha + mu)


def gamma_shape_scale(mu: float, sigma: float) -> tuple[float, float]:
    """NumPy's ``(shape, scale)`` for a gamma with mean ``mu`` and standard deviation ``sigma``."""
    return (mu / sigma) ** 2, sigma**2 / mu


def expected_log_price(mu: float, sigma: float) -> float:
    """Mean of the log price when prices are Gamma with mean ``mu`` and sd ``sigma``.

    For a gamma with shape ``k`` and scale ``theta``, ``E log x = digamma(k) + log theta``.
    The models centre log price at its sample mean, which lies within a few thousandths of
    this value in a market of a few hundred rows; simulating the region deviations here
    puts them where the models define theirs.
    """
    shape, scale = gamma_shape_scale(mu, sigma)
    return float(digamma(shape) + np.log(scale))


def _region_effects(c: SimulationConfig, rng: np.random.Generator, income: np.ndarray):
    """Region intercepts (at log price 0) and elasticities: income lines plus deviations.

    Uncorrelated deviations at log price 0 keep the reference's two draws, so its markets
    stay byte-identical. Otherwise two standard normals per region give the pair
    ``(d_a, d_b)`` with sds ``intercept_sd``, ``elasticity_sd`` and correlation
    ``region_correlation`` (``d_b = sd_b (rho z_1 + sqrt(1 - rho^2) z_2)``), ``d_a`` the
    deviation of the intercept at ``deviation_log_price``; moved to log price 0 it becomes
    ``d_a - deviation_log_price * d_b``.
    """
    line_a = c.intercept_base + c.intercept_income_slope * income
    line_b = c.elasticity_base + c.elasticity_income_slope * income
    if c.region_correlation == 0.0 and c.deviation_log_price == 0.0:
        return rng.normal(line_a, c.intercept_sd), rng.normal(line_b, c.elasticity_sd)
    z = rng.standard_normal(size=(2, c.n_regions))
    rho = c.region_correlation
    d_a = c.intercept_sd * z[0]
    d_b = c.elasticity_sd * (rho * z[0] + np.sqrt(1.0 - rho**2) * z[1])
    return line_a + d_a - c.deviation_log_price * d_b, line_b + d_b


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
    if c.stores_per_region is not None:  # drawn all the same, so the stream stays aligned
        n_stores = np.array(c.stores_per_region, dtype=n_stores.dtype)
    income = rng.gamma(*gamma_shape_scale(c.income_mu, c.income_sigma), size=c.n_regions) + c.income_offset
    alpha, beta = _region_effects(c, rng, income)

    total_stores = int(n_stores.sum())
    store_region = np.repeat(np.arange(c.n_regions), n_stores)
    steps_mu = c.time_steps_mu
    if c.time_steps_mu_per_region is not None:
        steps_mu = np.asarray(c.time_steps_mu_per_region)[store_region]
    n_steps = rng.negative_binomial(*negative_binomial_n_p(steps_mu, c.time_steps_alpha), size=total_stores)
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
        region_correlation=c.region_correlation,
        deviation_log_price=c.deviation_log_price,
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


#: The region whose two stores have short histories in :data:`POOLING_SCENARIO`.
POOLING_THIN_REGION = 0

#: A market where pooling has work to do. Twelve regions whose deviations from the income
#: lines are large (sd 0.3 for the elasticity and for the intercept at the mean log price,
#: against 0.02 in the reference) and correlated (-0.6: a region that sells more than its
#: income predicts is also more price sensitive than predicted), and one thin region
#: (:data:`POOLING_THIN_REGION`) with two stores and a few weeks of history each (a mean
#: of 6 rows per store against 22 elsewhere). The deviations are simulated at the
#: expected log price (:func:`expected_log_price`, 0.39), where the models define theirs,
#: so the true ``rho`` of the models is -0.6 up to the sampling error of the mean log
#: price (:meth:`~elasticity_lib.data.entities.SimulationTruth.region_deviations` gives it
#: exactly). Everything else is the reference's.
POOLING_SCENARIO = SimulationConfig(
    n_regions=12,
    stores_per_region=(2, 6, 9, 5, 8, 12, 7, 10, 6, 9, 8, 11),
    time_steps_mu_per_region=(4.0,) + (20.0,) * 11,
    intercept_sd=0.3,
    elasticity_sd=0.3,
    region_correlation=-0.6,
    deviation_log_price=expected_log_price(1.5, 0.25),
)

#: Seed of the pooling scenario's market. It was picked among the seeds 0-299 as one
#: whose thin region has at most 16 rows and lies well off both income lines, in the
#: direction the correlation expects (intercept deviation above 1 sd, elasticity deviation
#: below -0.8 sd), so that the market shows what pooling and correlation do; the
#: correlation of the twelve drawn deviation pairs is -0.72.
POOLING_SEED = 71


def simulate_pooling_market():
    """The market of :data:`POOLING_SCENARIO` with :data:`POOLING_SEED`."""
    return simulate_market(POOLING_SCENARIO, seed=POOLING_SEED)
