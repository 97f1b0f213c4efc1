"""Prior and posterior predictive quantities of the book's models.

Prior predictive draws come from PyMC on the ``"rows"`` form of a model (the only form
with an observed variable to simulate). Everything that is computed *after* sampling
works directly on the posterior draws of ``alpha``, ``beta`` and ``sigma``, which every
fit carries whatever its likelihood form (:func:`elasticity_lib.inference.fit` adds the
group effects of marginalised models). Because the observation model is

``log q_i ~ Normal(alpha[g_i] + beta[g_i] * log p_i, sigma)``,

the pointwise log-likelihood, posterior predictive draws of the observed rows and
predictive bands on a price grid are a few vectorised array operations, so

* fits that never stored a likelihood (the fast ``"sufficient"`` and ``"marginal"``
  forms) still get a ``log_likelihood`` group for PSIS-LOO and model comparison;
* fits of any form get ``posterior_predictive`` and ``observed_data`` groups for
  posterior predictive checks.

The tests compare each function with PyMC's own answer on a ``"rows"`` model
(:func:`pymc.compute_log_likelihood`, :func:`pymc.sample_posterior_predictive`).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import xarray as xr

from elasticity_lib._checks import check_prices, check_probability, posterior_dataset
from elasticity_lib.data.prepare import ModelData
from elasticity_lib.models.builder import build_model
from elasticity_lib.reproducibility import sampler_seed

__all__ = [
    "OBSERVED_NAME",
    "sample_prior_predictive",
    "row_effects",
    "pointwise_log_likelihood",
    "add_log_likelihood",
    "posterior_predictive_draws",
    "add_posterior_predictive",
    "price_grid",
    "quantity_bands",
    "predictive_bands",
]

#: Name of the observed variable, the same as in the ``"rows"`` models.
OBSERVED_NAME = "log_quantity"
_SAMPLE_DIMS = ("chain", "draw")
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def sample_prior_predictive(kind: str, data: ModelData, draws: int = 500, random_seed: int | None = None) -> xr.DataTree:
    """Draw from the prior and the prior predictive of a model kind on ``data``.

    The model is built in its ``"rows"`` form, which has the same prior as the fast
    forms and an observed ``log_quantity`` that PyMC can simulate. Returns PyMC's
    ``DataTree`` with groups ``prior``, ``prior_predictive``, ``observed_data`` and
    ``constant_data``. Without a ``random_seed`` the seed is
    ``sampler_seed("prior_predictive")`` (see :mod:`elasticity_lib.reproducibility`).
    """
    if random_seed is None:
        random_seed = sampler_seed("prior_predictive")
    if not isinstance(draws, (int, np.integer)) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    model = build_model(kind, data, likelihood="rows")
    with model:
        return pm.sample_prior_predictive(draws=int(draws), random_seed=random_seed)


def _posterior(idata: xr.DataTree) -> xr.Dataset:
    # as_numpy: samplers may return device arrays (JAX), which lack vectorised indexing
    return posterior_dataset(idata)


def _level(post: xr.Dataset) -> tuple[str, str, str]:
    """Names of the intercept, slope and group dimension that the rows depend on."""
    if "alpha_store" in post and "beta_store" in post:
        return "alpha_store", "beta_store", "store"
    if "alpha" in post and "beta" in post:
        return "alpha", "beta", "region"
    raise ValueError(
        "the posterior has no group effects: expected variables 'alpha' and 'beta' "
        f"(or 'alpha_store' and 'beta_store'), found {sorted(post.data_vars)}"
    )


def _check_sigma(post: xr.Dataset) -> xr.DataArray:
    if "sigma" not in post:
        raise ValueError(f"the posterior has no 'sigma' variable, found {sorted(post.data_vars)}")
    return post["sigma"]


def row_effects(idata: xr.DataTree, group_idx, log_price) -> tuple[xr.DataArray, xr.DataArray]:
    """Mean log quantity ``mu`` and noise scale ``sigma`` for each draw and row.

    ``group_idx`` holds integer positions into the region (or, for store-level fits,
    store) coordinate and ``log_price`` the matching log prices; both are 1-D arrays of
    the same length or ``DataArray`` objects with the same dims. Returns ``mu`` with dims
    ``(chain, draw, *row dims)`` and ``sigma`` with dims ``(chain, draw)``, or, for a fit
    with a residual sd per store (``noise="by_store"``), ``(chain, draw, *row dims)``.
    """
    post = _posterior(idata)
    a_name, b_name, dim = _level(post)
    sigma = _check_sigma(post)
    n_groups = post.sizes[dim]
    if not isinstance(group_idx, xr.DataArray):
        group_idx = xr.DataArray(np.asarray(group_idx), dims="obs")
    if not isinstance(log_price, xr.DataArray):
        log_price = xr.DataArray(np.asarray(log_price, dtype=float), dims=group_idx.dims)
    if group_idx.shape != log_price.shape:
        raise ValueError(f"group_idx has shape {group_idx.shape} but log_price has shape {log_price.shape}")
    idx = np.asarray(group_idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"group_idx must hold integer positions, got dtype {idx.dtype}")
    bad = (idx < 0) | (idx >= n_groups)
    if bad.any():
        raise ValueError(f"group_idx has values outside 0..{n_groups - 1} for dimension '{dim}': {np.unique(idx[bad])[:5]}")
    if not np.all(np.isfinite(np.asarray(log_price))):
        raise ValueError("log_price has NaN or infinite values")
    alpha = post[a_name].isel({dim: group_idx}).drop_vars(dim, errors="ignore")
    beta = post[b_name].isel({dim: group_idx}).drop_vars(dim, errors="ignore")
    mu = (alpha + beta * log_price).transpose(*_SAMPLE_DIMS, *group_idx.dims)
    if dim in sigma.dims:
        sigma = sigma.isel({dim: group_idx}).drop_vars(dim, errors="ignore").transpose(*_SAMPLE_DIMS, *group_idx.dims)
    elif set(sigma.dims) != set(_SAMPLE_DIMS):
        raise ValueError(f"sigma has dims {sigma.dims}: expected (chain, draw) or a residual sd per '{dim}'")
    return mu, sigma


def _row_index(idata: xr.DataTree, data: ModelData) -> np.ndarray:
    _, _, dim = _level(_posterior(idata))
    return data.store_idx if dim == "store" else data.region_idx


def pointwise_log_likelihood(idata: xr.DataTree, data: ModelData) -> xr.DataArray:
    """``log Normal(y_i | alpha[g_i] + beta[g_i] x_i, sigma)`` for every draw and row.

    Vectorised over draws and rows (tested against :func:`scipy.stats.norm.logpdf`).
    Returns a ``DataArray`` named ``log_quantity`` with dims ``(chain, draw, obs)``, the
    same numbers that :func:`pymc.compute_log_likelihood` gives on the ``"rows"`` model.
    """
    mu, sigma = row_effects(idata, _row_index(idata, data), data.log_price)
    y = xr.DataArray(data.log_quantity, dims="obs")
    # the Normal log density written out: ten times faster than scipy.stats.norm.logpdf
    # on millions of values, and equal to it (and to PyMC) to rounding error
    z = (y - mu) / sigma
    ll = -0.5 * z * z - np.log(sigma) - _HALF_LOG_2PI
    ll = ll.transpose(*_SAMPLE_DIMS, "obs").assign_coords(obs=np.asarray(data.coords["obs"]))
    return ll.rename(OBSERVED_NAME)


def add_log_likelihood(idata: xr.DataTree, data: ModelData) -> xr.DataTree:
    """Add (or replace) the ``log_likelihood`` group, in place, and return ``idata``.

    With it, :func:`arviz.loo` and :func:`arviz.compare` work on fits that did not store
    the likelihood while sampling.
    """
    idata["log_likelihood"] = xr.Dataset({OBSERVED_NAME: pointwise_log_likelihood(idata, data)})
    return idata


def posterior_predictive_draws(idata: xr.DataTree, group_idx, log_price, seed) -> xr.DataArray:
    """One draw of log quantity per posterior draw at the given rows (seeded).

    Same inputs as :func:`row_effects`; returns ``mu + sigma * e`` with standard normal
    noise ``e`` from ``numpy.random.default_rng(seed)``, dims ``(chain, draw, *row dims)``.
    """
    mu, sigma = row_effects(idata, group_idx, log_price)
    rng = np.random.default_rng(seed)
    noise = xr.DataArray(rng.standard_normal(mu.shape), dims=mu.dims)
    return (mu + sigma * noise).rename(OBSERVED_NAME)


def add_posterior_predictive(idata: xr.DataTree, data: ModelData, seed) -> xr.DataTree:
    """Add ``posterior_predictive`` and ``observed_data`` groups for the observed rows.

    In place; returns ``idata``. Both hold ``log_quantity`` with dim ``obs``, as the
    ``"rows"`` model would, so :func:`arviz.plot_ppc_dist` works on fits of any form.
    """
    draws = posterior_predictive_draws(idata, _row_index(idata, data), data.log_price, seed)
    obs = np.asarray(data.coords["obs"])
    idata["posterior_predictive"] = xr.Dataset({OBSERVED_NAME: draws.assign_coords(obs=obs)})
    observed = xr.Dataset({OBSERVED_NAME: xr.DataArray(data.log_quantity, dims="obs", coords={"obs": obs})})
    if "observed_data" in idata.children:
        old = idata["observed_data"].to_dataset()
        observed = old.drop_vars([v for v in old.data_vars if v == OBSERVED_NAME]).merge(observed)
    idata["observed_data"] = observed
    return idata


def price_grid(data: ModelData, n_points: int = 30) -> xr.DataArray:
    """Evenly spaced prices from each region's lowest to its highest observed price.

    Dims ``(region, point)``; a region with a single distinct price gets a constant row.
    """
    if not isinstance(n_points, (int, np.integer)) or isinstance(n_points, bool) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    price = np.exp(data.log_price)
    lo = np.full(data.n_regions, np.inf)
    hi = np.full(data.n_regions, -np.inf)
    np.minimum.at(lo, data.region_idx, price)
    np.maximum.at(hi, data.region_idx, price)
    empty = ~np.isfinite(lo)
    if empty.any():
        raise ValueError(f"regions without rows: {np.asarray(data.coords['region'], dtype=object)[empty].tolist()}")
    steps = np.linspace(0.0, 1.0, int(n_points))
    grid = lo[:, None] + (hi - lo)[:, None] * steps[None, :]
    return xr.DataArray(grid, dims=("region", "point"),
                        coords={"region": data.coords["region"], "point": np.arange(int(n_points))}, name="price")


def quantity_bands(effects, prices, *, prob: float = 0.94, seed=None) -> xr.Dataset:
    """Bands of quantity against price, one demand curve per region, fitted or new (seeded).

    ``effects`` is a fit's ``DataTree`` or a posterior ``Dataset`` with region-level
    ``alpha``, ``beta`` (dims chain, draw, region) and ``sigma``, such as the effects of
    fitted and new regions from :func:`elasticity_lib.validation.holdout.predict_regions`.
    ``prices`` is either one 1-d array of prices shared by every region or a grid per
    region, a ``DataArray`` with dims ``(region, point)`` such as :func:`price_grid`.

    Returns a ``Dataset`` with dims ``(region, point)`` (``attrs["prob"]`` is ``prob``):

    ``price``
        the prices;
    ``curve_median``, ``curve_lower``, ``curve_upper``
        posterior median and equal-tailed ``prob`` interval of the median demand curve
        ``exp(alpha + beta log p)``: the uncertainty about the region's curve;
    ``pred_lower``, ``pred_upper``
        the equal-tailed ``prob`` interval of a new period's quantity,
        ``log q ~ Normal(alpha + beta log p, sigma)`` (one draw per posterior draw, made by
        :func:`posterior_predictive_draws` with ``seed``): curve plus noise;
    ``expected``
        posterior mean of the expected quantity ``exp(alpha + beta log p + sigma^2 / 2)``.

    ``.to_dataframe().reset_index()`` gives one row per region and price. Without a
    ``seed`` the noise draws use ``sampler_seed("quantity_bands")``.
    """
    if seed is None:
        seed = sampler_seed("quantity_bands")
    check_probability(prob)
    post = _posterior(effects)
    _, _, dim = _level(post)
    if dim != "region":
        raise ValueError("quantity_bands works on region-level effects ('alpha', 'beta'), "
                         "not on store-level ones ('alpha_store', 'beta_store')")
    _check_sigma(post)
    post = post[["alpha", "beta", "sigma"]]
    n_regions = post.sizes["region"]
    if isinstance(prices, xr.DataArray) and prices.ndim == 2:
        if set(prices.dims) != {"region", "point"}:
            raise ValueError(f"a price grid must have dims ('region', 'point'), got {prices.dims}")
        if prices.sizes["region"] != n_regions:
            raise ValueError(f"the price grid has {prices.sizes['region']} regions but the effects have {n_regions}")
        grid = check_prices(prices.transpose("region", "point").values, name="the price grid", ndim=2)
        points = prices["point"].values if "point" in prices.coords else np.arange(grid.shape[1])
    else:
        shared = check_prices(prices)
        grid = np.broadcast_to(shared, (n_regions, shared.size)).copy()
        points = np.arange(shared.size)
    # index with a dimension of another name, then give the result the region coordinate back
    row_dims = ("grid_region", "point")
    group = xr.DataArray(np.broadcast_to(np.arange(n_regions)[:, None], grid.shape).copy(), dims=row_dims)
    log_price = xr.DataArray(np.log(grid), dims=row_dims)
    mu, sigma = row_effects(post, group, log_price)
    draws = posterior_predictive_draws(post, group, log_price, seed)
    tail = (1 - prob) / 2
    curve = np.exp(mu).quantile([tail, 0.5, 1 - tail], dim=_SAMPLE_DIMS)
    pred = np.exp(draws).quantile([tail, 1 - tail], dim=_SAMPLE_DIMS)
    out = xr.Dataset(
        {
            "price": (row_dims, grid),
            "curve_median": curve.isel(quantile=1).drop_vars("quantile"),
            "curve_lower": curve.isel(quantile=0).drop_vars("quantile"),
            "curve_upper": curve.isel(quantile=2).drop_vars("quantile"),
            "pred_lower": pred.isel(quantile=0).drop_vars("quantile"),
            "pred_upper": pred.isel(quantile=1).drop_vars("quantile"),
            "expected": np.exp(mu + sigma**2 / 2).mean(_SAMPLE_DIMS).transpose(*row_dims),
        }
    )
    out = out.rename({"grid_region": "region"}).assign_coords(region=post["region"].values, point=points)
    out.attrs["prob"] = prob
    return out


def predictive_bands(idata: xr.DataTree, data: ModelData, *, n_points: int = 30, prob: float = 0.94,
                     seed=None) -> xr.Dataset:
    """:func:`quantity_bands` of a fit on the :func:`price_grid` of each region's observed prices.

    Returns a ``Dataset`` with dims ``(region, point)`` and the variables ``price``,
    ``median`` (``curve_median`` of :func:`quantity_bands`), ``curve_lower``,
    ``curve_upper``, ``pred_lower`` and ``pred_upper``, the layout that
    :func:`~elasticity_lib.plots.posterior.plot_predictive_bands` draws.

    Without a ``seed`` the noise draws use ``sampler_seed("predictive_bands")``.
    """
    if seed is None:
        seed = sampler_seed("predictive_bands")
    grid = price_grid(data, n_points)
    post = _posterior(idata)
    if "region" in post.dims and post.sizes["region"] != data.n_regions:
        raise ValueError(f"the posterior has {post.sizes['region']} regions but the data have {data.n_regions}")
    bands = quantity_bands(idata, grid, prob=prob, seed=seed)
    return bands.drop_vars("expected").rename({"curve_median": "median"}).assign_coords(region=grid["region"])
