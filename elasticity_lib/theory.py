"""Demand curves and their price elasticities, analytic and numerical.

The elasticity of demand ``y(x)`` with respect to price ``x`` is
``eta = d log y / d log x``: the percent change of the quantity for a one percent change
of the price. Two textbook demand curves make the point of the book:

* log-log (constant elasticity) demand ``y = a * x**b`` has ``eta = b`` at every price;
* linear demand ``y = a + b * x`` has ``eta = b * x / (a + b * x)``, which changes with
  the price and diverges where the quantity reaches zero.

:func:`numerical_elasticity` estimates ``eta`` from any sampled curve by finite
differences of ``log y`` against ``log x`` (:func:`numpy.gradient`), so the analytic
formulas can be checked against it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "linear_demand",
    "loglog_demand",
    "linear_elasticity",
    "loglog_elasticity",
    "numerical_elasticity",
]


def _positive_prices(price: ArrayLike) -> np.ndarray:
    x = np.asarray(price, dtype=float)
    bad = ~np.isfinite(x) | (x <= 0)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"price must be finite and strictly positive; got {float(x.ravel()[first])} at position {first}"
        )
    return x


def linear_demand(price: ArrayLike, a: float, b: float) -> np.ndarray:
    """Quantity of the linear demand curve ``a + b * price``.

    Raises ``ValueError`` if any quantity is not strictly positive: the elasticity (and
    the logarithm the models take) is undefined there.
    """
    x = _positive_prices(price)
    y = a + b * x
    bad = y <= 0
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"linear demand {a} + {b} * price is not positive at price {float(x.ravel()[first])} "
            f"(quantity {float(y.ravel()[first])}); its elasticity is undefined there"
        )
    return y


def loglog_demand(price: ArrayLike, a: float, b: float) -> np.ndarray:
    """Quantity of the log-log (constant elasticity) demand curve ``a * price**b``, ``a > 0``."""
    if not a > 0:
        raise ValueError(f"log-log demand needs a scale a > 0, got a={a!r}")
    return a * _positive_prices(price) ** b


def linear_elasticity(price: ArrayLike, a: float, b: float) -> np.ndarray:
    """Price elasticity ``b * price / (a + b * price)`` of the linear demand curve."""
    x = _positive_prices(price)
    return b * x / linear_demand(x, a, b)


def loglog_elasticity(price: ArrayLike, a: float, b: float) -> np.ndarray:
    """Price elasticity of the log-log demand curve: the exponent ``b`` at every price."""
    loglog_demand(price, a, b)  # validates a and the prices
    return np.full(np.shape(price), float(b))


def numerical_elasticity(price: ArrayLike, quantity: ArrayLike) -> np.ndarray:
    """Elasticity of a sampled demand curve by finite differences of ``log y`` on ``log x``.

    ``price`` must be strictly increasing and both arrays one-dimensional, positive and of
    the same length (at least two points). Interior points use second-order central
    differences on the (possibly uneven) log-price grid, the end points one-sided ones.
    """
    x = _positive_prices(price)
    y = np.asarray(quantity, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"price and quantity must be one-dimensional, got shapes {x.shape} and {y.shape}")
    if x.shape != y.shape:
        raise ValueError(f"price and quantity must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"need at least two points to take a derivative, got {x.size}")
    steps = np.diff(x)
    if (steps <= 0).any():
        first = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ValueError(f"price must be strictly increasing; price[{first}] = {float(x[first])} does not exceed the one before")
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"quantity must be finite and strictly positive; got {float(y[first])} at position {first}")
    return np.gradient(np.log(y), np.log(x), edge_order=2)
