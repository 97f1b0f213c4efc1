"""The models: their likelihoods, the builder of the book's single-product models, and extensions.

- :mod:`~elasticity_lib.models.likelihoods`: per-group log likelihoods from sufficient
  statistics, written once for PyMC and NumPy;
- :mod:`~elasticity_lib.models.builder`: :func:`build_model` and the model specification
  (:class:`ModelSpec`, priors, kinds and likelihood forms), re-exported here;
- :mod:`~elasticity_lib.models.products`: many products with cross-price effects;
- :mod:`~elasticity_lib.models.instruments`: controls and the instrumental-variable model for
  prices set with an eye on demand.

``from elasticity_lib.models import build_model, ModelSpec`` works; the other submodules
are imported on first use.
"""

from elasticity_lib._checks import lazy_submodules
from elasticity_lib.models.builder import (
    DEFAULT_LIKELIHOOD,
    INSTRUMENT_MODEL_KINDS,
    LIKELIHOODS,
    MIN_REGIONS,
    MODEL_KINDS,
    NOISE_MODELS,
    PRIORS,
    PRODUCT_MODEL_KINDS,
    REFERENCE_PRIORS,
    SCALE_PRIOR_DEFAULTS,
    SHARED_FORMS,
    SPEC_PREFIX,
    WEIGHTED_FORMS,
    ExponentialPrior,
    HalfNormalPrior,
    Likelihood,
    ModelKind,
    ModelSpec,
    ScalePrior,
    ScalePriors,
    build_model,
    fitted_kind,
    model_spec,
    recorded,
    region_cholesky,
    spec_attributes,
    to_original_covariance,
)

__all__ = ['DEFAULT_LIKELIHOOD', 'ExponentialPrior', 'HalfNormalPrior', 'INSTRUMENT_MODEL_KINDS', 'LIKELIHOODS', 'Likelihood', 'MIN_REGIONS', 'MODEL_KINDS', 'ModelKind', 'ModelSpec', 'NOISE_MODELS', 'PRIORS', 'PRODUCT_MODEL_KINDS', 'REFERENCE_PRIORS', 'SCALE_PRIOR_DEFAULTS', 'SHARED_FORMS', 'SPEC_PREFIX', 'ScalePrior', 'ScalePriors', 'WEIGHTED_FORMS', 'build_model', 'fitted_kind', 'model_spec', 'recorded', 'region_cholesky', 'spec_attributes', 'to_original_covariance']

_SUBMODULES = {'likelihoods', 'builder', 'products', 'instruments'}

__getattr__ = lazy_submodules(__name__, _SUBMODULES)
