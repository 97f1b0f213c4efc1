"""Bayesian multilevel price elasticities for one product sold in many stores.

The modules mirror the parts of the book: :mod:`~elasticity_lib.entities` (validated
business entities), :mod:`~elasticity_lib.simulation` (the data generating process),
:mod:`~elasticity_lib.prepare` (from a tidy table to model inputs),
:mod:`~elasticity_lib.models` (the PyMC models), :mod:`~elasticity_lib.likelihoods` (the
fast likelihoods) and :mod:`~elasticity_lib.inference` (fitting and diagnostics).
"""

from .entities import Market, Region, SimulationTruth, Sku, Store, TIDY_COLUMNS
from .inference import ConvergenceReport, SAMPLING_DEFAULTS, add_group_effects, convergence_report, fit
from .models import DEFAULT_LIKELIHOOD, MODEL_KINDS, PRIORS, build_model, model_spec
from .prepare import GroupStats, ModelData, REQUIRED_COLUMNS, prepare_data, validate_table
from .simulation import REFERENCE_SEED, SimulationConfig, simulate_market

__version__ = "0.1.0"

__all__ = [
    "Market", "Region", "SimulationTruth", "Sku", "Store", "TIDY_COLUMNS",
    "ConvergenceReport", "SAMPLING_DEFAULTS", "add_group_effects", "convergence_report", "fit",
    "DEFAULT_LIKELIHOOD", "MODEL_KINDS", "PRIORS", "build_model", "model_spec",
    "GroupStats", "ModelData", "REQUIRED_COLUMNS", "prepare_data", "validate_table",
    "REFERENCE_SEED", "SimulationConfig", "simulate_market",
]
