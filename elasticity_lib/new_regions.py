"""Predictions for regions that were never observed, and held-out checks of them.

A multilevel model says how regions differ: each region's intercept and elasticity sit
on a line in median income plus a region deviation drawn from a fitted distribution.
A region never observed is therefore predicted by drawing, for every posterior draw,

    alpha_new = a0 + a1 * income + dev_a,    beta_new = b0 + b1 * income + dev_b,

with ``(dev_a, dev_b)`` a fresh deviation: independent ``Normal(0, sigma_a)`` and
``Normal(0, sigma_b)`` for the ``multilevel`` (and ``store_multilevel``) models, and
``L z`` with ``L`` the posterior draw of the Cholesky factor for the ``correlated`` model.

The known regions are *not* re-drawn: their effects are the posterior draws themselves.
(Changing a model's region coordinate and calling posterior predictive sampling would
re-draw every region's deviation from its prior; see the book's chapter on new regions.)

:class:`HoldoutRefitter` refits the multilevel model with one region's data removed,
compiling the model once and swapping data between refits, so that every region of many
markets can be held out in turn in a few seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ._checks import check_probability, posterior_dataset
from .inference import exact_numba_arithmetic
from .models import SPEC_PREFIX, build_model, fitted_kind, recorded, region_cholesky
from .prepare import STAT_FIELDS, Centring, ModelData, prepare_data
from .reproducibility import sampler_seed

__all__ = [
    "PREDICTABLE_KINDS",
    "new_region_draws",
    "predict_regions",
    "HoldoutRefitter",
    "holdout_coverage",
    "leave_region_out",
]

#: Model kinds with a population distribution of regions, hence able to predict a new one.
PREDICTABLE_KINDS: tuple[str, ...] = ("multilevel", "correlated", "store_multilevel")

_SAMPLE_DIMS = ("chain", "draw")


def _check_incomes(new_incomes: Mapping) -> tuple[list, np.ndarray]:
    if not isinstance(new_incomes, Mapping) or len(new_incomes) == 0:
        raise ValueError("new_incomes must be a non-empty mapping {region name: median income}")
    names = list(new_incomes)
    incomes = np.array([float(new_incomes[n]) for n in names])
    for name, value in zip(names, incomes):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"new_incomes[{name!r}] must be a finite, strictly positive income, got {value}")
    return names, incomes


def new_region_draws(idata, new_incomes: Mapping, *, kind: str | None = None, seed=None,
                     log_price_center: float | None = None) -> xr.Dataset:
    """Posterior predictive draws of intercept and elasticity for regions never observed.

    ``new_incomes`` maps a name for each new region to its median income (original
    scale). Returns a Dataset with ``alpha`` and ``beta`` of dims ``(chain, draw,
    region)``, one fresh region deviation per posterior draw, plus ``income`` on the
    ``region`` dim. ``kind`` defaults to the kind recorded on the fit, ``seed`` to
    ``sampler_seed("new_regions")``, ``log_price_center`` (the log price at which the
    model defines region deviations) to the one recorded on the fit.
    """
    kind = fitted_kind(idata) if kind is None else kind
    x_c = float(recorded(idata, "log_price_center")) if log_price_center is None else float(log_price_center)
    seed = sampler_seed("new_regions") if seed is None else seed
    if kind not in PREDICTABLE_KINDS:
        raise ValueError(
            f"kind {kind!r} has no population distribution of regions to predict from; "
            f"choose one of {list(PREDICTABLE_KINDS)}"
        )
    post = posterior_dataset(idata)
    names, incomes = _check_incomes(new_incomes)
    needed = ["a0", "a1", "b0", "b1"] + (["chol_region"] if kind == "correlated" else ["sigma_a", "sigma_b"])
    missing = [v for v in needed if v not in post]
    if missing:
        raise ValueError(f"the posterior lacks {missing}, needed to predict a new region with kind={kind!r}")
    inc = xr.DataArray(incomes, dims="region", coords={"region": names})
    line_a = post["a0"] + post["a1"] * inc
    line_b = post["b0"] + post["b1"] * inc
    rng = np.random.default_rng(seed)
    shape = (post.sizes["chain"], post.sizes["draw"], len(names))
    z = [xr.DataArray(rng.standard_normal(shape), dims=(*_SAMPLE_DIMS, "region"), coords={"region": names})
         for _ in range(2)]
    if kind == "correlated":
        l00, l10, l11 = region_cholesky(post)
        dev_a, dev_b = l00 * z[0], l10 * z[0] + l11 * z[1]
    else:
        dev_a, dev_b = post["sigma_a"] * z[0], post["sigma_b"] * z[1]
    # deviations are defined at the centre of log price; the intercept is reported at log price 0
    out = xr.Dataset({"alpha": line_a + dev_a - x_c * dev_b, "beta": line_b + dev_b})
    return out.transpose(*_SAMPLE_DIMS, "region").assign_coords(income=inc)


def predict_regions(idata, new_incomes: Mapping | None = None, *, kind: str | None = None, seed=None) -> xr.Dataset:
    """Intercepts and elasticities of the fitted regions and of new regions, per draw.

    Fitted regions keep exactly their posterior draws of ``alpha`` and ``beta``; new
    regions (``new_incomes``: name -> median income) get posterior predictive draws from
    :func:`new_region_draws`. ``sigma`` is carried along for demand predictions, and the
    boolean coordinate ``observed`` tells the two kinds of region apart. Region labels
    are returned as strings (fitted region 7 becomes ``"7"``). ``kind`` defaults to the
    kind recorded on the fit (:func:`~elasticity_lib.models.fitted_kind`).
    """
    if kind is None and new_incomes:
        kind = fitted_kind(idata)
    post = posterior_dataset(idata)
    for var in ("alpha", "beta", "sigma"):
        if var not in post:
            raise ValueError(f"the posterior lacks {var!r}; fit a region-level model with elasticity_lib.fit")
    known = post[["alpha", "beta"]]
    known = known.assign_coords(observed=("region", np.ones(known.sizes["region"], dtype=bool)))
    parts = [known]
    if new_incomes:
        fitted = {str(r) for r in known["region"].values.tolist()}
        clash = [n for n in new_incomes if str(n) in fitted]
        if clash:
            raise ValueError(f"new region names {clash} are already fitted regions; pick other names")
        x_c = float(recorded(idata, "log_price_center"))
        new = new_region_draws(post, new_incomes, kind=kind, seed=seed, log_price_center=x_c).drop_vars("income")
        parts.append(new.assign_coords(observed=("region", np.zeros(new.sizes["region"], dtype=bool))))
    # one index of strings for fitted and new regions (a mixed index of ints and strings
    # cannot be selected from with a list of labels)
    parts = [p.assign_coords(region=[str(r) for r in p["region"].values.tolist()]) for p in parts]
    out = xr.concat(parts, dim="region", join="exact") if len(parts) > 1 else parts[0]
    return out.assign(sigma=post["sigma"])


class HoldoutRefitter:
    """Refit the multilevel model without one region, compiling the model only once.

    The first :meth:`fit` compiles the multilevel model in marginal form with shared
    data and region weights (``build_model(..., shared_data=True, group_weights=...)``)
    with nutpie (a few seconds);
    every later call swaps in new data with nutpie's ``with_data`` and only samples. Any
    market with the same number of regions can be refitted. Log price, log quantity and
    income are centred on the market's own data without the held-out region (its rows and its income), exactly as
    ``build_model`` centres the reduced table, so a refit is the fit without the region.
    """

    def __init__(self, draws: int = 1000, tune: int = 1000, chains: int = 4, target_accept: float = 0.9):
        self.sample_kwargs = dict(draws=draws, tune=tune, chains=chains, target_accept=target_accept)
        self._compiled = None
        self._n_regions: int | None = None

    def fit(self, data: ModelData, held_out, *, seed: int) -> xr.DataTree:
        """Posterior of the multilevel model given every region of ``data`` but ``held_out``."""
        import nutpie

        regions = list(data.coords["region"])
        if held_out not in regions:
            raise ValueError(f"held_out region {held_out!r} is not one of the regions {regions}")
        if self._compiled is None:
            with exact_numba_arithmetic():
                model = build_model("multilevel", data, "marginal", shared_data=True,
                                    group_weights=np.ones(data.n_regions))
                self._compiled = nutpie.compile_pymc_model(model)
            self._n_regions = data.n_regions
        if data.n_regions != self._n_regions:
            raise ValueError(
                f"this refitter was compiled for {self._n_regions} regions; the data have {data.n_regions}"
            )
        weight = np.array([0.0 if r == held_out else 1.0 for r in regions])
        k = Centring.of(data.region_stats, data.income, weight)
        updates = {f"stat_{f}": getattr(data.region_stats, f) for f in STAT_FIELDS}
        updates.update({f"centre_{f.name}": np.asarray(getattr(k, f.name)) for f in dataclasses.fields(Centring)})
        updates.update(group_weight=weight, income_std=(data.income - k.income) / k.income_scale)
        compiled = self._compiled.with_data(**updates)
        with exact_numba_arithmetic():
            idata = nutpie.sample(compiled, seed=int(seed), progress_bar=False, **self.sample_kwargs)
        # what was fitted, as fit() records it (the model kind and where deviations are defined)
        idata.attrs.update({SPEC_PREFIX + "kind": "multilevel", SPEC_PREFIX + "log_price_center": k.log_price})
        idata["posterior"].attrs.update(idata.attrs)
        return idata


def holdout_coverage(markets: Sequence, *, prob: float = 0.94, seed: int,
                     refitter: HoldoutRefitter | None = None) -> pd.DataFrame:
    """Hold out each region of each market in turn and check its predictive interval.

    ``markets`` is a sequence of ``(label, Market)`` pairs of simulated markets (their
    ``truth`` gives the true elasticities). For every region the multilevel model is
    refitted without that region's rows, the region's elasticity is predicted from its
    income alone, and the table records the equal-tailed ``prob`` interval and whether
    it holds the true value.
    """
    check_probability(prob)
    refitter = refitter or HoldoutRefitter()
    tail = (1 - prob) / 2
    rng = np.random.default_rng(seed)
    rows = []
    for label, market in markets:
        if market.truth is None:
            raise ValueError(f"market {label!r} has no simulation truth to compare with")
        data = prepare_data(market.to_dataframe())
        truth = market.truth.region_elasticities
        for j, region in enumerate(data.coords["region"]):
            idata = refitter.fit(data, region, seed=int(rng.integers(2**31)))
            pred = new_region_draws(idata, {"held_out": data.income[j]}, kind="multilevel", seed=int(rng.integers(2**31)))
            draws = pred["beta"].values.ravel()
            lower, upper = np.quantile(draws, [tail, 1 - tail])
            true = truth[int(region)]
            rows.append({
                "market": label,
                "region": region,
                "income": data.income[j],
                "n_obs": int(data.region_stats.n[j]),
                "true_elasticity": true,
                "pred_mean": draws.mean(),
                "pred_sd": draws.std(),
                "lower": lower,
                "upper": upper,
                "covered": bool(lower <= true <= upper),
                "divergences": int(idata["sample_stats"]["diverging"].sum()),
            })
    return pd.DataFrame(rows)


def leave_region_out(data: ModelData, *, refitter: HoldoutRefitter | None = None, seed_stream: str = "loro") -> pd.DataFrame:
    """Leave-one-region-out predictive scores of the multilevel model, with Monte Carlo errors.

    Each region in turn is left out: the model is refitted without its rows
    (:class:`HoldoutRefitter`), the region's effects are predicted from its income alone
    (:func:`new_region_draws`), and its rows are scored with the log predictive density
    ``sum_i log mean_s p(y_i | theta_s)``, summed like ``elpd_loo``. This is the
    cross-validation that matches the question "how well does the model predict a region it
    has never seen". The Monte Carlo error is, to first order, that of the mean over draws of
    ``sum_i p_is / mean_s p_is`` (the same linearisation as
    :func:`~elasticity_lib.reproducibility.loo_monte_carlo_error`). Seeds come from
    ``sampler_seed(f"{seed_stream}_fit_<region>")`` and ``..._effects_<region>``.

    Returns one row per region: ``rows``, ``elpd`` and ``mcse``.
    """
    import arviz as az
    from scipy import stats

    refitter = refitter or HoldoutRefitter()
    out = []
    for j, region in enumerate(data.coords["region"]):
        held = refitter.fit(data, region, seed=sampler_seed(f"{seed_stream}_fit_{region}"))
        effects = new_region_draws(held, {"held_out": data.income[j]},
                                   seed=sampler_seed(f"{seed_stream}_effects_{region}")).sel(region="held_out")
        shape = effects["alpha"].shape  # (chain, draw)
        alpha, beta = (effects[v].values.reshape(-1, 1) for v in ("alpha", "beta"))
        sigma = held["posterior"]["sigma"].values.reshape(-1, 1)
        rows = data.region_idx == j
        logp = stats.norm.logpdf(data.log_quantity[rows], alpha + beta * data.log_price[rows], sigma)
        top = logp.max(axis=0)
        p = np.exp(logp - top)
        elpd = float((top + np.log(p.mean(axis=0))).sum())
        u = (p / p.mean(axis=0)).sum(axis=1).reshape(shape)
        mcse = float(az.mcse(xr.Dataset({"u": (("chain", "draw"), u)}), method="mean")["u"])
        out.append({"region": region, "rows": int(rows.sum()), "elpd": elpd, "mcse": mcse})
    return pd.DataFrame(out).set_index("region")
