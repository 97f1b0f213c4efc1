"""Sampler seeds that a user can change, and statistical checks of sampler output.

Two facts shape how the book checks its results.

1. **Sampler output is not portable.** With the same seed, JAX/XLA and Numba compile
   different machine code on different CPUs, so floating-point sums, and the draws that
   follow from them, differ in their last digits from one machine to the next. Any byte
   comparison of sampler output, rounded or not, fails on some reader's machine, because
   a rounding boundary always lies somewhere.
2. **Simulated data are portable.** NumPy's generators give the same numbers for the same
   seed everywhere, so simulated tables, data summaries and model graphs are compared
   exactly.

So the seed of every sampler call (NUTS, prior and posterior predictive draws) comes from
:func:`sampler_seed`, which the environment variable ``ELASTICITY_SAMPLER_SEED`` changes
without touching the seeds that simulate data. Running the book with another value is how
this machine stands in for a reader's: a chapter whose checks pass for any sampler seed
passes on any machine.

Sampler results are checked against a reference summary committed beside each chapter
(:class:`ReferenceSummaries`): a posterior mean or standard deviation agrees with its
reference when the difference is within ``z`` Monte Carlo standard errors of the
difference, ``|x - x_ref| <= z * sqrt(mcse^2 + mcse_ref^2)``. Two runs with independent
seeds give estimates whose difference is approximately Normal with that standard error
(a Markov chain central limit theorem), so ``z`` fixes the false-alarm probability.
One check compares many numbers at once; :func:`z_threshold` chooses ``z`` by Bonferroni's
inequality so that the probability that *any* of them exceeds its tolerance, when nothing
is wrong, is at most :data:`FALSE_ALARM` (one in ten thousand per check).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

__all__ = [
    "SAMPLER_SEED_ENV",
    "RECORD_ENV",
    "DEFAULT_SAMPLER_SEED",
    "FALSE_ALARM",
    "sampler_seed",
    "z_threshold",
    "max_divergences",
    "monte_carlo_summary",
    "AgreementCheck",
    "compare_estimates",
    "loo_monte_carlo_error",
    "ReferenceSummaries",
]

#: Environment variable that sets the base seed of every sampler call.
SAMPLER_SEED_ENV = "ELASTICITY_SAMPLER_SEED"
#: Environment variable that makes :class:`ReferenceSummaries` write instead of check.
RECORD_ENV = "ELASTICITY_RECORD_REFERENCES"
#: The base sampler seed when the environment does not set one.
DEFAULT_SAMPLER_SEED = 4242
#: Probability that one agreement check fails although the sampler is fine.
FALSE_ALARM = 1e-4


def _base_seed() -> int:
    raw = os.environ.get(SAMPLER_SEED_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_SAMPLER_SEED
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{SAMPLER_SEED_ENV} must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{SAMPLER_SEED_ENV} must be a non-negative integer, got {value}")
    return value


def sampler_seed(stream: int | str | None = None) -> int:
    """The seed of a sampler call: the base seed, or a stream derived from it.

    The base seed is ``ELASTICITY_SAMPLER_SEED`` from the environment, read at each call,
    or :data:`DEFAULT_SAMPLER_SEED`. A ``stream`` (a number or a name) gives an
    independent seed for one of several sampler calls of a chapter, so that, for example,
    the prior predictive draws and the NUTS run do not share random numbers; the same base
    seed and stream always give the same value.
    """
    base = _base_seed()
    if stream is None:
        return base
    if isinstance(stream, str):
        key = zlib.crc32(stream.encode("utf-8"))
    elif isinstance(stream, (int, np.integer)) and stream >= 0:
        key = int(stream)
    else:
        raise ValueError(f"stream must be a non-negative integer or a string, got {stream!r}")
    return int(np.random.SeedSequence([base, key]).generate_state(1)[0])


def z_threshold(n_comparisons: int, false_alarm: float = FALSE_ALARM) -> float:
    """Standard errors a difference may reach before a check of ``n_comparisons`` fails.

    Each comparison is two-sided; Bonferroni's inequality splits ``false_alarm`` among
    them, so ``z`` is the standard Normal quantile of ``1 - false_alarm / (2 n)``. For
    one comparison and a false alarm of 1e-4 it is 3.89; for 40 comparisons, 4.9.
    """
    if n_comparisons < 1:
        raise ValueError(f"n_comparisons must be at least 1, got {n_comparisons}")
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"false_alarm must lie in (0, 1), got {false_alarm}")
    return float(stats.norm.isf(false_alarm / (2 * n_comparisons)))


def max_divergences(transitions: int, rate: float = 1e-3, false_alarm: float = 1e-3) -> int:
    """The most divergent transitions a healthy fit of ``transitions`` draws produces.

    If each transition diverges independently with probability at most ``rate``, the
    count is at most Binomial(transitions, rate), which exceeds the returned bound with
    probability at most ``false_alarm``. A model that diverges now and then on some
    sampler seed (a single divergence in one of a dozen seeds) passes; one with a real
    problem in its geometry, which diverges by the dozen, does not.
    """
    if transitions < 1:
        raise ValueError(f"transitions must be at least 1, got {transitions}")
    if not 0.0 < rate < 1.0 or not 0.0 < false_alarm < 1.0:
        raise ValueError(f"rate and false_alarm must lie in (0, 1), got {rate} and {false_alarm}")
    return int(stats.binom.isf(false_alarm, transitions, rate))


def monte_carlo_summary(idata, var_names) -> pd.DataFrame:
    """Posterior mean and sd of every element of ``var_names``, with their Monte Carlo errors.

    Built on :func:`arviz.summary` (``mcse_mean`` and ``mcse_sd``); the index names each
    element the way ArviZ does (``beta[3]``).
    """
    import arviz as az

    table = az.summary(idata, var_names=list(var_names), kind="all", round_to="none")
    return table[["mean", "sd", "mcse_mean", "mcse_sd"]].astype(float)


@dataclass(frozen=True)
class AgreementCheck:
    """The outcome of comparing estimates with a reference within Monte Carlo error."""

    name: str
    table: pd.DataFrame  # one row per compared number: estimate, reference, tolerance, ok
    z: float
    false_alarm: float

    @property
    def passed(self) -> bool:
        """Whether every compared number agrees with its reference."""
        return bool(self.table["ok"].all())

    @property
    def failures(self) -> pd.DataFrame:
        """The rows of the numbers that disagree."""
        return self.table[~self.table["ok"]]

    def __repr__(self) -> str:
        verdict = "agree" if self.passed else f"DISAGREE ({len(self.failures)} of {len(self.table)})"
        return (f"{self.name}: {len(self.table)} estimates {verdict} with the reference within "
                f"{self.z:.1f} Monte Carlo standard errors (false-alarm probability {self.false_alarm:g})")

    def require(self) -> "AgreementCheck":
        """Raise ``AssertionError`` listing the numbers that disagree; return self otherwise."""
        if not self.passed:
            raise AssertionError(f"{self!r}\n{self.failures.to_string()}")
        return self


def compare_estimates(name: str, estimates: pd.DataFrame, reference: pd.DataFrame, *,
                      false_alarm: float = FALSE_ALARM, floor: float = 1e-9) -> AgreementCheck:
    """Compare ``estimate``/``mcse`` pairs with a reference table of the same layout.

    Both tables are indexed by the name of each number and have the columns ``estimate``
    and ``mcse``. A number agrees when ``|estimate - reference| <= z * sqrt(mcse^2 +
    mcse_ref^2) + floor``, with ``z`` from :func:`z_threshold` for all numbers compared;
    ``floor`` only keeps numbers that are constant by construction (Monte Carlo error
    zero) from failing on rounding. Numbers missing on either side are an error, named.
    """
    missing = sorted(set(reference.index) ^ set(estimates.index))
    if missing:
        raise KeyError(f"{name}: these numbers are in only one of estimate and reference: {missing}")
    est = estimates.loc[reference.index]
    z = z_threshold(len(reference), false_alarm)
    se = np.sqrt(est["mcse"].to_numpy() ** 2 + reference["mcse"].to_numpy() ** 2)
    table = pd.DataFrame({
        "estimate": est["estimate"].to_numpy(),
        "reference": reference["estimate"].to_numpy(),
        "tolerance": z * se + floor,
    }, index=reference.index)
    table["ok"] = (table["estimate"] - table["reference"]).abs() <= table["tolerance"]
    return AgreementCheck(name, table, z, false_alarm)


def loo_monte_carlo_error(idata, loo, var_name: str | None = None) -> dict[str, float]:
    """Monte Carlo standard errors of ``elpd_loo`` and ``p_loo``, to first order in the draws.

    ``loo`` is the result of :func:`arviz.loo` on ``idata`` (which holds the pointwise
    log-likelihood). With the normalised importance weights ``w_is`` of row ``i`` and draw
    ``s`` (``S`` draws), ``elpd_loo = sum_i log sum_s w_is p_is``; for plain importance
    sampling this is ``-sum_i log mean_s (1 / p_is)``, whose Monte Carlo error is, to first
    order, that of the mean over draws of ``T_s = -sum_i S w_is``. Likewise ``lppd =
    sum_i log mean_s p_is`` varies like the mean of ``U_s = sum_i p_is / mean_s p_is``, and
    ``p_loo = lppd - elpd_loo`` like that of ``U_s - T_s``. Summing over rows inside each
    draw keeps the correlation of rows that share draws; ArviZ's Monte Carlo error of a
    mean accounts for autocorrelation. The PSIS-smoothed weights stand in for the raw ones
    (with Pareto k below 0.7 they differ in a few tail draws only).

    This is the error that changes with the sampler seed. The ``se`` that ArviZ reports
    is the uncertainty from the finite data, which no seed changes.
    """
    import arviz as az

    group = idata["log_likelihood"]
    name = var_name or next(iter(group.data_vars))
    log_lik = group[name]
    if isinstance(log_lik, xr.DataTree):  # pragma: no cover - a DataTree node, not a variable
        raise TypeError(f"{name!r} is not a variable of the log_likelihood group")
    rows = [d for d in log_lik.dims if d not in ("chain", "draw")]
    n_draws = log_lik.sizes["chain"] * log_lik.sizes["draw"]
    t = -(n_draws * np.exp(loo.log_weights)).sum(rows)
    p = np.exp(log_lik - log_lik.max(("chain", "draw")))
    u = (p / p.mean(("chain", "draw"))).sum(rows)
    mcse = az.mcse(xr.Dataset({"elpd_loo": t, "p_loo": u - t}), method="mean")
    return {key: float(mcse[key]) for key in ("elpd_loo", "p_loo")}


def _long(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd rows of a :func:`monte_carlo_summary`, as estimate/mcse pairs."""
    means = summary[["mean", "mcse_mean"]].set_axis(["estimate", "mcse"], axis=1)
    sds = summary[["sd", "mcse_sd"]].set_axis(["estimate", "mcse"], axis=1)
    means.index = [f"mean {i}" for i in summary.index]
    sds.index = [f"sd {i}" for i in summary.index]
    return pd.concat([means, sds])


