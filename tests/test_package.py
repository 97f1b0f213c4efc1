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


def test_importing_leaves_global_flags_alone_and_sampling_scopes_fastmath(monkeypatch):
    import subprocess
    import sys

    import pytensor

    from elasticity_lib.inference import exact_numba_arithmetic

    # a fresh interpreter: importing the package must not change PyTensor's global flags
    code = "import pytensor; before = pytensor.config.numba__fastmath; import elasticity_lib; " \
           "assert pytensor.config.numba__fastmath == before, 'import changed numba__fastmath'"
    subprocess.run([sys.executable, "-c", code], check=True)
    before = pytensor.config.numba__fastmath
    with exact_numba_arithmetic():
        assert pytensor.config.numba__fastmath is False
    assert pytensor.config.numba__fastmath == before
    # a user's own PYTENSOR_FLAGS setting wins
    monkeypatch.setenv("PYTENSOR_FLAGS", "numba__fastmath=True")
    with pytensor.config.change_flags(numba__fastmath=True), exact_numba_arithmetic():
        assert pytensor.config.numba__fastmath is True
