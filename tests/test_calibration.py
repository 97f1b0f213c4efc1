"""Simulation-based calibration: ranks, interval hits, histograms and the study's model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import random_point
from scipy import stats

from elasticity_lib.models import PRIORS, build_model
from elasticity_lib.validation.calibration import (
    POPULATION_PARAMETERS,
    SBC_TARGETS,
    calibration_checks,
    chi_square_false_alarm,
    coverage_table,
    hdi_bounds,
    interval_covers,
    plot_rank_histograms,
    rank_histogram,
    rank_uniformity_pvalue,
    run_sbc,
    sbc_rank,
    simulate_prior_markets,
    thin_draws,
)
from elasticity_lib.validation.recovery import coverage_threshold


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


def test_hdi_bounds_match_arviz():
    import arviz as az
    import xarray as xr

    rng = np.random.default_rng(2)
    draws = np.column_stack([rng.normal(size=1000), rng.exponential(size=1000), rng.gamma(0.5, size=1000)])
    lower, upper = hdi_bounds(draws, 0.94)
    hdi = az.hdi(xr.DataArray(draws[None], dims=("chain", "draw", "parameter")), prob=0.94)
    np.testing.assert_array_equal(lower, hdi.sel(ci_bound="lower").to_numpy())
    np.testing.assert_array_equal(upper, hdi.sel(ci_bound="upper").to_numpy())
    # a skewed sample's HDI hugs zero, unlike its central interval
    assert lower[2] < np.quantile(draws[:, 2], 0.03)
    with pytest.raises(ValueError, match="prob"):
        hdi_bounds(draws, 1.5)


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


def test_exact_false_alarm_of_the_rank_test():
    # 3 ranks in 2 bins: counts (0,3) and (3,0) have probability 1/8 each and p-value 0.083,
    # counts (1,2) and (2,1) have p-value 0.56
    assert chi_square_false_alarm(3, 2, 0.1) == pytest.approx(0.25)
    assert chi_square_false_alarm(3, 2, 0.05) == 0.0
    assert chi_square_false_alarm(3, 2, 0.6) == pytest.approx(1.0)
    # against simulation: 200,000 sets of 10 uniform ranks in 4 bins
    rng = np.random.default_rng(11)
    counts = rng.multinomial(10, [0.25] * 4, size=200_000)
    share = (stats.chisquare(counts, axis=1).pvalue < 0.05).mean()
    exact = chi_square_false_alarm(10, 4, 0.05)
    assert abs(share - exact) < 4 * np.sqrt(exact * (1 - exact) / 200_000)
    with pytest.raises(ValueError, match="million"):
        chi_square_false_alarm(200, 20, 0.01)


def test_calibration_checks_use_binomial_bounds_and_rank_uniformity():
    n, L = 100, 99
    rng = np.random.default_rng(4)
    uniform = rng.permutation(np.arange(n) % (L + 1))
    rows = []
    for name, in50, in94, rank in [("good", n // 2, 94, uniform), ("narrow", 30, 80, uniform),
                                   ("biased", n // 2, 94, np.sort(uniform)[::-1] // 2 + 50)]:
        for i in range(n):
            rows.append((name, name, i < in50, i < in94, rank[i]))
    ranks = pd.DataFrame(rows, columns=["parameter", "group", "in50", "in94", "rank"])
    checks = calibration_checks(ranks, L, false_alarm=1e-3, bins=10)
    each = 1e-3 / 15
    assert checks["p_floor"].iloc[0] == pytest.approx(each)
    assert checks.loc["good", "low94"] == coverage_threshold(n, 0.94, each)
    assert checks.loc["good", "high50"] == n - coverage_threshold(n, 0.5, each)
    assert stats.binom.cdf(checks.loc["good", "low94"] - 1, n, 0.94) <= each
    assert stats.binom.sf(checks.loc["good", "high94"], n, 0.94) <= each
    assert checks["ok"].tolist() == [True, False, False]
    assert checks.loc["biased", "rank_p"] < each < checks.loc["good", "rank_p"]


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
@pytest.mark.parametrize("kind", list(SBC_TARGETS))
def test_sbc_model_has_the_library_posterior(small_data, kind):
    """The swappable-data model and build_model's marginal model have the same log density."""
    ours = build_model(kind, small_data, "marginal", shared_data=True)
    library = build_model(kind, small_data, likelihood="marginal")
    assert {v.name for v in ours.free_RVs} == {v.name for v in library.free_RVs}
    logp_ours, logp_lib = ours.compile_logp(), library.compile_logp()
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = random_point(library, rng)
        assert logp_ours(point) == pytest.approx(logp_lib(point), rel=1e-10)
    # and swapping in another market's statistics gives that market's density (reversed
    # log quantities keep their mean, so both markets have the same centring constants)
    other_y = small_data.log_quantity[::-1].copy()
    other_data = dataclasses.replace(small_data, log_quantity=other_y)
    other = build_model(kind, other_data, likelihood="marginal")
    stats = SBC_TARGETS[kind].stats(other_data)
    with ours:
        pm.set_data({f"stat_{f}": getattr(stats, f) for f in ("my", "cxy", "cyy")})
    point = random_point(library, rng)
    assert logp_ours(point) != pytest.approx(logp_lib(point), rel=1e-6)
    assert ours.compile_logp()(point) == pytest.approx(other.compile_logp()(point), rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SBC_TARGETS))
