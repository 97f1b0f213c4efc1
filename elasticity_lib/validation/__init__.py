"""Checks of the models against what is known: simulated truths, held-out data and calibration.

- :mod:`~elasticity_lib.validation.recovery`: estimates against the simulation's truth;
- :mod:`~elasticity_lib.validation.holdout`: predictions for new regions, hold-outs of regions,
  stores or the last weeks, and cross-validation;
- :mod:`~elasticity_lib.validation.calibration`: simulation-based calibration (SBC).

Submodules are imported on first use.
"""

from importlib import import_module

_SUBMODULES = {'recovery', 'holdout', 'calibration'}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
