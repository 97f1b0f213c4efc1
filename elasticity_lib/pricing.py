"""From elasticities to prices: profit-maximising prices under posterior uncertainty.

Demand follows the log-log model ``log q ~ Normal(alpha + beta log p, sigma)``, so the
expected quantity at price ``p`` is the mean of a lognormal,

    E[q | p] = exp(alpha + beta log p + sigma^2 / 2),

and the expected profit per period at unit cost ``c`` is ``(p - c) E[q | p]``. With a
constant elasticity ``beta < -1`` this is maximised at ``p* = c beta / (1 + beta)`` (the
markup rule). When ``beta >= -1`` demand is inelastic: profit grows with price without
bound and there is no finite optimum; such draws are counted, never turned into NaN or inf.

Many products (:func:`category_optimal_prices`): with constant own- and cross-price
elasticities ``E`` (row k: sales of product k, column j: price of product j), demand is
``q_k(p) = q0_k prod_j (p_j / p0_j)^E_kj`` around reference prices ``p0`` and quantities
``q0``, and the category profit ``sum_k (p_k - c_k) q_k(p)`` is maximised jointly. Pricing
each product by the markup rule on its own elasticity (:func:`own_price_only_prices`)
ignores that a higher price of one product sends buyers to its substitutes.

Two ways to pick one price from a posterior:

* plug-in: the optimum at the posterior means of the parameters;
* Bayes: the price that maximises the posterior *expected* profit, searched within a
  stated price range (a decision must stay where the model has seen data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import minimize_scalar

from elasticity_lib._checks import check_prices, check_probability

__all__ = [
    "optimal_price",
    "expected_quantity",
    "expected_profit",
    "price_posterior",
    "expected_profit_curve",
    "choose_prices",
    "profit_bands",
    "category_demand",
    "category_profit",
    "category_optimal_prices",
    "own_price_only_prices",
]

_SAMPLE_DIMS = ("chain", "draw")


def _check_cost(cost: float) -> float:
    cost = float(cost)
    if not np.isfinite(cost) or cost <= 0:
        raise ValueError(f"cost must be a finite, strictly positive unit cost, got {cost}")
    return cost


def _check_range(price_range) -> tuple[float, float]:
    lo, hi = (float(v) for v in price_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"price_range must be (low, high) with 0 < low < high, got {tuple(price_range)}")
    return lo, hi


def optimal_price(elasticity, cost: float) -> np.ndarray:
    """The profit-maximising price ``c * eta / (1 + eta)`` of a constant elasticity ``eta < -1``.

    Raises ``ValueError`` for any ``eta >= -1``: inelastic demand has no finite optimum.
    """
    cost = _check_cost(cost)
    eta = np.asarray(elasticity, dtype=float)
    if not np.all(np.isfinite(eta)):
        raise ValueError("elasticity must be finite")
    if np.any(eta >= -1):
        raise ValueError(
            f"elasticity must be < -1 for a finite optimal price; got {eta[eta >= -1].ravel()[:5]} "
            "(with |elasticity| <= 1 profit rises with price without bound)"
        )
    return cost * eta / (1 + eta)


def expected_quantity(price, alpha, beta, sigma):
    """Mean of the lognormal demand: ``exp(alpha + beta log p + sigma^2 / 2)`` (broadcasts)."""
    return np.exp(alpha + beta * np.log(price) + np.square(sigma) / 2)


def expected_profit(price, cost: float, alpha, beta, sigma):
    """Expected profit per period ``(p - c) E[q | p]`` given the parameters (broadcasts)."""
    return (price - _check_cost(cost)) * expected_quantity(price, alpha, beta, sigma)


def _group_dim(effects: xr.Dataset, dim: str | None) -> str:
    for var in ("alpha", "beta", "sigma"):
        if var not in effects:
            raise ValueError(f"effects lack {var!r}: pass alpha, beta (chain, draw, group) and sigma (chain, draw)")
    extra = [d for d in effects["beta"].dims if d not in _SAMPLE_DIMS]
    if dim is None:
        if len(extra) != 1:
            raise ValueError(f"cannot tell the group dimension of beta with dims {effects['beta'].dims}; pass dim=")
        dim = extra[0]
    if dim not in effects["beta"].dims:
        raise ValueError(f"beta has no dimension {dim!r}")
    return dim


def _draw_arrays(effects: xr.Dataset, dim: str):
    """alpha, beta of shape (draws, groups) and sigma of shape (draws, 1)."""
    if set(effects["sigma"].dims) != set(_SAMPLE_DIMS):
        raise ValueError(f"sigma has dims {effects['sigma'].dims}: pricing needs one residual sd per draw, "
                         "(chain, draw); a fit with a residual sd per store has none for a region")
    stack = effects[["alpha", "beta", "sigma"]].as_numpy().stack(sample=_SAMPLE_DIMS)
    # Fortran order: each group's draws are contiguous, for the loops over groups
    a = np.asfortranarray(stack["alpha"].transpose("sample", dim).values)
    b = np.asfortranarray(stack["beta"].transpose("sample", dim).values)
    s = stack["sigma"].transpose("sample", ...).values.reshape(-1, 1)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(s))):
        raise ValueError("effects hold non-finite draws")
    return a, b, s


def price_posterior(effects: xr.Dataset, cost: float, *, prob: float = 0.94, dim: str | None = None) -> pd.DataFrame:
    """Posterior of the optimal price and of the profit it earns, one row per group.

    ``share_no_optimum`` is the share of draws with ``beta >= -1`` (no finite optimum).
    The price and profit columns summarise the other draws (``n_finite`` of them): mean,
    median and equal-tailed ``prob`` interval of ``p* = c beta / (1 + beta)`` and of the
    maximal expected profit ``(p* - c) E[q | p*]``. A group none of whose draws has a
    finite optimum raises ``ValueError`` (use :func:`choose_prices` with a price range).
    """
    cost = _check_cost(cost)
    check_probability(prob)
    dim = _group_dim(effects, dim)
    a, b, s = _draw_arrays(effects, dim)
    tail = (1 - prob) / 2
    rows = []
    for k, group in enumerate(effects[dim].values.tolist()):
        finite = b[:, k] < -1
        if not finite.any():
            raise ValueError(
                f"{dim} {group!r}: every posterior draw has elasticity >= -1, so no finite optimal price exists; "
                "choose a price within a stated range with choose_prices"
            )
        price = optimal_price(b[finite, k], cost)
        profit = expected_profit(price, cost, a[finite, k], b[finite, k], s[finite, 0])
        p_lo, p_med, p_hi = np.quantile(price, [tail, 0.5, 1 - tail])
        g_lo, g_med, g_hi = np.quantile(profit, [tail, 0.5, 1 - tail])
        rows.append({dim: group, "share_no_optimum": 1 - finite.mean(), "n_finite": int(finite.sum()),
                     "price_mean": price.mean(), "price_median": p_med, "price_lower": p_lo, "price_upper": p_hi,
                     "profit_median": g_med, "profit_lower": g_lo, "profit_upper": g_hi})
    return pd.DataFrame(rows).set_index(dim)


def _log_mean_exp(x: np.ndarray) -> np.ndarray:
    """``log(mean(exp(x), axis=0))`` without overflow (shifted by the maximum).

    The same as ``scipy.special.logsumexp(x, axis=0) - log(n)`` (tested), without its
    per-call overhead, which dominates inside a scalar optimiser.
    """
    top = x.max(axis=0)
    return top + np.log(np.mean(np.exp(x - top), axis=0))


def _log_mean_demand(log_p, a, b, s):
    """Log of the posterior mean of E[q | p] over draws, for one group (stable in logs)."""
    return _log_mean_exp(a + b * log_p + s**2 / 2)


def expected_profit_curve(effects: xr.Dataset, cost: float, prices, *, dim: str | None = None) -> xr.DataArray:
    """Posterior expected profit ``E[(p - c) E[q | p]]`` on a price grid (dims: group, price)."""
    cost = _check_cost(cost)
    prices = check_prices(prices)
    dim = _group_dim(effects, dim)
    a, b, s = _draw_arrays(effects, dim)
    log_p = np.log(prices)
    # one group at a time keeps memory at draws x prices
    log_mean = np.stack([_log_mean_demand(log_p, a[:, k, None], b[:, k, None], s) for k in range(a.shape[1])])
    values = (prices - cost) * np.exp(log_mean)
    return xr.DataArray(values, dims=(dim, "price"), coords={dim: effects[dim].values, "price": prices},
                        name="expected_profit")


def choose_prices(effects: xr.Dataset, cost: float, price_range, *, dim: str | None = None,
                  n_grid: int = 201) -> pd.DataFrame:
    """The Bayes and the plug-in price of each group, both within ``price_range``.

    * ``bayes_price`` maximises the posterior expected profit over ``price_range``
      (a grid search refined by a bounded scalar optimiser);
    * ``plugin_price`` maximises the profit at the posterior means of alpha, beta and
      sigma, restricted to the same range (``plugin_unconstrained`` is False when the
      mean elasticity is >= -1, where the plug-in optimum would be infinite).

    ``*_expected_profit`` evaluates both under the full posterior, so ``regret`` (how
    much expected profit the plug-in price gives up) is never negative; ``*_at_bound``
    flags a price that sits on an end of the range.
    """
    cost = _check_cost(cost)
    lo, hi = _check_range(price_range)
    dim = _group_dim(effects, dim)
    a, b, s = _draw_arrays(effects, dim)
    grid = np.linspace(lo, hi, n_grid)
    curve = expected_profit_curve(effects, cost, grid, dim=dim).values
    rows = []
    for k, group in enumerate(effects[dim].values.tolist()):

        def neg_profit(p, k=k):
            return -(p - cost) * np.exp(_log_mean_demand(np.log(p), a[:, k], b[:, k], s[:, 0]))

        i = int(np.argmax(curve[k]))
        left, right = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
        best = minimize_scalar(neg_profit, bounds=(left, right), method="bounded", options={"xatol": 1e-9})
        bayes = float(best.x) if -best.fun >= curve[k, i] else float(grid[i])
        b_bar = b[:, k].mean()
        unconstrained = bool(b_bar < -1)
        plugin = float(np.clip(optimal_price(b_bar, cost), lo, hi)) if unconstrained else hi
        bayes_profit, plugin_profit = -neg_profit(bayes), -neg_profit(plugin)
        rows.append({
            dim: group,
            "bayes_price": bayes,
            "bayes_expected_profit": bayes_profit,
            "bayes_at_bound": bool(np.isclose(bayes, lo) or np.isclose(bayes, hi)),
            "plugin_price": plugin,
            "plugin_expected_profit": plugin_profit,
            "plugin_unconstrained": unconstrained,
            "plugin_at_bound": bool(np.isclose(plugin, lo) or np.isclose(plugin, hi)),
            "regret": max(bayes_profit - plugin_profit, 0.0),
            "mean_elasticity": b_bar,
            "share_no_optimum": float((b[:, k] >= -1).mean()),
        })
    return pd.DataFrame(rows).set_index(dim)


def profit_bands(effects: xr.Dataset, cost: float, prices, *, prob: float = 0.94,
                 dim: str | None = None) -> pd.DataFrame:
    """Posterior bands of the expected profit ``(p - c) E[q | p]`` on a price grid.

    One row per group and price: median and equal-tailed ``prob`` interval over draws,
    and ``expected``, the posterior mean (the curve the Bayes price maximises).
    """
    cost = _check_cost(cost)
    check_probability(prob)
    prices = np.asarray(prices, dtype=float)
    mean_curve = expected_profit_curve(effects, cost, prices, dim=dim)
    dim = mean_curve.dims[0]
    a, b, s = _draw_arrays(effects, dim)
    tail = (1 - prob) / 2
    lower, median, upper = np.stack([
        np.quantile(expected_profit(prices, cost, a[:, k, None], b[:, k, None], s), [tail, 0.5, 1 - tail], axis=0)
        for k in range(a.shape[1])
    ], axis=1)
    groups = effects[dim].values
    return pd.DataFrame({
        dim: np.repeat(groups, len(prices)),
        "price": np.tile(prices, len(groups)),
        "profit_lower": lower.ravel(),
        "profit_median": median.ravel(),
        "profit_upper": upper.ravel(),
        "expected": mean_curve.values.ravel(),
    })


# --- many products ---------------------------------------------------------------------------


def _category_inputs(elasticity, cost, base_prices, base_quantities):
    e = np.asarray(elasticity, dtype=float)
    if e.ndim != 2 or e.shape[0] != e.shape[1] or not np.all(np.isfinite(e)):
        raise ValueError(f"elasticity must be a finite square matrix (K, K), got shape {e.shape}")
    k = e.shape[0]
    out = [e]
    for name, v in (("cost", cost), ("base_prices", base_prices), ("base_quantities", base_quantities)):
        v = np.asarray(v, dtype=float)
        if v.shape != (k,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be {k} finite, strictly positive numbers (one per product), got {v}")
        out.append(v)
    return out


def category_demand(prices, elasticity, base_prices, base_quantities) -> np.ndarray:
    """Expected quantities ``q0_k prod_j (p_j / p0_j)^E_kj`` of constant-elasticity demand."""
    e, _, p0, q0 = _category_inputs(elasticity, np.ones(len(base_prices)), base_prices, base_quantities)
    log_ratio = np.log(np.asarray(prices, dtype=float) / p0)
    return q0 * np.exp(log_ratio @ e.T)


def category_profit(prices, cost, elasticity, base_prices, base_quantities) -> float:
    """Category profit ``sum_k (p_k - c_k) q_k(p)`` under constant-elasticity demand."""
    prices = np.asarray(prices, dtype=float)
    _, c, _, _ = _category_inputs(elasticity, cost, base_prices, base_quantities)
    return float(((prices - c) * category_demand(prices, elasticity, base_prices, base_quantities)).sum())


def _check_bounds(lower, upper, k: int) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = (np.broadcast_to(np.asarray(v, dtype=float), (k,)).copy() for v in (lower, upper))
    bad = ~(np.isfinite(lower) & np.isfinite(upper) & (lower > 0) & (lower < upper))
    if bad.any():
        raise ValueError(f"price bounds must satisfy 0 < lower < upper (finite) for every product; they do not for "
                         f"products {np.flatnonzero(bad).tolist()} (lower {lower[bad]}, upper {upper[bad]})")
    return lower, upper


def own_price_only_prices(elasticity, cost, lower=None, upper=None) -> np.ndarray:
    """The prices an analyst sets ignoring cross-price effects: the markup rule on each own elasticity.

    ``p_k = c_k E_kk / (1 + E_kk)``, moved into ``[lower_k, upper_k]`` when bounds are
    given (each product's own profit is single-peaked in its price, so that is its best
    price within the range); raises ``ValueError`` for an own elasticity >= -1.
    """
    e = np.asarray(elasticity, dtype=float)
    if e.ndim != 2 or e.shape[0] != e.shape[1]:
        raise ValueError(f"elasticity must be a square matrix (K, K), got shape {e.shape}")
    cost = np.asarray(cost, dtype=float)
    if cost.shape != (e.shape[0],) or not np.all(np.isfinite(cost)) or np.any(cost <= 0):
        raise ValueError(f"cost must be {e.shape[0]} finite, strictly positive unit costs, got {cost}")
    prices = np.array([float(optimal_price(e[k, k], cost[k])) for k in range(e.shape[0])])
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper price bounds, or neither")
    if lower is not None:
        lo, hi = _check_bounds(lower, upper, e.shape[0])
        prices = np.clip(prices, lo, hi)
    return prices


def category_optimal_prices(elasticity, cost, base_prices, base_quantities, lower, upper) -> np.ndarray:
    """The price vector that maximises category profit within ``[lower, upper]``.

    Constant-elasticity demand is a local description: with substitutes (a positive
    cross-price elasticity ``E_kj``), raising product j's price without bound sends
    ``q_k`` and the category profit to infinity, so the optimum is only meaningful within
    a range of prices the data have seen (``lower``, ``upper``: one bound per product, or
    one for all). The profit is maximised in log prices with L-BFGS-B on its analytic
    gradient ``g_i = p_i q_i + sum_k (p_k - c_k) q_k E_ki``, started from the
    own-price-only prices, the reference prices and both corners of the range; the best
    end point is returned. A price on a bound means the data's range, not the
    elasticities, set it.
    """
    from scipy.optimize import minimize

    e, c, p0, q0 = _category_inputs(elasticity, cost, base_prices, base_quantities)
    lo, hi = _check_bounds(lower, upper, len(c))
    scale = float((p0 * q0).sum())

    def negative(log_p):
        p = np.exp(log_p)
        q = q0 * np.exp((log_p - np.log(p0)) @ e.T)
        m = (p - c) * q
        return -m.sum() / scale, -(p * q + e.T @ m) / scale

    own = np.diag(e)
    starts = [np.clip(p0, lo, hi), lo * 1.0001, hi / 1.0001]
    if np.all(own < -1):
        starts.insert(0, own_price_only_prices(e, c, lo, hi))
    bounds = list(zip(np.log(lo), np.log(hi)))
    best = None
    for start in starts:
        res = minimize(negative, np.log(start), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    return np.exp(best.x)
