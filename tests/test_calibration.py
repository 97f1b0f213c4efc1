"""Simulation-based calibration: ranks, interval hits, histograms and the study's model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import random_point
from scipy import stats

from elasticity_lib.calibration import (
    POPULATION_PARAMETERS,
    coverage_table,
    interval_covers,
    plot_rank_histograms,
    rank_histogram,
    rank_uniformity_pvalue,
    run_sbc,
    sbc_rank,
    simulate_prior_markets,
    thin_draws,
)
from elasticity_lib.models import build_model


def test_rank_counts_draws_below_the_truth():
    draws = np.array([[0.1, 5.0], [0.4, 6.0], [0.6, 7.0]])
    assert sbc_rank(np.array([0.5, 4.0]), draws).tolist() == [2, 0]
    assert sbc_rank(np.array([0.7, 8.0]), draws).tolist() == [3, 3]
    with pytest.raises(ValueError, match="shape"):
        sbc_rank(np.zeros(3), draws)


def test_thin_draws_keeps_evenly_spaced_rows():
    draws = np.arange(20).reshape(10, 2)
    assert thin_draws(draws, 5)[:, 0].tolist() == [0, 4, 8, 12, 16]
    assert thin_draws(draws, 3)[:, 0].tolist() == [0, 6, 12]
    with pytest.raises(ValueError, match="n_keep"):
        thin_draws(draws, 11)


def test_interval_covers_uses_central_quantiles():
    draws = np.linspace(0, 1, 1001)[:, None].repeat(3, axis=1)
    truth = np.array([0.5, 0.02, 0.26])
    assert interval_covers(truth, draws, 0.94).tolist() == [True, False, True]
    assert interval_covers(truth, draws, 0.5).tolist() == [True, False, True]
    assert interval_covers(np.array([0.24, 0.76, 0.75]), draws, 0.5).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="prob"):
        interval_covers(truth, draws, 1.0)


def test_rank_histogram_bins_and_checks():
    ranks = np.array([0, 9, 10, 19, 19, 5])
    assert rank_histogram(ranks, n_ranked=19, bins=2).tolist() == [3, 3]
    assert rank_histogram(ranks, n_ranked=19, bins=4).tolist() == [1, 2, 1, 2]
    with pytest.raises(ValueError, match="equal bins"):
        rank_histogram(ranks, n_ranked=19, bins=3)
    with pytest.raises(ValueError, match="0..19"):
        rank_histogram(np.array([20]), n_ranked=19, bins=4)


def conjugate_normal_study(n_sims: int, sd_factor: float, seed: int):
    """Exact posteriors of theta ~ N(0, 1), y_i ~ N(theta, 1), i = 1..5, scaled by ``sd_factor``."""
    rng = np.random.default_rng(seed)
    n, L = 5, 99
    ranks, hit50, hit94 = [], [], []
    for _ in range(n_sims):
        theta = rng.normal()
        y = rng.normal(theta, 1.0, size=n)
        post_sd = np.sqrt(1 / (1 + n))
        post_mean = y.sum() / (1 + n)
        draws = rng.normal(post_mean, sd_factor * post_sd, size=(40 * L, 1))
        ranks.append(sbc_rank(np.array([theta]), thin_draws(draws, L))[0])
        hit50.append(interval_covers(np.array([theta]), draws, 0.5)[0])
        hit94.append(interval_covers(np.array([theta]), draws, 0.94)[0])
    return np.array(ranks), np.mean(hit50), np.mean(hit94), L


@pytest.mark.slow
def test_exact_posterior_is_calibrated_and_a_narrow_one_is_not():
    ranks, c50, c94, L = conjugate_normal_study(2000, sd_factor=1.0, seed=1)
    se94 = np.sqrt(0.94 * 0.06 / 2000)
    assert abs(c94 - 0.94) < 3 * se94
    assert abs(c50 - 0.5) < 3 * np.sqrt(0.25 / 2000)
    assert rank_uniformity_pvalue(ranks, L, bins=20) > 0.001
    # a posterior half as wide as it should be: ranks pile up at both ends, coverage drops
    ranks, c50, c94, L = conjugate_normal_study(2000, sd_factor=0.5, seed=1)
    assert c94 < 0.75 and c50 < 0.35
    assert rank_uniformity_pvalue(ranks, L, bins=20) < 1e-6
    counts = rank_histogram(ranks, L, 20)
    assert counts[0] > 2 * counts[10] and counts[-1] > 2 * counts[10]


def test_chi_square_pvalue_matches_scipy():
    ranks = np.random.default_rng(3).integers(0, 200, size=500)
    counts = rank_histogram(ranks, 199, 20)
    assert rank_uniformity_pvalue(ranks, 199, 20) == pytest.approx(stats.chisquare(counts).pvalue)


def test_coverage_table_pools_region_elasticities():
    ranks = pd.DataFrame({
        "parameter": ["a0", "a0", "beta[0]", "beta[1]", "beta[0]", "beta[1]"],
        "group": ["a0", "a0", "beta", "beta", "beta", "beta"],
        "in50": [True, False, True, True, False, False],
        "in94": [True, True, True, False, True, True],
        "in94_hdi": [True, False, True, True, True, True],
    })
    table = coverage_table(ranks)
    assert table.loc["a0", "n"] == 2 and table.loc["beta", "n"] == 4
    assert table.loc["a0", "cover50"] == 0.5 and table.loc["beta", "cover94"] == 0.75
    assert table.loc["a0", "cover94_hdi"] == 0.5
    assert table.loc["beta", "cover94_se"] == pytest.approx(np.sqrt(0.94 * 0.06 / 4))
    by_param = coverage_table(ranks, by="parameter")
    assert by_param.loc["beta[1]", "cover94"] == 0.5


@pytest.mark.slow
def test_sbc_model_has_the_library_posterior(small_data):
    """The swappable-data model and build_model's marginal model have the same log density."""
    ours = build_model("multilevel", small_data, "marginal", shared_data=True)
    library = build_model("multilevel", small_data, likelihood="marginal")
    assert {v.name for v in ours.free_RVs} == {v.name for v in library.free_RVs}
    logp_ours, logp_lib = ours.compile_logp(), library.compile_logp()
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = random_point(library, rng)
        assert logp_ours(point) == pytest.approx(logp_lib(point), rel=1e-10)
    # and swapping in another market's statistics gives that market's density
    other_y = small_data.log_quantity[::-1].copy()
    other = build_model("multilevel", dataclasses.replace(small_data, log_quantity=other_y), likelihood="marginal")
    stats = other.elasticity_spec.data.region_stats
    with ours:
        pm.set_data({f"stat_{f}": getattr(stats, f) for f in ("my", "cxy", "cyy")})
    point = random_point(library, rng)
    assert ours.compile_logp()(point) == pytest.approx(other.compile_logp()(point), rel=1e-10)


