"""Fitting with the book's defaults, recovering marginalised effects, and diagnostics."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from elasticity_lib.data.prepare import GroupStats
from elasticity_lib.models.builder import (
    ModelSpec,
    model_spec,
    region_cholesky,
    spec_attributes,
    to_original_covariance,
)
from elasticity_lib.models.likelihoods import conditional_effects, group_information, outer_conditional
from elasticity_lib.reproducibility import sampler_seed

__all__ = ["exact_numba_arithmetic", "SAMPLING_DEFAULTS", "KIND_SAMPLING", "JAX_CACHE_DIR", "NUTPIE_FROM_TERMS", "likelihood_terms", "sampling_settings", "fit", "add_group_effects", "convergence_report", "ConvergenceReport"]

#: The book's sampler settings; ``fit`` applies them unless overridden.
#:
#: NumPyro won the measurements of ``benchmarks/inference.py`` for the book's fast model
#: forms on the book's markets: its compiled sampler is kept in JAX's persistent
#: compilation cache, so compilation is paid once per model and data set (running a
#: chapter again reads it from disk), while nutpie's Numba entry points are compiled
#: again in every new process (about 4-5 s on the benchmark machine). Large models go to
#: nutpie (:data:`NUTPIE_FROM_TERMS`).
#: PyMC's convergence warnings are off: :func:`convergence_report` is the book's check.
#: The seed is not fixed here: unless one is passed, :func:`fit` takes
#: :func:`~elasticity_lib.reproducibility.sampler_seed` (``ELASTICITY_SAMPLER_SEED``).
SAMPLING_DEFAULTS: dict = {
    "nuts_sampler": "numpyro",
    "chains": 4,
    "draws": 1000,
    "tune": 1000,
    "target_accept": 0.9,
    "progressbar": False,
    "compute_convergence_checks": False,
}

#: Settings that one model kind needs on top of :data:`SAMPLING_DEFAULTS`. The correlated
#: model's region scales have a funnel where sigma_b approaches zero: with the defaults,
#: half of twenty sampler seeds left sigma_b with a bulk ESS under 400 or an r_hat above
#: 1.01 on the book's market; with target_accept 0.99 and 4,000 draws per chain the
#: worst of twenty had an ESS of 1,228 and an r_hat of 1.005.
KIND_SAMPLING: dict[str, dict] = {"correlated": {"target_accept": 0.99, "draws": 4000},
                                  # the store scales of weakly informative promotion columns mix
                                  # slowly: 1,000 draws per chain left one below 400 bulk ESS
                                  "multiproduct": {"draws": 2000}}

#: Models whose likelihood has at least this many terms (rows of the row-level form,
#: groups of the fast forms: stores of the store-level model) are sampled with nutpie
#: unless a sampler is named. Their cost is the gradient, not the compilation, and
#: nutpie's fused Numba loops evaluate it about three times faster than XLA on this
#: CPU (10,000 stores: about 0.7 ms against 2.3 ms per gradient).
NUTPIE_FROM_TERMS = 500

#: Where compiled JAX programs are kept between sessions, unless JAX is told otherwise
#: (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``).
JAX_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elasticity_lib" / "jax"


@contextlib.contextmanager
def exact_numba_arithmetic():
    """Compile Numba code with exact IEEE arithmetic (no fastmath) inside the block.

    With Numba's fastmath, LLVM may reorder floating-point operations differently in a
    freshly compiled function and in the same function loaded from PyTensor's cache, so
    one seed gave different draws on a first and a later run (nutpie samples through
    Numba). The flag is changed only while the library compiles and samples, and a
    user's own ``PYTENSOR_FLAGS`` setting of ``numba__fastmath`` wins.
    """
    if "numba__fastmath" in os.environ.get("PYTENSOR_FLAGS", ""):
        yield
        return
    with pytensor.config.change_flags(numba__fastmath=False):
        yield


def _prepare_jax() -> None:
    """Set JAX up for sampling: one CPU device per chain and a persistent compilation cache.

    Importing :mod:`pymc.sampling.jax` asks XLA for several host devices, so that chains
    run in parallel; it has to happen before JAX starts its backend, hence here and not
    at the first JAX computation. The cache is only switched on when the user has not
    configured one.
    """
    with warnings.catch_warnings():
        # NumPyro imports tqdm.auto, which warns in notebooks without ipywidgets; the book
        # samples without progress bars, so the warning says nothing useful.
        warnings.filterwarnings("ignore", message="IProgress not found")
        import pymc.sampling.jax  # noqa: F401
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        JAX_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE_DIR))
        # cache every compiled program of a fit, not only those that took over a second
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def likelihood_terms(model: pm.Model) -> int:
    """How many terms the model's likelihood sums: rows, stores or regions."""
    spec = getattr(model, "elasticity_spec", None)
    if spec is None:
        return 0
    if spec.likelihood == "rows":
        return spec.data.n_obs
    if spec.kind == "multiproduct":
        return spec.data.n_stores * spec.data.n_products
    return spec.data.n_stores if spec.kind == "store_multilevel" else spec.data.n_regions