def test_prior_markets_are_reproducible(small_data, kind):
    target = SBC_TARGETS[kind]
    truth, log_q = simulate_prior_markets(small_data, 4, seed=9, kind=kind)
    again, log_q2 = simulate_prior_markets(small_data, 4, seed=9, kind=kind)
    pd.testing.assert_frame_equal(truth, again)
    np.testing.assert_array_equal(log_q, log_q2)
    n_pop = len(target.population)
    assert list(truth.columns[:n_pop]) == list(target.population)
    n_effects = sum(len(small_data.coords[dim]) for _, dim in target.effects)
    assert truth.shape == (4, n_pop + n_effects)
    assert log_q.shape == (4, small_data.n_obs)
    scales = [p for p in target.population if p.startswith("sigma")]
    assert (truth[scales] > 0).all().all()
    different, _ = simulate_prior_markets(small_data, 4, seed=10, kind=kind)
    assert not np.allclose(truth.to_numpy(), different.to_numpy())
    if kind == "store_multilevel":
        assert truth.columns[-1] == f"beta_store[{small_data.coords['store'][-1]}]"
    if kind == "correlated":
        assert truth["rho"].between(-1, 1).all() and truth["rho"].std() > 0


def test_run_sbc_checks_its_inputs(small_data):
    with pytest.raises(ValueError, match="baseline"):
        run_sbc(small_data, 2, kind="baseline")
    truth = pd.DataFrame({"a0": [0.0, 1.0]})
    with pytest.raises(ValueError, match="at least 3 truths"):
        run_sbc(small_data, 3, markets=(truth, np.zeros((2, small_data.n_obs))))
    with pytest.raises(ValueError, match=f"{small_data.n_obs} rows"):
        run_sbc(small_data, 2, markets=(truth, np.zeros((2, 5))))
    with pytest.raises(ValueError, match="n_ranked"):
        run_sbc(small_data, 2, n_ranked=500, draws=100, chains=2)


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


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["correlated", "store_multilevel"])
def test_run_sbc_checks_every_parameter_of_the_new_kinds(small_data, kind):
    target = SBC_TARGETS[kind]
    result = run_sbc(small_data, 2, kind=kind, seed=5, n_ranked=99, draws=100, tune=200, chains=2, cores=1)
    truth, _ = simulate_prior_markets(small_data, 2, seed=5, kind=kind)
    assert len(result.ranks) == 2 * truth.shape[1] and len(result.fits) == 2
    assert result.ranks["rank"].between(0, 99).all()
    assert set(result.ranks["group"]) == {*target.population, *(name for name, _ in target.effects)}
    second = result.ranks[result.ranks["market"] == 1].set_index("parameter")["truth"]
    np.testing.assert_allclose(second.loc[truth.columns].to_numpy(), truth.iloc[1].to_numpy())
    sigma = result.ranks[result.ranks["parameter"] == "sigma"]
    assert (np.abs(sigma["post_mean"] - sigma["truth"]) < 4 * sigma["post_sd"]).all()
    assert result.settings["kind"] == kind and result.settings["draws"] == 100


#: A prior on the region scales a hundred times narrower than the one that drew the
#: markets, per kind: the key of PRIORS and its value in the fit.
NARROW_FIT_PRIOR = {"correlated": ("correlated_region_sd", PRIORS["correlated_region_sd"] / 100),
                    "store_multilevel": ("region_sd_rate", PRIORS["region_sd_rate"] * 100)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(NARROW_FIT_PRIOR))
def test_sbc_detects_a_fit_under_the_wrong_prior(small_data, kind, monkeypatch):
    """Markets drawn from the book's prior, fitted once with it and once with a narrow prior.

    The narrow prior puts 97% of its mass on region scales that the book's prior reaches
    with probability about 0.02-0.03; the small market cannot overrule it, so the true
    scales lie above almost every posterior draw. The correct fit of the same markets
    passes the same checks, so the checks can tell the two apart.
    """
    n = 8
    markets = simulate_prior_markets(small_data, n, seed=21, kind=kind)
    settings = dict(kind=kind, seed=21, fit_seed=4, n_ranked=99, draws=200, tune=300, chains=2, cores=1,
                    markets=markets)
    right = run_sbc(small_data, n, **settings)
    key, value = NARROW_FIT_PRIOR[kind]
    monkeypatch.setitem(PRIORS, key, value)
    wrong = run_sbc(small_data, n, **settings)

    def scales(result):
        return result.ranks[result.ranks["parameter"].isin(["sigma_a", "sigma_b"])]

    # 16 truths: under calibration, 94% intervals miss more than 8 of them with
    # probability about 1e-7, and ranks in the top tenth are 10% of them on average
    assert scales(right)["in94"].mean() > 0.5
    assert scales(wrong)["in94"].mean() < 0.5
    assert (scales(wrong)["rank"] >= 90).mean() > 0.5
    assert rank_uniformity_pvalue(scales(wrong)["rank"].to_numpy(), 99, bins=4) < 1e-3


def test_study_files_are_named_per_kind(tmp_path):
    from elasticity_lib.validation.calibration import read_study, study_stem

    assert study_stem("multilevel") == "calibration"
    assert study_stem("store_multilevel") == "calibration_store_multilevel"
    with pytest.raises(ValueError, match="baseline"):
        study_stem("baseline")
    (tmp_path / "calibration_correlated.json").write_text('{"settings": {"kind": "multilevel"}}')
    with pytest.raises(ValueError, match="not 'correlated'"):
        read_study(tmp_path, "correlated")
    (tmp_path / "calibration_correlated.json").write_text('{"settings": {"kind": "correlated"}}')
    pd.DataFrame({"market": [0], "rank": [3]}).to_csv(tmp_path / "calibration_correlated.csv", index=False)
    pd.DataFrame({"market": [0], "divergences": [0]}).to_csv(tmp_path / "calibration_correlated_fits.csv", index=False)
    summary, ranks, fits = read_study(tmp_path, "correlated")
    assert summary["settings"]["kind"] == "correlated" and ranks["rank"].tolist() == [3] and len(fits) == 1
