"""Many products at once: own- and cross-price elasticities, promotions and store demographics.

The data are a long table of weekly sales of the ``K`` products of a category in many
stores: one row per (store, week, product) with its price and quantity, the product's
promotion columns (0/1 or a share in [0, 1]) and store covariates (demographics, one value
per store). For product ``k`` in store ``s`` and week ``t``,

    log q_kst = a_ks + e_ks (log p_kst - x̄_k) + Σ_{j≠k} E_kj (log p_jst - x̄_j)
                + Σ_m g_ksm promo_kmst + ε,      ε ~ Normal(0, sigma_k),

with log quantities centred at each product's mean ``ȳ_k`` and log prices at each
product's mean ``x̄_j``: the hierarchical linear model of Rossi, Allenby & McCulloch
(*Bayesian Statistics and Marketing*, 2005) and Montgomery (1997) for store-level pricing.

Which coefficients vary by store
    Store ``s`` has, for each product, a vector ``θ_ks = (a_ks, e_ks, g_ks1, ...)``: the
    intercept, the own-price elasticity and the promotion lifts (``D = 2 + P``
    coefficients). It is Normal around a population mean that depends on the store's
    standardised covariates, ``θ_ks ~ Normal(μ_k + Γ_k z_s, Σ_k)``, with one LKJ-correlated
    covariance ``Σ_k`` per product. The ``K (K - 1)`` cross-price elasticities ``E_kj`` are
    shared by all stores (category level). That is a choice for tractability: with all
    ``K`` prices store-varying the store vectors would have ``K + 1 + P`` entries (14 for
    11 brands and two promotion columns), 83 stores could not inform a 14 x 14 covariance
    per product, and the batched Cholesky factorisations would cost ten times as much. Own
    elasticities, which drive a store's pricing, vary by store and with its demographics;
    the substitution pattern between products is a property of the category.
    ``store_varying`` of :func:`build_product_model` narrows the store vector further
    (for example to :data:`BOOK_STORE_VARYING`, intercept and own price): the other
    coefficients keep their population mean and covariate slopes, ``μ_k + Γ_k z_s``,
    without a store deviation. Rare promotions inform a store's lift so little that the
    store scale of a lift is barely identified, and that scale mixes slowly.

Likelihood forms (as in :mod:`elasticity_lib.models`)
    ``"marginal"`` (default): the store vectors are integrated out analytically. Given the
    population parameters, the rows of one (store, product) pair are Normal with mean
    ``W m`` and covariance ``sigma² I + W Σ W'`` (``W`` the rows' intercept, own price and
    promotion columns); by the matrix determinant lemma and Woodbury's identity its log
    density needs only the per-pair sufficient statistics ``XᵀX, Xᵀy, yᵀy, n`` and one
    ``D x D`` Cholesky factorisation of the posterior precision ``Σ⁻¹ + WᵀW / sigma²``
    per pair (batched in PyTensor). The store vectors are drawn afterwards from their exact
    Gaussian conditional (:func:`add_store_effects`, which :func:`~elasticity_lib.fit`
    calls). ``"sufficient"`` and ``"rows"`` sample the store vectors explicitly
    (non-centred) and evaluate the same likelihood on the statistics or row by row; they
    are the references of the tests and the benchmark.

The priors (:data:`PRODUCT_PRIORS`) are on the centred, standardised scale, so they mean
the same thing for any units of price, quantity or covariate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from elasticity_lib.data.prepare import _check_numeric, _py, _rows, _shown, check_option, require_columns

__all__ = [
    "PRODUCT_COLUMNS", "PRODUCT_PRIORS", "PRODUCT_LIKELIHOODS", "MIN_STORES", "MIN_PRODUCTS", "MIN_WEEKS",
    "ProductCentring", "ProductData", "prepare_product_data", "build_product_model", "marginal_loglik",
    "store_posterior_moments", "add_store_effects", "product_spec_attributes", "elasticity_matrix",
    "population_parameters", "least_squares", "plot_elasticity_heatmap",
    "BOOK_STORE_VARYING", "store_varying_index",
]

#: Columns every multi-product table has; promotion and covariate columns are named by the caller.
PRODUCT_COLUMNS = ["store", "week", "product", "price", "quantity"]
#: Likelihood forms of the multi-product model (see the module docstring).
PRODUCT_LIKELIHOODS = ("marginal", "sufficient", "rows")
#: The least data a fit needs: stores to pool, products to form a category, weeks per store.
MIN_STORES, MIN_PRODUCTS, MIN_WEEKS = 2, 2, 3

#: The store-varying coefficients of the book's simulated-category fit (chapter 15) and of
#: its calibration study: intercepts and own-price elasticities vary by store, promotion
#: lifts by product only (see ``store_varying`` of :func:`build_product_model`).
BOOK_STORE_VARYING = ("intercept", "own_price")

#: Prior hyperparameters, on the centred scale (log quantity minus the product's mean,
#: log prices minus each product's mean, covariates standardised over stores).
#: ``intercept_sd``, ``own_sd``, ``promotion_sd``: the population mean of each store
#: coefficient at the mean covariates; ``covariate_sd``: its change per standard deviation
#: of a covariate; ``cross_sd``: a cross-price elasticity; ``store_*_sd``: the half-Normal
#: scales of the store deviations; ``lkj_eta``: the LKJ prior of their correlation;
#: ``sigma_rate``: the exponential prior of each product's residual sd.
PRODUCT_PRIORS = {
    "intercept_sd": 1.0,
    "own_mean": -1.0,
    "own_sd": 1.5,
    "promotion_sd": 1.0,
    "covariate_sd": 0.5,
    "cross_sd": 1.0,
    "store_intercept_sd": 1.0,
    "store_own_sd": 0.5,
    "store_promotion_sd": 0.5,
    "lkj_eta": 2.0,
    "sigma_rate": 2.0,
}


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductCentring:
    """Where the model centres its data, so that results do not depend on units.

    ``log_price`` and ``log_quantity``: each product's mean log price and log quantity
    over its rows (order of ``ProductData.products``); ``covariate_mean`` and
    ``covariate_scale``: mean and sd of each covariate over stores (a covariate equal in
    every store gets scale 1).
    """

    log_price: np.ndarray
    log_quantity: np.ndarray
    covariate_mean: np.ndarray
    covariate_scale: np.ndarray


@dataclass(frozen=True)
class ProductData:
    """Validated multi-product data and the sufficient statistics the model needs.

    ``stats_*`` are per (store, product) pair, in the order of ``stores`` and
    ``products``: ``stats_xx`` (S, K, p, p) is ``XᵀX`` and ``stats_xy`` (S, K, p) is
    ``Xᵀy`` of the design ``X = [1, centred log prices of all K products, the product's
    promotion columns]`` (``p = 1 + K + P``, column names :attr:`design_columns`) and the
    centred log quantity ``y``; ``stats_yy`` is ``yᵀy`` and ``stats_n`` the number of
    weeks. ``rows_x`` (N, p), ``rows_y`` (N,), ``row_store`` and ``row_product`` are the
    same design row by row (the row-level model uses them). ``covariates_raw`` (S, C) holds
    each store's covariates in their units. ``unused_columns`` lists the table's other
    columns: kept in ``table``, not used by the model. ``covariate_coefficients`` names the
    store coefficients whose population mean the covariates shift (``None``: all of them).
    """

    table: pd.DataFrame
    stores: list
    products: list
    promotions: list
    covariates: list
    covariates_raw: np.ndarray
    centring: ProductCentring
    stats_n: np.ndarray
    stats_xx: np.ndarray
    stats_xy: np.ndarray
    stats_yy: np.ndarray
    rows_x: np.ndarray
    rows_y: np.ndarray
    row_store: np.ndarray
    row_product: np.ndarray
    unused_columns: list
    covariate_coefficients: list | None = None

    @property
    def n_stores(self) -> int:
        """Number of stores."""
        return len(self.stores)

    @property
    def n_products(self) -> int:
        """Number of products."""
        return len(self.products)

    @property
    def n_promotions(self) -> int:
        """Number of promotion columns."""
        return len(self.promotions)

    @property
    def n_covariates(self) -> int:
        """Number of store covariates."""
        return len(self.covariates)

    @property
    def n_obs(self) -> int:
        """Rows of the table (store-week-product)."""
        return len(self.rows_y)

    @property
    def n_coefficients(self) -> int:
        """Store-varying coefficients per product: intercept, own price, promotions."""
        return 2 + self.n_promotions

    @property
    def coefficients(self) -> list[str]:
        """Names of the store-varying coefficients."""
        return ["intercept", "own_price", *self.promotions]

    @property
    def design_columns(self) -> list[str]:
        """Names of the columns of the design ``X`` behind the statistics."""
        return ["intercept", *[f"log_price[{p}]" for p in self.products], *self.promotions]

    @property
    def shifted_coefficients(self) -> list[str]:
        """Names of the store coefficients the covariates shift (all of them unless restricted)."""
        if not self.n_covariates:
            return []
        return list(self.coefficients if self.covariate_coefficients is None else self.covariate_coefficients)

    @property
    def covariate_selection(self) -> np.ndarray:
        """(D_shifted, D) 0/1 matrix placing the shifted coefficients among all ``D`` store coefficients."""
        names = self.coefficients
        out = np.zeros((len(self.shifted_coefficients), len(names)))
        out[np.arange(len(out)), [names.index(c) for c in self.shifted_coefficients]] = 1.0
        return out

    @cached_property
    def covariates_std(self) -> np.ndarray:
        """Standardised store covariates (S, C)."""
        k = self.centring
        return (self.covariates_raw - k.covariate_mean) / k.covariate_scale

    @cached_property
    def selection(self) -> np.ndarray:
        """(K, D) index of each product's store-varying columns in the design: 0, 1 + k, promotions."""
        K, P = self.n_products, self.n_promotions
        return np.array([[0, 1 + k, *range(1 + K, 1 + K + P)] for k in range(K)], dtype=np.int64)

    @cached_property
    def stats_ww(self) -> np.ndarray:
        """``WᵀW`` (S, K, D, D) of each pair's store-varying columns."""
        sel = self.selection
        k = np.arange(self.n_products)[:, None, None]
        return self.stats_xx[:, k, sel[:, :, None], sel[:, None, :]]

    @cached_property
    def stats_wx(self) -> np.ndarray:
        """``WᵀX`` (S, K, D, p): rows of ``XᵀX`` of each pair's store-varying columns."""
        k = np.arange(self.n_products)[:, None]
        return self.stats_xx[:, k, self.selection, :]

    def with_log_quantity(self, rows_y: np.ndarray) -> ProductData:
        """The same design with other (centred) log quantities: new ``Xᵀy`` and ``yᵀy``.

        Used to refit simulated markets on one design (simulation-based calibration).
        """
        rows_y = np.asarray(rows_y, dtype=float)
        if rows_y.shape != self.rows_y.shape or not np.isfinite(rows_y).all():
            raise ValueError(f"rows_y must be {self.rows_y.shape[0]} finite numbers, got shape {rows_y.shape}")
        xy, yy = _cross_stats(self.rows_x, rows_y, self.row_store, self.row_product, self.n_stores,
                              self.n_products)
        return dataclasses.replace(self, rows_y=rows_y, stats_xy=xy, stats_yy=yy)


