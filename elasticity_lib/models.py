"""The book's models of log quantity on log price, as PyMC models.

Every model has the form ``log q ~ Normal(alpha[g] + beta[g] * log p, sigma)`` where ``g``
is a row's region (or store). They differ in how the group intercepts ``alpha`` and
elasticities ``beta`` are tied together:

``baseline``
    No pooling: each region has its own ``alpha, beta ~ Normal(0, 1.5)``.
``multilevel``
    Partial pooling: region effects scatter around straight lines in median income,
    ``alpha_j = a0 + a1 income_j + sigma_a z_a``, ``beta_j = b0 + b1 income_j + sigma_b z_b``.
``correlated``
    As ``multilevel``, but the region deviations of intercept and slope are jointly
    Normal with an LKJ(2) prior on their correlation.
``store_multilevel``
    Three levels: stores scatter around their region, regions around the income lines.

Each model can be written with three likelihoods that define the same posterior:

``"rows"``
    One Normal term per row: the textbook form, used for prior and posterior predictive
    checks and as the reference in tests.
``"sufficient"``
    The same likelihood evaluated on per-group statistics (count, means, centred sums):
    its cost does not depend on the number of rows.
``"marginal"``
    The Gaussian group effects are integrated out analytically (for ``store_multilevel``
    both the store and the region level), which removes the funnel between the group
    effects and their scale. The effects are drawn afterwards from their exact
    conditional posterior (:func:`elasticity_lib.inference.fit` does this).

Income is centred inside the models at the mean region income ``c``: the sampler works
with ``a0_centred = a0 + a1 c`` (and ``b0_centred``), whose posterior is nearly
uncorrelated with the slope, while the priors of the book stay exactly as stated on the
original scale (``a0 = a0_centred - a1 c ~ Normal(0, 0.5)`` independently of ``a1``).
``a0`` and ``b0`` are reported on the original scale as deterministics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .likelihoods import group_information, marginal_group_loglik, normal_group_loglik, outer_marginal_correction
from .prepare import STAT_FIELDS, GroupStats, ModelData

__all__ = ["MODEL_KINDS", "MIN_REGIONS", "LIKELIHOODS", "DEFAULT_LIKELIHOOD", "ModelSpec", "build_model", "model_spec",
           "PRIORS", "spec_attributes", "fitted_kind"]

ModelKind = Literal["baseline", "multilevel", "correlated", "store_multilevel"]
Likelihood = Literal["rows", "sufficient", "marginal"]

MODEL_KINDS: tuple[str, ...] = ("baseline", "multilevel", "correlated", "store_multilevel")
LIKELIHOODS: tuple[str, ...] = ("rows", "sufficient", "marginal")
#: The fewest regions each model can be fitted to: the models that pool regions need two
#: (see :meth:`~elasticity_lib.prepare.ModelData.require_enough_data`).
MIN_REGIONS: dict[str, int] = {"baseline": 1, "multilevel": 2, "correlated": 2, "store_multilevel": 2}

#: The fast form each model uses by default (chosen by ``benchmarks/inference.py``).
DEFAULT_LIKELIHOOD: dict[str, str] = {
    "baseline": "sufficient",
    "multilevel": "marginal",
    "correlated": "marginal",
    "store_multilevel": "marginal",
}

#: Prior hyperparameters of the book (chapters 4-6, after the reference notebook), shared
#: by all models that use them.
PRIORS = {
    "baseline_sd": 1.5,
    "a0_sd": 0.5,
    "b0_sd": 0.5,
    "a1_sd": 0.3,
    "b1_sd": 0.3,
    "region_sd_rate": 20.0,
    "correlated_region_sd": 0.1,
    "lkj_eta": 2.0,
    "store_sd_rate": 10.0,
    "sigma_rate": 2.0,
}


@dataclass(frozen=True)
class ModelSpec:
    """What a built model is: its kind, likelihood form and data (kept for post-processing)."""

    kind: str
    likelihood: str
    data: ModelData
    centre_income: bool = True


#: Prefix of the attributes that :func:`~elasticity_lib.inference.fit` writes on a result.
SPEC_PREFIX = "elasticity_"


def spec_attributes(spec: ModelSpec) -> dict:
    """The model's specification as plain attributes for a fitted result.

    Kind, likelihood form, income centring and the group coordinates, so that later
    steps (new regions, pricing, tables) can read what was fitted from the result itself
    instead of being told again. Values are strings, numbers and lists only, so the
    result still writes to netCDF or Zarr.
    """
    attrs = {"kind": spec.kind, "likelihood": spec.likelihood, "centre_income": int(spec.centre_income),
             "income_center": spec.data.income_center, "n_obs": spec.data.n_obs,
             "regions": [str(r) for r in spec.data.coords["region"]]}
    if spec.kind == "store_multilevel":
        attrs["stores"] = [str(s) for s in spec.data.coords["store"]]
    return {SPEC_PREFIX + k: v for k, v in attrs.items()}


def fitted_kind(result) -> str:
    """The model kind recorded on a fitted result (a ``DataTree`` or its posterior ``Dataset``)."""
    attrs = dict(getattr(result, "attrs", {}))
    if isinstance(result, xr.DataTree) and "posterior" in result.children:
        attrs = {**result["posterior"].attrs, **attrs}
    kind = attrs.get(SPEC_PREFIX + "kind")
    if kind is None:
        raise ValueError("the result does not record its model kind (it was not made by elasticity_lib.fit); "
                         "pass kind= explicitly")
    return str(kind)


def model_spec(model: pm.Model) -> ModelSpec:
    """The :class:`ModelSpec` of a model made by :func:`build_model`."""
    spec = getattr(model, "elasticity_spec", None)
    if spec is None:
        raise ValueError("this model was not made by elasticity_lib.build_model")
    return spec


def region_cholesky(posterior) -> tuple:
    """The entries ``l00, l10, l11`` of the correlated model's Cholesky factor, per draw.

    PyMC stores the factor ``L`` of :class:`pymc.LKJCholeskyCov` as its packed lower
    triangle ``[l00, l10, l11]`` (``chol_region``); a region's deviation is ``L z``, so its
    covariance is ``[[l00², l00 l10], [l00 l10, l10² + l11²]]``.
    """
    chol = posterior["chol_region"]
    return tuple(chol.isel({chol.dims[-1]: i}, drop=True) for i in range(3))


def _as_tensor_stats(stats: GroupStats) -> GroupStats:
    return GroupStats(*(pt.as_tensor_variable(np.asarray(getattr(stats, f), dtype=float))
                        for f in STAT_FIELDS))


def _group_stats(stats: GroupStats, dims: str, shared: bool) -> GroupStats:
    """The statistics as model constants or, with ``shared``, as ``pm.Data`` named ``stat_<field>``.

    Shared statistics let one compiled model be refitted on other data of the same shape
    (nutpie's ``with_data`` or :func:`pymc.set_data`): the hold-out refits and the
    simulation-based calibration do this.
    """
    if not shared:
        return _as_tensor_stats(stats)
    return GroupStats(*(pm.Data(f"stat_{f}", np.asarray(getattr(stats, f), dtype=float), dims=dims)
                        for f in STAT_FIELDS))


def _weighted_sum(loglik, weights, dims: str, shared: bool):
    """Sum of per-group log-likelihoods, each times its weight (``group_weight``) if given."""
    if weights is None:
        return loglik.sum()
    w = pm.Data("group_weight", weights, dims=dims) if shared else pt.as_tensor_variable(weights)
    return (w * loglik).sum()


def _income_lines(data: ModelData, dims: str = "region", centre: bool = True):
    """Population intercept and slope lines in centred income; book parameters as deterministics.

    ``centre=False`` samples ``a0`` and ``b0`` directly against raw income, as the
    reference notebook did (same prior, same posterior, harder geometry): kept for the
    benchmark of the reference set-up.
    """
    c = data.income_center
    a1 = pm.Normal("a1", 0.0, PRIORS["a1_sd"])
    b1 = pm.Normal("b1", 0.0, PRIORS["b1_sd"])
    if not centre:
        a0 = pm.Normal("a0", 0.0, PRIORS["a0_sd"])
        b0 = pm.Normal("b0", 0.0, PRIORS["b0_sd"])
        income = pm.Data("income", data.income, dims=dims)
        m_alpha = pm.Deterministic("alpha_mean", a0 + a1 * income, dims=dims)
        m_beta = pm.Deterministic("beta_mean", b0 + b1 * income, dims=dims)
        return m_alpha, m_beta
    a0_centred = pm.Normal("a0_centred", mu=c * a1, sigma=PRIORS["a0_sd"])
    b0_centred = pm.Normal("b0_centred", mu=c * b1, sigma=PRIORS["b0_sd"])
    pm.Deterministic("a0", a0_centred - c * a1)
    pm.Deterministic("b0", b0_centred - c * b1)
    income_c = pm.Data("income_centred", data.income - c, dims=dims)
    m_alpha = pm.Deterministic("alpha_mean", a0_centred + a1 * income_c, dims=dims)
    m_beta = pm.Deterministic("beta_mean", b0_centred + b1 * income_c, dims=dims)
    return m_alpha, m_beta


def _row_likelihood(data: ModelData, alpha, beta, sigma, group_idx: np.ndarray) -> None:
    log_price = pm.Data("log_price", data.log_price, dims="obs")
    idx = pm.Data("group_idx", group_idx, dims="obs")
    pm.Normal("log_quantity", mu=alpha[idx] + beta[idx] * log_price, sigma=sigma,
              observed=data.log_quantity, dims="obs")


def _sufficient_likelihood(stats: GroupStats, alpha, beta, sigma) -> None:
    pm.Potential("loglik", normal_group_loglik(pt, _as_tensor_stats(stats), alpha, beta, sigma).sum())


def _baseline(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
              weights=None) -> None:
    alpha = pm.Normal("alpha", 0.0, PRIORS["baseline_sd"], dims="region")
    beta = pm.Normal("beta", 0.0, PRIORS["baseline_sd"], dims="region")
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    elif likelihood == "sufficient":
        _sufficient_likelihood(data.region_stats, alpha, beta, sigma)
    else:
        raise ValueError("the baseline model has no group-level prior to marginalise: use 'rows' or 'sufficient'")


def _multilevel(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                weights=None) -> None:
    m_alpha, m_beta = _income_lines(data, centre=centre_income)
    sigma_a = pm.Exponential("sigma_a", PRIORS["region_sd_rate"])
    sigma_b = pm.Exponential("sigma_b", PRIORS["region_sd_rate"])
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    if likelihood == "marginal":
        stats = _group_stats(data.region_stats, "region", shared)
        loglik = marginal_group_loglik(pt, stats, m_alpha, m_beta, sigma_a**2, 0.0, sigma_b**2, sigma)
        pm.Potential("loglik", _weighted_sum(loglik, weights, "region", shared))
        return
    z_a = pm.Normal("z_a", 0.0, 1.0, dims="region")
    z_b = pm.Normal("z_b", 0.0, 1.0, dims="region")
    alpha = pm.Deterministic("alpha", m_alpha + sigma_a * z_a, dims="region")
    beta = pm.Deterministic("beta", m_beta + sigma_b * z_b, dims="region")
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    else:
        _sufficient_likelihood(data.region_stats, alpha, beta, sigma)


def _correlated(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                weights=None) -> None:
    m_alpha, m_beta = _income_lines(data, centre=centre_income)
    chol, corr, stds = pm.LKJCholeskyCov(
        "chol_region", n=2, eta=PRIORS["lkj_eta"],
        sd_dist=pm.HalfNormal.dist(PRIORS["correlated_region_sd"], shape=2), compute_corr=True,
    )
    pm.Deterministic("sigma_a", stds[0])
    pm.Deterministic("sigma_b", stds[1])
    pm.Deterministic("rho", corr[0, 1])
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    if likelihood == "marginal":
        cov = chol @ chol.T
        stats = _as_tensor_stats(data.region_stats)
        pm.Potential("loglik", marginal_group_loglik(pt, stats, m_alpha, m_beta, cov[0, 0], cov[0, 1], cov[1, 1], sigma).sum())
        return
    z = pm.Normal("z", 0.0, 1.0, dims=("region", "effect"))
    dev = z @ chol.T
    alpha = pm.Deterministic("alpha", m_alpha + dev[:, 0], dims="region")
    beta = pm.Deterministic("beta", m_beta + dev[:, 1], dims="region")
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    else:
        _sufficient_likelihood(data.region_stats, alpha, beta, sigma)


def _store_multilevel(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                      weights=None) -> None:
    m_alpha, m_beta = _income_lines(data, centre=centre_income)
    sigma_a = pm.Exponential("sigma_a", PRIORS["region_sd_rate"])
    sigma_b = pm.Exponential("sigma_b", PRIORS["region_sd_rate"])
    region_of_store = data.store_region_idx
    if likelihood == "marginal":
        # Both levels integrated out: each store's effects given its region's, then each
        # region's given the income lines (see likelihoods.group_information). Only the
        # population parameters and the scales are sampled.
        sigma_store_a = pm.Exponential("sigma_store_a", PRIORS["store_sd_rate"])
        sigma_store_b = pm.Exponential("sigma_store_b", PRIORS["store_sd_rate"])
        sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
        stats = _as_tensor_stats(data.store_stats)
        m_a, m_b = m_alpha[region_of_store], m_beta[region_of_store]
        t11, t22 = sigma_store_a**2, sigma_store_b**2
        stores = marginal_group_loglik(pt, stats, m_a, m_b, t11, 0.0, t22, sigma)
        info = group_information(stats, m_a, m_b, t11, 0.0, t22, sigma)
        per_region = [pt.inc_subtensor(pt.zeros(data.n_regions)[region_of_store], v) for v in info]
        regions = outer_marginal_correction(pt, *per_region, sigma_a**2, 0.0, sigma_b**2)
        pm.Potential("loglik", stores.sum() + regions.sum())
        return
    z_a = pm.Normal("z_a", 0.0, 1.0, dims="region")
    z_b = pm.Normal("z_b", 0.0, 1.0, dims="region")
    alpha = pm.Deterministic("alpha", m_alpha + sigma_a * z_a, dims="region")
    beta = pm.Deterministic("beta", m_beta + sigma_b * z_b, dims="region")
    sigma_store_a = pm.Exponential("sigma_store_a", PRIORS["store_sd_rate"])
    sigma_store_b = pm.Exponential("sigma_store_b", PRIORS["store_sd_rate"])
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    zs_a = pm.Normal("z_store_a", 0.0, 1.0, dims="store")
    zs_b = pm.Normal("z_store_b", 0.0, 1.0, dims="store")
    alpha_s = pm.Deterministic("alpha_store", alpha[region_of_store] + sigma_store_a * zs_a, dims="store")
    beta_s = pm.Deterministic("beta_store", beta[region_of_store] + sigma_store_b * zs_b, dims="store")
    if likelihood == "rows":
        _row_likelihood(data, alpha_s, beta_s, sigma, data.store_idx)
    else:
        _sufficient_likelihood(data.store_stats, alpha_s, beta_s, sigma)


_BUILDERS = {
    "baseline": _baseline,
    "multilevel": _multilevel,
    "correlated": _correlated,
    "store_multilevel": _store_multilevel,
}


def build_model(kind: ModelKind, data: ModelData, likelihood: Likelihood | None = None, *,
                centre_income: bool = True, shared_data: bool = False, group_weights=None) -> pm.Model:
    """Build one of the book's models on prepared data.

    Parameters
    ----------
    kind
        One of :data:`MODEL_KINDS`.
    data
        Model inputs from :func:`~elasticity_lib.prepare.prepare_data`.
    likelihood
        The form of the same model (see the module docstring); ``None`` takes the fast
        default of :data:`DEFAULT_LIKELIHOOD`. Use ``"rows"`` for prior and posterior
        predictive sampling, which needs an observed variable.
    centre_income
        ``False`` samples ``a0``, ``b0`` on raw income (the reference set-up, kept for
        benchmarks); the priors and the posterior are the same either way.
    shared_data
        Hold the region statistics (``stat_n``, ``stat_mx``, ...) and the centred incomes
        as ``pm.Data``, so that a compiled model can be refitted on other data of the same
        shape (multilevel model, marginal form).
    group_weights
        One weight per region multiplying its log-likelihood term (``group_weight``,
        shared with ``shared_data``): a region with weight 0 contributes nothing, so the
        fit is the fit without its rows (multilevel model, marginal form).
    """
    if not isinstance(centre_income, bool):
        raise ValueError(f"centre_income must be True or False, got {centre_income!r}")
    if kind not in _BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {list(MODEL_KINDS)}")
    likelihood = likelihood or DEFAULT_LIKELIHOOD[kind]
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
    if not isinstance(data, ModelData):
        raise TypeError(f"data must be ModelData from prepare_data, got {type(data).__name__}")
    if (shared_data or group_weights is not None) and (kind, likelihood) != ("multilevel", "marginal"):
        raise ValueError("shared_data and group_weights apply to the multilevel model's marginal form only, "
                         f"not to kind={kind!r} with likelihood={likelihood!r}")
    if group_weights is not None:
        group_weights = np.asarray(group_weights, dtype=float)
        if group_weights.shape != (data.n_regions,) or not np.isfinite(group_weights).all() or (group_weights < 0).any():
            raise ValueError(f"group_weights must be {data.n_regions} finite, non-negative numbers (one per region), "
                             f"got shape {group_weights.shape}")
    coords = {"region": data.coords["region"], "effect": ["intercept", "elasticity"]}
    if kind == "store_multilevel":
        coords["store"] = data.coords["store"]
    if likelihood == "rows":
        coords["obs"] = data.coords["obs"]
    with pm.Model(coords=coords) as model:
        _BUILDERS[kind](data, likelihood, centre_income, shared_data, group_weights)
    model.elasticity_spec = ModelSpec(kind=kind, likelihood=likelihood, data=data, centre_income=centre_income)
    return model
