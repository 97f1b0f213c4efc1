"""Shared fixtures of the unit tests: a small simulated market and its model inputs.

The market is small on purpose (4 regions, a handful of stores, short histories) so that
model graphs compile and evaluate in milliseconds; tests that need statistical power
simulate their own, larger markets.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from elasticity_lib.data.prepare import ModelData, prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market

# Property-based tests: no per-example deadline (the first call of a test may compile a
# PyTensor graph) and a modest number of examples so the whole suite stays fast.
settings.register_profile(
    "unit",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", deadline=None, max_examples=500)
settings.load_profile("unit")

#: Seed of the shared small market.
SMALL_SEED = 20240611

SMALL_CONFIG = SimulationConfig(
    n_regions=4,
    stores_mu=3.0,
    stores_alpha=3.0,
    min_stores=2,
    time_steps_mu=6.0,
    time_steps_alpha=5.0,
    min_time_steps=2,
    store_intercept_sd=0.05,
    store_elasticity_sd=0.1,
)


def pytest_configure(config):
    # PyTensor's C backend warns once about BLAS; it does not affect any result here.
    config.addinivalue_line("filterwarnings", "ignore:PyTensor could not link to a BLAS:UserWarning")
    # sample_prior_predictive warns that Potentials are ignored (they only exist in non-row forms)
    config.addinivalue_line("filterwarnings", "ignore:The effect of Potentials:UserWarning")


@pytest.fixture(scope="session")
def small_config() -> SimulationConfig:
    return SMALL_CONFIG


@pytest.fixture(scope="session")
def small_market():
    return simulate_market(SMALL_CONFIG, seed=SMALL_SEED)


@pytest.fixture
def small_table(small_market):
    """A fresh copy of the tidy table of the small market (tests may modify it)."""
    return small_market.to_dataframe()


@pytest.fixture(scope="session")
def small_data(small_market) -> ModelData:
    return prepare_data(small_market.to_dataframe())


def random_point(model, rng: np.random.Generator, scale: float = 0.7) -> dict[str, np.ndarray]:
    """A random point on the model's unconstrained (transformed) space near its initial point."""
    start = model.initial_point()
    return {name: value + rng.normal(0.0, scale, size=np.shape(value)) for name, value in start.items()}


#: Fixtures that sample a posterior: every test that uses one is marked ``slow``.
SAMPLING_FIXTURES = {"two_fits", "rows_fit", "marginal_fit", "sufficient_fit", "store_fit", "refitter", "big", "recovery_fits"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SAMPLING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
