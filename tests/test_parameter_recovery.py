"""Parameter recovery: the multilevel model, fitted to a small simulated market, finds the truth.

Two short fits (2 chains x 500 draws after 500 tuning steps) of the same model on the
same data: the fast default form ("marginal": region effects integrated out and drawn
afterwards from their exact conditional) and the non-centred form on sufficient
statistics. Both take a few seconds after compilation.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
from scipy import stats

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market
from elasticity_lib.inference import convergence_report, fit
from elasticity_lib.models import build_model

CONFIG = SimulationConfig(n_regions=6, stores_mu=4.0, time_steps_mu=10.0)
SEED = 777
CHAINS, DRAWS, TUNE = 2, 500, 500
HDI_PROB = 0.94

# Coverage threshold. Each region's 94% interval contains its true elasticity with
# probability about 0.94 when the data come from the model, so the number of regions
# covered is roughly Binomial(6, 0.94). Requiring at least 4 of 6 fails a correct fit with
# probability P(X <= 3) ~ 0.4% (computed and asserted below to be under 1%): the
# threshold was fixed by this calculation, not by looking at this seed's result. The
# approximation is honest rather than exact: the regions share population parameters, so
# their coverages are correlated, and the simulated region sds (0.02) sit in the bulk of
# the Exponential(20) prior, so nominal coverage is a fair expectation. A broken model
# or simulator (wrong sign, scrambled incomes, effects drawn per row) misses by many
# posterior sds and covers almost no region.
MIN_COVERED = 4


@pytest.fixture(scope="module")
def market():
    return simulate_market(CONFIG, seed=SEED)


@pytest.fixture(scope="module")
def data(market):
    return prepare_data(market.to_dataframe())


@pytest.fixture(scope="module")
def marginal_fit(data):
    return fit(build_model("multilevel", data), draws=DRAWS, tune=TUNE, chains=CHAINS)


@pytest.fixture(scope="module")
def sufficient_fit(data):
    return fit(build_model("multilevel", data, "sufficient"), draws=DRAWS, tune=TUNE, chains=CHAINS)


def test_the_threshold_is_unlikely_to_fail_a_correct_fit():
    assert stats.binom(CONFIG.n_regions, HDI_PROB).cdf(MIN_COVERED - 1) < 0.01


def test_true_region_elasticities_fall_inside_their_intervals(market, marginal_fit, data):
    beta = marginal_fit["posterior"]["beta"]
    assert beta.dims == ("chain", "draw", "region") and beta.shape == (CHAINS, DRAWS, CONFIG.n_regions)
    hdi = az.hdi(beta, prob=HDI_PROB)
    truth = market.truth.region_table().loc[data.coords["region"], "elasticity"].to_numpy()
    lower = hdi.sel(ci_bound="lower").values
    upper = hdi.sel(ci_bound="upper").values
    covered = (lower <= truth) & (truth <= upper)
    assert covered.sum() >= MIN_COVERED, f"covered {covered.sum()} of {len(truth)}: {list(zip(lower, truth, upper))}"


def test_the_fit_converged(marginal_fit):
    report = convergence_report(marginal_fit)
    # Vehtari et al. (2021) ask for bulk and tail ESS above 100 per chain, which holds
    # here as stated. Their r_hat < 1.01 is meant for final runs of four or more chains
    # (the book's defaults). With two chains the between-chain variance has a single
    # degree of freedom: for a perfectly mixing quantity with ESS ~150 per chain, r_hat - 1
    # is roughly chi2(1) / (2 x 150), so 1.01 is exceeded by chance about 7% of the time
    # for each of the ~40 monitored quantities. A bound of 1.05 corresponds to chi2(1) > 15
    # (probability ~1e-4 each), while chains stuck in different places give r_hat far
    # above it.
    assert report.divergences == 0, str(report)
    assert report.ok(max_rhat=1.05, min_ess=100 * CHAINS), str(report)


def test_marginal_and_non_centred_forms_agree(marginal_fit, sufficient_fit):
    # Same posterior, two chains' worth of Monte Carlo error each: posterior means may
    # differ by a few combined MCSEs, plus a small floor for the error of the MCSE
    # estimates themselves.
    s1 = az.summary(marginal_fit, var_names=["beta", "b1", "sigma"], kind="all", round_to="none")
    s2 = az.summary(sufficient_fit, var_names=["beta", "b1", "sigma"], kind="all", round_to="none")
    diff = (s1["mean"] - s2["mean"]).abs()
    tolerance = 4 * np.sqrt(s1["mcse_mean"] ** 2 + s2["mcse_mean"] ** 2) + 0.005
    assert (diff < tolerance).all(), (diff - tolerance).to_string()
    # posterior sds agree within 15% (the relative Monte Carlo error of an sd from an ESS
    # of ~300 is about 1 / sqrt(2 x 300) ~ 4%, so 15% is almost four of those)
    np.testing.assert_allclose(s1["sd"], s2["sd"], rtol=0.15)

