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
    With ``noise="by_store"`` each store also has its own residual sd,
    ``log sigma_s ~ Normal(log sigma_0, tau_sigma)`` (:data:`NOISE_MODELS`).

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

The models work on centred log price and log quantity (their means over rows) and on
standardised income (``(income - c) / s`` with the mean ``c`` and sd ``s`` of the region
incomes), see :class:`~elasticity_lib.data.prepare.Centring`. On that scale the priors
(:data:`PRIORS`) mean the same thing for any data set, whatever its units, and the
population intercept and slope are nearly uncorrelated a posteriori, which the sampler
likes. Group deviations are defined at the mean log price. Everything is reported on the
original scale as deterministics: ``a0, a1, b0, b1`` (income in its own units, intercept
at log price 0), ``alpha_mean``, ``beta_mean``, ``alpha``, ``beta``. ``centre_income=False``
is the reference notebook's set-up instead: raw income and :data:`REFERENCE_PRIORS`, a
different prior, kept for benchmarks and comparisons.

The priors of the group scales (``sigma_a``, ``sigma_b`` and, for stores,
``sigma_store_a``, ``sigma_store_b``) are exponentials with the rates of :data:`PRIORS`
unless a :class:`ScalePriors` says otherwise (Exponential or HalfNormal), for prior
sensitivity checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Annotated, Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from elasticity_lib.models.likelihoods import group_information, marginal_group_loglik, normal_group_loglik, outer_marginal_correction
from elasticity_lib.data.prepare import STAT_FIELDS, Centring, GroupStats, ModelData

__all__ = ["MODEL_KINDS", "PRODUCT_MODEL_KINDS", "MIN_REGIONS", "LIKELIHOODS", "DEFAULT_LIKELIHOOD", "ModelSpec",
           "build_model", "model_spec", "PRIORS", "SHARED_FORMS", "WEIGHTED_FORMS", "spec_attributes", "fitted_kind",
           "NOISE_MODELS", "ExponentialPrior", "HalfNormalPrior", "ScalePriors"]

ModelKind = Literal["baseline", "multilevel", "correlated", "store_multilevel"]
Likelihood = Literal["rows", "sufficient", "marginal"]

MODEL_KINDS: tuple[str, ...] = ("baseline", "multilevel", "correlated", "store_multilevel")
LIKELIHOODS: tuple[str, ...] = ("rows", "sufficient", "marginal")
#: Kinds fitted to many products at once, on :class:`~elasticity_lib.models.products.ProductData`
#: (see :mod:`elasticity_lib.models.products`); their default likelihood is ``"marginal"``.
PRODUCT_MODEL_KINDS: tuple[str, ...] = ("multiproduct",)
#: The fewest regions each model can be fitted to: the models that pool regions need two
#: (see :meth:`~elasticity_lib.data.prepare.ModelData.require_enough_data`).
MIN_REGIONS: dict[str, int] = {"baseline": 1, "multilevel": 2, "correlated": 2, "store_multilevel": 2}

#: The fast form each model uses by default (chosen by ``benchmarks/inference.py``).
DEFAULT_LIKELIHOOD: dict[str, str] = {
    "baseline": "sufficient",
    "multilevel": "marginal",
    "correlated": "marginal",
    "store_multilevel": "marginal",
}

#: The (kind, likelihood) forms that ``build_model`` can build with ``shared_data`` and
#: per-region ``group_weights``, so that one compiled model is refitted on held-out splits.
WEIGHTED_FORMS: tuple[tuple[str, str], ...] = (("baseline", "sufficient"), ("multilevel", "marginal"),
                                                ("correlated", "marginal"))
#: The forms that ``shared_data=True`` builds (refittable on new data of the same shape):
#: the region-level ones above, which also take per-region ``group_weights``, and the
#: three-level model's marginal form (simulation-based calibration refits it).
SHARED_FORMS: tuple[tuple[str, str], ...] = WEIGHTED_FORMS + (("store_multilevel", "marginal"),)

