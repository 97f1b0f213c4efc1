"""Checks of the models against what is known: simulated truths, held-out data and calibration.

- :mod:`~elasticity_lib.validation.recovery`: estimates against the simulation's truth;
- :mod:`~elasticity_lib.validation.holdout`: predictions for new regions, hold-outs of regions,
  stores or the last weeks, and cross-validation;
- :mod:`~elasticity_lib.validation.calibration`: simulation-based calibration (SBC).

Submodules are imported on first use.
"""

from elasticity_lib._checks import lazy_submodules

_SUBMODULES = {'recovery', 'holdout', 'calibration'}

__getattr__ = lazy_submodules(__name__, _SUBMODULES)
