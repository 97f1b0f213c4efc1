"""Sampler seeds from the environment and checks of sampler output within Monte Carlo error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from elasticity_lib.reproducibility import (
    DEFAULT_SAMPLER_SEED,
    RECORD_ENV,
    SAMPLER_SEED_ENV,
    ReferenceSummaries,
    compare_estimates,
    monte_carlo_summary,
    sampler_seed,
    z_threshold,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv(SAMPLER_SEED_ENV, raising=False)
    monkeypatch.delenv(RECORD_ENV, raising=False)


def test_default_seed_without_environment():
    assert sampler_seed() == DEFAULT_SAMPLER_SEED


def test_environment_sets_the_base_seed(monkeypatch):
    monkeypatch.setenv(SAMPLER_SEED_ENV, "7")
    assert sampler_seed() == 7


def test_streams_are_distinct_stable_and_follow_the_base(monkeypatch):
    a, b = sampler_seed("prior"), sampler_seed("bands")
    assert a != b and a == sampler_seed("prior")
    assert sampler_seed(3) != sampler_seed(4)
    monkeypatch.setenv(SAMPLER_SEED_ENV, "8")
    assert sampler_seed("prior") != a


@pytest.mark.parametrize("raw", ["abc", "-3", "1.5"])
def test_bad_environment_value_is_named(monkeypatch, raw):
    monkeypatch.setenv(SAMPLER_SEED_ENV, raw)
    with pytest.raises(ValueError, match=SAMPLER_SEED_ENV):
        sampler_seed()


def test_bad_stream_is_rejected():
    with pytest.raises(ValueError, match="stream"):
        sampler_seed(-1)


def test_fit_takes_the_environment_seed(monkeypatch, small_data):
    from elasticity_lib.inference import sampling_settings
    from elasticity_lib.models import build_model

    model = build_model("baseline", small_data)
    assert sampling_settings(model)["random_seed"] == DEFAULT_SAMPLER_SEED
    monkeypatch.setenv(SAMPLER_SEED_ENV, "11")
    assert sampling_settings(model)["random_seed"] == 11
    assert sampling_settings(model, random_seed=5)["random_seed"] == 5


def test_z_threshold_is_the_bonferroni_normal_quantile():
    assert z_threshold(1, 1e-4) == pytest.approx(3.8906, abs=1e-3)
    # two-sided, split over n comparisons
    for n in (1, 10, 40):
        z = z_threshold(n, 1e-3)
        assert 2 * n * stats.norm.sf(z) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="n_comparisons"):
        z_threshold(0)
    with pytest.raises(ValueError, match="false_alarm"):
        z_threshold(3, 1.5)


def test_compare_estimates_flags_only_large_differences():
    ref = pd.DataFrame({"estimate": [0.0, 1.0], "mcse": [0.01, 0.01]}, index=["a", "b"])
    close = pd.DataFrame({"estimate": [0.03, 1.02], "mcse": [0.01, 0.01]}, index=["a", "b"])
    far = pd.DataFrame({"estimate": [0.2, 1.0], "mcse": [0.01, 0.01]}, index=["a", "b"])
    assert compare_estimates("x", close, ref).passed
    check = compare_estimates("x", far, ref)
    assert not check.passed and list(check.failures.index) == ["a"]
    with pytest.raises(AssertionError, match="DISAGREE"):
        check.require()
    with pytest.raises(KeyError, match="only one"):
        compare_estimates("x", close.iloc[:1], ref)


def _draws(rng, chains=4, draws=1000, loc=(0.0, 2.0)):
    return xr.Dataset({"theta": (("chain", "draw", "k"), rng.normal(loc, 1.0, size=(chains, draws, len(loc))))},
                      coords={"k": list(range(len(loc)))})


def test_false_alarm_rate_of_independent_runs_is_small():
    """Independent runs of the same target agree: at most a few false alarms in 100 pairs."""
    rng = np.random.default_rng(1)
    fails = 0
    for _ in range(100):
        a = monte_carlo_summary(_draws(rng, draws=500), ["theta"])
        b = monte_carlo_summary(_draws(rng, draws=500), ["theta"])
        long = {}
        for name, t in (("a", a), ("b", b)):
            long[name] = pd.DataFrame({"estimate": np.r_[t["mean"], t["sd"]], "mcse": np.r_[t["mcse_mean"], t["mcse_sd"]]},
                                      index=[f"{s} {i}" for s in ("mean", "sd") for i in t.index])
        fails += not compare_estimates("theta", long["a"], long["b"], false_alarm=1e-2).passed
    # expected at most 1 with false_alarm 1e-2; P(Binomial(100, 0.01) > 5) < 1e-3
    assert fails <= 5


def test_a_shifted_posterior_is_caught():
    rng = np.random.default_rng(2)
    a = _draws(rng)
    b = _draws(rng, loc=(0.15, 2.0))
    ref, new = (monte_carlo_summary(x, ["theta"]) for x in (a, b))
    to_long = lambda t: pd.DataFrame({"estimate": t["mean"], "mcse": t["mcse_mean"]})  # noqa: E731
    check = compare_estimates("theta", to_long(new), to_long(ref))
    assert not check.passed and list(check.failures.index) == ["theta[0]"]


def test_reference_summaries_record_then_check(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    path = tmp_path / "refs" / "chapter.json"
    monkeypatch.setenv(RECORD_ENV, "1")
    recorded = ReferenceSummaries(path).check_posterior(_draws(rng), "fit", ["theta"])
    assert recorded.passed and path.exists()
    stored = json.loads(path.read_text())
    assert stored["fit"]["sampler_seed"] == DEFAULT_SAMPLER_SEED
    assert set(stored["fit"]["estimates"]) == {"mean theta[0]", "mean theta[1]", "sd theta[0]", "sd theta[1]"}
    monkeypatch.delenv(RECORD_ENV)
    refs = ReferenceSummaries(path)
    check = refs.check_posterior(_draws(rng), "fit", ["theta"])
    assert check.passed and "4 estimates agree" in repr(check)
    with pytest.raises(AssertionError, match="DISAGREE"):
        refs.check_posterior(_draws(rng, loc=(0.5, 2.0)), "fit", ["theta"])
    with pytest.raises(KeyError, match="make references"):
        refs.check_posterior(_draws(rng), "other", ["theta"])


def test_check_values_uses_draws_of_a_derived_quantity(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    path = tmp_path / "chapter.json"
    derived = lambda loc: xr.DataArray(rng.normal(loc, 1.0, size=(4, 1000)), dims=("chain", "draw"))  # noqa: E731
    monkeypatch.setenv(RECORD_ENV, "1")
    ReferenceSummaries(path).check_values("price", derived(1.0))
    monkeypatch.delenv(RECORD_ENV)
    assert ReferenceSummaries(path).check_values("price", derived(1.0)).passed
    with pytest.raises(AssertionError):
        ReferenceSummaries(path).check_values("price", derived(1.3))
    with pytest.raises(ValueError, match="not finite"):
        ReferenceSummaries(path).check_estimates("price", pd.DataFrame({"estimate": [np.nan], "mcse": [0.1]}))


def test_loo_monte_carlo_error_matches_the_spread_of_independent_runs():
    """Normal model with a known posterior: independent sets of draws of the same posterior
    give elpd_loo estimates whose spread the linearised Monte Carlo error predicts."""
    import arviz as az

    from elasticity_lib.reproducibility import loo_monte_carlo_error

    rng = np.random.default_rng(5)
    y = rng.normal(0.0, 1.0, 30)
    estimates, errors = [], []
    for _ in range(60):
        theta = rng.normal(y.mean(), 1 / np.sqrt(len(y)), (2, 500))
        log_lik = -0.5 * (y[None, None, :] - theta[..., None]) ** 2 - 0.5 * np.log(2 * np.pi)
        tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"theta": (("chain", "draw"), theta)}),
                                      "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), log_lik)})})
        loo = az.loo(tree)
        estimates.append(loo.elpd)
        errors.append(loo_monte_carlo_error(tree, loo)["elpd_loo"])
    spread, predicted = np.std(estimates, ddof=1), np.mean(errors)
    # the sd of 60 estimates is itself uncertain by about 1 / sqrt(2 * 59) ~ 9%
    assert predicted == pytest.approx(spread, rel=0.35)


def test_max_divergences_is_the_binomial_tail():
    from elasticity_lib.reproducibility import max_divergences

    k = max_divergences(4000, 1e-3, 1e-3)
    assert stats.binom.sf(k, 4000, 1e-3) <= 1e-3 < stats.binom.sf(k - 1, 4000, 1e-3)
    assert k == 11
    with pytest.raises(ValueError, match="transitions"):
        max_divergences(0)
