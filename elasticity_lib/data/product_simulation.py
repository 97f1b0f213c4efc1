"""Simulate a category: products sold in stores within regions, with own and cross-price effects.

The data generating process is the multi-product model of :mod:`elasticity_lib.models.products`
with a known truth. Products sit in tiers (premium, value, ...): products of one tier are
close substitutes (positive cross-price elasticities), products of different tiers weaker
ones, and the last two products are complements (negative cross-price elasticities, as for
a product and its accessory). Each store's own-price elasticities move with the income of
its shoppers (richer stores less price-sensitive), promotions (a deal that cuts the price
and a feature in the store's flyer) lift sales, and everything is drawn for all stores,
weeks and products at once from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

__all__ = ["ProductMarketConfig", "ProductTruth", "ProductMarket", "category_elasticities", "simulate_products",
           "PRODUCT_SEED"]

#: Seed of the book's simulated category: the sum of the character codes of its name.
PRODUCT_SEED = sum(map(ord, "many_products_one_category"))


class ProductMarketConfig(BaseModel):
    """Parameters of the multi-product data generating process (defaults: the book's category).

    Elasticities: own elasticities run evenly from ``own_elasticity_high`` (first product)
    to ``own_elasticity_low`` (last); cross elasticities are ``substitute_within_tier``
    within a tier, ``substitute_across_tiers`` across tiers and ``complement`` between the
    last two products (when ``complements`` is on). A store's own elasticity is the
    product's plus ``own_income_slope`` per standard deviation of income (over the
    simulated stores) plus a store deviation of sd ``store_own_sd``. Promotions: a deal
    (probability ``deal_probability``) cuts the price by ``deal_discount`` and lifts log
    sales by ``deal_lift`` on top of the price effect; a feature (probability
    ``feature_probability``, higher in deal weeks) lifts them by ``feature_lift``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_products: int = Field(default=5, ge=2, le=30)
    n_tiers: PositiveInt = 2
    complements: bool = True
    n_regions: PositiveInt = 4
    stores_per_region: PositiveInt = 8
    n_weeks: int = Field(default=52, ge=3)
    own_elasticity_high: float = Field(default=-3.0, lt=0)
    own_elasticity_low: float = Field(default=-2.0, lt=0)
    substitute_within_tier: float = 0.4
    substitute_across_tiers: float = 0.1
    complement: float = -0.3
    own_income_slope: float = 0.3
    store_own_sd: NonNegativeFloat = 0.25
    intercept_income_slope: float = 0.2
    region_intercept_sd: NonNegativeFloat = 0.3
    store_intercept_sd: NonNegativeFloat = 0.3
    deal_lift: float = 0.4
    feature_lift: float = 0.3
    store_promotion_sd: NonNegativeFloat = 0.1
    deal_probability: float = Field(default=0.15, ge=0, le=1)
    deal_discount: float = Field(default=0.2, ge=0, lt=1)
    feature_probability: float = Field(default=0.1, ge=0, le=1)
    feature_given_deal: float = Field(default=0.5, ge=0, le=1)
    base_price_low: PositiveFloat = 2.0
    base_price_high: PositiveFloat = 4.0
    store_price_sd: NonNegativeFloat = 0.05
    weekly_price_sd: PositiveFloat = 0.08
    income_mean: PositiveFloat = 50.0
    region_income_sd: NonNegativeFloat = 10.0
    store_income_sd: NonNegativeFloat = 5.0
    base_log_sales: float = 4.0
    noise_sd: PositiveFloat = 0.3

    @model_validator(mode="after")
    def _consistent(self) -> ProductMarketConfig:
        if self.n_tiers > self.n_products:
            raise ValueError(f"n_tiers ({self.n_tiers}) cannot exceed n_products ({self.n_products})")
        if self.base_price_low > self.base_price_high:
            raise ValueError(f"base_price_low ({self.base_price_low}) exceeds base_price_high ({self.base_price_high})")
        return self


@dataclass(frozen=True)
class ProductTruth:
    """The simulated truth, on the model's scale.

    ``elasticity`` (K, K): row k is product k's sales, column j product j's price;
    own elasticities (diagonal) at the mean income of the simulated stores.
    ``store_own`` (S, K): each store's own elasticities; ``promotion_lift`` (K, 2): mean
    lifts of deal and feature; ``own_income_slope``: change of every own elasticity per
    sd of store income; ``store_own_sd``, ``noise_sd``: as configured.
    """

    products: list
    stores: list
    elasticity: np.ndarray
    store_own: np.ndarray
    promotion_lift: np.ndarray
    store_promotion: np.ndarray
    own_income_slope: float
    store_own_sd: float
    noise_sd: float
    unit_cost: np.ndarray

    def elasticity_frame(self) -> pd.DataFrame:
        """The true elasticity matrix as a labelled table (rows: sales of, columns: price of)."""
        return pd.DataFrame(self.elasticity, index=pd.Index(self.products, name="product"),
                            columns=pd.Index(self.products, name="price_of"))