def _cross_stats(x, y, store, product, n_stores, n_products):
    g = store * n_products + product
    n_groups = n_stores * n_products
    xy = np.stack([np.bincount(g, weights=x[:, i] * y, minlength=n_groups) for i in range(x.shape[1])], axis=-1)
    yy = np.bincount(g, weights=y * y, minlength=n_groups)
    return xy.reshape(n_stores, n_products, -1), yy.reshape(n_stores, n_products)


def _check_names(promotions, covariates) -> tuple[list, list]:
    promotions, covariates = list(promotions), list(covariates)
    for what, names in (("promotions", promotions), ("covariates", covariates)):
        repeated = sorted({str(c) for c in names if names.count(c) > 1})
        if repeated:
            raise ValueError(f"{what} names a column more than once: {repeated}")
        reserved = [c for c in names if c in PRODUCT_COLUMNS]
        if reserved:
            raise ValueError(f"{what} cannot use the table's own columns {reserved} ({PRODUCT_COLUMNS})")
    both = [c for c in promotions if c in covariates]
    if both:
        raise ValueError(f"columns {both} are named both as promotions and as covariates")
    return promotions, covariates


def _check_ids(out: pd.DataFrame) -> None:
    for col in ("store", "week", "product"):
        null = out[col].astype(object).isna().to_numpy()
        if null.any():
            raise ValueError(f"column '{col}' has missing values in {_rows(out.index, null)}")