def sampling_settings(model: pm.Model, **overrides) -> dict:
    """The keywords :func:`fit` passes to :func:`pymc.sample` for this model.

    The book's defaults (and the model kind's :data:`KIND_SAMPLING`), with nutpie for models of at least :data:`NUTPIE_FROM_TERMS`
    likelihood terms unless a sampler is named, and ``overrides`` on top. Without a
    ``random_seed`` (or with ``None``) the seed is :func:`~elasticity_lib.reproducibility.sampler_seed`.
    """
    spec = getattr(model, "elasticity_spec", None)
    per_kind = KIND_SAMPLING.get(spec.kind, {}) if spec is not None else {}
    kwargs = {**SAMPLING_DEFAULTS, **per_kind, **overrides}
    if kwargs.get("random_seed") is None:
        kwargs["random_seed"] = sampler_seed()
    if "nuts_sampler" not in overrides and likelihood_terms(model) >= NUTPIE_FROM_TERMS:
        kwargs["nuts_sampler"] = "nutpie"
    return kwargs


def fit(model: pm.Model, **overrides) -> xr.DataTree:
    """Sample ``model`` with the book's defaults and return PyMC's ``DataTree``.

    Any keyword of :func:`pymc.sample` overrides a default (for example
    ``nuts_sampler="nutpie"``). Without one, models with at least
    :data:`NUTPIE_FROM_TERMS` likelihood terms use nutpie. The result's attributes record
    the model's specification (:func:`~elasticity_lib.models.spec_attributes`), so later
    steps read the model kind from it. For a model built with the ``"marginal"`` likelihood, the
    integrated-out group effects are drawn afterwards from their exact conditional
    posterior (:func:`add_group_effects`), so the result carries ``alpha`` and ``beta``
    like the other forms.
    """
    kwargs = sampling_settings(model, **overrides)
    uses_jax = kwargs.get("nuts_sampler") in ("numpyro", "blackjax")
    if uses_jax:
        _prepare_jax()
    with model, exact_numba_arithmetic():
        idata = pm.sample(**kwargs)
    if uses_jax:
        # PyMC hands back JAX device arrays; everything downstream expects NumPy
        for name in list(idata.children):
            idata[name] = xr.DataTree(idata[name].to_dataset().as_numpy())
    spec = getattr(model, "elasticity_spec", None)
    if spec is not None and spec.likelihood == "marginal":
        seed = kwargs.get("random_seed")
        idata = add_group_effects(idata, model, seed=None if seed is None else np.random.SeedSequence(seed).spawn(1)[0])
    if spec is not None:
        # the result says what was fitted, for every later step (and for readers of a saved file)
        attrs = spec_attributes(spec)
        idata.attrs.update(attrs)
        idata["posterior"].attrs.update(attrs)
    return idata


def _draw_gaussian_2d(rng, mean_a, mean_b, c11, c12, c22):
    """Draw (a, b) from bivariate normals given elementwise means and covariances."""
    l11 = np.sqrt(c11)
    l21 = c12 / l11
    l22 = np.sqrt(np.maximum(c22 - l21**2, 0.0))
    e1 = rng.standard_normal(np.shape(mean_a))
    e2 = rng.standard_normal(np.shape(mean_a))
    return mean_a + l11 * e1, mean_b + l21 * e1 + l22 * e2


