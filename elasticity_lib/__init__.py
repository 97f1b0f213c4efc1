"""Bayesian multilevel price elasticities for one product sold in many stores.

The modules mirror the parts of the book:

- :mod:`~elasticity_lib.entities`: validated business entities (SKU, store, region, market);
- :mod:`~elasticity_lib.simulation`: the data generating process;
- :mod:`~elasticity_lib.prepare`: from a tidy sales table to validated model inputs;
- :mod:`~elasticity_lib.models` and :mod:`~elasticity_lib.likelihoods`: the PyMC models and
  their fast likelihoods;
- :mod:`~elasticity_lib.inference`: fitting with the book's defaults and diagnostics;
- :mod:`~elasticity_lib.predictive`, :mod:`~elasticity_lib.recovery`,
  :mod:`~elasticity_lib.reporting`: predictions and their bands, checks against a known truth, tables;
- :mod:`~elasticity_lib.summaries` and :mod:`~elasticity_lib.baselines`: the posterior table
  (mean, sd, HDI or equal-tailed interval) and the per-store least-squares fits;
- :mod:`~elasticity_lib.plotting` and :mod:`~elasticity_lib.posterior_plots`: figures;
- :mod:`~elasticity_lib.new_regions`, :mod:`~elasticity_lib.stores`,
  :mod:`~elasticity_lib.pricing`: predictions for unseen regions and cross-validations that
  hold out regions, stores or the last weeks, store-level estimates and prices;
- :mod:`~elasticity_lib.price_setting`, :mod:`~elasticity_lib.instruments`: prices set with an
  eye on demand, and the controls and instrumental-variable model that recover the elasticity;
- :mod:`~elasticity_lib.real_data`, :mod:`~elasticity_lib.calibration`,
  :mod:`~elasticity_lib.cli`: the cigarette panel, simulation-based calibration and the
  command line for your own CSV files;
- :mod:`~elasticity_lib.orange_juice`: the Dominick's orange-juice panel (11 brands, 83
  stores), loaded from a local copy built from the R package bayesm.
- :mod:`~elasticity_lib.scale` and :mod:`~elasticity_lib.outofcore`: one model per category on
  a Dask cluster, and sufficient statistics of data larger than memory.

Submodules that pull in plotting or statistics libraries are imported on first use
(``elasticity_lib.pricing`` works after ``import elasticity_lib``).
"""

from importlib import import_module

from .entities import TIDY_COLUMNS, Market, Region, SimulationTruth, Sku, Store
from .inference import SAMPLING_DEFAULTS, ConvergenceReport, add_group_effects, convergence_report, fit
from .models import DEFAULT_LIKELIHOOD, MODEL_KINDS, PRIORS, build_model, model_spec
from .prepare import REQUIRED_COLUMNS, GroupStats, ModelData, prepare_data, validate_table
from .simulation import REFERENCE_SEED, SimulationConfig, simulate_market

__version__ = "0.1.0"

_SUBMODULES = {
    "baselines", "calibration", "cli", "entities", "inference", "instruments", "likelihoods", "models",
    "new_regions", "orange_juice", "outofcore", "plotting", "posterior_plots", "predictive", "prepare",
    "price_setting", "pricing", "real_data", "recovery", "reporting", "scale", "simulation", "stores", "summaries",
    "theory",
}
_LAZY = {"fit_csv": "cli", "InputError": "cli"}


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
