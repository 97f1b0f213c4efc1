"""Simulation-based calibration (SBC) of the multilevel, correlated and three-level models.

SBC (Talts et al. 2018) checks a model and its sampler together: draw parameters from
the prior, simulate a market from them, fit the model to the simulated market, and record
where the true value falls among the posterior draws (its *rank*). If the posterior is
computed correctly, every rank is uniformly distributed, and every x% credible interval
contains the truth in x% of the markets.

The design of the simulated markets (stores, regions, prices and region incomes) is held
fixed; only the parameters and the log quantities are drawn afresh for each market. The
parameters and the data come from the prior predictive distribution of the model's
row-level form (:func:`pymc.sample_prior_predictive`), and each market is fitted with the
fast marginal form, whose group effects (region effects; for ``store_multilevel`` store
and region effects) are integrated out and drawn exactly afterwards
(:func:`~elasticity_lib.inference.add_group_effects`). That form depends on the data only
through per-group statistics, so the model is compiled once with those statistics as
:func:`pymc.Data` (``build_model(..., shared_data=True)``) and every market swaps in its
own statistics (``CompiledModel.with_data``): a market then costs a fraction of a second
instead of a fresh compilation. The same code serves every kind; what differs is listed
once per kind in :data:`SBC_TARGETS`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pymc as pm

from elasticity_lib._checks import check_probability
from elasticity_lib.data.prepare import STAT_FIELDS, ModelData
from elasticity_lib.inference import KIND_SAMPLING, SAMPLING_DEFAULTS, add_group_effects, exact_numba_arithmetic
from elasticity_lib.models.builder import ModelSpec, build_model
from elasticity_lib.reproducibility import sampler_seed

__all__ = [
    "POPULATION_PARAMETERS",
    "STAT_FIELDS",
    "SBCTarget",
    "SBC_TARGETS",
    "SBCResult",
    "sbc_rank",
    "thin_draws",
    "interval_covers",
    "hdi_bounds",
    "simulate_prior_markets",
    "run_sbc",
    "coverage_table",
    "rank_histogram",
    "rank_uniformity_pvalue",
    "chi_square_false_alarm",
    "calibration_checks",
    "checks_false_alarm",
    "describe_study",
    "plot_rank_histograms",
    "study_stem",
    "read_study",
]


@dataclasses.dataclass(frozen=True)
class SBCTarget:
    """What a calibration run of one model kind checks, and which data a market swaps in.

    ``population`` are scalar parameters (sampled, or reported as deterministics on the
    original scale); ``effects`` are ``(variable, dimension)`` pairs of group effects, each
    checked per group as ``variable[label]``; ``groups`` names the statistics the marginal
    likelihood reads (``"region"`` or ``"store"``). Only the statistics that depend on log
    quantity (:data:`MARKET_STATS`) change from one market to the next.
    """

    population: tuple[str, ...]
    effects: tuple[tuple[str, str], ...]
    groups: str

    def stats(self, data: ModelData):
        """The group statistics of ``data`` that the marginal likelihood of this kind reads."""
        return data.region_stats if self.groups == "region" else data.store_stats


#: Population-level parameters of the multilevel model that the study checks.
POPULATION_PARAMETERS: tuple[str, ...] = ("a0", "a1", "b0", "b1", "sigma_a", "sigma_b", "sigma")

#: What the calibration of each model kind checks: every population parameter, the region
#: elasticities and, for the three-level model, the store elasticities.
SBC_TARGETS: dict[str, SBCTarget] = {
    "multilevel": SBCTarget(POPULATION_PARAMETERS, (("beta", "region"),), "region"),
    "correlated": SBCTarget(("a0", "a1", "b0", "b1", "sigma_a", "sigma_b", "rho", "sigma"),
                            (("beta", "region"),), "region"),
    "store_multilevel": SBCTarget(("a0", "a1", "b0", "b1", "sigma_a", "sigma_b", "sigma_store_a", "sigma_store_b",
                                   "sigma"), (("beta", "region"), ("beta_store", "store")), "store"),
}

#: Group statistics that depend on the log quantities, so differ between simulated markets
#: of one design (counts, mean log prices and their sums of squares do not).
MARKET_STATS: tuple[str, ...] = ("my", "cxy", "cyy")


def _target(kind: str) -> SBCTarget:
    if kind not in SBC_TARGETS:
        raise ValueError(f"simulation-based calibration covers the kinds {list(SBC_TARGETS)}, not {kind!r}")
    return SBC_TARGETS[kind]


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


def hdi_bounds(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of each column: the narrowest window of sorted draws holding ``prob``.

    The rule of ArviZ's default (``method="nearest"``) HDI, vectorised over columns: for
    thousands of draws of a hundred store elasticities ArviZ's per-variable call took
    seconds per market, this takes milliseconds (a test compares the two).
    """
    check_probability(prob)
    ordered = np.sort(np.asarray(draws, dtype=float), axis=0)
    n = ordered.shape[0]
    inc = min(int(np.floor(prob * n)), n - 1)
    widths = ordered[inc:] - ordered[: n - inc]
    start = np.argmin(widths, axis=0)
    cols = np.arange(ordered.shape[1])
    return ordered[start, cols], ordered[start + inc, cols]


