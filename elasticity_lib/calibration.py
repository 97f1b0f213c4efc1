"""Simulation-based calibration (SBC) of the multilevel model.

SBC (Talts et al. 2018) checks a model and its sampler together: draw parameters from
the prior, simulate a market from them, fit the model to the simulated market, and record
where the true value falls among the posterior draws (its *rank*). If the posterior is
computed correctly, every rank is uniformly distributed, and every x% credible interval
contains the truth in x% of the markets.

The design of the simulated markets (stores, regions, prices and region incomes) is held
fixed; only the parameters and the log quantities are drawn afresh for each market. The
parameters and the data come from the prior predictive distribution of the row-level
multilevel model (:func:`pymc.sample_prior_predictive`), and each market is fitted with
the fast marginal form. That form depends on the data only through per-region statistics,
so the model is compiled once with those statistics as :func:`pymc.Data` and every market
swaps in its own statistics (``CompiledModel.with_data``): a market then costs a fraction
of a second instead of a fresh compilation.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from ._checks import check_probability
from .inference import SAMPLING_DEFAULTS, add_group_effects, exact_numba_arithmetic
from .models import ModelSpec, build_model
from .prepare import STAT_FIELDS, ModelData
from .reproducibility import sampler_seed

__all__ = [
    "POPULATION_PARAMETERS",
    "STAT_FIELDS",
    "SBCResult",
    "sbc_rank",
    "thin_draws",
    "interval_covers",
    "simulate_prior_markets",
    "run_sbc",
    "coverage_table",
    "rank_histogram",
    "rank_uniformity_pvalue",
    "plot_rank_histograms",
]

#: Population-level parameters of the multilevel model that the study checks.
POPULATION_PARAMETERS: tuple[str, ...] = ("a0", "a1", "b0", "b1", "sigma_a", "sigma_b", "sigma")
#: Per-region statistics that the marginal likelihood needs (see :class:`GroupStats`).


def sbc_rank(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Rank of each true value among its posterior draws: the number of draws below it.

    ``truth`` has shape ``(k,)`` and ``draws`` shape ``(L, k)``; ranks lie in ``0..L``.
    """
    truth = np.asarray(truth, dtype=float)
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 2 or draws.shape[1] != truth.shape[0]:
        raise ValueError(f"draws must have shape (L, {truth.shape[0]}), got {draws.shape}")
    return (draws < truth[None, :]).sum(axis=0)


def thin_draws(draws: np.ndarray, n_keep: int) -> np.ndarray:
    """Keep ``n_keep`` evenly spaced draws (rows) to weaken autocorrelation before ranking."""
    total = draws.shape[0]
    if not 0 < n_keep <= total:
        raise ValueError(f"n_keep must be between 1 and the number of draws ({total}), got {n_keep}")
    step = total // n_keep
    return draws[: step * n_keep : step]


def interval_covers(truth: np.ndarray, draws: np.ndarray, prob: float) -> np.ndarray:
    """Whether each true value lies inside the central (equal-tailed) ``prob`` interval."""
    check_probability(prob)
    lower, upper = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return (truth >= lower) & (truth <= upper)


def _hdi_covers(truth: np.ndarray, draws: np.ndarray, prob: float) -> np.ndarray:
    import arviz as az

    arr = xr.DataArray(draws[None, :, :], dims=("chain", "draw", "parameter"))
    hdi = az.hdi(arr, prob=prob)
    lower = hdi.sel(ci_bound="lower").to_numpy()
    upper = hdi.sel(ci_bound="upper").to_numpy()
    return (truth >= lower) & (truth <= upper)


