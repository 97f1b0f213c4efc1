"""The rounded summary table agrees with ArviZ's summary."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr

from elasticity_lib.reporting import summary_table


@pytest.fixture(scope="module")
def tree():
    rng = np.random.default_rng(1)
    return xr.DataTree.from_dict({"posterior": xr.Dataset({
        "a": (("chain", "draw"), rng.normal(1.234, 0.05, size=(4, 500))),
        "b": xr.DataArray(rng.normal([-2.0, -3.0], 0.2, size=(4, 500, 2)), dims=("chain", "draw", "region"),
                          coords={"region": ["x", "y"]}),
    })})


def test_summary_table_matches_arviz(tree):
    table = summary_table(tree, ["a", "b"], prob=0.94)
    ref = az.summary(tree, var_names=["a", "b"], ci_kind="hdi", ci_prob=0.94, round_to="none")
    assert list(table.index) == ["a", "b[x]", "b[y]"]
    assert list(table.columns) == ["mean", "sd", "hdi_94%_lower", "hdi_94%_upper", "ess_bulk", "ess_tail", "r_hat"]
    np.testing.assert_allclose(table["mean"], ref["mean"], atol=0.005)
    np.testing.assert_allclose(table["sd"], ref["sd"], atol=0.0005)
    np.testing.assert_allclose(table["hdi_94%_lower"], ref["hdi94_lb"], atol=0.005)
    np.testing.assert_allclose(table["hdi_94%_upper"], ref["hdi94_ub"], atol=0.005)
    np.testing.assert_allclose(table["ess_bulk"], ref["ess_bulk"], atol=50)
    assert (table["ess_bulk"] % 100 == 0).all()
    assert table.loc["a", "mean"] == pytest.approx(1.23)


def test_summary_table_other_prob_and_errors(tree):
    table = summary_table(tree, "a", prob=0.5, decimals=3)
    assert "hdi_50%_lower" in table.columns
    assert table.loc["a", "hdi_50%_upper"] - table.loc["a", "hdi_50%_lower"] < 0.08
    with pytest.raises(ValueError, match="unknown posterior variable"):
        summary_table(tree, ["c"])
    with pytest.raises(ValueError, match="prob"):
        summary_table(tree, ["a"], prob=0)