def _hdi_covers(truth: np.ndarray, draws: np.ndarray, prob: float) -> np.ndarray:
    lower, upper = hdi_bounds(draws, prob)
    return (truth >= lower) & (truth <= upper)


def market_rank_rows(market: int, names, true: np.ndarray, flat: np.ndarray, n_ranked: int) -> list[tuple]:
    """One simulated market's rows of an SBC rank table.

    Per parameter: its truth, rank among ``n_ranked`` thinned draws, posterior mean and
    sd, and whether the 50% and 94% equal-tailed and the 94% highest-density intervals
    cover the truth (``flat``: draws x parameters).
    """
    ranks = sbc_rank(true, thin_draws(flat, n_ranked))
    in50, in94 = interval_covers(true, flat, 0.5), interval_covers(true, flat, 0.94)
    in94_hdi = _hdi_covers(true, flat, 0.94)
    mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    return [(market, name, true[k], int(ranks[k]), mean[k], sd[k], bool(in50[k]), bool(in94[k]), bool(in94_hdi[k]))
            for k, name in enumerate(names)]


def sbc_tables(rank_rows: list[tuple], fit_rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rank and fit tables of an SBC run.

    The rank table has one row per market and parameter, with its parameter ``group``; the
    fit table has the divergences and seconds of each market's fit.
    """
    ranks = pd.DataFrame(rank_rows, columns=["market", "parameter", "truth", "rank", "post_mean", "post_sd",
                                             "in50", "in94", "in94_hdi"])
    ranks["group"] = ranks["parameter"].str.replace(r"\[.*\]$", "", regex=True)
    return ranks, pd.DataFrame(fit_rows, columns=["market", "divergences", "seconds"])


def simulate_prior_markets(design: ModelData, n_markets: int, seed: int,
                           kind: str = "multilevel") -> tuple[pd.DataFrame, np.ndarray]:
    """Draw ``n_markets`` parameter sets and log quantities from the row model's prior predictive.

    Returns the true values (one row per market, one column per checked parameter: the
    kind's population parameters, then ``beta[<region>]`` and, for ``store_multilevel``,
    ``beta_store[<store>]``; see :data:`SBC_TARGETS`) and the log quantities with shape
    ``(n_markets, n_rows)``.
    """
    target = _target(kind)
    if n_markets < 1:
        raise ValueError(f"n_markets must be at least 1, got {n_markets}")
    rows_model = build_model(kind, design, likelihood="rows")
    prior = pm.sample_prior_predictive(draws=n_markets, model=rows_model, random_seed=seed)
    p = prior["prior"].dataset
    truth = {name: p[name].to_numpy()[0] for name in target.population}
    for name, dim in target.effects:
        values = p[name].transpose("chain", "draw", dim).to_numpy()[0]
        for j, label in enumerate(design.coords[dim]):
            truth[f"{name}[{label}]"] = values[:, j]
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


def run_sbc(design: ModelData, n_markets: int, *, kind: str = "multilevel", seed: int = 2018,
            fit_seed: int | None = None, n_ranked: int = 199, draws: int | None = None, tune: int | None = None,
            chains: int | None = None, target_accept: float | None = None, cores: int | None = None,
            markets: tuple[pd.DataFrame, np.ndarray] | None = None, progress=None) -> SBCResult:
    """Simulation-based calibration of one model kind over ``n_markets`` prior draws.

    ``kind`` is one of :data:`SBC_TARGETS`. Sampler settings default to the book's
    (:data:`~elasticity_lib.inference.SAMPLING_DEFAULTS`, with the kind's
    :data:`~elasticity_lib.inference.KIND_SAMPLING`). ``progress``, if given, is called as
    ``progress(i, n_markets)`` after each market. ``seed`` simulates the markets (the same
    on every machine); ``fit_seed`` seeds the sampler and the draws of the group effects
    (default: ``sampler_seed("sbc")`` for the multilevel model, ``sampler_seed("sbc-<kind>")``
    otherwise, which ``ELASTICITY_SAMPLER_SEED`` changes). Results depend only on the two
    seeds and the settings.

    ``markets`` replaces the simulation by given ``(truth, log_q)`` as
    :func:`simulate_prior_markets` returns them: to check the check, markets drawn under
    another prior than the fitted one must fail it.
    """
    import nutpie

    target = _target(kind)
    defaults = {**SAMPLING_DEFAULTS, **KIND_SAMPLING.get(kind, {})}
    draws = draws or defaults["draws"]
    tune = tune or defaults["tune"]
    chains = chains or defaults["chains"]
    target_accept = target_accept or defaults["target_accept"]
    check_probability(target_accept)
    if n_ranked > draws * chains:
        raise ValueError(f"n_ranked ({n_ranked}) exceeds the number of posterior draws ({draws * chains})")
    if markets is None:
        truth, log_q = simulate_prior_markets(design, n_markets, seed, kind)
    else:
        truth, log_q = markets
        log_q = np.asarray(log_q, dtype=float)
        if len(truth) < n_markets or log_q.shape[0] < n_markets or log_q.shape[1:] != (design.n_obs,):
            raise ValueError(f"markets must hold at least {n_markets} truths and log quantities of "
                             f"{design.n_obs} rows each, got {len(truth)} and shape {log_q.shape}")
    if fit_seed is None:
        fit_seed = sampler_seed("sbc" if kind == "multilevel" else f"sbc-{kind}")
    seeds = np.random.SeedSequence([seed, fit_seed]).spawn(n_markets)

    t0 = time.perf_counter()
    with exact_numba_arithmetic():
        compiled = nutpie.compile_pymc_model(build_model(kind, design, "marginal", shared_data=True))
    compile_seconds = time.perf_counter() - t0

    names = list(truth.columns)
    rank_rows, fit_rows = [], []
    for i in range(n_markets):
        t0 = time.perf_counter()
        data = _market_data(design, log_q[i])
        stats = target.stats(data)
        market_model = compiled.with_data(**{f"stat_{f}": getattr(stats, f) for f in MARKET_STATS})
        sample_seed, effects_seed = (int(s) for s in seeds[i].generate_state(2))
        with exact_numba_arithmetic():
            idata = nutpie.sample(market_model, draws=draws, tune=tune, chains=chains, cores=cores,
                                  seed=sample_seed, progress_bar=False, target_accept=target_accept)
        idata = add_group_effects(idata, ModelSpec(kind, "marginal", data), seed=effects_seed)
        post = idata["posterior"].dataset
        flat = np.column_stack(
            [post[p].to_numpy().reshape(-1) for p in target.population]
            + [post[name].transpose("chain", "draw", dim).to_numpy().reshape(-1, len(design.coords[dim]))
               for name, dim in target.effects]
        )
        rank_rows += market_rank_rows(i, names, truth.iloc[i].to_numpy(dtype=float), flat, n_ranked)
        fit_rows.append((i, int(idata["sample_stats"].dataset["diverging"].sum()), time.perf_counter() - t0))
        if progress is not None:
            progress(i + 1, n_markets)
    ranks, fits = sbc_tables(rank_rows, fit_rows)
    settings = {"kind": kind, "n_markets": n_markets, "seed": seed, "fit_seed": fit_seed, "n_ranked": n_ranked,
                "draws": draws, "tune": tune, "chains": chains, "target_accept": target_accept, "sampler": "nutpie",
                "likelihood": "marginal", "n_regions": design.n_regions, "n_stores": design.n_stores,
                "n_rows": design.n_obs, "simulated": markets is None}
    return SBCResult(ranks=ranks, fits=fits, n_ranked=n_ranked, compile_seconds=compile_seconds, settings=settings)


def coverage_table(ranks: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Share of markets whose intervals contain the truth, per parameter (or group of them).

    ``by="group"`` pools the region elasticities ``beta[...]`` into one row ``beta`` (and
    the store elasticities ``beta_store[...]`` into ``beta_store``). Each
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


def chi_square_false_alarm(n: int, bins: int, level: float) -> float:
    """Exact probability that :func:`rank_uniformity_pvalue` falls below ``level`` for uniform ranks.

    With few markets the chi-square p-value is only approximate, so this enumerates every
    way ``n`` ranks can fall into ``bins`` equally likely bins (at most a million of them)
    and adds up the multinomial probabilities of those whose p-value is below ``level``.
    """
    from itertools import combinations
    from math import comb

    from scipy import stats

    if n < 1 or bins < 2:
        raise ValueError(f"need n >= 1 ranks and at least 2 bins, got n={n}, bins={bins}")
    if comb(n + bins - 1, bins - 1) > 1_000_000:
        raise ValueError(f"{n} ranks in {bins} bins have over a million arrangements; use the asymptotic p-value")
    counts = np.array([np.diff([-1, *cuts, n + bins - 1]) - 1 for cuts in combinations(range(n + bins - 1), bins - 1)])
    pmf = stats.multinomial.pmf(counts, n, np.full(bins, 1 / bins))
    pvalues = stats.chisquare(counts, axis=1).pvalue
    return float(pmf[pvalues < level].sum())


def calibration_checks(ranks: pd.DataFrame, n_ranked: int, false_alarm: float = 1e-3, bins: int = 20) -> pd.DataFrame:
    """Whether each parameter's coverage and ranks look like those of a calibrated posterior.

    The markets are independent, so for one parameter the number of markets whose central
    50% (94%) interval covers the truth is Binomial(n, 0.5) (Binomial(n, 0.94)) when the
    posterior is right. Each parameter gets five tests: each coverage from below and from
    above (``low50..high50``, ``low94..high94``, bounds from
    :func:`~elasticity_lib.validation.recovery.coverage_threshold`) and the chi-square test of uniform
    ranks over ``bins`` bins (``rank_p`` above ``p_floor``). ``false_alarm`` is split
    evenly over all tests of all parameters (Bonferroni), so a correct posterior fails any
    of them with probability at most ``false_alarm`` (for the rank test as far as its
    chi-square approximation holds; :func:`chi_square_false_alarm` gives the exact figure
    for small runs). Elasticities of one market share its population parameters, so the
    pooled rows of :func:`coverage_table` are not binomial; each parameter on its own is.
    """
    from elasticity_lib.validation.recovery import coverage_threshold

    n_params = ranks["parameter"].nunique()
    each = false_alarm / (5 * n_params)
    rows = []
    for name, g in ranks.groupby("parameter", sort=False):
        n = len(g)
        low50, low94 = coverage_threshold(n, 0.5, each), coverage_threshold(n, 0.94, each)
        high50, high94 = n - coverage_threshold(n, 0.5, each), n - coverage_threshold(n, 0.06, each)
        covered50, covered94 = int(g["in50"].sum()), int(g["in94"].sum())
        p = rank_uniformity_pvalue(g["rank"].to_numpy(), n_ranked, bins)
        rows.append((name, g["group"].iloc[0], n, covered50, low50, high50, covered94, low94, high94, p,
                     low50 <= covered50 <= high50 and low94 <= covered94 <= high94 and p > each))
    out = pd.DataFrame(rows, columns=["parameter", "group", "n", "covered50", "low50", "high50", "covered94", "low94",
                                      "high94", "rank_p", "ok"]).set_index("parameter")
    out.insert(len(out.columns) - 1, "p_floor", each)
    return out


def checks_false_alarm(checks: pd.DataFrame, bins: int) -> float:
    """Bonferroni bound on the probability that a calibrated posterior fails :func:`calibration_checks`.

    Sums, over parameters, the exact binomial probabilities of a coverage outside its
    bounds and the probability that the rank test fails: exact
    (:func:`chi_square_false_alarm`) when the markets are few enough to enumerate, the
    nominal ``p_floor`` otherwise. For small runs the exact figure can differ from the
    ``false_alarm`` that was asked for, in either direction; this says what it is.
    """
    from scipy import stats

    total = 0.0
    for _, row in checks.iterrows():
        n = int(row["n"])
        total += stats.binom.cdf(row["low50"] - 1, n, 0.5) + stats.binom.sf(row["high50"], n, 0.5)
        total += stats.binom.cdf(row["low94"] - 1, n, 0.94) + stats.binom.sf(row["high94"], n, 0.94)
        try:
            total += chi_square_false_alarm(n, bins, row["p_floor"])
        except ValueError:
            total += row["p_floor"]
    return float(total)


def describe_study(summary: dict) -> str:
    """The lines that say how a study was run: script, date, machine, markets, sampler settings, divergences."""
    s = summary["settings"]
    machine = summary["machine"]
    return "\n".join([
        f"command: {summary['command'].split('/')[-1]}",
        f"run on:  {summary['date'][:10]}, {machine['processor']}, {machine['cpus']} CPUs",
        f"markets: {s['n_markets']}, draws {s['draws']} x {s['chains']} chains (tune {s['tune']}, target "
        f"acceptance {s['target_accept']}), ranks among {s['n_ranked']} draws",
        f"divergences: {summary['divergences']['total']} in {summary['divergences']['markets_with_any']} markets",
    ])


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


def study_stem(kind: str) -> str:
    """File name stem of a calibration study's results in ``benchmarks/results``.

    ``calibration`` for the multilevel model (the first study, under its first name),
    ``calibration_<kind>`` for the others.
    """
    _target(kind)
    return "calibration" if kind == "multilevel" else f"calibration_{kind}"


def read_study(folder, kind: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The summary, the ranks and the per-market fits of a study written by ``benchmarks/calibration.py``."""
    import json
    from pathlib import Path

    folder = Path(folder)
    stem = study_stem(kind)
    summary = json.loads((folder / f"{stem}.json").read_text())
    if summary.get("settings", {}).get("kind", "multilevel") != kind:
        raise ValueError(f"{folder / (stem + '.json')} holds a study of {summary['settings'].get('kind')!r}, not {kind!r}")
    return summary, pd.read_csv(folder / f"{stem}.csv"), pd.read_csv(folder / f"{stem}_fits.csv")