def _dump(entries: dict) -> str:
    """JSON with one line per estimate, so that a changed reference reads well in a diff."""
    blocks = []
    for key in sorted(entries):
        rows = ",\n".join(f"   {json.dumps(name)}: {json.dumps(value)}"
                          for name, value in entries[key]["estimates"].items())
        blocks.append(f' {json.dumps(key)}: {{\n  "sampler_seed": {entries[key]["sampler_seed"]},\n'
                      f'  "estimates": {{\n{rows}\n  }}\n }}')
    return "{\n" + ",\n".join(blocks) + "\n}\n"


class ReferenceSummaries:
    """Reference Monte Carlo summaries of one chapter, kept in a JSON file beside it.

    ``check_posterior`` compares a fit's posterior means and sds with the stored ones,
    ``check_estimates`` any other named estimates with their Monte Carlo errors. With
    ``ELASTICITY_RECORD_REFERENCES=1`` in the environment, both write the current values
    instead (``make references`` does this with the default sampler seed); the file is
    meant to be committed. Each check's outcome is a deterministic sentence when it
    passes, so the cell that shows it can be compared exactly.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.recording = os.environ.get(RECORD_ENV, "") not in ("", "0")

    def _load(self) -> dict:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def _store(self, key: str, table: pd.DataFrame) -> None:
        entries = self._load()
        entries[key] = {"sampler_seed": _base_seed(),
                        "estimates": {i: [float(e), float(m)] for i, e, m in
                                      zip(table.index, table["estimate"], table["mcse"])}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(_dump(entries))
        tmp.replace(self.path)

    def reference(self, key: str) -> pd.DataFrame:
        """The stored estimates and Monte Carlo errors of ``key``."""
        entries = self._load()
        if key not in entries:
            raise KeyError(f"no reference {key!r} in {self.path}; record it with {RECORD_ENV}=1 (make references)")
        values = entries[key]["estimates"]
        return pd.DataFrame(list(values.values()), index=list(values), columns=["estimate", "mcse"])

    def check_estimates(self, key: str, estimates: pd.DataFrame, *,
                        false_alarm: float = FALSE_ALARM) -> AgreementCheck:
        """Check (or record) a table of ``estimate``/``mcse`` columns indexed by name."""
        estimates = estimates[["estimate", "mcse"]].astype(float)
        if not np.isfinite(estimates.to_numpy()).all():
            raise ValueError(f"{key}: estimates or Monte Carlo errors are not finite:\n{estimates}")
        if self.recording:
            self._store(key, estimates)
        return compare_estimates(key, estimates, self.reference(key), false_alarm=false_alarm).require()

    def check_posterior(self, idata, key: str, var_names, *, false_alarm: float = FALSE_ALARM) -> AgreementCheck:
        """Check (or record) the posterior means and sds of ``var_names``."""
        return self.check_estimates(key, _long(monte_carlo_summary(idata, var_names)), false_alarm=false_alarm)

    def check_values(self, key: str, draws: xr.DataArray | np.ndarray, *, sample_dims=("chain", "draw"),
                     false_alarm: float = FALSE_ALARM) -> AgreementCheck:
        """Check (or record) the means of derived quantities given as posterior draws.

        ``draws`` is a DataArray with ``chain`` and ``draw`` dimensions (and any others);
        its Monte Carlo error comes from ArviZ's effective sample size of each element.
        """
        import arviz as az

        if not isinstance(draws, xr.DataArray):
            raise TypeError("draws must be an xarray.DataArray with chain and draw dimensions")
        ds = xr.Dataset({key: draws})
        table = az.summary(ds, kind="all", round_to="none", sample_dims=list(sample_dims))
        estimates = table[["mean", "mcse_mean"]].astype(float).set_axis(["estimate", "mcse"], axis=1)
        return self.check_estimates(key, estimates, false_alarm=false_alarm)