#: Prior hyperparameters of the book, on the scale the models work on: log quantity and
#: log price centred at their means, income centred at its mean and divided by its sd
#: (:class:`~elasticity_lib.data.prepare.Centring`). So ``a0`` and ``b0`` are the population
#: intercept and elasticity at the mean income and the mean log price, ``a1`` and ``b1``
#: their change per standard deviation of income; scales of log-scale quantities need no
#: rescaling. Chapter 5 shows how these map to the reference notebook's priors.
PRIORS = {
    "intercept_sd": 1.5,
    "baseline_sd": 1.5,
    "a0_sd": 1.0,
    "a1_sd": 1.0,
    "b0_sd": 1.5,
    "b1_sd": 1.0,
    "region_sd_rate": 20.0,
    "correlated_region_sd": 0.1,
    "lkj_eta": 2.0,
    "store_sd_rate": 10.0,
    "sigma_rate": 2.0,
    # noise="by_store": tau_sigma, the sd of log sigma_s across stores, ~ Exponential(2)
    # (prior mean 0.5: a typical store's residual sd within a factor of about 1.6 of the
    # median store's); sigma_0, the median store's, takes the prior of the common sigma.
    "sigma_spread_rate": 2.0,
}

#: How the store-level model treats the residual sd: one ``sigma`` for every row
#: (``"common"``), or one per store drawn from a log-normal population
#: (``"by_store"``: ``log sigma_s ~ Normal(log sigma_0, tau_sigma)``).
NOISE_MODELS: tuple[str, ...] = ("common", "by_store")


