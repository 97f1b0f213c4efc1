"""Small argument checks and accessors shared by the library's modules (private)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def check_probability(value: float, name: str = "prob") -> float:
    """Return ``value`` as a float if it lies strictly between 0 and 1, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def posterior_dataset(idata) -> xr.Dataset:
    """The posterior of a fit as a Dataset of NumPy arrays (samplers may hand back JAX arrays).

    Accepts the ``DataTree`` of :func:`~elasticity_lib.inference.fit` or a posterior
    ``Dataset`` (for example the effects of new regions).
    """
    if isinstance(idata, xr.Dataset):
        return idata.as_numpy()
    if isinstance(idata, xr.DataTree):
        if "posterior" not in idata.children:
            raise ValueError("the DataTree has no 'posterior' group")
        return idata["posterior"].to_dataset().as_numpy()
    raise TypeError(f"expected a DataTree from fit() or a posterior Dataset, got {type(idata).__name__}")


def check_prices(prices, name: str = "prices", ndim: int = 1) -> np.ndarray:
    """``prices`` as a float array if it is a non-empty ``ndim``-d array of finite, strictly positive prices.

    The one check of a price grid: a list of prices (``ndim=1``) or a grid per group (``ndim=2``).
    """
    prices = np.asarray(prices, dtype=float)
    if prices.ndim != ndim or prices.size == 0 or not np.all(np.isfinite(prices)) or np.any(prices <= 0):
        raise ValueError(f"{name} must be a non-empty {ndim}-d array of finite, strictly positive prices")
    return prices


def lazy_submodules(package: str, names: set[str]):
    """A module ``__getattr__`` that imports the submodules ``names`` of ``package`` on first use.

    The subpackages (``data``, ``models``, ``plots``, ``validation``) use it so that
    ``elasticity_lib.data.cigar`` works after ``import elasticity_lib`` without importing
    every module (and its dependencies, such as Dask or Graphviz) up front.
    """
    from importlib import import_module

    def __getattr__(name: str):
        if name in names:
            return import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
