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

with an LKJ prior on the 2×2 correlation. The instrument ``z`` (standardised) enters the
price equation only; ``rho`` absorbs the correlation between the shocks, so ``beta`` is
the causal elasticity (Rossi 2014; the likelihood-based treatment of Villas-Boas and
Winer 1999). The likelihood is written as the price equation times demand given price,
``u | v ~ Normal(rho sigma / sigma_price v, sigma sqrt(1 - rho²))``, which is the bivariate
normal (tested against SciPy).

The demand equation is pooled across regions exactly as the book's multilevel model
(:mod:`~elasticity_lib.models`): the same income lines, region deviations, priors and
centring (:class:`~elasticity_lib.data.prepare.Centring`), and the same names (``a0, a1, b0,
b1, sigma_a, sigma_b, sigma, alpha, beta``), so the pricing and recovery functions read
its results unchanged. Without an instrument and without controls, it *is* the book's
multilevel model in its row form (tested).
"""

from __future__ import annotations

import dataclasses
import time
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
from elasticity_lib.inference import SAMPLING_DEFAULTS, exact_numba_arithmetic
from elasticity_lib.inference import fit as _fit
from elasticity_lib.models.builder import PRIORS, SPEC_PREFIX, ModelSpec, _income_lines, spec_attributes
from elasticity_lib.models.likelihoods import LOG_2PI
from elasticity_lib.reproducibility import sampler_seed

__all__ = [
    "CONTROLS", "IV_PRIORS", "WEAK_F", "IV_KIND", "DEMAND_KIND", "IVConfig", "IVDesign", "FirstStage", "first_stage",
    "gram_matrices", "gaussian_loglik", "build_iv_model", "fit_iv", "compile_iv_model", "IVFitter", "pointwise_log_likelihood", "add_log_likelihood", "log_predictive_density",
    "lpd_monte_carlo_error", "elasticity_bias", "last_periods", "IV_PARAMETERS", "simulate_iv_markets", "run_iv_sbc",
]

#: Controls the models know, each the name of its column in the table.
CONTROLS: tuple[str, ...] = ("promotion", "lagged_promotion", "season")
ControlName = Literal["promotion", "lagged_promotion", "season"]
#: Model kinds recorded on a fitted result: with an instrument, and the demand equation alone.
IV_KIND, DEMAND_KIND = "iv", "demand"
#: Priors of the parameters the book's models do not have, on the models' centred scale:
#: region price intercepts (log price around its mean), the instrument's effect per
#: standard deviation of the instrument, and the effect of each control (a 0/1 flag or a
#: season) on log price or log quantity. Log-scale effects need no units.
IV_PRIORS = {"price_intercept_sd": 1.0, "instrument_sd": 1.0, "control_sd": 1.0, "sigma_price_rate": 2.0}
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
            chol = pm.LKJCorr("corr_chol", n=2, eta=PRIORS["lkj_eta"])
            rho = pm.Deterministic("rho", chol[1, 0])
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
                loglik = gaussian_loglik(pt, gram, price_coef, demand_coef, sigma, sigma_price, rho)
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
                pm.Normal("log_quantity", mu_y + rho * sigma / sigma_price * (x - mu_x),
                          sigma * pt.sqrt(1 - rho**2), observed=y, dims="obs")
    kind = DEMAND_KIND if config.instrument is None else IV_KIND
    model.elasticity_spec = ModelSpec(kind=kind, likelihood=likelihood, data=data)
    model.iv_design = design
    return model


def fit_iv(model: pm.Model, **overrides) -> xr.DataTree:
    """Sample a model of :func:`build_iv_model` with the book's defaults (:func:`~elasticity_lib.inference.fit`).

    The result records the model's specification like every fit of the book, and in
    addition its instrument and controls (``elasticity_instrument``,
    ``elasticity_controls``).
    """
    design = getattr(model, "iv_design", None)
    if design is None:
        raise ValueError("this model was not made by build_iv_model")
    idata = _fit(model, **overrides)
    attrs = {SPEC_PREFIX + "instrument": design.config.instrument or "",
             SPEC_PREFIX + "controls": list(design.config.controls)}
    idata.attrs.update(attrs)
    idata["posterior"].attrs.update(attrs)
    return idata


def compile_iv_model(model: pm.Model):
    """Compile a model of :func:`build_iv_model` for nutpie, every chain starting at zero correlation.

    Chains start at PyMC's jittered initial values, except the error correlation, which
    starts at 0. Started near -1 or 1, a chain can settle on a ridge of the likelihood
    where the instrument is switched off (``pi_z`` near 0) and the correlation absorbs
    the slope: one chain in four did so on the chapter's market, hundreds of log-density
    units below the posterior's mode, and never left it.
    """
    import nutpie

    jitter = {v for v in model.free_RVs if v.name != "corr_chol"}
    return nutpie.compile_pymc_model(model, jitter_rvs=jitter)


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
            with exact_numba_arithmetic():
                self._compiled = compile_iv_model(build_iv_model(data, design=design))
            self._shape = shape
        if shape != self._shape:
            raise ValueError(f"this fitter was compiled for regions and controls {self._shape}; the data have {shape}")
        k = design.centring
        updates = {f"centre_{f.name}": np.asarray(getattr(k, f.name)) for f in dataclasses.fields(Centring)}
        updates.update(gram=gram_matrices(data, design, without=without), income_std=(data.income - k.income) / k.income_scale)
        compiled = self._compiled.with_data(**updates)
        with exact_numba_arithmetic():
            idata = nutpie.sample(compiled, seed=int(seed), progress_bar=False, **self.sample_kwargs)
        kind = DEMAND_KIND if self.config.instrument is None else IV_KIND
        idata.attrs.update(spec_attributes(ModelSpec(kind=kind, likelihood="sufficient", data=data)))
        idata.attrs.update({SPEC_PREFIX + "instrument": self.config.instrument or "",
                            SPEC_PREFIX + "controls": [c for c in self.config.controls if c not in without]})
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

#: Parameters of the instrumental-variable model that the calibration checks.
IV_PARAMETERS: tuple[str, ...] = ("b0", "b1", "sigma_b", "sigma", "sigma_price", "pi_z", "rho")


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
    with exact_numba_arithmetic():
        compiled = compile_iv_model(build_iv_model(data, design=design))
    compile_seconds = time.perf_counter() - t0
    names = list(truth.columns)
    regions = data.coords["region"]
    rank_rows, fit_rows = [], []
    for i in range(n_markets):
        t0 = time.perf_counter()
        # the market's outcomes in the fixed design: same centring, so the same prior as the simulation
        market_data = dataclasses.replace(data, log_price=log_p[i], log_quantity=log_q[i])
        market = compiled.with_data(gram=gram_matrices(market_data, design))
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
