"""The package's public names resolve, including the lazily imported ones."""

import pytest

import elasticity_lib as el


@pytest.mark.parametrize("name", el.__all__)
def test_public_names_resolve(name):
    assert getattr(el, name) is not None


def test_submodules_are_reachable_and_unknown_names_fail():
    assert el.pricing.optimal_price is not None
    assert el.fit_csv is el.cli.fit_csv
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        el.nope


def test_numba_fastmath_is_off_so_cached_and_fresh_compilations_agree():
    import pytensor

    assert pytensor.config.numba__fastmath is False
