"""Elasticities when prices respond to demand: controls, instruments and a time hold-out.

When a price setter moves prices with the demand he expects, log price and the demand
shock are correlated, and a regression of log quantity on log price (every model of the
book) mixes the causal effect of price with that correlation. Two remedies, both here:

**Controls.** Regressors a retailer has: the ``promotion`` flag, the ``lagged_promotion``
flag (the post-promotion dip) and ``season`` effects (one per season index). They remove
the part of the correlation that runs through what they measure, and nothing else.

**An instrument.** A variable that moves price but not demand (a cost shifter). The
Bayesian instrumental-variable model writes price and quantity jointly,

``log p_i = k_p + pi0[r_i] + pi_z z_i + W_i gamma_price + v_i``
``log q_i = alpha[r_i] + beta[r_i] log p_i + W_i gamma + u_i``
``(u_i, v_i) ~ Normal(0, [[sigma², rho sigma sigma_price], [., sigma_price²]])``

The instrument ``z`` (standardised) enters the price equation only; the correlation
``rho`` absorbs the dependence between the shocks, so ``beta`` is the causal elasticity
(Rossi 2014; the likelihood-based treatment of Villas-Boas and Winer 1999).

The model is parameterised in its **control-function** form: demand given price is

``log q_i = alpha[r_i] + beta[r_i] log p_i + W_i gamma + kappa v_i + e_i``, ``e_i ~ Normal(0, sigma_e)``,

with ``v_i`` the price equation's residual, ``kappa = rho sigma / sigma_price`` and
``sigma_e = sigma sqrt(1 - rho²)``. This is the bivariate normal model above, written as
the price equation times demand given price (tested against SciPy); ``sigma`` and
``rho`` are deterministic functions of ``(kappa, sigma_e, sigma_price)``.

Why this form and a start: the joint likelihood has a second mode, hundreds of
log-density units below the first, where ``kappa`` and ``pi_z`` both have the wrong sign
(their product, the instrument's effect on demand given price, keeps its value),
``pi_z`` is near 0, ``rho`` near ±1 and the elasticity of the wrong sign. A chain
started there never leaves it: on the chapter's market, sampled in the ``(sigma, rho)``
form with an LKJ prior from random starts, one chain in four did at an anticipation of
0.6 and at 0.9 (elasticity +7 against -3.9), and if all chains do, R-hat sees nothing.
Every chain therefore starts at the two-stage least-squares estimate
(:func:`start_values`), in the right basin; in the control-function form that start is
the two regressions' estimates, with no correlation matrix to transform, and demand
given price needs no ``1 - rho²``, which loses precision near ±1. :func:`chain_modes`
flags chains that disagree all the same. The priors are on
``kappa`` (:data:`IV_PRIORS`, ``control_function_sd``: a slope of log quantity on the
log price shock, on the scale of an elasticity) and on ``sigma_e`` (the book's residual
sd prior), which implies a prior on ``rho`` that is symmetric about 0.

The demand equation is pooled across regions exactly as the book's multilevel model
(:mod:`~elasticity_lib.models`): the same income lines, region deviations, priors (with
an instrument, the residual sd's prior is on ``sigma_e``) and centring
(:class:`~elasticity_lib.data.prepare.Centring`), and the same names (``a0, a1, b0, b1,
sigma_a, sigma_b, sigma, alpha, beta``), so the pricing and recovery functions read
its results unchanged. Without an instrument and without controls, it *is* the book's
multilevel model in its row form (tested).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pydantic import BaseModel, ConfigDict, field_validator
from scipy import stats

from elasticity_lib._checks import posterior_dataset
from elasticity_lib.data.prepare import Centring, ModelData
from elasticity_lib.inference import SAMPLING_DEFAULTS, exact_numba_arithmetic, sampling_settings
from elasticity_lib.inference import fit as _fit
from elasticity_lib.models.builder import PRIORS, SPEC_PREFIX, ModelSpec, _income_lines, spec_attributes
from elasticity_lib.models.likelihoods import LOG_2PI
from elasticity_lib.reproducibility import sampler_seed

__all__ = [
    "CONTROLS", "IV_PRIORS", "WEAK_F", "IV_KIND", "DEMAND_KIND", "IVConfig", "IVDesign", "FirstStage", "first_stage",
    "gram_matrices", "gaussian_loglik", "build_iv_model", "TwoStage", "two_stage_least_squares", "two_stage_by_region", "start_values",
    "initial_point_function", "chain_modes", "fit_iv", "compile_iv_model", "IVFitter", "pointwise_log_likelihood", "add_log_likelihood", "log_predictive_density",
    "lpd_monte_carlo_error", "elasticity_bias", "last_periods", "IV_PARAMETERS", "simulate_iv_markets", "run_iv_sbc",
]

#: Controls the models know, each the name of its column in the table.
CONTROLS: tuple[str, ...] = ("promotion", "lagged_promotion", "season")
ControlName = Literal["promotion", "lagged_promotion", "season"]
#: Model kinds recorded on a fitted result: with an instrument, and the demand equation alone.
IV_KIND, DEMAND_KIND = "iv", "demand"
#: Priors of the parameters the book's models do not have, on the models' centred scale:
#: region price intercepts (log price around its mean), the instrument's effect per
#: standard deviation of the instrument, the effect of each control (a 0/1 flag or a
#: season) on log price or log quantity, and ``kappa``, the slope of log quantity on the
#: price equation's residual (the control function; an elasticity's scale, like
#: ``b0_sd``). Log-scale effects need no units.
IV_PRIORS = {"price_intercept_sd": 1.0, "instrument_sd": 1.0, "control_sd": 1.0, "sigma_price_rate": 2.0,
             "control_function_sd": 1.5}
#: First-stage F below which the instrument counts as weak (Staiger and Stock 1997): the
#: instrumented estimate is then pulled towards the naive one and its intervals are
#: unreliable in frequentist terms; in the Bayesian model its posterior widens instead.
WEAK_F = 10.0


class IVConfig(BaseModel):
    """Which columns enter the model.

    ``instrument`` is the column of the excluded instrument (``None``: the demand
    equation alone, the book's multilevel model with the controls added); ``controls``
    are some of :data:`CONTROLS`, each a column of the table: ``promotion`` and
    ``lagged_promotion`` flags (0 or 1), and ``season`` (an index; one effect per season
    other than the first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    instrument: str | None = "cost_shifter"
    controls: tuple[ControlName, ...] = ()

    @field_validator("controls")
    @classmethod
    def _unique(cls, controls: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({c for c in controls if controls.count(c) > 1})
        if repeated:
            raise ValueError(f"controls must not repeat, got {repeated} more than once")
        return controls

    @field_validator("instrument")
    @classmethod
    def _not_a_control(cls, instrument: str | None) -> str | None:
        if instrument is not None and (not instrument.strip() or instrument in CONTROLS):
            raise ValueError(f"instrument must name a column other than the controls {list(CONTROLS)}, "
                             f"got {instrument!r}")
        return instrument


def _column(table: pd.DataFrame, name: str, what: str) -> np.ndarray:
    if name not in table.columns:
        raise ValueError(f"the table has no column {name!r} ({what}); it has columns {list(table.columns)}")
    values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"column {name!r} ({what}) has missing, non-numeric or infinite values in rows "
                         f"{list(table.index[bad][:5])}")
    return values


@dataclass(frozen=True)
class IVDesign:
    """The constants a model is built with, fixed by the data it is first built on.

    The centring of log price, log quantity and income, the mean and sd of the
    instrument, and the season levels. A model built on other rows with the same design
    (a hold-out's future rows, a calibration market) means the same thing.
    """

    config: IVConfig
    centring: Centring
    instrument_center: float
    instrument_scale: float
    seasons: tuple
    control_means: tuple = ()

    @classmethod
    def of(cls, data: ModelData, config: IVConfig | None = None) -> IVDesign:
        """The design of ``data``: its centring, the instrument's mean and sd, its seasons."""
        config = config or IVConfig()
        center, scale = 0.0, 1.0
        if config.instrument is not None:
            z = _column(data.table, config.instrument, "instrument")
            center, scale = float(z.mean()), float(z.std())
            if not scale > 0:
                raise ValueError(f"column {config.instrument!r} (instrument) never varies: it cannot move prices")
        seasons = ()
        if "season" in config.controls:
            seasons = tuple(float(v) for v in sorted(pd.unique(_column(data.table, "season", "control"))))
        design = cls(config, data.centring, center, scale, seasons)
        _, w = design.matrices(data.table, centred=False)
        return dataclasses.replace(design, control_means=tuple(float(v) for v in w.mean(axis=0)))

    @property
    def control_names(self) -> list[str]:
        """Names of the columns of the controls' design matrix."""
        names = []
        for c in self.config.controls:
            names += [f"season[{s:g}]" for s in self.seasons[1:]] if c == "season" else [c]
        return names

    def matrices(self, table: pd.DataFrame, centred: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The standardised instrument (zeros without one) and the controls' design matrix of ``table``.

        The controls' columns are centred at their means in the design's data
        (``control_means``), so that intercepts are those of an average row and do not
        trade off against the control effects in the posterior.
        """
        n = len(table)
        z = np.zeros(n)
        if self.config.instrument is not None:
            z = (_column(table, self.config.instrument, "instrument") - self.instrument_center) / self.instrument_scale
        cols = []
        for c in self.config.controls:
            values = _column(table, c, "control")
            if c == "season":
                unknown = sorted(set(np.unique(values)) - set(self.seasons))
                if unknown:
                    raise ValueError(f"column 'season' has seasons [{', '.join(f'{u:g}' for u in unknown)}] that "
                                     f"the model was not built with (it knows "
                                     f"[{', '.join(f'{u:g}' for u in self.seasons)}])")
                cols += [(values == s).astype(float) for s in self.seasons[1:]]
            else:
                flags = ~np.isin(values, (0.0, 1.0))
                if flags.any():
                    raise ValueError(f"column {c!r} (control) must hold 0 or 1; other values in rows "
                                     f"{list(table.index[flags][:5])}")
                cols.append(values)
        w = np.column_stack(cols) if cols else np.zeros((n, 0))
        if centred and self.control_means:
            w = w - np.asarray(self.control_means)
        return z, w


@dataclass(frozen=True)
class FirstStage:
    """Strength of the instrument: the first-stage regression of log price.

    Log price on region intercepts, the controls and the instrument, by least squares.
    ``f_statistic`` is the F test of the instrument's coefficient (with one instrument,
    the square of its t statistic); ``partial_r2`` the share of the price variation left
    by the other regressors that the instrument explains.
    """

    coefficient: float
    std_error: float
    f_statistic: float
    partial_r2: float
    n_obs: int

    @property
    def weak(self) -> bool:
        """Whether the instrument is weak: first-stage F below :data:`WEAK_F`."""
        return self.f_statistic < WEAK_F


def first_stage(data: ModelData, config: IVConfig | None = None) -> FirstStage:
    """The first-stage regression of log price on the instrument (see :class:`FirstStage`).

    The coefficient is per standard deviation of the instrument, like ``pi_z`` of the
    model. Residual sums of squares of the regressions with and without the instrument
    give F; ``tests`` check it against the t statistic from the coefficient's covariance.
    """
    config = config or IVConfig()
    if config.instrument is None:
        raise ValueError("first_stage needs an instrument (config.instrument is None)")
    design = IVDesign.of(data, config)
    z, w = design.matrices(data.table)
    regions = np.eye(data.n_regions)[data.region_idx]
    restricted = np.column_stack([regions, w])
    full = np.column_stack([restricted, z])
    y = data.log_price

    def rss(x):
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        return float(resid @ resid), coef

    rss_r, _ = rss(restricted)
    rss_u, coef = rss(full)
    dof = len(y) - np.linalg.matrix_rank(full)
    f = (rss_r - rss_u) / (rss_u / dof)
    se = abs(coef[-1]) / np.sqrt(f) if f > 0 else np.inf
    return FirstStage(coefficient=float(coef[-1]), std_error=float(se), f_statistic=float(f),
                      partial_r2=float((rss_r - rss_u) / rss_r), n_obs=len(y))


def gram_matrices(data: ModelData, design: IVDesign, without: tuple[str, ...] = ()) -> np.ndarray:
    """Per-region sums of squares and cross-products of the columns the likelihood needs.

    With ``d_i = [1, z_i, W_i, x_i - k_p, y_i - k_q]`` (instrument, controls, centred log
    price and log quantity; no ``z`` without an instrument) both residuals of a row are
    linear in ``d_i``, so the sums of squares and the cross-product of the residuals of a
    region are quadratic forms in ``G_r = sum_i d_i d_i'``. Shape ``(region, p, p)``, in
    the order of ``data.coords["region"]``. The columns of the controls named in
    ``without`` are set to zero: the model then fits as if they were left out.
    """
    z, w = design.matrices(data.table)
    if without:
        w = w.copy()
        for j, name in enumerate(design.control_names):
            if name.split("[")[0] in without:
                w[:, j] = 0.0
    k = design.centring
    cols = [np.ones(data.n_obs)] + ([z] if design.config.instrument is not None else [])
    d = np.column_stack(cols + [w, data.log_price - k.log_price, data.log_quantity - k.log_quantity])
    gram = np.zeros((data.n_regions, d.shape[1], d.shape[1]))
    for r in range(data.n_regions):
        rows = d[data.region_idx == r]
        gram[r] = rows.T @ rows
    return gram


def gaussian_loglik(xp, gram, price_coef, demand_coef, sigma, sigma_price=None, rho=None):
    """Log-likelihood of each region's rows from its Gram matrix (:func:`gram_matrices`).

    ``price_coef`` and ``demand_coef`` (shape ``(region, p)``) turn ``d_i`` into the
    residuals ``v_i = price_coef . d_i`` and ``u_i = demand_coef . d_i``. With
    ``sigma_price`` and ``rho``: the bivariate normal of ``(u_i, v_i)`` with sds ``sigma,
    sigma_price`` and correlation ``rho`` (tested against SciPy's multivariate normal);
    without: ``u_i ~ Normal(0, sigma)``. ``xp`` is ``numpy`` or ``pytensor.tensor``.
    """
    def quad(a, b):
        return (a[:, :, None] * gram * b[:, None, :]).sum(axis=(1, 2))

    n = gram[:, 0, 0]
    suu = quad(demand_coef, demand_coef)
    if sigma_price is None:
        return -0.5 * n * LOG_2PI - n * xp.log(sigma) - 0.5 * suu / sigma**2
    svv = quad(price_coef, price_coef)
    suv = quad(demand_coef, price_coef)
    one_minus = 1 - rho**2
    q = (suu / sigma**2 - 2 * rho * suv / (sigma * sigma_price) + svv / sigma_price**2) / one_minus
    return -n * LOG_2PI - n * xp.log(sigma * sigma_price) - 0.5 * n * xp.log(one_minus) - 0.5 * q


def build_iv_model(data: ModelData, config: IVConfig | None = None, *, likelihood: str = "sufficient",
                   design: IVDesign | None = None) -> pm.Model:
    """The instrumental-variable model (or, without an instrument, the demand equation) on ``data``.

    ``design`` fixes the centring, the instrument's standardisation and the seasons
    (default: those of ``data``, :meth:`IVDesign.of`). Two forms of the same posterior:

    ``"sufficient"`` (default)
        The likelihood from each region's Gram matrix (:func:`gaussian_loglik`), held as
        ``pm.Data`` (``gram``) with the centring constants (``centre_log_price``, ...) and
        the standardised incomes (``income_std``): its cost does not depend on the number
        of rows, and one compiled model can be refitted on other data with the same
        regions and controls (:class:`IVFitter`).
    ``"rows"``
        Observed variables ``log_price`` (with an instrument) and ``log_quantity``, the
        latter given the former: for prior predictive draws and as the reference in tests.

    The model carries its :class:`~elasticity_lib.models.ModelSpec` (kind
    :data:`IV_KIND` or :data:`DEMAND_KIND`) and its design (``model.iv_design``).
    """
    if not isinstance(data, ModelData):
        raise TypeError(f"data must be ModelData from prepare_data, got {type(data).__name__}")
    if likelihood not in ("sufficient", "rows"):
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of ['sufficient', 'rows']")
    if design is None:
        design = IVDesign.of(data, config)
    elif config is not None and config != design.config:
        raise ValueError("pass either config or a design, not two different configurations")
    config = design.config
    data.require_enough_data(min_regions=2)
    numbers = design.centring
    z, w = design.matrices(data.table)
    coords = {"region": data.coords["region"], "control": design.control_names}
    if likelihood == "rows":
        coords["obs"] = data.coords["obs"]
    instrumented = config.instrument is not None
    with pm.Model(coords=coords) as model:
        k = numbers
        if likelihood == "sufficient":
            k = Centring(*(pm.Data(f"centre_{f.name}", getattr(numbers, f.name))
                           for f in dataclasses.fields(Centring)))
        m_alpha, m_beta, x_c = _income_lines(data, centring=(numbers, k))
        sigma_a = pm.Exponential("sigma_a", np.float64(PRIORS["region_sd_rate"]))
        sigma_b = pm.Exponential("sigma_b", np.float64(PRIORS["region_sd_rate"]))
        if not instrumented:
            sigma = pm.Exponential("sigma", PRIORS["sigma_rate"])
        z_a = pm.Normal("z_a", 0.0, 1.0, dims="region")
        z_b = pm.Normal("z_b", 0.0, 1.0, dims="region")
        beta = pm.Deterministic("beta", m_beta + sigma_b * z_b, dims="region")
        alpha = pm.Deterministic("alpha", m_alpha + sigma_a * z_a - x_c * sigma_b * z_b, dims="region")
        m = w.shape[1]
        gamma = pm.Normal("gamma", 0.0, IV_PRIORS["control_sd"], dims="control") if m else pt.zeros(0)
        if instrumented:
            gamma_price = (pm.Normal("gamma_price", 0.0, IV_PRIORS["control_sd"], dims="control") if m
                           else pt.zeros(0))
            pi0 = pm.Normal("pi0_centred", 0.0, IV_PRIORS["price_intercept_sd"], dims="region")
            pi_z = pm.Normal("pi_z", 0.0, IV_PRIORS["instrument_sd"])
            sigma_price = pm.Exponential("sigma_price", IV_PRIORS["sigma_price_rate"])
            # the control-function form: demand given price has the price residual's slope
            # kappa and the residual sd sigma_e; (sigma, rho) of the bivariate normal follow
            kappa = pm.Normal("kappa", 0.0, IV_PRIORS["control_function_sd"])
            sigma_e = pm.Exponential("sigma_e", PRIORS["sigma_rate"])
            sigma = pm.Deterministic("sigma", pt.sqrt(sigma_e**2 + (kappa * sigma_price) ** 2))
            pm.Deterministic("rho", kappa * sigma_price / sigma)
        if likelihood == "sufficient":
            gram = pm.Data("gram", gram_matrices(data, design))
            n_regions = data.n_regions
            # the demand intercept at the centre (centred log price and log quantity)
            alpha_c = alpha - k.log_quantity + k.log_price * beta
            ones = pt.ones((n_regions, 1))
            demand_coef = pt.concatenate(
                [-alpha_c[:, None]] + ([pt.zeros((n_regions, 1))] if instrumented else [])
                + [pt.tile(-gamma[None, :], (n_regions, 1)), -beta[:, None], ones], axis=1)
            if instrumented:
                price_coef = pt.concatenate(
                    [-pi0[:, None], -pi_z * ones, pt.tile(-gamma_price[None, :], (n_regions, 1)),
                     ones, pt.zeros((n_regions, 1))], axis=1)
                # price equation times demand given price (the bivariate normal, in its
                # control-function form: no 1 - rho² to lose precision near rho = ±1)
                loglik = (gaussian_loglik(pt, gram, None, price_coef, sigma_price)
                          + gaussian_loglik(pt, gram, None, demand_coef - kappa * price_coef, sigma_e))
            else:
                loglik = gaussian_loglik(pt, gram, None, demand_coef, sigma)
            pm.Potential("loglik", loglik.sum())
        else:
            idx = pm.Data("group_idx", data.region_idx, dims="obs")
            y = pm.Data("log_quantity_data", data.log_quantity, dims="obs")
            controls = pm.Data("controls", w, dims=("obs", "control"))
            demand_shift = controls @ gamma if m else 0.0
            if not instrumented:
                x = pm.Data("log_price", data.log_price, dims="obs")
                pm.Normal("log_quantity", alpha[idx] + beta[idx] * x + demand_shift, sigma, observed=y, dims="obs")
            else:
                instrument = pm.Data("instrument", z, dims="obs")
                mu_x = k.log_price + pi0[idx] + pi_z * instrument + (controls @ gamma_price if m else 0.0)
                x_data = pm.Data("log_price_data", data.log_price, dims="obs")
                x = pm.Normal("log_price", mu_x, sigma_price, observed=x_data, dims="obs")
                mu_y = alpha[idx] + beta[idx] * x + demand_shift
                pm.Normal("log_quantity", mu_y + kappa * (x - mu_x), sigma_e, observed=y, dims="obs")
    kind = DEMAND_KIND if config.instrument is None else IV_KIND
    model.elasticity_spec = ModelSpec(kind=kind, likelihood=likelihood, data=data, design=design)
    model.iv_design = design
    return model


def fit_iv(model: pm.Model, **overrides) -> xr.DataTree:
    """Sample a model of :func:`build_iv_model` with the book's defaults (:func:`~elasticity_lib.inference.fit`).

    With an instrument, chains start at the two-stage estimate (:func:`start_values`)
    unless ``initvals`` is given. The result records the model's specification like
    every fit of the book, with its instrument and controls (``elasticity_instrument``,
    ``elasticity_controls``).
    """
    design = getattr(model, "iv_design", None)
    if design is None:
        raise ValueError("this model was not made by build_iv_model")
    if design.config.instrument is not None and "initvals" not in overrides:
        start = start_values(model.elasticity_spec.data, design)
        overrides["initvals"] = start
        # no jitter on the started variables: a jitter of ±1 could move them out of their basin
        if sampling_settings(model, **overrides).get("nuts_sampler", "pymc") == "nutpie":
            unstarted = {rv for rv in model.free_RVs if rv.name not in start}
            overrides["compile_kwargs"] = {**overrides.get("compile_kwargs", {}), "jitter_rvs": unstarted}
        else:
            overrides.setdefault("init", "adapt_diag")
    return _fit(model, **overrides)


def compile_iv_model(model: pm.Model):
    """Compile a model of :func:`build_iv_model` for nutpie (every chain at PyMC's jittered start).

    Fits of the instrumental-variable model replace the start with
    :func:`initial_point_function` for their data (:class:`IVFitter`, :func:`run_iv_sbc`).
    """
    import nutpie

    return nutpie.compile_pymc_model(model)


@dataclass(frozen=True)
class TwoStage:
    """Two-stage least squares (equal to the control-function regression) of ``data``.

    One elasticity pooled over regions (``beta``, with its conventional standard error
    ``beta_se``), region intercepts in both stages, the controls in both, the instrument
    in the first; ``first_stage`` holds the price equation's coefficients and residual
    sd, ``kappa`` and ``sigma_e`` the control function's (see :func:`start_values`).
    """

    beta: float
    beta_se: float
    first_stage: dict
    kappa: float
    sigma_e: float


def two_stage_least_squares(data: ModelData, design: IVDesign) -> TwoStage:
    """Two-stage least squares of the pooled elasticity, in its control-function form.

    First stage: log price on region intercepts, the controls and the instrument (OLS);
    its residual ``v``. Second stage: log quantity on region intercepts, the controls,
    log price and ``v``. In a linear model the coefficient of log price is exactly the
    two-stage least-squares estimate (tested); the coefficient of ``v`` estimates
    ``kappa`` and the residual sd ``sigma_e``. The standard error is the conventional
    2SLS one (residuals ``log q - X beta`` with the observed price).
    """
    if design.config.instrument is None:
        raise ValueError("two_stage_least_squares needs a design with an instrument")
    z, w = design.matrices(data.table)
    k = design.centring
    x, y = data.log_price - k.log_price, data.log_quantity - k.log_quantity
    regions = np.eye(data.n_regions)[data.region_idx]
    first = np.column_stack([regions, w, z])
    pi, *_ = np.linalg.lstsq(first, x, rcond=None)
    v = x - first @ pi
    second = np.column_stack([regions, w, x, v])
    coef, *_ = np.linalg.lstsq(second, y, rcond=None)
    beta, kappa = float(coef[-2]), float(coef[-1])
    e = y - second @ coef
    n, p = second.shape
    # conventional 2SLS standard error: fitted prices in the design, observed prices in the residual
    xhat = np.column_stack([regions, w, x - v])
    coef_2sls, *_ = np.linalg.lstsq(xhat, y, rcond=None)
    resid = y - np.column_stack([regions, w, x]) @ coef_2sls
    s2 = resid @ resid / (n - xhat.shape[1])
    se = float(np.sqrt(s2 * np.linalg.pinv(xhat.T @ xhat)[-1, -1]))
    m = w.shape[1]
    r = data.n_regions
    stage = {"pi0_centred": pi[:r], "gamma_price": pi[r:r + m], "pi_z": float(pi[-1]),
             "sigma_price": float(np.sqrt(v @ v / (n - first.shape[1])))}
    return TwoStage(beta=beta, beta_se=se, first_stage=stage, kappa=kappa,
                    sigma_e=float(np.sqrt(e @ e / (n - p))))


def two_stage_by_region(data: ModelData, design: IVDesign, log_quantity: np.ndarray | None = None) -> dict:
    """Two-stage least squares with one elasticity per region: the estimand of the models.

    Log quantity on region intercepts, the controls and log price times each region's
    indicator, instrumented by the instrument times each region's indicator. Returns the
    region elasticities (``betas``, in the order of ``data.coords["region"]``), their
    average (``mean``) and its conventional standard error (``se``). ``log_quantity``
    replaces the data's (for example with the demand shock removed, to check that the
    structural equation matches the simulation). Unlike the pooled slope of
    :func:`two_stage_least_squares`, whose weights favour regions with much price
    variation, the average estimates the same quantity as the mean of the models' region
    elasticities.
    """
    if design.config.instrument is None:
        raise ValueError("two_stage_by_region needs a design with an instrument")
    z, w = design.matrices(data.table)
    regions = np.eye(data.n_regions)[data.region_idx]
    y = data.log_quantity if log_quantity is None else np.asarray(log_quantity, dtype=float)
    x = data.log_price
    big_x = np.column_stack([regions, w, regions * x[:, None]])
    big_z = np.column_stack([regions, w, regions * z[:, None]])
    fitted = big_z @ np.linalg.lstsq(big_z, big_x, rcond=None)[0]
    coef = np.linalg.lstsq(fitted, y, rcond=None)[0]
    resid = y - big_x @ coef
    cov = resid @ resid / (len(y) - big_x.shape[1]) * np.linalg.pinv(fitted.T @ fitted)
    r = data.n_regions
    return {"betas": coef[-r:], "mean": float(coef[-r:].mean()), "se": float(np.sqrt(cov[-r:, -r:].sum()) / r)}


def start_values(data: ModelData, design: IVDesign) -> dict[str, np.ndarray]:
    """Where the chains of the instrumental-variable model start: the two-stage estimates.

    The price equation at its least-squares fit (``pi0_centred``, ``pi_z``,
    ``gamma_price``, ``sigma_price``) and the control function at its regression
    (``kappa``, ``sigma_e``), from :func:`two_stage_least_squares`. Together they pick
    the basin of the likelihood where the instrument moves prices the way the data say;
    the other mode (``kappa`` and ``pi_z`` with the opposite signs, ``rho`` near ±1) lies
    hundreds of log-density units lower and a chain started there never leaves it.
    """
    ts = two_stage_least_squares(data, design)
    start = {name: np.asarray(value, dtype=float) for name, value in ts.first_stage.items()}
    start.update(kappa=np.asarray(ts.kappa), sigma_e=np.asarray(ts.sigma_e))
    if not design.control_names:
        start.pop("gamma_price")
    return start


def initial_point_function(model: pm.Model, start: dict[str, np.ndarray]):
    """A nutpie start function: ``start`` for its variables, PyMC's jittered start for the rest.

    Returns ``f(seed) -> flat array`` on the unconstrained scale, in nutpie's order (the
    model's free variables in order), as ``initial_point_func`` of a compiled model
    expects. Positive variables are given on their natural scale and logged here.
    """
    from pymc.initial_point import make_initial_point_fn

    names = {rv.name: rv for rv in model.free_RVs}
    unknown = sorted(set(start) - set(names))
    if unknown:
        raise ValueError(f"start names variables {unknown} that the model does not have")
    started = {names[n] for n in start}
    jittered = make_initial_point_fn(model=model, jitter_rvs=set(model.free_RVs) - started, return_transformed=True)
    fixed = {}
    for name, value in start.items():
        rv = names[name]
        value_var = model.rvs_to_values[rv]
        transform = model.rvs_to_transforms.get(rv)
        value = np.asarray(value, dtype=float)
        if transform is not None:
            if value_var.name != f"{name}_log__":
                raise ValueError(f"cannot start {name!r}: only unconstrained and positive variables are supported")
            if not (value > 0).all():
                raise ValueError(f"start value of {name!r} must be positive, got {value}")
            value = np.log(value)
        fixed[value_var.name] = value
    order = [model.rvs_to_values[rv].name for rv in model.free_RVs]
    # nutpie asks for the chains' starts from several threads at once, and a compiled
    # PyTensor function is not thread-safe (its outputs can come back empty)
    lock = threading.Lock()

    def initial_point(seed):
        with lock:
            point = {**jittered(seed), **fixed}
            return np.concatenate([np.array(point[n], dtype="float64").reshape(-1) for n in order])

    return initial_point


def chain_modes(idata, tolerance: float = 3.0) -> pd.DataFrame:
    """Whether the chains of a fit sampled the same mode: one row per chain.

    For each chain, the mean log density (``logp`` of nutpie, ``lp`` of PyMC) and the
    mean of the average region elasticity. A chain ``disagrees`` when either mean lies
    more than ``tolerance`` pooled within-chain standard deviations from the best chain
    (highest mean log density). Chains of one posterior differ in their means by the
    Monte Carlo error, a few hundredths of a standard deviation with hundreds of
    effective draws, so three standard deviations never flag them; a chain stuck in
    another mode of the instrumental-variable model differs by hundreds of log-density
    units. R-hat catches such a chain too, but not all chains stuck in the same wrong
    mode: that is what the start at the two-stage estimate prevents.
    """
    stats_ = idata["sample_stats"]
    name = "logp" if "logp" in stats_ else "lp"
    logp = np.asarray(stats_[name].transpose("chain", "draw").values, dtype=float)
    beta = np.asarray(posterior_dataset(idata)["beta"].mean("region").transpose("chain", "draw").values, dtype=float)
    best = int(np.argmax(logp.mean(axis=1)))
    rows = []
    for c in range(logp.shape[0]):
        gaps = []
        for values in (logp, beta):
            sd = float(np.sqrt(values.var(axis=1, ddof=1).mean()))
            gaps.append(abs(values[c].mean() - values[best].mean()) / sd if sd > 0 else 0.0)
        rows.append({"chain": c, "mean_logp": float(logp[c].mean()), "mean_elasticity": float(beta[c].mean()),
                     "logp_gap_sd": gaps[0], "elasticity_gap_sd": gaps[1],
                     "disagrees": bool(max(gaps) > tolerance)})
    return pd.DataFrame(rows).set_index("chain")


class IVFitter:
    """Fit a model of :func:`build_iv_model` to many data sets, compiling it only once.

    The first :meth:`fit` compiles the sufficient form with nutpie (a few seconds); every
    later call swaps in the data's Gram matrices, centring and incomes with nutpie's
    ``with_data`` and only samples. Any data with the same regions and the same controls
    (and seasons) can be fitted: markets that differ in how prices were set, or the past
    of a market in a time hold-out. Each fit is the fit of ``build_iv_model(data, config)``.
    """

    def __init__(self, config: IVConfig | None = None, *, draws: int = 1000, tune: int = 1000, chains: int = 4,
                 target_accept: float = SAMPLING_DEFAULTS["target_accept"]):
        self.config = config or IVConfig()
        self.sample_kwargs = dict(draws=draws, tune=tune, chains=chains, target_accept=target_accept)
        self._compiled = None
        self._shape: tuple | None = None

    def fit(self, data: ModelData, *, seed: int, without: tuple[str, ...] = ()) -> xr.DataTree:
        """Posterior of the model given ``data``; the result records its kind, design and data size.

        ``without`` names controls of the configuration to leave out of this fit: their
        columns are set to zero, so their effects (``gamma`` and ``gamma_price``) leave the
        likelihood and keep their prior, independent of everything else. The posterior of
        every other parameter is then that of the model without these controls, and the
        compiled model serves every subset of the controls.
        """
        import nutpie

        unknown = sorted(set(without) - set(self.config.controls))
        if unknown:
            raise ValueError(f"without names controls {unknown} that the model does not have "
                             f"(it has {list(self.config.controls)})")
        design = IVDesign.of(data, self.config)
        shape = (tuple(str(r) for r in data.coords["region"]), tuple(design.control_names))
        if self._compiled is None:
            self._model = build_iv_model(data, design=design)
            with exact_numba_arithmetic():
                self._compiled = compile_iv_model(self._model)
            self._shape = shape
        if shape != self._shape:
            raise ValueError(f"this fitter was compiled for regions and controls {self._shape}; the data have {shape}")
        k = design.centring
        updates = {f"centre_{f.name}": np.asarray(getattr(k, f.name)) for f in dataclasses.fields(Centring)}
        updates.update(gram=gram_matrices(data, design, without=without), income_std=(data.income - k.income) / k.income_scale)
        compiled = self._compiled.with_data(**updates)
        if self.config.instrument is not None:
            # start at the two-stage estimate (with every control: a control left out keeps
            # its prior, and any start inside it serves)
            start = start_values(data, design)
            compiled = dataclasses.replace(compiled, initial_point_func=initial_point_function(self._model, start))
        with exact_numba_arithmetic():
            idata = nutpie.sample(compiled, seed=int(seed), progress_bar=False, **self.sample_kwargs)
        kind = DEMAND_KIND if self.config.instrument is None else IV_KIND
        idata.attrs.update(spec_attributes(ModelSpec(kind=kind, likelihood="sufficient", data=data, design=design)))
        idata.attrs[SPEC_PREFIX + "controls"] = [c for c in self.config.controls if c not in without]
        if self.config.instrument is not None:
            modes = chain_modes(idata)
            agree = not modes["disagrees"].any()
            idata.attrs[SPEC_PREFIX + "chains_agree"] = int(agree)
            if not agree:
                warnings.warn(f"chains {list(modes.index[modes['disagrees']])} of the instrumental-variable fit "
                              f"sampled another mode than the best chain:\n{modes.round(3)}", stacklevel=2)
        idata["posterior"].attrs.update(idata.attrs)
        return idata


def _draws(post: xr.Dataset, name: str, *dims: str) -> np.ndarray:
    """A posterior variable as an array of shape (chain * draw, *dims)."""
    da = post[name].transpose("chain", "draw", *dims)
    return np.asarray(da.values, dtype=float).reshape(-1, *da.shape[2:])


def pointwise_log_likelihood(idata, data: ModelData, design: IVDesign) -> xr.DataArray:
    """``log p(log q_i | log p_i, instrument, controls, theta)`` for every draw and row of ``data``.

    The density of demand given the observed price: for the instrumental-variable model
    ``Normal(mu_y + rho sigma / sigma_price (x - mu_x), sigma sqrt(1 - rho²))``, for the
    demand equation alone ``Normal(mu_y, sigma)``; the same numbers as PyMC's
    ``compute_log_likelihood`` for ``log_quantity`` (tested). ``data`` may be rows the
    model was not fitted to (a hold-out), as long as its regions are the fit's.
    """
    post = posterior_dataset(idata)
    fitted_regions = [str(r) for r in post["region"].values]
    unknown = sorted({str(r) for r in data.coords["region"]} - set(fitted_regions), key=str)
    if unknown:
        raise ValueError(f"regions {unknown} were not in the fit (its regions are {fitted_regions})")
    idx = np.array([fitted_regions.index(str(r)) for r in data.coords["region"]])[data.region_idx]
    z, w = design.matrices(data.table)
    x, y = data.log_price, data.log_quantity
    mu_y = _draws(post, "alpha", "region")[:, idx] + _draws(post, "beta", "region")[:, idx] * x
    if w.shape[1]:
        mu_y = mu_y + _draws(post, "gamma", "control") @ w.T
    sigma = _draws(post, "sigma")[:, None]
    if design.config.instrument is None:
        mean, sd = mu_y, sigma
    else:
        mu_x = (design.centring.log_price + _draws(post, "pi0_centred", "region")[:, idx]
                + _draws(post, "pi_z")[:, None] * z)
        if w.shape[1]:
            mu_x = mu_x + _draws(post, "gamma_price", "control") @ w.T
        rho = _draws(post, "rho")[:, None]
        sigma_price = _draws(post, "sigma_price")[:, None]
        mean, sd = mu_y + rho * sigma / sigma_price * (x - mu_x), sigma * np.sqrt(1 - rho**2)
    ll = stats.norm.logpdf(y, mean, sd)
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    return xr.DataArray(ll.reshape(n_chain, n_draw, -1), dims=("chain", "draw", "obs"),
                        coords={"chain": post["chain"].values, "draw": post["draw"].values,
                                "obs": np.asarray(data.coords["obs"])}, name="log_quantity")


def add_log_likelihood(idata: xr.DataTree, data: ModelData, design: IVDesign) -> xr.DataTree:
    """Add (or replace) the ``log_likelihood`` group with :func:`pointwise_log_likelihood`, for PSIS-LOO."""
    idata["log_likelihood"] = xr.Dataset({"log_quantity": pointwise_log_likelihood(idata, data, design)})
    return idata


def log_predictive_density(idata, data: ModelData, design: IVDesign) -> pd.Series:
    """Log predictive density of each row of ``data``: ``log mean_s p(y_i | x_i, theta_s)``.

    Summed over rows it is the log predictive density of a hold-out (the ``elpd`` of rows
    the model did not see), on the same scale as PSIS-LOO's ``elpd_loo``.
    """
    ll = pointwise_log_likelihood(idata, data, design).values
    ll = ll.reshape(-1, ll.shape[-1])
    top = ll.max(axis=0)
    return pd.Series(top + np.log(np.mean(np.exp(ll - top), axis=0)), index=data.table.index, name="lpd")


def lpd_monte_carlo_error(idata, data: ModelData, design: IVDesign) -> float:
    """Monte Carlo standard error of the summed :func:`log_predictive_density` of ``data``.

    To first order in the draws, ``sum_i log mean_s p_is`` varies like the mean over draws
    of ``U_s = sum_i p_is / mean_s p_is`` (the argument of
    :func:`~elasticity_lib.reproducibility.loo_monte_carlo_error`); ArviZ's Monte Carlo
    error of a mean accounts for autocorrelation. This is the error that changes with the
    sampler seed.
    """
    import arviz as az

    ll = pointwise_log_likelihood(idata, data, design)
    p = np.exp(ll - ll.max(("chain", "draw")))
    u = (p / p.mean(("chain", "draw"))).sum("obs")
    return float(az.mcse(xr.Dataset({"u": u}), method="mean")["u"])


def elasticity_bias(idata, truth, prob: float = 0.94) -> dict:
    """How far a fit's region elasticities are from the truth, in one row.

    ``truth`` holds the true elasticity of each region, in the fit's region order. Returns
    the mean true elasticity, the posterior mean and equal-tailed ``prob`` interval of the
    mean of the region elasticities, the bias (estimate minus truth) and how many regions'
    own ``prob`` intervals contain their true value.
    """
    beta = posterior_dataset(idata)["beta"]
    truth = np.asarray(truth, dtype=float)
    if truth.shape != (beta.sizes["region"],):
        raise ValueError(f"truth must have one value per region ({beta.sizes['region']}), got shape {truth.shape}")
    tail = (1 - prob) / 2
    average = beta.mean("region")
    lo, hi = beta.quantile([tail, 1 - tail], dim=("chain", "draw")).values
    return {"true": float(truth.mean()), "estimate": float(average.mean()),
            "lower": float(average.quantile(tail)), "upper": float(average.quantile(1 - tail)),
            "bias": float(average.mean() - truth.mean()),
            "regions_covered": int(((truth >= lo) & (truth <= hi)).sum()), "n_regions": int(len(truth))}


def last_periods(table: pd.DataFrame, k: int) -> np.ndarray:
    """Which rows are in the last ``k`` periods of their store (a boolean mask).

    A store's periods are read from ``time_step``, which counts down to 0 at its most
    recent row (:meth:`~elasticity_lib.data.entities.Market.to_dataframe`): the mask is
    ``time_step < k``. Fitting on the other rows and scoring these is how a retailer uses
    the model: fit on the past, predict the next ``k`` periods of every store. A store
    with no more than ``k`` rows would have no past left: that is an error naming it.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive whole number of periods, got {k!r}")
    step = _column(table, "time_step", "periods counted back from each store's last row")
    mask = step < k
    store = table["region_store_id"].astype(str) if "region_store_id" in table.columns else table["store_id"]
    past = pd.Series(~mask, index=table.index).groupby(store.to_numpy()).sum()
    short = list(past.index[past == 0])
    if short:
        raise ValueError(f"stores {short[:5]} ({len(short)} in all) have no rows before their last {k} periods; "
                         "choose a smaller k or leave these stores out")
    return mask


# --- simulation-based calibration ---------------------------------------------------------

#: Parameters of the instrumental-variable model that the calibration checks (``sigma`` and
#: ``rho`` follow from ``kappa``, ``sigma_e`` and ``sigma_price``).
IV_PARAMETERS: tuple[str, ...] = ("b0", "b1", "sigma_b", "sigma", "sigma_price", "pi_z", "rho", "kappa", "sigma_e")


def simulate_iv_markets(data: ModelData, design: IVDesign, n_markets: int, seed: int):
    """Draw parameters and (log price, log quantity) of ``n_markets`` markets from the model's prior.

    The design (stores, regions, instrument, controls) is held fixed. Returns the true
    values (one row per market: :data:`IV_PARAMETERS`, then ``beta[<region>]``) and the
    log prices and log quantities, each of shape ``(n_markets, n_rows)``.
    """
    if design.config.instrument is None:
        raise ValueError("simulate_iv_markets needs a design with an instrument")
    if n_markets < 1:
        raise ValueError(f"n_markets must be at least 1, got {n_markets}")
    model = build_iv_model(data, design=design, likelihood="rows")
    prior = pm.sample_prior_predictive(draws=n_markets, model=model, random_seed=seed)
    p = prior["prior"].dataset
    truth = {name: p[name].to_numpy()[0] for name in IV_PARAMETERS}
    beta = p["beta"].to_numpy()[0]
    for j, region in enumerate(data.coords["region"]):
        truth[f"beta[{region}]"] = beta[:, j]
    pp = prior["prior_predictive"].dataset
    return pd.DataFrame(truth), pp["log_price"].to_numpy()[0], pp["log_quantity"].to_numpy()[0]


def run_iv_sbc(data: ModelData, design: IVDesign, n_markets: int, *, seed: int = 2014, fit_seed: int | None = None,
               n_ranked: int = 199, draws: int = 500, tune: int = 500, chains: int = 4, cores: int | None = None,
               progress=None):
    """Simulation-based calibration of the instrumental-variable model over ``n_markets`` prior draws.

    Markets come from :func:`simulate_iv_markets`; the model is compiled once with
    nutpie and every market swaps in its log prices and log quantities. Returns a
    :class:`~elasticity_lib.validation.calibration.SBCResult` whose ranks, coverages and settings
    read like those of the multilevel model's calibration. ``seed`` simulates the markets;
    ``fit_seed`` (default ``sampler_seed("iv_sbc")``) seeds the sampler.
    """
    import nutpie

    from elasticity_lib.validation.calibration import SBCResult, market_rank_rows, sbc_tables

    if n_ranked > draws * chains:
        raise ValueError(f"n_ranked ({n_ranked}) exceeds the number of posterior draws ({draws * chains})")
    truth, log_p, log_q = simulate_iv_markets(data, design, n_markets, seed)
    if fit_seed is None:
        fit_seed = sampler_seed("iv_sbc")
    seeds = np.random.SeedSequence([seed, fit_seed]).spawn(n_markets)
    t0 = time.perf_counter()
    model = build_iv_model(data, design=design)
    with exact_numba_arithmetic():
        compiled = compile_iv_model(model)
    compile_seconds = time.perf_counter() - t0
    names = list(truth.columns)
    regions = data.coords["region"]
    rank_rows, fit_rows = [], []
    for i in range(n_markets):
        t0 = time.perf_counter()
        # the market's outcomes in the fixed design: same centring, so the same prior as the simulation
        market_data = dataclasses.replace(data, log_price=log_p[i], log_quantity=log_q[i])
        market = compiled.with_data(gram=gram_matrices(market_data, design))
        market = dataclasses.replace(market, initial_point_func=initial_point_function(
            model, start_values(market_data, design)))
        with exact_numba_arithmetic():
            idata = nutpie.sample(market, draws=draws, tune=tune, chains=chains, cores=cores,
                                  seed=int(seeds[i].generate_state(1)[0]), progress_bar=False,
                                  target_accept=SAMPLING_DEFAULTS["target_accept"])
        post = idata["posterior"].dataset
        flat = np.column_stack([post[p].to_numpy().reshape(-1) for p in IV_PARAMETERS]
                               + [post["beta"].sel(region=r).to_numpy().reshape(-1) for r in regions])
        rank_rows += market_rank_rows(i, names, truth.iloc[i].to_numpy(dtype=float), flat, n_ranked)
        fit_rows.append((i, int(idata["sample_stats"].dataset["diverging"].sum()), time.perf_counter() - t0))
        if progress is not None:
            progress(i + 1, n_markets)
    ranks, fits = sbc_tables(rank_rows, fit_rows)
    settings = {"n_markets": n_markets, "seed": seed, "fit_seed": fit_seed, "n_ranked": n_ranked, "draws": draws,
                "tune": tune, "chains": chains, "target_accept": SAMPLING_DEFAULTS["target_accept"],
                "sampler": "nutpie", "model": IV_KIND, "instrument": design.config.instrument,
                "controls": list(design.config.controls), "n_regions": data.n_regions, "n_stores": data.n_stores,
                "n_rows": data.n_obs}
    return SBCResult(ranks=ranks, fits=fits, n_ranked=n_ranked, compile_seconds=compile_seconds, settings=settings)