class ExponentialPrior(BaseModel):
    """``Exponential(rate)`` prior of a scale (prior mean ``1 / rate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: Literal["exponential"] = "exponential"
    rate: float = Field(gt=0, allow_inf_nan=False)

    def variable(self, name: str):
        """The scale as a PyMC variable named ``name`` (inside a model context)."""
        # a NumPy float: PyTensor would store a Python float such as 3.0 as float32
        return pm.Exponential(name, np.float64(self.rate))

    def __str__(self) -> str:
        return f"Exponential({self.rate:g})"


class HalfNormalPrior(BaseModel):
    """``HalfNormal(sd)`` prior of a scale (prior mean ``sd * sqrt(2 / pi)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: Literal["halfnormal"] = "halfnormal"
    sd: float = Field(gt=0, allow_inf_nan=False)

    def variable(self, name: str):
        """The scale as a PyMC variable named ``name`` (inside a model context)."""
        return pm.HalfNormal(name, np.float64(self.sd))

    def __str__(self) -> str:
        return f"HalfNormal({self.sd:g})"


ScalePrior = Annotated[ExponentialPrior | HalfNormalPrior, Field(discriminator="family")]

#: The scales each kind has a prior for, with the :data:`PRIORS` rate of its default.
SCALE_PRIOR_DEFAULTS: dict[str, dict[str, str]] = {
    "multilevel": {"sigma_a": "region_sd_rate", "sigma_b": "region_sd_rate"},
    "store_multilevel": {"sigma_a": "region_sd_rate", "sigma_b": "region_sd_rate",
                         "sigma_store_a": "store_sd_rate", "sigma_store_b": "store_sd_rate"},
}


class ScalePriors(BaseModel):
    """Priors of the group scales of the multilevel and store-level models.

    A scale left out (``None``) keeps the book's default, ``Exponential`` with its rate
    in :data:`PRIORS` (read when the model is built). Give a prior as an
    :class:`ExponentialPrior` / :class:`HalfNormalPrior` or as a mapping, e.g.
    ``{"sigma_b": {"family": "halfnormal", "sd": 0.5}}``; an unknown scale, family or a
    non-positive parameter is an error that names the field. The scales are sds of
    effects on log quantity and log price, which have no units, so a prior means the same
    for any data set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    sigma_a: ScalePrior | None = None
    sigma_b: ScalePrior | None = None
    sigma_store_a: ScalePrior | None = None
    sigma_store_b: ScalePrior | None = None

    def resolved(self, kind: str) -> dict[str, ExponentialPrior | HalfNormalPrior]:
        """Every scale prior of model ``kind``, defaults filled in from :data:`PRIORS`."""
        defaults = SCALE_PRIOR_DEFAULTS.get(kind, {})
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        foreign = [name for name in given if name not in defaults]
        if foreign:
            raise ValueError(f"scale_priors sets {foreign}, which model kind {kind!r} does not have "
                             f"(its scales: {list(defaults) or 'none'})")
        return {name: getattr(self, name) or ExponentialPrior(rate=PRIORS[rate]) for name, rate in defaults.items()}

#: The reference notebook's priors, on the original scale (raw income, intercepts at a
#: price of 1): ``build_model(..., centre_income=False)`` uses them, to reproduce the
#: reference set-up in benchmarks and in chapter 5's comparison.
REFERENCE_PRIORS = {"baseline_sd": 1.5, "a0_sd": 0.5, "b0_sd": 0.5, "a1_sd": 0.3, "b1_sd": 0.3}


@dataclass(frozen=True)
class ModelSpec:
    """What a built model is: its kind, likelihood form and data (kept for post-processing)."""

    kind: str
    likelihood: str
    data: ModelData
    centre_income: bool = True
    noise: str = "common"
    #: the scale priors the model was built with (``None``: the defaults)
    scale_priors: dict | None = None

    @property
    def log_price_center(self) -> float:
        """The log price at which group deviations are defined (0 in the reference set-up)."""
        return self.data.centring.log_price if self.centre_income else 0.0


#: Prefix of the attributes that :func:`~elasticity_lib.inference.fit` writes on a result.
SPEC_PREFIX = "elasticity_"


def spec_attributes(spec: ModelSpec) -> dict:
    """The model's specification as plain attributes for a fitted result.

    Kind, likelihood form, income centring and the group coordinates, so that later
    steps (new regions, pricing, tables) can read what was fitted from the result itself
    instead of being told again. Values are strings, numbers and lists only, so the
    result still writes to netCDF or Zarr.
    """
    if spec.kind in PRODUCT_MODEL_KINDS:
        from elasticity_lib.models.products import product_spec_attributes

        return product_spec_attributes(spec)
    k = spec.data.centring
    attrs = {"kind": spec.kind, "likelihood": spec.likelihood, "centre_income": int(spec.centre_income),
             "log_price_center": spec.log_price_center, "log_quantity_center": k.log_quantity,
             "income_center": k.income, "income_scale": k.income_scale, "n_obs": spec.data.n_obs,
             "regions": [str(r) for r in spec.data.coords["region"]]}
    if spec.kind == "store_multilevel":
        attrs["stores"] = [str(s) for s in spec.data.coords["store"]]
        attrs["noise"] = spec.noise
    if spec.scale_priors is not None:
        attrs["scale_priors"] = json.dumps({k: p.model_dump() for k, p in spec.scale_priors.items()})
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


def recorded(result, name: str):
    """An attribute that :func:`~elasticity_lib.inference.fit` recorded on a result."""
    attrs = dict(getattr(result, "attrs", {}))
    if isinstance(result, xr.DataTree) and "posterior" in result.children:
        attrs = {**result["posterior"].attrs, **attrs}
    if SPEC_PREFIX + name not in attrs:
        raise ValueError(f"the result does not record its model's {name} (it was not made by elasticity_lib.fit)")
    return attrs[SPEC_PREFIX + name]


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


def _centring(data: ModelData, shared: bool = False, weights=None) -> tuple[Centring, Centring]:
    """The centring constants as numbers, and as the model uses them.

    With ``shared`` the model holds them as scalar ``pm.Data`` (``centre_log_price``, ...),
    so that a refit on other data can be centred on that data. ``weights`` centres on the
    regions with a positive weight only.
    """
    k = data.centring if weights is None else Centring.of(data.region_stats, data.income, weights)
    if not shared:
        return k, k
    return k, Centring(*(pm.Data(f"centre_{f.name}", getattr(k, f.name)) for f in fields(Centring)))


def to_original_covariance(s11, s12, s22, log_price_center):
    """Covariance of (intercept at log price 0, slope) from that of (intercept at the centre, slope).

    A group's intercept at log price 0 is ``alpha_c - x̄ beta``: a linear map with matrix
    ``[[1, -x̄], [0, 1]]``, so the covariance becomes ``T S T'``.
    """
    x = log_price_center
    return s11 - 2 * x * s12 + x**2 * s22, s12 - x * s22, s22


def _income_lines(data: ModelData, dims: str = "region", centre: bool = True,
                  centring: tuple[Centring, Centring] | None = None):
    """Population lines of the intercept and the elasticity in income, on the original scale.

    Returns ``(alpha_mean, beta_mean, x̄)``: the region means of the intercept (at log
    price 0, log quantity in the data's units) and of the elasticity, and the log price
    at which the region deviations are defined. The sampler works on the centred scale
    (:data:`PRIORS`); ``a0, a1, b0, b1`` are reported on the original scale (income in
    its own units, intercept at log price 0) as deterministics.

    ``centre=False`` is the reference set-up: ``a0, a1, b0, b1`` sampled directly on raw
    income with the reference's priors (:data:`REFERENCE_PRIORS`), deviations at log
    price 0.
    """
    if not centre:
        a1 = pm.Normal("a1", 0.0, REFERENCE_PRIORS["a1_sd"])
        b1 = pm.Normal("b1", 0.0, REFERENCE_PRIORS["b1_sd"])
        a0 = pm.Normal("a0", 0.0, REFERENCE_PRIORS["a0_sd"])
        b0 = pm.Normal("b0", 0.0, REFERENCE_PRIORS["b0_sd"])
        income = pm.Data("income", data.income, dims=dims)
        m_alpha = pm.Deterministic("alpha_mean", a0 + a1 * income, dims=dims)
        m_beta = pm.Deterministic("beta_mean", b0 + b1 * income, dims=dims)
        return m_alpha, m_beta, 0.0
    numbers, k = centring if centring is not None else _centring(data)
    a0c = pm.Normal("a0_centred", 0.0, PRIORS["a0_sd"])
    a1s = pm.Normal("a1_std", 0.0, PRIORS["a1_sd"])
    b0c = pm.Normal("b0_centred", 0.0, PRIORS["b0_sd"])
    b1s = pm.Normal("b1_std", 0.0, PRIORS["b1_sd"])
    b1 = pm.Deterministic("b1", b1s / k.income_scale)
    pm.Deterministic("b0", b0c - k.income * b1)
    a1 = pm.Deterministic("a1", (a1s - k.log_price * b1s) / k.income_scale)
    pm.Deterministic("a0", k.log_quantity + a0c - k.log_price * b0c - k.income * a1)
    income_std = pm.Data("income_std", (data.income - numbers.income) / numbers.income_scale, dims=dims)
    m_beta = pm.Deterministic("beta_mean", b0c + b1s * income_std, dims=dims)
    m_alpha = pm.Deterministic("alpha_mean", k.log_quantity + a0c + a1s * income_std - k.log_price * m_beta, dims=dims)
    return m_alpha, m_beta, k.log_price


def _row_likelihood(data: ModelData, alpha, beta, sigma, group_idx: np.ndarray, sigma_by_group: bool = False) -> None:
    log_price = pm.Data("log_price", data.log_price, dims="obs")
    idx = pm.Data("group_idx", group_idx, dims="obs")
    pm.Normal("log_quantity", mu=alpha[idx] + beta[idx] * log_price, sigma=sigma[idx] if sigma_by_group else sigma,
              observed=data.log_quantity, dims="obs")


def _sufficient_likelihood(stats: GroupStats, alpha, beta, sigma) -> None:
    pm.Potential("loglik", normal_group_loglik(pt, _as_tensor_stats(stats), alpha, beta, sigma).sum())


def _baseline(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
              weights=None) -> None:
    beta = pm.Normal("beta", 0.0, PRIORS["baseline_sd"], dims="region")
    if centre_income:
        _, k = _centring(data, shared, weights)
        alpha_c = pm.Normal("alpha_centred", 0.0, PRIORS["intercept_sd"], dims="region")
        alpha = pm.Deterministic("alpha", k.log_quantity + alpha_c - k.log_price * beta, dims="region")
    else:
        alpha = pm.Normal("alpha", 0.0, REFERENCE_PRIORS["baseline_sd"], dims="region")
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    elif likelihood == "sufficient":
        stats = _group_stats(data.region_stats, "region", shared)
        loglik = normal_group_loglik(pt, stats, alpha, beta, sigma)
        pm.Potential("loglik", _weighted_sum(loglik, weights, "region", shared))
    else:
        raise ValueError("the baseline model has no group-level prior to marginalise: use 'rows' or 'sufficient'")


def _scales(scale_priors: dict | None, *names: str) -> list:
    """The named group scales with their priors (the :data:`PRIORS` exponentials by default)."""
    priors = scale_priors or {}
    # np.float64: a Python float such as 20.0 becomes a float32 constant in PyTensor, and its
    # log in the density is then off by about 1e-7
    return [priors[n].variable(n) if n in priors else pm.Exponential(n, np.float64(PRIORS[rate]))
            for n, rate in ((n, SCALE_PRIOR_DEFAULTS["store_multilevel"][n]) for n in names)]


def _residual_sd(noise: str):
    """The residual sd: one ``sigma``, or one per store (``noise="by_store"``, dims ``store``).

    Per store, ``log sigma_s ~ Normal(log sigma_0, tau_sigma)``, that is
    ``log sigma_s = log sigma_0 + tau_sigma z_s`` with ``z_s ~ N(0, 1)``: the residual
    sds of log quantity have no units, so the priors of ``sigma_0`` (that of the common
    sigma) and ``tau_sigma`` (:data:`PRIORS`) mean the same for any data. The sampler
    sees ``log_sigma`` itself (the centred form) because each store's sd is learnt from
    its own rows: on the cigarette panel (30 rows per state) the form in ``z_s`` left
    ``sigma_0`` with a bulk ESS of 284 of 4,000 draws, the centred form 9,100.
    """
    if noise == "common":
        return pm.Exponential("sigma", PRIORS["sigma_rate"])
    sigma_0 = pm.Exponential("sigma_0", PRIORS["sigma_rate"])
    tau = pm.Exponential("tau_sigma", PRIORS["sigma_spread_rate"])
    log_sigma = pm.Normal("log_sigma", pt.log(sigma_0), tau, dims="store")
    return pm.Deterministic("sigma", pt.exp(log_sigma), dims="store")


def _multilevel(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                weights=None, scale_priors: dict | None = None) -> None:
    centring = _centring(data, shared, weights) if centre_income else None
    m_alpha, m_beta, x_c = _income_lines(data, centre=centre_income, centring=centring)
    sigma_a, sigma_b = _scales(scale_priors, "sigma_a", "sigma_b")
    sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
    if likelihood == "marginal":
        stats = _group_stats(data.region_stats, "region", shared)
        s11, s12, s22 = to_original_covariance(sigma_a**2, 0.0, sigma_b**2, x_c)
        loglik = marginal_group_loglik(pt, stats, m_alpha, m_beta, s11, s12, s22, sigma)
        pm.Potential("loglik", _weighted_sum(loglik, weights, "region", shared))
        return
    z_a = pm.Normal("z_a", 0.0, 1.0, dims="region")
    z_b = pm.Normal("z_b", 0.0, 1.0, dims="region")
    beta = pm.Deterministic("beta", m_beta + sigma_b * z_b, dims="region")
    alpha = pm.Deterministic("alpha", m_alpha + sigma_a * z_a - x_c * sigma_b * z_b, dims="region")
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    else:
        _sufficient_likelihood(data.region_stats, alpha, beta, sigma)


def _correlated(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                weights=None) -> None:
    centring = _centring(data, shared, weights) if centre_income else None
    m_alpha, m_beta, x_c = _income_lines(data, centre=centre_income, centring=centring)
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
        stats = _group_stats(data.region_stats, "region", shared)
        s11, s12, s22 = to_original_covariance(cov[0, 0], cov[0, 1], cov[1, 1], x_c)
        loglik = marginal_group_loglik(pt, stats, m_alpha, m_beta, s11, s12, s22, sigma)
        pm.Potential("loglik", _weighted_sum(loglik, weights, "region", shared))
        return
    z = pm.Normal("z", 0.0, 1.0, dims=("region", "effect"))
    dev = z @ chol.T
    beta = pm.Deterministic("beta", m_beta + dev[:, 1], dims="region")
    alpha = pm.Deterministic("alpha", m_alpha + dev[:, 0] - x_c * dev[:, 1], dims="region")
    if likelihood == "rows":
        _row_likelihood(data, alpha, beta, sigma, data.region_idx)
    else:
        _sufficient_likelihood(data.region_stats, alpha, beta, sigma)


def _store_multilevel(data: ModelData, likelihood: str, centre_income: bool = True, shared: bool = False,
                      weights=None, scale_priors: dict | None = None, noise: str = "common") -> None:
    centring = _centring(data, shared) if centre_income else None
    m_alpha, m_beta, x_c = _income_lines(data, centre=centre_income, centring=centring)
    sigma_a, sigma_b = _scales(scale_priors, "sigma_a", "sigma_b")
    region_of_store = data.store_region_idx
    if likelihood == "marginal":
        # Both levels integrated out: each store's effects given its region's, then each
        # region's given the income lines (see likelihoods.group_information). Only the
        # population parameters and the scales are sampled.
        # sigma is one number or one per store: the store terms below are elementwise
        sigma_store_a, sigma_store_b = _scales(scale_priors, "sigma_store_a", "sigma_store_b")
        sigma = _residual_sd(noise)
        stats = _group_stats(data.store_stats, "store", shared)
        m_a, m_b = m_alpha[region_of_store], m_beta[region_of_store]
        t11, t12, t22 = to_original_covariance(sigma_store_a**2, 0.0, sigma_store_b**2, x_c)
        s11, s12, s22 = to_original_covariance(sigma_a**2, 0.0, sigma_b**2, x_c)
        stores = marginal_group_loglik(pt, stats, m_a, m_b, t11, t12, t22, sigma)
        info = group_information(stats, m_a, m_b, t11, t12, t22, sigma)
        per_region = [pt.inc_subtensor(pt.zeros(data.n_regions)[region_of_store], v) for v in info]
        regions = outer_marginal_correction(pt, *per_region, s11, s12, s22)
        pm.Potential("loglik", stores.sum() + regions.sum())
        return
    z_a = pm.Normal("z_a", 0.0, 1.0, dims="region")
    z_b = pm.Normal("z_b", 0.0, 1.0, dims="region")
    beta = pm.Deterministic("beta", m_beta + sigma_b * z_b, dims="region")
    alpha = pm.Deterministic("alpha", m_alpha + sigma_a * z_a - x_c * sigma_b * z_b, dims="region")
    sigma_store_a, sigma_store_b = _scales(scale_priors, "sigma_store_a", "sigma_store_b")
    sigma = _residual_sd(noise)
    zs_a = pm.Normal("z_store_a", 0.0, 1.0, dims="store")
    zs_b = pm.Normal("z_store_b", 0.0, 1.0, dims="store")
    beta_s = pm.Deterministic("beta_store", beta[region_of_store] + sigma_store_b * zs_b, dims="store")
    alpha_s = pm.Deterministic("alpha_store", alpha[region_of_store] + sigma_store_a * zs_a
                               - x_c * sigma_store_b * zs_b, dims="store")
    if likelihood == "rows":
        _row_likelihood(data, alpha_s, beta_s, sigma, data.store_idx, sigma_by_group=noise == "by_store")
    else:
        _sufficient_likelihood(data.store_stats, alpha_s, beta_s, sigma)


_BUILDERS = {
    "baseline": _baseline,
    "multilevel": _multilevel,
    "correlated": _correlated,
    "store_multilevel": _store_multilevel,
}


def build_model(kind: ModelKind, data: ModelData, likelihood: Likelihood | None = None, *,
                centre_income: bool = True, shared_data: bool = False, group_weights=None,
                noise: str = "common", scale_priors: ScalePriors | dict | None = None,
                store_varying=None) -> pm.Model:
    """Build one of the book's models on prepared data.

    Parameters
    ----------
    kind
        One of :data:`MODEL_KINDS`, or ``"multiproduct"`` (:data:`PRODUCT_MODEL_KINDS`) on
        data from :func:`~elasticity_lib.models.products.prepare_product_data`, which builds
        :func:`~elasticity_lib.models.products.build_product_model` (``shared_data`` and
        ``store_varying`` apply; ``centre_income`` and ``group_weights`` do not).
    data
        Model inputs from :func:`~elasticity_lib.data.prepare.prepare_data`.
    likelihood
        The form of the same model (see the module docstring); ``None`` takes the fast
        default of :data:`DEFAULT_LIKELIHOOD`. Use ``"rows"`` for prior and posterior
        predictive sampling, which needs an observed variable.
    centre_income
        ``False`` is the reference set-up: ``a0, a1, b0, b1`` sampled on raw income with
        :data:`REFERENCE_PRIORS` and deviations at log price 0, kept for benchmarks and
        comparisons. It is a different prior, so a different posterior.
    shared_data
        Hold the group statistics (``stat_n``, ``stat_mx``, ...: per region, or per store
        for ``store_multilevel``), the centring constants and the centred incomes as
        ``pm.Data``, so that a compiled model can be refitted on other data of the same
        shape (the fast forms of :data:`SHARED_FORMS`).
    group_weights
        One weight per region multiplying its log-likelihood term (``group_weight``,
        shared with ``shared_data``): a region with weight 0 contributes nothing, so the
        fit is the fit without its rows (the forms of :data:`SHARED_FORMS`).
    noise
        ``"common"`` (one residual sd) or, for ``store_multilevel`` only, ``"by_store"``:
        a residual sd per store from a log-normal population (:data:`NOISE_MODELS`). The
        posterior's ``sigma`` then has dims ``store``.
    scale_priors
        Priors of the group scales (:class:`ScalePriors` or a mapping validated into one),
        for the multilevel and store-level models; ``None`` keeps the :data:`PRIORS`
        exponentials.
    store_varying
        ``"multiproduct"`` only: the coefficients that vary by store (see
        :func:`~elasticity_lib.models.products.build_product_model`); ``None``: all of them.
    """
    if not isinstance(centre_income, bool):
        raise ValueError(f"centre_income must be True or False, got {centre_income!r}")
    if kind in PRODUCT_MODEL_KINDS:
        from elasticity_lib.models.products import build_product_model

        if group_weights is not None or not centre_income:
            raise ValueError(f"group_weights and centre_income=False do not apply to kind={kind!r}")
        return build_product_model(data, likelihood, shared_data=shared_data, store_varying=store_varying)
    if kind not in _BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {list(MODEL_KINDS + PRODUCT_MODEL_KINDS)}")
    if store_varying is not None:
        raise ValueError(f"store_varying applies to kind='multiproduct' only, not to kind={kind!r}")
    likelihood = likelihood or DEFAULT_LIKELIHOOD[kind]
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
    if not isinstance(data, ModelData):
        raise TypeError(f"data must be ModelData from prepare_data, got {type(data).__name__}")
    if shared_data and (kind, likelihood) not in SHARED_FORMS:
        raise ValueError(f"shared_data applies to the fast forms {list(SHARED_FORMS)} only, "
                         f"not to kind={kind!r} with likelihood={likelihood!r}")
    if group_weights is not None and (kind, likelihood) not in WEIGHTED_FORMS:
        raise ValueError(f"group_weights apply to the region-level fast forms {list(WEIGHTED_FORMS)} only, "
                         f"not to kind={kind!r} with likelihood={likelihood!r}")
    if group_weights is not None:
        group_weights = np.asarray(group_weights, dtype=float)
        if group_weights.shape != (data.n_regions,) or not np.isfinite(group_weights).all() or (group_weights < 0).any():
            raise ValueError(f"group_weights must be {data.n_regions} finite, non-negative numbers (one per region), "
                             f"got shape {group_weights.shape}")
    if noise not in NOISE_MODELS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {list(NOISE_MODELS)}")
    if noise != "common" and kind != "store_multilevel":
        raise ValueError(f"noise={noise!r} applies to the store_multilevel model only, not to kind={kind!r}")
    options = {}
    resolved = None
    if scale_priors is not None or kind in SCALE_PRIOR_DEFAULTS:
        if not isinstance(scale_priors, ScalePriors):
            scale_priors = ScalePriors.model_validate(scale_priors or {})
        resolved = scale_priors.resolved(kind)  # an error for scales the kind does not have
    if kind in SCALE_PRIOR_DEFAULTS:
        options["scale_priors"] = resolved
    else:
        resolved = None
    if kind == "store_multilevel":
        options["noise"] = noise
    coords = {"region": data.coords["region"], "effect": ["intercept", "elasticity"]}
    if kind == "store_multilevel":
        coords["store"] = data.coords["store"]
    if likelihood == "rows":
        coords["obs"] = data.coords["obs"]
    with pm.Model(coords=coords) as model:
        _BUILDERS[kind](data, likelihood, centre_income, shared_data, group_weights, **options)
    model.elasticity_spec = ModelSpec(kind=kind, likelihood=likelihood, data=data, centre_income=centre_income,
                                      noise=noise, scale_priors=resolved)
    return model
