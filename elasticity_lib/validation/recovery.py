"""Does a fit recover the parameters that simulated its data? Honest, checkable criteria.

A 94% credible interval should miss the true value about 6% of the time, so demanding
that *every* interval covers the truth would fail calibrated models by design, and
asking for nothing would pass broken ones. The helpers here make the criterion explicit:

* :func:`recovery_table` lists, per parameter (and coordinate), the truth, the posterior
  mean and its highest density interval, and whether the interval covers the truth;
* :func:`coverage_threshold` is the smallest number of covered intervals out of ``n``
  that a calibrated posterior reaches with high probability (a binomial tail);
* :func:`joint_distance` checks several correlated parameters at once: the squared
  Mahalanobis distance of the truth from the posterior mean, compared with the
  chi-square quantile of the joint credible region (Normal approximation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from elasticity_lib._checks import check_probability, posterior_dataset
from elasticity_lib.summaries import interval_columns, posterior_table

__all__ = ["recovery_table", "coverage_threshold", "JointDistance", "joint_distance", "region_estimates"]


_posterior = posterior_dataset
_check_prob = check_probability


def recovery_table(idata: xr.DataTree, truth: Mapping[str, float | Sequence[float]],
                   prob: float = 0.94) -> pd.DataFrame:
    """True value, posterior mean and ``prob`` HDI of each parameter, and whether it covers.

    ``truth`` maps a posterior variable to its true value: a number for a scalar, or one
    value per coordinate (in coordinate order) for a variable with one dimension such as
    ``beta`` over regions. Rows are labelled ``name`` or ``name[coord]``, with columns
    ``true``, ``mean``, ``hdi_lower``, ``hdi_upper`` and ``covered``. The means and
    intervals are those of :func:`elasticity_lib.summaries.posterior_table`.
    """
    prob = _check_prob(prob)
    post = _posterior(idata)
    frames = []
    for name, value in truth.items():
        if name not in post:
            raise ValueError(f"unknown posterior variable {name!r}; available: {sorted(post.data_vars)}")
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if len(extra) > 1:
            raise ValueError(f"variable {name!r} has more than one non-sample dimension {extra}")
        true = np.atleast_1d(np.asarray(value, dtype=float))
        size = da.sizes[extra[0]] if extra else 1
        if true.shape != (size,):
            raise ValueError(f"truth for {name!r} must have {size} value(s), got shape {np.shape(value)}")
        table = posterior_table(da.rename(name), extra[0] if extra else None, prob=prob, interval="hdi")
        low, high = interval_columns(prob, "hdi")
        labels = [name] if not extra else [f"{name}[{c}]" for c in da[extra[0]].values]
        frames.append(pd.DataFrame({
            "true": true,
            "mean": table["mean"].to_numpy(),
            "hdi_lower": table[low].to_numpy(),
            "hdi_upper": table[high].to_numpy(),
            "covered": (table[low].to_numpy() <= true) & (true <= table[high].to_numpy()),
        }, index=pd.Index(labels, name="parameter")))
    return pd.concat(frames)


def coverage_threshold(n: int, prob: float = 0.94, false_alarm: float = 1e-3) -> int:
    """Smallest number of covered truths out of ``n`` that a calibrated posterior reaches.

    It is the largest ``k`` such that a calibrated posterior covers fewer than ``k`` of
    ``n`` truths with probability at most ``false_alarm``.

    With independent intervals the number covered is Binomial(n, prob); for 9 regions at
    94%, ``k = 7`` for a false alarm of 2% (fewer than 7 happens 1.4% of the time) and
    ``k = 5`` for the book's default of one in a thousand (fewer than 5: 0.008%).
    The bound holds over draws of the data, so it holds for any sampler seed as well.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    prob = _check_prob(prob)
    if not 0 < false_alarm < 1:
        raise ValueError(f"false_alarm must be strictly between 0 and 1, got {false_alarm!r}")
    ks = np.arange(n + 1)
    below = stats.binom.cdf(ks - 1, n, prob)  # P(X < k)
    return int(ks[below <= false_alarm].max())