def simulate_prior_markets(design: ModelData, n_markets: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw ``n_markets`` parameter sets and log quantities from the row model's prior predictive.

    Returns the true values (one row per market, one column per checked parameter:
    :data:`POPULATION_PARAMETERS` then ``beta[<region>]``) and the log quantities with shape
    ``(n_markets, n_rows)``.
    """
    if n_markets < 1:
        raise ValueError(f"n_markets must be at least 1, got {n_markets}")
    rows_model = build_model("multilevel", design, likelihood="rows")
    prior = pm.sample_prior_predictive(draws=n_markets, model=rows_model, random_seed=seed)
    p = prior["prior"].dataset
    truth = {name: p[name].to_numpy()[0] for name in POPULATION_PARAMETERS}
    beta = p["beta"].to_numpy()[0]
    for j, region in enumerate(design.coords["region"]):
        truth[f"beta[{region}]"] = beta[:, j]
    log_q = prior["prior_predictive"].dataset["log_quantity"].to_numpy()[0]
    return pd.DataFrame(truth), log_q


def _market_data(design: ModelData, log_q: np.ndarray) -> ModelData:
    table = design.table.assign(quantities=np.exp(log_q), log_quantities=log_q)
    return dataclasses.replace(design, table=table, log_quantity=np.asarray(log_q, dtype=float))


@dataclasses.dataclass
class SBCResult:
    """Outcome of a calibration run.

    ``ranks`` has one row per market and checked parameter, with the true value, its rank
    among ``n_ranked`` thinned draws, the posterior mean and sd, and whether the central
    50% and 94% intervals and the 94% HDI contain the truth. ``fits`` has one row per
    market with its divergences and fitting time.
    """

    ranks: pd.DataFrame
    fits: pd.DataFrame
    n_ranked: int
    compile_seconds: float
    settings: dict


def run_sbc(design: ModelData, n_markets: int, *, seed: int = 2018, fit_seed: int | None = None, n_ranked: int = 199,
            draws: int | None = None, tune: int | None = None, chains: int | None = None,
            cores: int | None = None, progress=None) -> SBCResult:
    """Simulation-based calibration of the multilevel model over ``n_markets`` prior draws.

    Sampler settings default to the book's (:data:`~elasticity_lib.inference.SAMPLING_DEFAULTS`).
    ``progress``, if given, is called as ``progress(i, n_markets)`` after each market.
    ``seed`` simulates the markets (the same on every machine); ``fit_seed`` seeds the
    sampler and the draws of the region effects (default:
    ``sampler_seed("sbc")``, which ``ELASTICITY_SAMPLER_SEED`` changes). Results depend
    only on the two seeds and the settings.
    """
    import nutpie

    draws = draws or SAMPLING_DEFAULTS["draws"]
    tune = tune or SAMPLING_DEFAULTS["tune"]
    chains = chains or SAMPLING_DEFAULTS["chains"]
    if n_ranked > draws * chains:
        raise ValueError(f"n_ranked ({n_ranked}) exceeds the number of posterior draws ({draws * chains})")
    truth, log_q = simulate_prior_markets(design, n_markets, seed)
    if fit_seed is None:
        fit_seed = sampler_seed("sbc")
    seeds = np.random.SeedSequence([seed, fit_seed]).spawn(n_markets)

    t0 = time.perf_counter()
    with exact_numba_arithmetic():
        compiled = nutpie.compile_pymc_model(build_model("multilevel", design, "marginal", shared_data=True))
    compile_seconds = time.perf_counter() - t0

    names = list(truth.columns)
    regions = design.coords["region"]
    rank_rows, fit_rows = [], []
    for i in range(n_markets):
        t0 = time.perf_counter()
        data = _market_data(design, log_q[i])
        stats = data.region_stats
        market_model = compiled.with_data(**{f"stat_{f}": getattr(stats, f) for f in ("my", "cxy", "cyy")})
        sample_seed, effects_seed = (int(s) for s in seeds[i].generate_state(2))
        with exact_numba_arithmetic():
            idata = nutpie.sample(market_model, draws=draws, tune=tune, chains=chains, cores=cores,
                                  seed=sample_seed, progress_bar=False,
                                  target_accept=SAMPLING_DEFAULTS["target_accept"])
        idata = add_group_effects(idata, ModelSpec("multilevel", "marginal", data), seed=effects_seed)
        post = idata["posterior"].dataset
        flat = np.column_stack(
            [post[p].to_numpy().reshape(-1) for p in POPULATION_PARAMETERS]
            + [post["beta"].sel(region=r).to_numpy().reshape(-1) for r in regions]
        )
        true = truth.iloc[i].to_numpy()
        ranks = sbc_rank(true, thin_draws(flat, n_ranked))
        in50 = interval_covers(true, flat, 0.5)
        in94 = interval_covers(true, flat, 0.94)
        in94_hdi = _hdi_covers(true, flat, 0.94)
        seconds = time.perf_counter() - t0
        for k, name in enumerate(names):
            rank_rows.append((i, name, true[k], int(ranks[k]), flat[:, k].mean(), flat[:, k].std(ddof=1),
                              bool(in50[k]), bool(in94[k]), bool(in94_hdi[k])))
        fit_rows.append((i, int(idata["sample_stats"].dataset["diverging"].sum()), seconds))
        if progress is not None:
            progress(i + 1, n_markets)
    ranks = pd.DataFrame(rank_rows, columns=["market", "parameter", "truth", "rank", "post_mean", "post_sd",
                                             "in50", "in94", "in94_hdi"])
    ranks["group"] = ranks["parameter"].str.replace(r"\[.*\]$", "", regex=True)
    fits = pd.DataFrame(fit_rows, columns=["market", "divergences", "seconds"])
    settings = {"n_markets": n_markets, "seed": seed, "fit_seed": fit_seed, "n_ranked": n_ranked, "draws": draws, "tune": tune,
                "chains": chains, "target_accept": SAMPLING_DEFAULTS["target_accept"], "sampler": "nutpie",
                "likelihood": "marginal", "n_regions": design.n_regions, "n_stores": design.n_stores,
                "n_rows": design.n_obs}
    return SBCResult(ranks=ranks, fits=fits, n_ranked=n_ranked, compile_seconds=compile_seconds, settings=settings)


def coverage_table(ranks: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Share of markets whose intervals contain the truth, per parameter (or group of them).

    ``by="group"`` pools the region elasticities ``beta[...]`` into one row ``beta``. Each
    coverage comes with its binomial standard error, so a gap can be read against chance.
    """
    out = ranks.groupby(by, sort=False).agg(n=("in94", "size"), cover50=("in50", "mean"),
                                            cover94=("in94", "mean"), cover94_hdi=("in94_hdi", "mean"))
    for col, p in [("cover50", 0.5), ("cover94", 0.94)]:
        out[f"{col}_se"] = np.sqrt(p * (1 - p) / out["n"])
    return out[["n", "cover50", "cover50_se", "cover94", "cover94_se", "cover94_hdi"]]


def rank_histogram(ranks: np.ndarray, n_ranked: int, bins: int) -> np.ndarray:
    """Counts of ranks (in ``0..n_ranked``) in ``bins`` equal bins; ``n_ranked + 1`` must divide evenly."""
    ranks = np.asarray(ranks)
    if (n_ranked + 1) % bins:
        raise ValueError(f"{n_ranked + 1} possible ranks do not split into {bins} equal bins")
    if ranks.size and (ranks.min() < 0 or ranks.max() > n_ranked):
        raise ValueError(f"ranks must lie in 0..{n_ranked}")
    return np.bincount(ranks // ((n_ranked + 1) // bins), minlength=bins)


def rank_uniformity_pvalue(ranks: np.ndarray, n_ranked: int, bins: int = 20) -> float:
    """p-value of a chi-square test that the binned ranks are uniform."""
    from scipy import stats

    counts = rank_histogram(ranks, n_ranked, bins)
    return float(stats.chisquare(counts).pvalue)


def plot_rank_histograms(ranks: pd.DataFrame, n_ranked: int, bins: int = 20, parameters=None, ncols: int = 4):
    """Rank histograms, one panel per parameter, with the 99% band of a uniform histogram.

    Bars outside the grey band point to a miscalibrated posterior: a U shape to intervals
    too narrow, a hump to intervals too wide, a slope to a bias (Talts et al. 2018).
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    parameters = list(parameters or dict.fromkeys(ranks["parameter"]))
    nrows = int(np.ceil(len(parameters) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.3 * nrows), sharey=True,
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes.flat, parameters):
        r = ranks.loc[ranks["parameter"] == name, "rank"].to_numpy()
        counts = rank_histogram(r, n_ranked, bins)
        lo, hi = stats.binom.ppf([0.005, 0.995], len(r), 1 / bins)
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.axhline(len(r) / bins, color="0.5", lw=0.8)
        ax.bar(np.arange(bins), counts, width=0.9, color="C0")
        ax.set_title(name)
        ax.set_xticks([])
    for ax in axes.flat[len(parameters):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("markets")
    for ax in axes[-1, :]:
        ax.set_xlabel("rank bin")
    return fig