def _check_finite(out: pd.DataFrame, col: str, *, unit_interval: bool) -> None:
    """Make ``col`` finite floats in place; with ``unit_interval`` also within [0, 1]."""
    raw = out[col]
    if pd.api.types.is_bool_dtype(raw):
        out[col] = raw.astype(float)
        return
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        example = raw[bad].iloc[0]
        raise ValueError(f"column '{col}' must hold finite numbers; {example!r} and others in {_rows(out.index, bad)}")
    if unit_interval:
        outside = (values < 0) | (values > 1)
        if outside.any():
            raise ValueError(f"promotion column '{col}' must be 0/1 or a share in [0, 1]; values "
                             f"{_shown(sorted(set(values[outside].tolist())))} in {_rows(out.index, outside)}")
    out[col] = values


def _check_duplicates(out: pd.DataFrame) -> None:
    key = ["store", "week", "product"]
    repeated = out.duplicated(subset=key, keep=False).to_numpy()
    if repeated.any():
        first = out.loc[repeated].iloc[0]
        n_keys = int(out.loc[repeated].drop_duplicates(subset=key).shape[0])
        raise ValueError(
            f"(store, week, product) must be unique; store {_py(first['store'])!r}, week {_py(first['week'])!r}, "
            f"product {_py(first['product'])!r} and {n_keys - 1} other key(s) repeat, in {_rows(out.index, repeated)}"
        )


def _check_covariates(out: pd.DataFrame, covariates: list) -> None:
    for col in covariates:
        counts = out.groupby("store", sort=True, observed=True)[col].nunique()
        varying = counts[counts > 1]
        if len(varying):
            store = varying.index[0]
            mask = (out["store"] == store).to_numpy()
            values = [_py(v) for v in sorted(pd.unique(out.loc[mask, col]))[:5]]
            raise ValueError(f"covariate '{col}' varies within store {_py(store)!r} (values {values}); a store "
                             f"covariate has one value per store ({len(varying)} store(s) affected: "
                             f"{_shown([_py(s) for s in varying.index])})")


def _check_complete(out: pd.DataFrame, products: list) -> None:
    """Every product has a row in every week of every store (the design holds all K prices)."""
    per_week = out.groupby(["store", "week"], sort=True, observed=True)["product"].nunique()
    short = per_week[per_week < len(products)]
    if not len(short):
        return
    gaps = []
    for (store, product), weeks in _missing_weeks(out, short).items():
        gaps.append(f"store {_py(store)!r} lacks product {_py(product)!r} in weeks {_shown(weeks)}")
    raise ValueError(
        f"every product needs a row in every week of every store (the model regresses each product on all "
        f"{len(products)} prices of its store-week); {len(short)} store-week(s) are incomplete: "
        + "; ".join(gaps[:5]) + (f"; and {len(gaps) - 5} more (store, product) pairs" if len(gaps) > 5 else "")
        + ". Remove those store-weeks or fill in the missing rows"
    )


def _missing_weeks(out: pd.DataFrame, short: pd.Series) -> dict:
    products = sorted(pd.unique(out["product"]), key=str)
    incomplete = out.set_index(["store", "week"]).loc[short.index]
    found = incomplete.groupby(level=[0, 1])["product"].agg(set)
    missing: dict = {}
    for (store, week), have in found.items():
        for p in products:
            if p not in have:
                missing.setdefault((store, p), []).append(_py(week))
    return missing


def _check_enough(n_stores: int, n_products: int, weeks: pd.Series) -> None:
    short = []
    if n_stores < MIN_STORES:
        short.append(f"{n_stores} store(s), the model pools stores and needs at least {MIN_STORES}")
    if n_products < MIN_PRODUCTS:
        short.append(f"{n_products} product(s), a category needs at least {MIN_PRODUCTS}")
    few = [f"{_py(s)!r} ({n} weeks)" for s, n in weeks.items() if n < MIN_WEEKS]
    if few:
        short.append(f"stores with fewer than {MIN_WEEKS} weeks: {_shown(few)}")
    if short:
        raise ValueError("too little data to fit: " + "; ".join(short))


def _check_covariate_coefficients(names, promotions: list, covariates: list) -> list | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    names = list(names)
    allowed = ["intercept", "own_price", *promotions]
    if not covariates:
        raise ValueError(f"covariate_coefficients={names} needs covariates to shift them; none are named")
    unknown = [c for c in names if c not in allowed]
    if unknown or not names:
        raise ValueError(f"covariate_coefficients must name one or more store coefficients of {allowed}; "
                         f"got {names}")
    repeated = sorted({str(c) for c in names if names.count(c) > 1})
    if repeated:
        raise ValueError(f"covariate_coefficients names {repeated} more than once")
    return [c for c in allowed if c in names]            # the model's order