@dataclass(frozen=True)
class JointDistance:
    """Squared Mahalanobis distance of the truth and the joint region it is compared with."""

    names: tuple[str, ...]
    distance2: float
    threshold: float
    prob: float
    p_value: float

    @property
    def inside(self) -> bool:
        """Whether the truth lies inside the joint credible region."""
        return self.distance2 <= self.threshold


def joint_distance(idata: xr.DataTree, truth: Mapping[str, float], prob: float = 0.94) -> JointDistance:
    """Test whether the true scalar parameters lie inside the joint ``prob`` credible region.

    The posterior of the parameters is approximated by a Normal with the draws' mean and
    covariance; its ``prob`` region is ``d' S^-1 d <= chi2_k(prob)`` for ``k`` parameters.
    Strongly correlated parameters (the intercept and slope of a regression line) can each
    sit near the edge of their own interval while the pair is well inside the joint region.
    """
    prob = _check_prob(prob)
    post = _posterior(idata)
    names = tuple(truth)
    if len(names) < 2:
        raise ValueError("joint_distance needs at least two parameters")
    for name in names:
        if name not in post:
            raise ValueError(f"unknown posterior variable {name!r}; available: {sorted(post.data_vars)}")
        if set(post[name].dims) != {"chain", "draw"}:
            raise ValueError(f"variable {name!r} is not a scalar parameter (dims {post[name].dims})")
    draws = np.column_stack([post[n].values.ravel() for n in names])
    diff = np.array([float(truth[n]) for n in names]) - draws.mean(axis=0)
    cov = np.cov(draws, rowvar=False)
    d2 = float(diff @ np.linalg.solve(cov, diff))
    k = len(names)
    return JointDistance(names=names, distance2=d2, threshold=float(stats.chi2.ppf(prob, k)), prob=prob,
                         p_value=float(stats.chi2.sf(d2, k)))


def region_estimates(fits: Mapping[str, xr.DataTree], region, true_value: float, *, var_name: str = "beta",
                     line_value: float | None = None, prob: float = 0.94) -> pd.DataFrame:
    """One region's estimate under several models, side by side with its true value.

    One row per model (``fits`` maps a name to a fit): the posterior mean and sd of
    ``var_name`` at ``region`` and its ``prob`` HDI (:func:`~elasticity_lib.summaries.posterior_table`), the HDI's width, whether the HDI covers
    ``true_value``, and the error ``mean - true_value``. With ``line_value`` (the
    population line's value for the region, e.g. ``b0 + b1 * income``) the column
    ``share_to_line`` says how far each mean lies from the truth towards the line
    (0 at the truth, 1 on the line). This is the table that shows a thin region being
    pulled towards its income line, and by how much that helps.
    """
    prob = _check_prob(prob)
    rows = {}
    for name, idata in fits.items():
        post = _posterior(idata)
        if var_name not in post:
            raise ValueError(f"model {name!r} has no posterior variable {var_name!r}")
        da = post[var_name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if len(extra) != 1:
            raise ValueError(f"variable {var_name!r} of model {name!r} must have one region dimension, has {extra}")
        coords = list(da[extra[0]].values)
        if region not in coords:
            raise ValueError(f"region {region!r} is not among model {name!r}'s {extra[0]} coordinates {coords}")
        summary = posterior_table(da.sel({extra[0]: [region]}), extra[0], prob=prob).iloc[0]
        low, high = interval_columns(prob)
        mean, lower, upper = float(summary["mean"]), float(summary[low]), float(summary[high])
        row = {"mean": mean, "sd": float(summary["sd"]), "hdi_lower": lower, "hdi_upper": upper,
               "hdi_width": upper - lower, "covered": bool(lower <= true_value <= upper),
               "error": mean - float(true_value)}
        if line_value is not None:
            row["share_to_line"] = (mean - float(true_value)) / (float(line_value) - float(true_value))
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
