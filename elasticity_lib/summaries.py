"""One posterior table: mean, sd and a credible interval of every element of a variable.

Every table of posterior estimates in the library and the book is made here, by
:func:`posterior_table`, on ArviZ's interval functions (:func:`arviz.hdi` for the highest
density interval, :func:`arviz.eti` for the equal-tailed one). The means and sds are
computed directly rather than read from :func:`arviz.summary`, which rounds them for
display. Functions that need other column names (the command line's elasticity table,
the store-level comparison of :mod:`elasticity_lib.store_estimates`, the recovery table of
:mod:`elasticity_lib.validation.recovery`) rename these columns instead of computing them again.
"""

from __future__ import annotations

import pandas as pd
import xarray as xr

from elasticity_lib._checks import check_probability

__all__ = ["INTERVAL_KINDS", "interval_columns", "posterior_table", "average_elasticity"]

#: Interval kinds of :func:`posterior_table` and the short name each puts in its column names.
INTERVAL_KINDS: dict[str, str] = {"hdi": "hdi", "equal-tailed": "eti"}

_SAMPLE_DIMS = ("chain", "draw")


def _check_interval(interval: str) -> str:
    if interval not in INTERVAL_KINDS:
        raise ValueError(f"interval must be one of {sorted(INTERVAL_KINDS)}, got {interval!r}")
    return interval


def interval_columns(prob: float = 0.94, interval: str = "hdi") -> tuple[str, str]:
    """Names of the lower and upper interval columns of :func:`posterior_table`.

    ``"hdi94_low"`` and ``"hdi94_high"`` for a 94% HDI, ``"eti90_low"`` and ``"eti90_high"``
    for a 90% equal-tailed interval; the percentage is written with up to six significant
    digits (``"hdi94.5_low"`` for 0.945), so two probabilities never share a name.
    """
    prob = check_probability(prob)
    label = f"{INTERVAL_KINDS[_check_interval(interval)]}{100 * prob:g}"
    return f"{label}_low", f"{label}_high"


def posterior_table(draws: xr.DataArray, dim: str | None = None, prob: float = 0.94,
                    interval: str = "hdi") -> pd.DataFrame:
    """Posterior mean, sd and ``prob`` credible interval of each element of ``draws`` along ``dim``.

    Parameters
    ----------
    draws : xarray.DataArray
        Posterior draws with dims ``chain``, ``draw`` and at most one more, ``dim``
        (JAX-backed arrays are converted to NumPy).
    dim : str or None
        The dimension whose elements become the rows. ``None`` for a scalar variable,
        which gives one row labelled with the variable's name.
    prob : float
        Probability mass of the interval, strictly between 0 and 1.
    interval : {"hdi", "equal-tailed"}
        ``"hdi"``: the highest density interval (:func:`arviz.hdi`), the narrowest interval
        holding ``prob`` of the draws. ``"equal-tailed"``: the ``(1 - prob) / 2`` and
        ``(1 + prob) / 2`` quantiles (:func:`arviz.eti`, linear interpolation).

    Returns
    -------
    pandas.DataFrame
        Indexed by the coordinate of ``dim`` (index name ``dim``; ``"parameter"`` for a
        scalar), with columns

        ``mean``
            posterior mean over chains and draws;
        ``sd``
            posterior standard deviation (``ddof=1``);
        ``hdi94_low``, ``hdi94_high`` (for the defaults)
            the interval's bounds, named by :func:`interval_columns` after its kind
            (``hdi`` or ``eti``) and its percentage.

        ``attrs`` records ``prob`` and ``interval``.
    """
    prob = check_probability(prob)
    low, high = interval_columns(prob, interval)
    if not isinstance(draws, xr.DataArray):
        raise TypeError(f"draws must be an xarray.DataArray of posterior draws, got {type(draws).__name__}")
    missing = [d for d in _SAMPLE_DIMS if d not in draws.dims]
    if missing:
        raise ValueError(f"draws have dims {draws.dims}: they lack the sample dims {missing}")
    extra = [d for d in draws.dims if d not in _SAMPLE_DIMS]
    if dim is None:
        if extra:
            raise ValueError(f"draws have the dims {extra} besides chain and draw: name the one for the rows in dim")
        draws = draws.expand_dims(parameter=[draws.name if draws.name is not None else "value"], axis=-1)
        dim = "parameter"
    elif dim not in draws.dims:
        raise ValueError(f"draws have dims {draws.dims}, not {dim!r}")
    elif extra != [dim]:
        raise ValueError(f"draws have dims {extra} besides chain and draw; a table has rows along {dim!r} only")
    draws = draws.as_numpy()  # samplers may hand back JAX arrays
    if interval == "hdi":
        bounds = _hdi(draws, prob)
    else:
        bounds = _eti(draws, prob)
    table = pd.DataFrame(
        {
            "mean": draws.mean(_SAMPLE_DIMS).transpose(dim).to_numpy(),
            "sd": draws.std(_SAMPLE_DIMS, ddof=1).transpose(dim).to_numpy(),
            low: bounds.sel(ci_bound="lower").transpose(dim).to_numpy(),
            high: bounds.sel(ci_bound="upper").transpose(dim).to_numpy(),
        },
        index=pd.Index(draws[dim].to_numpy().tolist(), name=dim),
    )
    table.attrs.update(prob=prob, interval=interval)
    return table


def _hdi(draws: xr.DataArray, prob: float) -> xr.DataArray:
    import arviz as az

    return az.hdi(draws, prob=prob, dim=list(_SAMPLE_DIMS))


def _eti(draws: xr.DataArray, prob: float) -> xr.DataArray:
    import arviz as az

    return az.eti(draws, prob=prob, dim=list(_SAMPLE_DIMS))


def average_elasticity(idata, data):
    """Posterior draws of the elasticity averaged over states (each state counts once).

    For the division-level model a state takes its division's elasticity; for the
    three-level model it has its own (``beta_store``).
    """
    post = idata["posterior"].dataset
    if "beta_store" in post:
        return post["beta_store"].mean("store")
    per_state = post["beta"].isel(region=xr.DataArray(data.store_region_idx, dims="store"))
    return per_state.mean("store")