def prepare_product_data(df: pd.DataFrame, *, promotions=(), covariates=(),
                         on_other_columns: str = "keep", covariate_coefficients=None) -> ProductData:
    """Validate a long multi-product table and compute the model's statistics.

    Parameters
    ----------
    df
        One row per (store, week, product) with columns :data:`PRODUCT_COLUMNS`, the
        ``promotions`` and the ``covariates``; its index labels name rows in errors.
        ``sales.merge(stores)`` of the orange-juice data works as it is.
    promotions
        Columns of promotion indicators (0/1) or shares in [0, 1], one set per row (so per
        product): each gets a store-varying lift.
    covariates
        Store columns (demographics), one value per store: they shift the population mean
        of every store coefficient.
    on_other_columns
        ``"keep"`` (default): the table's other columns stay in ``ProductData.table`` and
        are listed in ``unused_columns``; ``"error"``: any column not named above is an
        error (catches a misspelt promotion or covariate).
    covariate_coefficients
        ``None`` (default): the covariates shift the population mean of every store
        coefficient. A list of names among ``"intercept"``, ``"own_price"`` and the
        promotions restricts them to those (for example ``["intercept", "own_price"]``:
        demographics explain a store's sales level and price sensitivity, while the
        promotion lifts vary by store around one mean per product). Each covariate then
        adds ``K`` slopes per named coefficient instead of ``K D``; with many products and
        few stores the other slopes are weakly informed and slow the sampler.

    Raises ``ValueError`` naming the rows, stores or weeks for: a missing column, an empty
    table, a missing store, week or product id, a price or quantity that is not finite
    and strictly positive, a promotion outside [0, 1], a covariate that is not finite or
    varies within a store, a repeated (store, week, product), a product missing in some
    weeks of a store (listed per store and product), and too little data (fewer than
    :data:`MIN_STORES` stores, :data:`MIN_PRODUCTS` products or :data:`MIN_WEEKS` weeks in
    a store). No row is dropped or altered.
    """
    check_option("on_other_columns", on_other_columns, ("keep", "error"))
    promotions, covariates = _check_names(promotions, covariates)
    covariate_coefficients = _check_covariate_coefficients(covariate_coefficients, promotions, covariates)
    require_columns(df, PRODUCT_COLUMNS + promotions + covariates)
    other = [c for c in df.columns if c not in PRODUCT_COLUMNS + promotions + covariates]
    if other and on_other_columns == "error":
        raise ValueError(f"unknown column(s) {other}; the model uses {PRODUCT_COLUMNS}, promotions {promotions} "
                         f"and covariates {covariates} (pass on_other_columns='keep' to keep others unused)")
    out = df.copy()
    _check_ids(out)
    for col in ("price", "quantity"):
        _check_numeric(out, col)
    for col in promotions:
        _check_finite(out, col, unit_interval=True)
    for col in covariates:
        _check_finite(out, col, unit_interval=False)
    _check_duplicates(out)
    _check_covariates(out, covariates)
    store_codes, stores = pd.factorize(out["store"], sort=True)
    product_codes, products = pd.factorize(out["product"], sort=True)
    stores, products = [_py(s) for s in stores], [_py(p) for p in products]
    weeks = out.groupby("store", sort=True, observed=True)["week"].nunique()
    _check_enough(len(stores), len(products), weeks)
    _check_complete(out, products)

    K, S, P = len(products), len(stores), len(promotions)
    log_p = np.log(out["price"].to_numpy())
    log_q = np.log(out["quantity"].to_numpy())
    counts = np.bincount(product_codes, minlength=K)
    x_bar = np.bincount(product_codes, weights=log_p, minlength=K) / counts
    y_bar = np.bincount(product_codes, weights=log_q, minlength=K) / counts
    # all K centred log prices of each row's store-week
    sw_codes, _ = pd.factorize(pd.MultiIndex.from_arrays([store_codes, out["week"].to_numpy()]))
    prices_sw = np.zeros((sw_codes.max() + 1, K))
    prices_sw[sw_codes, product_codes] = log_p - x_bar[product_codes]
    promo = out[promotions].to_numpy(dtype=float) if P else np.zeros((len(out), 0))
    x = np.column_stack([np.ones(len(out)), prices_sw[sw_codes], promo])
    y = log_q - y_bar[product_codes]
    g = store_codes * K + product_codes
    n = np.bincount(g, minlength=S * K).reshape(S, K).astype(float)
    p = x.shape[1]
    xx = np.empty((S * K, p, p))
    for i in range(p):
        for j in range(i, p):
            xx[:, i, j] = xx[:, j, i] = np.bincount(g, weights=x[:, i] * x[:, j], minlength=S * K)
    xy, yy = _cross_stats(x, y, store_codes, product_codes, S, K)

    cov_raw = np.zeros((S, len(covariates)))
    if covariates:
        cov_raw[store_codes] = out[covariates].to_numpy(dtype=float)
    scale = cov_raw.std(axis=0)
    centring = ProductCentring(log_price=x_bar, log_quantity=y_bar, covariate_mean=cov_raw.mean(axis=0),
                               covariate_scale=np.where(scale > 0, scale, 1.0))
    return ProductData(
        table=out, stores=stores, products=products, promotions=promotions, covariates=covariates,
        covariates_raw=cov_raw, centring=centring, stats_n=n, stats_xx=xx.reshape(S, K, p, p), stats_xy=xy,
        stats_yy=yy, rows_x=x, rows_y=y, row_store=store_codes.astype(np.int64),
        row_product=product_codes.astype(np.int64), unused_columns=other,
        covariate_coefficients=covariate_coefficients,
    )


# --- the model -------------------------------------------------------------------------------