@pytest.mark.slow
def test_prior_markets_are_reproducible(small_data):
    truth, log_q = simulate_prior_markets(small_data, 4, seed=9)
    again, log_q2 = simulate_prior_markets(small_data, 4, seed=9)
    pd.testing.assert_frame_equal(truth, again)
    np.testing.assert_array_equal(log_q, log_q2)
    assert list(truth.columns[:7]) == list(POPULATION_PARAMETERS)
    assert truth.shape == (4, 7 + small_data.n_regions)
    assert log_q.shape == (4, small_data.n_obs)
    assert (truth[["sigma_a", "sigma_b", "sigma"]] > 0).all().all()
    different, _ = simulate_prior_markets(small_data, 4, seed=10)
    assert not np.allclose(truth.to_numpy(), different.to_numpy())


@pytest.mark.slow
def test_run_sbc_on_a_few_markets(small_data):
    result = run_sbc(small_data, 3, seed=5, n_ranked=99, draws=100, tune=200, chains=2, cores=1)
    n_params = 7 + small_data.n_regions
    assert len(result.ranks) == 3 * n_params and len(result.fits) == 3
    assert result.ranks["rank"].between(0, 99).all()
    assert set(result.ranks["group"]) == {*POPULATION_PARAMETERS, "beta"}
    truth, _ = simulate_prior_markets(small_data, 3, seed=5)
    first = result.ranks[result.ranks["market"] == 0].set_index("parameter")["truth"]
    np.testing.assert_allclose(first.to_numpy(), truth.iloc[0].to_numpy())
    # the posterior sits near the truth that generated the market: the noise sd is well identified
    sigma = result.ranks[result.ranks["parameter"] == "sigma"]
    assert (np.abs(sigma["post_mean"] - sigma["truth"]) < 4 * sigma["post_sd"]).all()
    assert result.settings["n_markets"] == 3 and result.compile_seconds > 0
    fig = plot_rank_histograms(result.ranks, 99, bins=10, parameters=["a0", "sigma"], ncols=2)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["a0", "sigma"]