@dataclass(frozen=True)
class ProductMarket:
    """A simulated category, as the orange-juice data come.

    ``sales`` (store, week, product, price, quantity, deal, feature), ``stores`` (store,
    region, income) and the ``truth``; ``table()`` merges the first two.
    """

    sales: pd.DataFrame
    stores: pd.DataFrame
    truth: ProductTruth

    def table(self) -> pd.DataFrame:
        """``sales.merge(stores)``: the long table :func:`~elasticity_lib.models.products.prepare_product_data` reads."""
        return self.sales.merge(self.stores, on="store", how="left", validate="many_to_one")


def category_elasticities(config: ProductMarketConfig) -> np.ndarray:
    """The population elasticity matrix of the configuration (K, K), deterministic."""
    c = config
    K = c.n_products
    tier = np.arange(K) * c.n_tiers // K
    e = np.where(tier[:, None] == tier[None, :], c.substitute_within_tier, c.substitute_across_tiers)
    if c.complements:
        e[K - 2, K - 1] = e[K - 1, K - 2] = c.complement
    np.fill_diagonal(e, np.linspace(c.own_elasticity_high, c.own_elasticity_low, K))
    return e.astype(float)


def simulate_products(config: ProductMarketConfig | None = None, *, seed: int | np.random.Generator) -> ProductMarket:
    """Draw a category from the data generating process (module docstring); vectorised and seeded.

    Every product is on sale in every week of every store, so the table passes
    :func:`~elasticity_lib.models.products.prepare_product_data`. Unit costs (in the truth) are
    60% of each product's base price, for the pricing examples.
    """
    c = config or ProductMarketConfig()
    rng = np.random.default_rng(seed)
    K, R, W = c.n_products, c.n_regions, c.n_weeks
    S = R * c.stores_per_region
    region = np.repeat(np.arange(R), c.stores_per_region)
    income = (c.income_mean + c.region_income_sd * rng.standard_normal(R))[region]
    income = income + c.store_income_sd * rng.standard_normal(S)
    z = (income - income.mean()) / (income.std() if income.std() > 0 else 1.0)

    e = category_elasticities(c)
    own = np.diag(e)[None, :] + c.own_income_slope * z[:, None] + c.store_own_sd * rng.standard_normal((S, K))
    intercept = (c.base_log_sales + c.intercept_income_slope * z[:, None]
                 + c.region_intercept_sd * rng.standard_normal(R)[region][:, None]
                 + c.store_intercept_sd * rng.standard_normal((S, K)))
    lift_mean = np.array([c.deal_lift, c.feature_lift])
    lifts = lift_mean[None, None, :] + c.store_promotion_sd * rng.standard_normal((S, K, 2))

    base_price = np.linspace(c.base_price_low, c.base_price_high, K)[::-1]
    log_base = np.log(base_price)[None, :] + c.store_price_sd * rng.standard_normal((S, K))
    deal = (rng.random((S, W, K)) < c.deal_probability).astype(float)
    feature_p = np.where(deal > 0, c.feature_given_deal, c.feature_probability)
    feature = (rng.random((S, W, K)) < feature_p).astype(float)
    log_p = log_base[:, None, :] + c.weekly_price_sd * rng.standard_normal((S, W, K)) + np.log1p(-c.deal_discount) * deal
    x = log_p - log_p.mean(axis=(0, 1))          # centred at each product's mean, as the model is
    cross = e.copy()
    np.fill_diagonal(cross, 0.0)
    mu = (intercept[:, None, :] + own[:, None, :] * x + np.einsum("swj,kj->swk", x, cross)
          + lifts[:, None, :, 0] * deal + lifts[:, None, :, 1] * feature)
    log_q = mu + c.noise_sd * rng.standard_normal((S, W, K))

    products = [f"P{k + 1}" for k in range(K)]
    s_idx, w_idx, k_idx = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(W), np.arange(K), indexing="ij"))
    sales = pd.DataFrame({
        "store": s_idx + 1, "week": w_idx + 1, "product": np.asarray(products)[k_idx],
        "price": np.exp(log_p.ravel()), "quantity": np.exp(log_q.ravel()),
        "deal": deal.ravel().astype(int), "feature": feature.ravel().astype(int)})
    stores = pd.DataFrame({"store": np.arange(S) + 1, "region": region + 1, "income": income})
    truth = ProductTruth(products=products, stores=list(range(1, S + 1)), elasticity=e, store_own=own,
                         promotion_lift=np.tile(lift_mean, (K, 1)), store_promotion=lifts,
                         own_income_slope=c.own_income_slope, store_own_sd=c.store_own_sd, noise_sd=c.noise_sd,
                         unit_cost=0.6 * base_price)
    return ProductMarket(sales=sales, stores=stores, truth=truth)
