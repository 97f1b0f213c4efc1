"""Tables of posterior summaries, rounded for printing in the book.

Sampled numbers differ in their last digits between machines, so the chapters print
them at the precision a reader cares about: values to two decimals (standard deviations
to three) and effective sample sizes to the nearest hundred.
"""

from __future__ import annotations

from collections.abc import Sequence

import arviz as az
import pandas as pd
import xarray as xr

from elasticity_lib._checks import check_probability

__all__ = ["summary_table"]


def summary_table(idata: xr.DataTree, var_names: Sequence[str], *, prob: float = 0.94, decimals: int = 2) -> pd.DataFrame:
    """Posterior mean, sd, ``prob`` highest density interval, bulk and tail ESS and r_hat.

    A thin wrapper of :func:`arviz.summary` (``ci_kind="hdi"``): means, interval bounds
    and r_hat are rounded to ``decimals``, sds to ``decimals + 1`` and ESS to hundreds.
    """
    check_probability(prob)
    if isinstance(var_names, str):
        var_names = [var_names]
    if "posterior" not in idata.children:
        raise ValueError("the DataTree has no 'posterior' group")
    missing = [v for v in var_names if v not in idata["posterior"].data_vars]
    if missing:
        raise ValueError(f"unknown posterior variable(s) {missing}")
    full = az.summary(idata, var_names=list(var_names), ci_kind="hdi", ci_prob=prob, round_to="none")
    pct = f"{100 * prob:g}"
    lower, upper = f"hdi{pct}_lb", f"hdi{pct}_ub"
    out = pd.DataFrame(
        {
            "mean": full["mean"].round(decimals),
            "sd": full["sd"].round(decimals + 1),
            f"hdi_{pct}%_lower": full[lower].round(decimals),
            f"hdi_{pct}%_upper": full[upper].round(decimals),
            "ess_bulk": (full["ess_bulk"] / 100).round().astype(int) * 100,
            "ess_tail": (full["ess_tail"] / 100).round().astype(int) * 100,
            "r_hat": full["r_hat"].round(decimals),
        }
    )
    return out
