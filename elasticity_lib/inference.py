"""Fitting with the book's defaults, recovering marginalised effects, and diagnostics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymc as pm
import xarray as xr

from .likelihoods import conditional_effects
from .models import model_spec
from .prepare import GroupStats

__all__ = ["SAMPLING_DEFAULTS", "JAX_CACHE_DIR", "fit", "add_group_effects", "convergence_report", "ConvergenceReport"]

#: The book's sampler settings; ``fit`` applies them unless overridden.
#:
#: NumPyro won the measurements of ``benchmarks/inference.py`` for the book's fast model
#: forms: its compiled sampler is kept in JAX's persistent compilation cache, so a new
#: session pays compilation once per model structure, while nutpie's Numba entry points
#: are compiled again in every new process (about 4-5 s on the benchmark machine).
#: PyMC's convergence warnings are off: :func:`convergence_report` is the book's check.
SAMPLING_DEFAULTS: dict = {
    "nuts_sampler": "numpyro",
    "chains": 4,
    "draws": 1000,
    "tune": 1000,
    "target_accept": 0.9,
    "random_seed": 4242,
    "progressbar": False,
    "compute_convergence_checks": False,
}

#: Where compiled JAX programs are kept between sessions, unless JAX is told otherwise
#: (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``).
JAX_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elasticity_lib" / "jax"


def _prepare_jax() -> None:
    """Set JAX up for sampling: one CPU device per chain and a persistent compilation cache.

    Importing :mod:`pymc.sampling.jax` asks XLA for several host devices, so that chains
    run in parallel; it has to happen before JAX starts its backend, hence here and not
    at the first JAX computation. The cache is only switched on when the user has not
    configured one.
    """
    import pymc.sampling.jax  # noqa: F401
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        JAX_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE_DIR))
        # cache every compiled program of a fit, not only those that took over a second
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def fit(model: pm.Model, **overrides) -> xr.DataTree:
    """Sample ``model`` with the book's defaults and return PyMC's ``DataTree``.

    Any keyword of :func:`pymc.sample` overrides a default (for example
    ``nuts_sampler="nutpie"``). For a model built with the ``"marginal"`` likelihood, the
    integrated-out group effects are drawn afterwards from their exact conditional
    posterior (:func:`add_group_effects`), so the result carries ``alpha`` and ``beta``
    like the other forms.
    """
    kwargs = {**SAMPLING_DEFAULTS, **overrides}
    if kwargs.get("nuts_sampler") in ("numpyro", "blackjax"):
        _prepare_jax()
    with model:
        idata = pm.sample(**kwargs)
    spec = getattr(model, "elasticity_spec", None)
    if spec is not None and spec.likelihood == "marginal":
        seed = kwargs.get("random_seed")
        idata = add_group_effects(idata, model, seed=None if seed is None else np.random.SeedSequence(seed).spawn(1)[0])
    return idata


def _draw_gaussian_2d(rng, mean_a, mean_b, c11, c12, c22):
    """Draw (a, b) from bivariate normals given elementwise means and covariances."""
    l11 = np.sqrt(c11)
    l21 = c12 / l11
    l22 = np.sqrt(np.maximum(c22 - l21**2, 0.0))
    e1 = rng.standard_normal(np.shape(mean_a))
    e2 = rng.standard_normal(np.shape(mean_a))
    return mean_a + l11 * e1, mean_b + l21 * e1 + l22 * e2


def add_group_effects(idata: xr.DataTree, model: pm.Model, seed=None) -> xr.DataTree:
    """Add the group effects that a marginal model integrated out, drawn per posterior draw.

    Given the population parameters and sigma of each draw, a group's intercept and
    slope are bivariate Normal (the conjugate update of its prior by its statistics), so
    one exact draw per posterior draw gives samples from their joint posterior.
    """
    spec = model_spec(model)
    post = idata["posterior"].dataset
    rng = np.random.default_rng(seed)
    data = spec.data

    def stats_on(stats: GroupStats, dim: str) -> GroupStats:
        return GroupStats(*(xr.DataArray(getattr(stats, f), dims=dim) for f in ("n", "mx", "my", "cxx", "cxy", "cyy")))

    region_coord = {"region": data.coords["region"]}
    if spec.kind in ("multilevel", "correlated"):
        m_a = post["alpha_mean"]
        m_b = post["beta_mean"]
        if spec.kind == "multilevel":
            s11, s12, s22 = post["sigma_a"] ** 2, 0.0, post["sigma_b"] ** 2
        else:
            chol = post["chol_region"]
            # chol_region is stored as the packed lower triangle [l00, l10, l11]
            l00, l10, l11 = (chol.isel({chol.dims[-1]: i}) for i in range(3))
            s11, s12, s22 = l00**2, l00 * l10, l10**2 + l11**2
        stats = stats_on(data.region_stats, "region")
        stats = GroupStats(*(a.assign_coords(region_coord) for a in vars(stats).values()))
        mean_a, mean_b, c11, c12, c22 = conditional_effects(stats, m_a, m_b, s11, s12, s22, post["sigma"])
        a, b = _draw_gaussian_2d(rng, *(np.asarray(v.transpose("chain", "draw", "region")) for v in (mean_a, mean_b, c11, c12, c22)))
        new = {"alpha": (("chain", "draw", "region"), a), "beta": (("chain", "draw", "region"), b)}
    elif spec.kind == "store_multilevel":
        store_region = xr.DataArray(data.store_region_idx, dims="store")
        m_a = post["alpha"].isel(region=store_region)
        m_b = post["beta"].isel(region=store_region)
        stats = stats_on(data.store_stats, "store")
        mean_a, mean_b, c11, c12, c22 = conditional_effects(
            stats, m_a, m_b, post["sigma_store_a"] ** 2, 0.0, post["sigma_store_b"] ** 2, post["sigma"])
        a, b = _draw_gaussian_2d(rng, *(np.asarray(v.transpose("chain", "draw", "store")) for v in (mean_a, mean_b, c11, c12, c22)))
        new = {"alpha_store": (("chain", "draw", "store"), a), "beta_store": (("chain", "draw", "store"), b)}
    else:
        raise ValueError(f"model kind {spec.kind!r} has no marginalised effects")
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "region": data.coords["region"]}
    if spec.kind == "store_multilevel":
        coords["store"] = data.coords["store"]
    extra = xr.Dataset(new, coords={k: v for k, v in coords.items() if any(k in d for d, _ in new.values())})
    idata["posterior"] = xr.DataTree(post.assign(extra))
    return idata


@dataclass(frozen=True)
class ConvergenceReport:
    """Divergences and the worst r_hat and effective sample sizes over all parameters."""

    divergences: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    worst_rhat: str
    worst_ess_bulk: str

    def ok(self, max_rhat: float = 1.01, min_ess: float = 400) -> bool:
        return self.divergences == 0 and self.max_rhat <= max_rhat and self.min_ess_bulk >= min_ess and self.min_ess_tail >= min_ess

    def __str__(self) -> str:
        return (f"divergences: {self.divergences}\nmax r_hat: {self.max_rhat:.3f} ({self.worst_rhat})\n"
                f"min ESS bulk: {self.min_ess_bulk:.0f} ({self.worst_ess_bulk})\nmin ESS tail: {self.min_ess_tail:.0f}")


def _worst(values: xr.Dataset, varying: xr.Dataset, pick: str) -> tuple[float, str]:
    """Largest (``pick="max"``) or smallest value over the elements that vary across draws.

    A NaN diagnostic on a varying element counts as the worst possible value, so a broken
    chain can never hide behind pandas' habit of skipping NaN.
    """
    worst_value, worst_name = (-np.inf if pick == "max" else np.inf), ""
    for name, da in values.data_vars.items():
        mask = varying[name]
        if not bool(mask.any()):
            continue
        arr = np.where(mask.values, da.values, np.nan)
        bad = mask.values & np.isnan(da.values)
        if bad.any():
            idx = np.unravel_index(np.flatnonzero(bad)[0], bad.shape) if bad.ndim else ()
            return (np.inf if pick == "max" else 0.0), f"{name}{list(idx) if idx else ''}"
        flat = np.nanargmax(arr) if pick == "max" else np.nanargmin(arr)
        value = float(np.ravel(arr)[flat])
        if (pick == "max" and value > worst_value) or (pick == "min" and value < worst_value):
            idx = np.unravel_index(flat, arr.shape) if arr.ndim else ()
            labels = [str(da[d].values[i]) if d in da.coords else str(i) for d, i in zip(da.dims, idx)]
            worst_value, worst_name = value, f"{name}[{', '.join(labels)}]" if labels else name
    return worst_value, worst_name


def convergence_report(idata: xr.DataTree, var_names: list[str] | None = None) -> ConvergenceReport:
    """Summarise the sampler's health: divergences, max r_hat, min bulk and tail ESS.

    By default every posterior variable counts, including deterministics. Elements that
    are constant by construction (such as the unit diagonal of a correlation matrix) are
    left out; any other element whose diagnostic is NaN makes the report fail.
    """
    import arviz as az

    post = idata["posterior"].dataset
    names = var_names or list(post.data_vars)
    post = post[names]
    varying = ~(post.std(dim=("chain", "draw")) == 0)  # NaN counts as varying
    max_rhat, worst_rhat = _worst(az.rhat(post), varying, "max")
    min_bulk, worst_bulk = _worst(az.ess(post, method="bulk"), varying, "min")
    min_tail, _ = _worst(az.ess(post, method="tail"), varying, "min")
    diverging = idata["sample_stats"].dataset["diverging"]
    return ConvergenceReport(
        divergences=int(diverging.sum()),
        max_rhat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        worst_rhat=worst_rhat,
        worst_ess_bulk=worst_bulk,
    )
