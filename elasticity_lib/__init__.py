"""Bayesian multilevel price elasticities for one product sold in many stores.

The layout follows the work, from data to decisions:

- :mod:`~elasticity_lib.data`: entities, the simulated markets (one product, many products,
  prices set with an eye on demand), validated model inputs (:mod:`~elasticity_lib.data.prepare`,
  out of core in :mod:`~elasticity_lib.data.outofcore`) and the real panels (cigarettes,
  orange juice);
- :mod:`~elasticity_lib.models`: the likelihoods, the model builder and specification
  (:func:`~elasticity_lib.models.build_model`), the multi-product and instrumental-variable models;
- :mod:`~elasticity_lib.inference`: fitting with the book's defaults and diagnostics;
- :mod:`~elasticity_lib.predict`: predictive draws, log likelihoods and bands;
- :mod:`~elasticity_lib.summaries`, :mod:`~elasticity_lib.reporting`: the posterior table and
  its presentation;
- :mod:`~elasticity_lib.baselines`: least-squares references (per store, and the econometric
  regressions on the cigarette panel); :mod:`~elasticity_lib.store_estimates`: store-level
  estimates set against the truth and against the region-only model;
- :mod:`~elasticity_lib.validation`: recovery of a known truth, hold-outs and new regions,
  simulation-based calibration;
- :mod:`~elasticity_lib.pricing` and :mod:`~elasticity_lib.theory`: prices from the posterior,
  and the demand curves behind them;
- :mod:`~elasticity_lib.plots`: figures;
- :mod:`~elasticity_lib.reproducibility`: sampler seeds and statistical checks against references;
- :mod:`~elasticity_lib.workflow` and :mod:`~elasticity_lib.cli`: your own CSV file, from Python
  and from the command line; :mod:`~elasticity_lib.scale`: one model per category on a Dask cluster.

Submodules that pull in plotting or statistics libraries are imported on first use
(``elasticity_lib.pricing`` works after ``import elasticity_lib``).
"""

from importlib import import_module

from elasticity_lib.data.entities import TIDY_COLUMNS, Market, Region, SimulationTruth, Sku, Store
from elasticity_lib.data.prepare import REQUIRED_COLUMNS, GroupStats, ModelData, prepare_data, validate_table
from elasticity_lib.data.simulation import REFERENCE_SEED, SimulationConfig, simulate_market
from elasticity_lib.inference import SAMPLING_DEFAULTS, ConvergenceReport, add_group_effects, convergence_report, fit
from elasticity_lib.models.builder import DEFAULT_LIKELIHOOD, MODEL_KINDS, PRIORS, build_model, model_spec

__version__ = "0.1.0"

_SUBMODULES = {
    "baselines", "cli", "data", "inference", "models", "plots", "predict", "pricing", "reporting", "reproducibility",
    "scale", "store_estimates", "summaries", "theory", "validation", "workflow",
}
_LAZY = {"fit_csv": "workflow", "InputError": "workflow"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'elasticity_lib' has no attribute {name!r}")


__all__ = [
    "Market", "Region", "SimulationTruth", "Sku", "Store", "TIDY_COLUMNS",
    "ConvergenceReport", "SAMPLING_DEFAULTS", "add_group_effects", "convergence_report", "fit",
    "DEFAULT_LIKELIHOOD", "MODEL_KINDS", "PRIORS", "build_model", "model_spec",
    "GroupStats", "ModelData", "REQUIRED_COLUMNS", "prepare_data", "validate_table",
    "REFERENCE_SEED", "SimulationConfig", "simulate_market", "fit_csv", "InputError",
]
