"""Recovery criteria: interval coverage, binomial thresholds and the joint region."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.spatial.distance import mahalanobis

from elasticity_lib.validation.recovery import coverage_threshold, joint_distance, recovery_table, region_estimates


def _tree(**variables):
    return xr.DataTree.from_dict({"posterior": xr.Dataset(variables)})


@pytest.fixture(scope="module")
def normal_fit():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, -0.9], [-0.9, 1.0]])
    xy = rng.multivariate_normal([0.0, 0.0], cov, size=(2, 2000))
    beta = rng.normal([-1.0, -2.0, -3.0], 0.1, size=(2, 2000, 3))
    return _tree(
        x=(("chain", "draw"), xy[..., 0]),
        y=(("chain", "draw"), xy[..., 1]),
        beta=xr.DataArray(beta, dims=("chain", "draw", "region"), coords={"region": [10, 11, 12]}),
    ), cov


def test_recovery_table_scalars_and_vectors(normal_fit):
    tree, _ = normal_fit
    table = recovery_table(tree, {"x": 0.5, "beta": [-1.0, -2.5, -3.05]}, prob=0.94)
    assert list(table.index) == ["x", "beta[10]", "beta[11]", "beta[12]"]
    assert table["covered"].tolist() == [True, True, False, True]
    hdi = az.hdi(tree["posterior"]["beta"], prob=0.94)
    np.testing.assert_allclose(table["hdi_lower"].values[1:], hdi.sel(ci_bound="lower").values)
    np.testing.assert_allclose(table["hdi_upper"].values[1:], hdi.sel(ci_bound="upper").values)
    np.testing.assert_allclose(table.loc["x", "mean"], tree["posterior"]["x"].values.mean())
    # a 94% HDI of a standard normal is about +-1.88
    assert table.loc["x", "hdi_upper"] == pytest.approx(stats.norm.ppf(0.97), abs=0.1)


def test_recovery_table_rejects_bad_truth(normal_fit):
    tree, _ = normal_fit
    with pytest.raises(ValueError, match="unknown posterior variable 'z'"):
        recovery_table(tree, {"z": 1.0})
    with pytest.raises(ValueError, match="3 value"):
        recovery_table(tree, {"beta": [1.0, 2.0]})
    with pytest.raises(ValueError, match="prob"):
        recovery_table(tree, {"x": 0.0}, prob=94)


def test_coverage_threshold_is_the_binomial_tail():
    assert coverage_threshold(9, 0.94, 0.02) == 7
    for n, p, alarm in [(9, 0.94, 0.02), (20, 0.9, 0.05), (5, 0.5, 0.2), (50, 0.94, 0.01)]:
        k = coverage_threshold(n, p, alarm)
        assert stats.binom.cdf(k - 1, n, p) <= alarm   # fewer than k is rare enough ...
        assert k == n or stats.binom.cdf(k, n, p) > alarm  # ... and k is the largest such count


@pytest.mark.parametrize("args", [(0, 0.9, 0.1), (9, 1.2, 0.1), (9, 0.9, 0.0), (2.5, 0.9, 0.1)])
def test_coverage_threshold_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        coverage_threshold(*args)


def test_joint_distance_matches_scipy(normal_fit):
    tree, cov = normal_fit
    truth = {"x": 1.0, "y": 1.0}
    result = joint_distance(tree, truth, prob=0.94)
    draws = np.column_stack([tree["posterior"][n].values.ravel() for n in "xy"])
    expected = mahalanobis([1.0, 1.0], draws.mean(0), np.linalg.inv(np.cov(draws, rowvar=False))) ** 2
    assert result.distance2 == pytest.approx(expected, rel=1e-10)
    # each coordinate is only 1 sd away, but the pair runs against the -0.9 correlation
    assert result.distance2 == pytest.approx(np.array([1, 1]) @ np.linalg.solve(cov, [1, 1]), rel=0.1)
    assert not result.inside
    assert result.threshold == pytest.approx(stats.chi2.ppf(0.94, 2))
    along = joint_distance(tree, {"x": 1.0, "y": -1.0})
    assert along.inside and along.p_value > 0.06


def test_joint_distance_rejects_bad_input(normal_fit):
    tree, _ = normal_fit
    with pytest.raises(ValueError, match="at least two"):
        joint_distance(tree, {"x": 0.0})
    with pytest.raises(ValueError, match="not a scalar"):
        joint_distance(tree, {"x": 0.0, "beta": 0.0})
    with pytest.raises(ValueError, match="unknown posterior variable"):
        joint_distance(tree, {"x": 0.0, "w": 0.0})


def test_region_estimates_compares_models_at_one_region(normal_fit):
    tree, _ = normal_fit
    rng = np.random.default_rng(1)
    wide = _tree(beta=xr.DataArray(rng.normal([-1.0, -2.6, -3.0], [0.1, 0.5, 0.1], size=(2, 2000, 3)),
                                   dims=("chain", "draw", "region"), coords={"region": [10, 11, 12]}))
    table = region_estimates({"narrow": tree, "wide": wide}, 11, -2.5, line_value=-2.0)
    assert list(table.index) == ["narrow", "wide"]
    draws = tree["posterior"]["beta"].sel(region=11)
    hdi = az.hdi(draws, prob=0.94)
    assert table.loc["narrow", "hdi_lower"] == pytest.approx(float(hdi.sel(ci_bound="lower")))
    assert table.loc["narrow", "mean"] == pytest.approx(float(draws.mean()))
    assert table.loc["narrow", "sd"] == pytest.approx(float(draws.std(ddof=1)))
    assert table.loc["narrow", "error"] == pytest.approx(float(draws.mean()) + 2.5)
    # the narrow posterior sits at the line (-2.0, 5 sds from the truth), the wide one near the truth
    assert table["covered"].tolist() == [False, True]
    assert table.loc["narrow", "share_to_line"] == pytest.approx(1.0, abs=0.05)
    assert abs(table.loc["wide", "share_to_line"]) < 0.3
    assert table.loc["wide", "hdi_width"] > 3 * table.loc["narrow", "hdi_width"]
    with pytest.raises(ValueError, match="region 13 is not among model 'narrow'"):
        region_estimates({"narrow": tree}, 13, -2.5)
    with pytest.raises(ValueError, match="model 'narrow' has no posterior variable 'alpha'"):
        region_estimates({"narrow": tree}, 11, -2.5, var_name="alpha")
    assert "share_to_line" not in region_estimates({"narrow": tree}, 11, -2.5).columns