#: Draws of group effects are made in blocks of at most this many (draw, group) pairs, so
#: that memory stays bounded for ten thousand stores times four thousand draws (and the
#: blocks stay in the CPU cache: 50,000 was three times faster than 2,000,000).
_BLOCK_ELEMENTS = 50_000


def _conditional_draws(rng, stats: GroupStats, m_a, m_b, s11, s12, s22, sigma):
    """One exact draw of every group's (intercept, slope) per posterior draw.

    ``m_a`` and ``m_b`` have shape ``(chain, draw, group)``; the prior covariance entries
    and ``sigma`` have shape ``(chain, draw)`` or are plain numbers. Works through blocks
    of draws, each a handful of arrays of at most ``_BLOCK_ELEMENTS`` numbers.
    """
    n_chain, n_draw, n_group = m_a.shape
    a = np.empty((n_chain, n_draw, n_group))
    b = np.empty((n_chain, n_draw, n_group))
    per_draw = [np.asarray(v, dtype=float)[..., None] if np.ndim(v) else float(v) for v in (s11, s12, s22, sigma)]
    step = max(1, _BLOCK_ELEMENTS // max(n_group, 1))
    for c in range(n_chain):
        for start in range(0, n_draw, step):
            rows = slice(start, start + step)
            s11_, s12_, s22_, sigma_ = (v[c, rows] if np.ndim(v) else v for v in per_draw)
            moments = conditional_effects(stats, m_a[c, rows], m_b[c, rows], s11_, s12_, s22_, sigma_)
            a[c, rows], b[c, rows] = _draw_gaussian_2d(rng, *np.broadcast_arrays(*moments))
    return a, b


def _nested_draws(rng, data, m_a, m_b, s11, s12, s22, t11, t12, t22, sigma):
    """Exact draws of region effects, then of store effects, for the two-level marginal model.

    Per posterior draw: the regions' (intercept, slope) from their conditional given the
    income lines, the scales and all the stores' data (store effects integrated out);
    then each store's from its conditional given its region's drawn effect. ``sigma`` has
    shape ``(chain, draw)``, or ``(chain, draw, store)`` for a residual sd per store.
    Returns ``(alpha, beta, alpha_store, beta_store)``; works in blocks of draws like
    :func:`_conditional_draws`.
    """
    n_chain, n_draw, n_region = m_a.shape
    region_of_store = data.store_region_idx
    n_store = len(region_of_store)
    # sums over each region's stores: sort stores by region once (prepare_data already
    # does), then add up runs
    order = None if np.all(np.diff(region_of_store) >= 0) else np.argsort(region_of_store, kind="stable")
    sorted_regions = region_of_store if order is None else region_of_store[order]
    starts = np.searchsorted(sorted_regions, np.arange(n_region))
    has_stores = np.bincount(region_of_store, minlength=n_region) > 0
    stats = data.store_stats
    out = [np.empty((n_chain, n_draw, n)) for n in (n_region, n_region, n_store, n_store)]
    step = max(1, _BLOCK_ELEMENTS // max(n_store, 1))
    for c in range(n_chain):
        for start in range(0, n_draw, step):
            rows = slice(start, start + step)
            t11_, t12_, t22_ = (v[c, rows, None] for v in (t11, t12, t22))
            sigma_ = sigma[c, rows] if sigma.ndim == 3 else sigma[c, rows, None]
            info = group_information(stats, m_a[c, rows][:, region_of_store], m_b[c, rows][:, region_of_store],
                                     t11_, t12_, t22_, sigma_)
            sums = []
            for v in info:
                # a trailing zero column makes every start a valid index, even for a region
                # without stores (whose sum is then masked to zero)
                padded = np.zeros((t11_.shape[0], n_store + 1))
                v = np.broadcast_to(v, (t11_.shape[0], n_store))
                padded[:, :n_store] = v if order is None else v[:, order]
                sums.append(np.where(has_stores, np.add.reduceat(padded, starts, axis=1), 0.0))
            moments = outer_conditional(m_a[c, rows], m_b[c, rows], *sums, s11[c, rows, None], s12[c, rows, None],
                                        s22[c, rows, None])
            alpha, beta = _draw_gaussian_2d(rng, *np.broadcast_arrays(*moments))
            store_moments = conditional_effects(stats, alpha[:, region_of_store], beta[:, region_of_store],
                                                t11_, t12_, t22_, sigma_)
            alpha_s, beta_s = _draw_gaussian_2d(rng, *np.broadcast_arrays(*store_moments))
            for arr, value in zip(out, (alpha, beta, alpha_s, beta_s)):
                arr[c, rows] = value
    return tuple(out)


def add_group_effects(idata: xr.DataTree, model: pm.Model | ModelSpec, seed=None) -> xr.DataTree:
    """Add the group effects that a marginal model integrated out, drawn per posterior draw.

    Given the population parameters and sigma of each draw, a group's intercept and
    slope are bivariate Normal (the conjugate update of its prior by its statistics), so
    one exact draw per posterior draw gives samples from their joint posterior. For the
    store-level model, regions are drawn first (stores integrated out), then stores given
    their region's draw, with each store's own residual sd where the model has one.
    """
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    if spec.kind == "multiproduct":
        from elasticity_lib.models.products import add_store_effects

        return add_store_effects(idata, spec, seed=seed)
    post = idata["posterior"].dataset
    rng = np.random.default_rng(seed)
    data = spec.data

    def values(name: str, *dims: str) -> np.ndarray:
        return np.asarray(post[name].transpose("chain", "draw", *dims).values, dtype=float)

    x_c = spec.log_price_center
    if spec.kind in ("multilevel", "correlated"):
        m_a = values("alpha_mean", "region")
        m_b = values("beta_mean", "region")
        if spec.kind == "multilevel":
            s11, s12, s22 = values("sigma_a") ** 2, np.zeros_like(values("sigma_a")), values("sigma_b") ** 2
        else:
            l00, l10, l11 = (np.asarray(f.transpose("chain", "draw").values) for f in region_cholesky(post))
            s11, s12, s22 = l00**2, l00 * l10, l10**2 + l11**2
        s11, s12, s22 = to_original_covariance(s11, s12, s22, x_c)
        a, b = _conditional_draws(rng, data.region_stats, m_a, m_b, s11, s12, s22, values("sigma"))
        new = {"alpha": (("chain", "draw", "region"), a), "beta": (("chain", "draw", "region"), b)}
    elif spec.kind == "store_multilevel":
        zero = np.zeros_like(values("sigma_a"))
        region_cov = to_original_covariance(values("sigma_a") ** 2, zero, values("sigma_b") ** 2, x_c)
        store_cov = to_original_covariance(values("sigma_store_a") ** 2, zero, values("sigma_store_b") ** 2, x_c)
        # one residual sd, or one per store (noise="by_store")
        sigma = values("sigma", *(("store",) if "store" in post["sigma"].dims else ()))
        a, b, a_s, b_s = _nested_draws(
            rng, data, values("alpha_mean", "region"), values("beta_mean", "region"), *region_cov, *store_cov, sigma)
        new = {"alpha": (("chain", "draw", "region"), a), "beta": (("chain", "draw", "region"), b),
               "alpha_store": (("chain", "draw", "store"), a_s), "beta_store": (("chain", "draw", "store"), b_s)}
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

    def ok(self, max_rhat: float = 1.01, min_ess: float = 400, max_divergences: int = 0) -> bool:
        """Whether the fit passes the book's gates: divergences, r_hat and both ESS bounds.

        At most ``max_divergences`` divergent transitions are allowed (none by default);
        the command line passes :func:`elasticity_lib.reproducibility.max_divergences` of the
        number of transitions, a binomial allowance for the odd divergence of a healthy fit.
        """
        if max_divergences < 0:
            raise ValueError(f"max_divergences must be at least 0, got {max_divergences}")
        return (self.divergences <= max_divergences and self.max_rhat <= max_rhat
                and self.min_ess_bulk >= min_ess and self.min_ess_tail >= min_ess)

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