def _prior_scales(data: ProductData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior means and sds of the population coefficients, and the store sds' scales, per coefficient."""
    q = PRODUCT_PRIORS
    P = data.n_promotions
    mean = np.array([0.0, q["own_mean"], *[0.0] * P])
    sd = np.array([q["intercept_sd"], q["own_sd"], *[q["promotion_sd"]] * P])
    store_sd = np.array([q["store_intercept_sd"], q["store_own_sd"], *[q["store_promotion_sd"]] * P])
    return mean, sd, store_sd


def _fixed_coefficients(cross, n_promotions: int, xp):
    """(K, p) design coefficients that all stores share: the cross-price elasticities, 0 elsewhere."""
    K = cross.shape[0]
    return xp.concatenate([xp.zeros((K, 1)), cross, xp.zeros((K, n_promotions))], axis=1)


def marginal_loglik(xp, data_stats: dict, m, b, chol, sigma, linalg):
    """Log density of each (store, product) pair's rows with its store vector integrated out.

    Works with NumPy (``xp=np``, ``linalg`` = :mod:`numpy.linalg`-like helpers) and with
    PyTensor (``xp=pytensor.tensor``). ``data_stats`` holds ``n`` (S, K), ``ww`` (S, K, D,
    D), ``wx`` (S, K, D, p), ``xx`` (S, K, p, p), ``xy`` (S, K, p), ``yy`` (S, K) and
    ``sel`` (K, D); ``m`` (S, K, D) is the prior mean of the store vectors, ``b`` (K, p)
    the shared coefficients (or (S, K, p) when they differ by store: coefficients that do
    not vary by store but move with the store's covariates), ``chol`` (K, D, D) the
    Cholesky factor of each product's store covariance and ``sigma`` (K,) the residual sds.
    ``D`` counts the store-varying coefficients only.

    With ``r = y - X b`` and ``e = r - W m``: ``log N(r; W m, sigma² I + W Σ Wᵀ) =
    -½ [n log 2π sigma² + log|Σ| + log|Q| + eᵀe / sigma² - uᵀ Q⁻¹ u]`` where ``Q = Σ⁻¹ +
    WᵀW / sigma²`` (the posterior precision) and ``u = Wᵀe / sigma²``.
    """
    s = data_stats
    K = s["sel"].shape[0]
    kk = np.arange(K)[:, None]
    b = b[None] if b.ndim == 2 else b                               # (1 or S, K, p)
    wy = s["xy"][:, kk, s["sel"]]                                   # (S, K, D)
    wr = wy - (s["wx"] * b[:, :, None, :]).sum(-1)                  # Wᵀr
    xb = (s["xx"] * b[:, :, None, :]).sum(-1)                       # XᵀX b  (S, K, p)
    rr = s["yy"] - 2 * (s["xy"] * b).sum(-1) + (xb * b).sum(-1)
    wwm = (s["ww"] * m[:, :, None, :]).sum(-1)                      # WᵀW m
    we = wr - wwm
    ee = rr - 2 * (m * wr).sum(-1) + (m * wwm).sum(-1)
    D = s["sel"].shape[1]
    eye = xp.eye(D)
    l_inv = linalg.solve_lower(chol, xp.broadcast_to(eye, (K, D, D)))
    prior_prec = xp.einsum("...ji,...jk->...ik", l_inv, l_inv) if xp is np else l_inv.mT @ l_inv
    log_det_prior = 2 * xp.log(xp.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)        # (K,)
    s2 = sigma**2
    prec = prior_prec[None] + s["ww"] / s2[None, :, None, None]
    c = linalg.cholesky(prec)
    log_det_prec = 2 * xp.log(xp.diagonal(c, axis1=-2, axis2=-1)).sum(-1)
    u = we / s2[None, :, None]
    v = linalg.solve_lower(c, u[..., None])[..., 0]
    n = s["n"]
    return -0.5 * (n * xp.log(2 * np.pi * s2[None]) + log_det_prior[None] + log_det_prec + ee / s2[None]
                   - (v * v).sum(-1))


class _NumpyLinalg:
    @staticmethod
    def cholesky(a):
        return np.linalg.cholesky(a)

    @staticmethod
    def solve_lower(lower, b):
        return np.linalg.solve(lower, b)


class _TensorLinalg:
    @staticmethod
    def cholesky(a):
        import pytensor.tensor as pt

        return pt.linalg.cholesky(a)

    @staticmethod
    def solve_lower(lower, b):
        import pytensor.tensor as pt

        return pt.linalg.solve_triangular(lower, b, lower=True)


def _stats(data: ProductData, shared: bool, varying=None):
    """The statistics as the model uses them: constants, or with ``shared`` ``Xᵀy, yᵀy`` as ``pm.Data``.

    ``varying`` (positions in :attr:`ProductData.coefficients`): keep only those
    store-varying columns in ``sel``, ``ww`` and ``wx`` (default: all).
    """
    import pymc as pm

    v = np.arange(data.n_coefficients) if varying is None else np.asarray(varying, dtype=np.int64)
    stats = {"n": data.stats_n, "ww": data.stats_ww[:, :, v][:, :, :, v], "wx": data.stats_wx[:, :, v],
             "xx": data.stats_xx, "xy": data.stats_xy, "yy": data.stats_yy, "sel": data.selection[:, v]}
    if shared:
        stats["xy"] = pm.Data("stat_xy", data.stats_xy)
        stats["yy"] = pm.Data("stat_yy", data.stats_yy)
    return stats


def store_varying_index(data: ProductData, store_varying=None) -> np.ndarray:
    """Positions in :attr:`ProductData.coefficients` of the coefficients that vary by store.

    ``store_varying``: ``None`` (all of them: intercept, own price and every promotion) or
    a list of coefficient names. Raises ``ValueError`` for an unknown or repeated name or
    an empty list.
    """
    if store_varying is None:
        return np.arange(data.n_coefficients, dtype=np.int64)
    if isinstance(store_varying, str):
        store_varying = [store_varying]
    names = list(store_varying)
    unknown = [n for n in names if n not in data.coefficients]
    if unknown:
        raise ValueError(f"store_varying names unknown coefficient(s) {unknown}; the coefficients are "
                         f"{data.coefficients}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"store_varying names {repeated} more than once")
    if not names:
        raise ValueError(f"store_varying must name at least one of {data.coefficients}")
    return np.array(sorted(data.coefficients.index(n) for n in names), dtype=np.int64)


def _fixed_by_store(data: ProductData, m, b, fixed):
    """(S, K, p) design coefficients of each store that are not store-varying: ``b`` plus ``m``'s fixed entries.

    ``m`` (S, K, D) holds every coefficient's population mean at the store's covariates;
    the coefficients at positions ``fixed`` are exactly that in every store (no store
    deviation), so they join the shared coefficients ``b`` (K, p) in their design columns.
    """
    onehot = np.zeros((data.n_products, len(fixed), data.stats_xx.shape[-1]))
    onehot[np.arange(data.n_products)[:, None], np.arange(len(fixed))[None, :], data.selection[:, fixed]] = 1.0
    return b[None] + (m[:, :, fixed][..., None] * onehot[None]).sum(-2)


def build_product_model(data: ProductData, likelihood: str | None = None, *, shared_data: bool = False,
                        store_varying=None):
    """The multi-product hierarchical model (module docstring) as a PyMC model.

    Sampled: ``coef_mean`` (product, coefficient), the population store coefficients at
    the mean covariates; ``coef_covariate`` (product, coefficient, covariate), their change
    per sd of each covariate (dimension ``covariate_coefficient`` instead of
    ``coefficient`` when :attr:`ProductData.covariate_coefficients` restricts them); ``cross_offdiag``, the cross-price elasticities; one
    ``chol_store_<k>`` (LKJ Cholesky covariance) per product; ``sigma`` (product).
    Deterministics: ``elasticity`` (product, price_of), the population elasticity matrix
    at the mean covariates (own on the diagonal, cross off it; rows are the products whose
    sales respond); ``store_sd`` (product, coefficient) and ``store_chol``.

    ``store_varying`` names the coefficients that vary by store (default ``None``: all of
    them). The others keep their population mean and covariate slopes but get no store
    deviation: with rare promotions, the store scale of a promotion lift is barely
    identified and mixes slowly, while the lift itself is well measured. With a subset,
    ``store_sd`` and ``store_chol`` have dims ``varying`` (and ``varying_``) over the named
    coefficients instead of ``coefficient``; ``store_coef`` still has every coefficient.
    (One store-varying coefficient gets a half-Normal sd, ``sd_store_<k>``, instead of an
    LKJ prior.)

    ``shared_data`` holds ``Xᵀy`` and ``yᵀy`` as ``pm.Data`` (``stat_xy``, ``stat_yy``) so
    that a compiled model can be refitted on other quantities of the same design (marginal
    form). The model records its :class:`~elasticity_lib.models.ModelSpec` as
    ``model.elasticity_spec``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from elasticity_lib.models.builder import ModelSpec

    likelihood = likelihood or "marginal"
    check_option("likelihood", likelihood, PRODUCT_LIKELIHOODS)
    if not isinstance(data, ProductData):
        raise TypeError(f"data must be ProductData from prepare_product_data, got {type(data).__name__}")
    if shared_data and likelihood != "marginal":
        raise ValueError("shared_data applies to the marginal form only")
    K, S, P, C, D = data.n_products, data.n_stores, data.n_promotions, data.n_covariates, data.n_coefficients
    varying = store_varying_index(data, store_varying)
    fixed = np.setdiff1d(np.arange(D), varying)
    Dv = len(varying)
    coords = {"store": data.stores, "product": data.products, "price_of": data.products,
              "coefficient": data.coefficients, "coefficient_": data.coefficients, "covariate": data.covariates}
    store_dims = ("coefficient", "coefficient_")
    if len(fixed):
        names = [data.coefficients[i] for i in varying]
        coords.update({"varying": names, "varying_": names})
        store_dims = ("varying", "varying_")
    restricted = data.covariate_coefficients is not None
    if restricted:
        coords["covariate_coefficient"] = data.shifted_coefficients
    if likelihood == "rows":
        coords["obs"] = np.arange(data.n_obs)
    prior_mean, prior_sd, store_scale = _prior_scales(data)
    off = ~np.eye(K, dtype=bool)
    with pm.Model(coords=coords) as model:
        coef_mean = pm.Normal("coef_mean", prior_mean, prior_sd, dims=("product", "coefficient"))
        m = pt.broadcast_to(coef_mean[None], (S, K, D))
        if C:
            gamma = pm.Normal("coef_covariate", 0.0, PRODUCT_PRIORS["covariate_sd"],
                              dims=("product", "covariate_coefficient" if restricted else "coefficient", "covariate"))
            z = pm.Data("covariate_std", data.covariates_std, dims=("store", "covariate"))
            shift = (gamma[None] * z[:, None, None, :]).sum(-1)                          # (S, K, D or D_shifted)
            if restricted:
                shift = (shift[..., None] * data.covariate_selection[None, None]).sum(-2)
            m = m + shift
        cross_free = pm.Normal("cross_offdiag", 0.0, PRODUCT_PRIORS["cross_sd"], shape=int(off.sum()))
        cross = pt.set_subtensor(pt.zeros((K, K))[off], cross_free)
        pm.Deterministic("elasticity", cross + pt.diag(coef_mean[:, 1]), dims=("product", "price_of"))
        chols, sds = [], []
        for k in range(K):
            if Dv == 1:
                sd = pm.HalfNormal(f"sd_store_{k}", store_scale[varying], shape=1)
                chol = sd[:, None]
            else:
                chol, _, sd = pm.LKJCholeskyCov(f"chol_store_{k}", n=Dv, eta=PRODUCT_PRIORS["lkj_eta"],
                                                sd_dist=pm.HalfNormal.dist(store_scale[varying], shape=Dv),
                                                compute_corr=True)
            chols.append(chol)
            sds.append(sd)
        chol = pm.Deterministic("store_chol", pt.stack(chols), dims=("product", *store_dims))
        pm.Deterministic("store_sd", pt.stack(sds), dims=("product", store_dims[0]))
        sigma = pm.Exponential("sigma", PRODUCT_PRIORS["sigma_rate"], dims="product")
        b = _fixed_coefficients(cross, P, pt)
        if len(fixed):
            b = _fixed_by_store(data, m, b, fixed)                                   # (S, K, p)
            m_varying = m[:, :, varying]
        else:
            m_varying = m
        if likelihood == "marginal":
            ll = marginal_loglik(pt, _stats(data, shared_data, varying), m_varying, b, chol, sigma, _TensorLinalg)
            pm.Potential("loglik", ll.sum())
        else:
            z_store = pm.Normal("z_store", 0.0, 1.0, dims=("store", "product", store_dims[0]))
            theta_v = m_varying + (chol[None] * z_store[:, :, None, :]).sum(-1)
            if len(fixed):
                theta = pm.Deterministic("store_coef", pt.set_subtensor(m[:, :, varying], theta_v),
                                         dims=("store", "product", "coefficient"))
            else:
                theta = pm.Deterministic("store_coef", theta_v, dims=("store", "product", "coefficient"))
            onehot = np.zeros((K, D, 1 + K + P))
            onehot[np.arange(K)[:, None], np.arange(D)[None, :], data.selection] = 1.0
            b_cross = _fixed_coefficients(cross, P, pt)
            coef = b_cross[None] + (theta[..., None] * onehot[None]).sum(-2)            # (S, K, p)
            if likelihood == "sufficient":
                xb = (data.stats_xx * coef[:, :, None, :]).sum(-1)
                rss = data.stats_yy - 2 * (data.stats_xy * coef).sum(-1) + (xb * coef).sum(-1)
                s2 = sigma[None] ** 2
                pm.Potential("loglik", (-0.5 * (data.stats_n * pt.log(2 * np.pi * s2) + rss / s2)).sum())
            else:
                mu = (pt.as_tensor(data.rows_x) * coef[data.row_store, data.row_product]).sum(-1)
                pm.Normal("log_quantity", mu, sigma[data.row_product], observed=data.rows_y, dims="obs")
    model.elasticity_spec = ModelSpec(kind="multiproduct", likelihood=likelihood, data=data)
    return model


# --- after sampling --------------------------------------------------------------------------


def _draw_values(post, data: ProductData):
    """Population parameters per draw, flattened over (chain, draw): m, b, chol, sigma."""
    def arr(name, *dims):
        da = post[name].transpose("chain", "draw", *dims)
        return np.asarray(da.values, dtype=float).reshape(-1, *da.shape[2:])

    coef_mean = arr("coef_mean", "product", "coefficient")
    m = np.broadcast_to(coef_mean[:, None], (len(coef_mean), data.n_stores, data.n_products, data.n_coefficients))
    if data.n_covariates:
        restricted = data.covariate_coefficients is not None
        gamma = arr("coef_covariate", "product", "covariate_coefficient" if restricted else "coefficient", "covariate")
        if restricted:
            gamma = np.einsum("nkec,ed->nkdc", gamma, data.covariate_selection)
        m = m + np.einsum("nkdc,sc->nskd", gamma, data.covariates_std)
    cross = arr("elasticity", "product", "price_of").copy()
    idx = np.arange(data.n_products)
    cross[:, idx, idx] = 0.0
    store_dims = [d for d in post["store_chol"].dims if d not in ("chain", "draw", "product")]
    chol = arr("store_chol", "product", *store_dims)
    sigma = arr("sigma", "product")
    return m, cross, chol, sigma


def _varying_from_posterior(post, data: ProductData) -> np.ndarray:
    """The store-varying coefficients of a fitted model, read from the dims of its ``store_chol``."""
    if "varying" in post["store_chol"].dims:
        return store_varying_index(data, [str(c) for c in post["varying"].values])
    return np.arange(data.n_coefficients, dtype=np.int64)


def store_posterior_moments(data: ProductData, m, cross, chol, sigma, varying=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (S, K, D) and Cholesky factor (S, K, Dv, Dv) of the posterior *precision* of the store vectors.

    Given the population parameters (one draw: ``m`` (S, K, D), ``cross`` (K, K) with a
    zero diagonal, ``chol`` (K, Dv, Dv), ``sigma`` (K,)), each store vector is Normal with
    precision ``Q = Σ⁻¹ + WᵀW / sigma²`` and mean ``m + Q⁻¹ Wᵀ(r - W m) / sigma²``: the
    conjugate update of its prior by its rows. ``varying`` (positions of the store-varying
    coefficients, :func:`store_varying_index`; default all, ``Dv = D``): the other
    coefficients equal ``m`` in every store; the mean is returned for all ``D``
    coefficients (``m`` at the fixed ones), the precision for the varying ones only.
    """
    D = data.n_coefficients
    v = np.arange(D) if varying is None else np.asarray(varying, dtype=np.int64)
    fixed = np.setdiff1d(np.arange(D), v)
    m = np.asarray(m, dtype=float)
    b = _fixed_coefficients(np.asarray(cross, dtype=float), data.n_promotions, np)
    b = _fixed_by_store(data, m, b, fixed) if len(fixed) else b[None]
    kk = np.arange(data.n_products)[:, None]
    ww, wx, mv = data.stats_ww[:, :, v][:, :, :, v], data.stats_wx[:, :, v], m[:, :, v]
    wr = data.stats_xy[:, kk, data.selection[:, v]] - (wx * b[:, :, None, :]).sum(-1)
    we = wr - np.einsum("skij,skj->ski", ww, mv)
    l_inv = np.linalg.inv(chol)
    prec = np.einsum("kji,kjl->kil", l_inv, l_inv)[None] + ww / (sigma**2)[None, :, None, None]
    c = np.linalg.cholesky(prec)
    mean = m.copy()
    mean[:, :, v] = mv + np.linalg.solve(prec, (we / (sigma**2)[None, :, None])[..., None])[..., 0]
    return mean, c


def add_store_effects(idata, spec, seed=None):
    """Draw the store vectors that the marginal form integrated out, one per posterior draw.

    Adds ``store_coef`` (chain, draw, store, product, coefficient) and ``own_elasticity``
    (chain, draw, store, product) to the posterior: for each draw, an exact draw from the
    Gaussian conditional of :func:`store_posterior_moments` (``mean + C⁻ᵀ ε`` with ``C``
    the Cholesky factor of the precision), so together they are draws from the joint
    posterior. Coefficients that do not vary by store (``store_varying`` of
    :func:`build_product_model`, read from the dims of ``store_chol``) are their
    population mean at the store's covariates.
    """
    import xarray as xr

    data: ProductData = spec.data
    post = idata["posterior"].dataset
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    m, cross, chol, sigma = _draw_values(post, data)
    varying = _varying_from_posterior(post, data)
    rng = np.random.default_rng(seed)
    out = np.empty((len(sigma), data.n_stores, data.n_products, data.n_coefficients))
    for i in range(len(sigma)):
        mean, c = store_posterior_moments(data, m[i], cross[i], chol[i], sigma[i], varying)
        eps = rng.standard_normal(c.shape[:-1])
        out[i] = mean
        out[i][..., varying] += np.linalg.solve(np.swapaxes(c, -1, -2), eps[..., None])[..., 0]
    out = out.reshape(n_chain, n_draw, *out.shape[1:])
    dims = ("chain", "draw", "store", "product", "coefficient")
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "store": data.stores,
              "product": data.products, "coefficient": data.coefficients}
    extra = xr.Dataset({"store_coef": (dims, out), "own_elasticity": (dims[:-1], out[..., 1])}, coords=coords)
    idata["posterior"] = xr.DataTree(post.assign(extra))
    return idata


def product_spec_attributes(spec) -> dict:
    """The model's specification as plain attributes of a fitted result (see ``models.spec_attributes``)."""
    from elasticity_lib.models.builder import SPEC_PREFIX

    data: ProductData = spec.data
    k = data.centring
    attrs = {"kind": spec.kind, "likelihood": spec.likelihood, "n_obs": data.n_obs,
             "stores": [str(s) for s in data.stores], "products": [str(p) for p in data.products],
             "promotions": list(data.promotions), "covariates": list(data.covariates),
             "covariate_coefficients": data.shifted_coefficients,
             "log_price_center": [float(v) for v in k.log_price],
             "log_quantity_center": [float(v) for v in k.log_quantity],
             "covariate_center": [float(v) for v in k.covariate_mean],
             "covariate_scale": [float(v) for v in k.covariate_scale]}
    return {SPEC_PREFIX + key: value for key, value in attrs.items()}


def elasticity_matrix(idata, prob: float = 0.94) -> pd.DataFrame:
    """The population elasticity matrix: one row per (product, price_of) with mean, sd and interval.

    ``product`` is the product whose sales respond, ``price_of`` the product whose price
    changes; own elasticities are on the diagonal (at the mean covariates).
    """
    from elasticity_lib._checks import check_probability, posterior_dataset

    check_probability(prob)
    e = posterior_dataset(idata)["elasticity"].stack(sample=("chain", "draw"))
    tail = (1 - prob) / 2
    frame = pd.DataFrame({
        "mean": e.mean("sample").to_series(), "sd": e.std("sample").to_series(),
        "lower": e.quantile(tail, "sample").drop_vars("quantile").to_series(),
        "upper": e.quantile(1 - tail, "sample").drop_vars("quantile").to_series()})
    return frame


def population_parameters(idata) -> list[str]:
    """Names of the sampled population-level variables (what convergence checks look at)."""
    from elasticity_lib._checks import posterior_dataset

    post = posterior_dataset(idata)
    names = ["coef_mean", "coef_covariate", "elasticity", "store_sd", "sigma"]
    return [n for n in names if n in post]


def least_squares(data: ProductData, pooled: bool = False) -> np.ndarray:
    """Least-squares coefficients of each (store, product) pair's regression on the full design.

    Per store (default): ``(XᵀX)⁻¹ Xᵀy`` of each pair, shape (S, K, p), with every price
    (own and cross), the intercept and the promotions estimated from that store's weeks
    alone. ``pooled=True``: one regression per product over all stores (the statistics
    summed over stores), shape (K, p). Columns are :attr:`ProductData.design_columns`.
    Raises ``ValueError`` naming the pairs whose design is singular (fewer weeks than
    columns, or a column that never varies).
    """
    xx, xy = data.stats_xx, data.stats_xy
    if pooled:
        xx, xy = xx.sum(axis=0), xy.sum(axis=0)
    rank = np.linalg.matrix_rank(xx)
    singular = np.argwhere(np.atleast_1d(rank < xx.shape[-1]))
    if len(singular):
        where = [f"store {data.stores[i[0]]!r} product {data.products[i[1]]!r}" if not pooled
                 else f"product {data.products[i[0]]!r}" for i in singular]
        raise ValueError(f"least squares is not defined where the design is singular: {_shown(where)}")
    return np.linalg.solve(xx, xy[..., None])[..., 0]


def plot_elasticity_heatmap(mean: pd.DataFrame, sd: pd.DataFrame | None = None, *, ax=None, title: str = "",
                            limit: float | None = None):
    """A heatmap of an elasticity matrix (rows: sales of, columns: price of), each cell annotated.

    ``mean`` and ``sd`` are square tables with products as index and columns; cells show
    the mean and, below it, the sd. The colour scale is symmetric around 0 (substitutes
    red, complements blue) and clipped at ``limit`` (default: the largest off-diagonal
    absolute value), so own elasticities, far below 0, show as the darkest blue.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.9 * len(mean), 0.8 + 0.8 * len(mean)))
    values = mean.to_numpy(dtype=float)
    off = ~np.eye(len(values), dtype=bool)
    limit = limit or float(np.abs(values[off]).max() or 1.0)
    image = ax.imshow(np.clip(values, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = f"{values[i, j]:.2f}" + (f"\n±{sd.to_numpy()[i, j]:.2f}" if sd is not None else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(values[i, j]) > 0.6 * limit else "black")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in mean.columns])
    ax.set_yticks(range(values.shape[0]), [str(r) for r in mean.index])
    ax.set_xlabel("price of")
    ax.set_ylabel("sales of")
    ax.set_title(title)
    plt.colorbar(image, ax=ax, label="elasticity (clipped)", shrink=0.8)
    return ax
