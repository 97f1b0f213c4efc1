"""One model per category, fitted in parallel on a Dask cluster, with results that survive faults.

A retailer has thousands of categories. Their models are independent, so they can be fitted
side by side: :func:`fit_many` submits one task per category to a :mod:`dask.distributed`
client, a :class:`~distributed.LocalCluster` of single-threaded worker processes on this
machine by default, or any cluster whose scheduler address is given, with the same code.

Each category's results go to their own folder of the output folder, written atomically by
:func:`elasticity_lib.workflow.atomic_write` (the elasticity table and the convergence report of
``python -m elasticity_lib fit``, plus the model's specification), the report last, so
that a category counts as finished exactly when its report exists:

- a rerun skips finished categories and fits the others (stop a run at any point, with
  Ctrl-C for instance, and start it again: ``fit-many`` then exits with status 130, and no
  temporary or half-written file is left);
- a task that Dask runs a second time (its worker died after writing, before saying so)
  finds the report and writes nothing;
- a category with bad data, a failed sampler or a crash is recorded in ``failed.json`` with
  its reason, the others go on, and a rerun tries it again;
- a fit that fails the convergence gates is written like ``fit`` writes it (marked
  ``converged`` false) and reported as ``unconverged``.

``categories.csv`` in the output folder lists every category with its status and
diagnostics after each run.

Two things make the fits fast and safe in parallel:

- **Processes, not threads.** PyTensor's compilation cache and JAX are not safe to use
  from several threads of one process, so every worker is a process with one thread, and
  each gets its own PyTensor compilation directory (:class:`PytensorCompileDirs`, a Dask
  nanny plugin that sets ``PYTENSOR_FLAGS=compiledir=...`` before the worker process starts,
  hence before PyTensor is imported).
- **Compiled models are reused.** Building and compiling a model costs seconds; sampling a
  category of the book's size costs a fraction of one. The multilevel model is compiled
  once per worker and number of regions (rounded up to a multiple of
  ``FitManyConfig.region_bucket``, the categories with fewer regions padded with empty
  ones: :func:`multilevel_shared_data`), with its data as shared variables
  (``build_model(..., shared_data=True)``), and every later category of that bucket only
  swaps its statistics in (nutpie's ``with_data``), as
  :class:`~elasticity_lib.validation.holdout.HoldoutRefitter` does. Each category still gets its
  own convergence report, computed on the stacked draws at once
  (:func:`array_convergence_report`, the values of
  :func:`~elasticity_lib.inference.convergence_report`). Other model kinds are built and fitted anew per category
  (:data:`CATEGORY_FITTERS` says how each kind is fitted; a new kind registers its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator

from elasticity_lib.data.prepare import (
    STAT_FIELDS,
    STORE_IDS,
    ZERO_SALES,
    Centring,
    ModelData,
    NoPriceVariationWarning,
    prepare_data,
)
from elasticity_lib.inference import SAMPLING_DEFAULTS, exact_numba_arithmetic, fit, sampling_settings
from elasticity_lib.models.builder import MIN_REGIONS, MODEL_KINDS, SPEC_PREFIX, ModelSpec, build_model, spec_attributes
from elasticity_lib.reproducibility import sampler_seed
from elasticity_lib.workflow import CsvFit, InputError, SalesFile, atomic_write, elasticity_table, read_sales_csv

__all__ = [
    "FitManyConfig",
    "FitManyResult",
    "CATEGORY_FITTERS",
    "CATEGORY_FILES",
    "FAILURE_FILE",
    "SUMMARY_FILE",
    "PytensorCompileDirs",
    "category_dir",
    "fit_category",
    "fit_many",
    "add_fit_many_parser",
    "array_convergence_report",
    "element_diagnostics",
    "multilevel_shared_data",
    "region_bucket",
    "run_fit_many",
    "load_parquet_category",
    "simulate_catalogue",
    "start_client",
]

#: Files each finished category writes to its folder, in the order they are renamed into
#: place (the report last: a category is finished when its report exists).
CATEGORY_FILES = {"table": "elasticities.csv", "spec": "model_spec.json", "report": "convergence.json"}
#: A category that could not be fitted writes this instead (and a later success removes it).
FAILURE_FILE = "failed.json"
#: The table of every category's status, written to the output folder after each run.
SUMMARY_FILE = "categories.csv"
#: Statuses of a category: fitted and converged; fitted, outputs written, but the sampler
#: failed the gates; not fitted because its data cannot be used; not fitted because the fit
#: raised or its worker died; finished in an earlier run.
STATUSES = ("ok", "unconverged", "bad_data", "error", "skipped")
SUMMARY_COLUMNS = ["category", "status", "reason", "n_rows", "n_regions", "divergences", "max_rhat",
                   "min_ess_bulk", "min_ess_tail", "seconds", "cpu_seconds", "folder"]


class FitManyConfig(BaseModel):
    """What :func:`fit_many` fits for each category, and how it judges the fit.

    ``model`` is a model kind of :data:`CATEGORY_FITTERS`. Sampler settings left at
    ``None`` take the book's defaults for the kind (:func:`~elasticity_lib.inference.sampling_settings`).
    ``max_divergences`` is how many
    divergent transitions a category may have before it counts as ``unconverged`` (the
    r_hat and ESS gates of :meth:`~elasticity_lib.inference.ConvergenceReport.ok` apply as
    well; the table's ``converged`` column is always the book's strict verdict).
    ``region_bucket``: the multilevel model is compiled once per worker for each number of
    regions rounded up to a multiple of it (categories with fewer regions are padded with
    regions without rows, which add nothing to the log density; 1 compiles one model per
    number of regions). ``reuse_compiled=False`` builds and compiles every category's
    model anew, as ``fit`` does.
    ``seed_stream`` names the stream of sampler seeds: category ``c`` is sampled with
    ``sampler_seed(f"{seed_stream}:{c}")``, so its draws do not depend on which worker
    ran it, nor when.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "multilevel"
    draws: PositiveInt | None = None
    tune: PositiveInt | None = None
    chains: PositiveInt | None = None
    target_accept: float | None = Field(default=None, gt=0, lt=1)
    max_divergences: NonNegativeInt = 0
    store_ids: str = "global"
    zero_sales: str = "error"
    seed_stream: str = "fit_many"
    reuse_compiled: bool = True
    region_bucket: PositiveInt = 4

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in CATEGORY_FITTERS:
            raise ValueError(f"unknown model {value!r}; choose one of {list(CATEGORY_FITTERS)}")
        return value

    @field_validator("store_ids")
    @classmethod
    def _known_store_ids(cls, value: str) -> str:
        if value not in STORE_IDS:
            raise ValueError(f"unknown store_ids {value!r}; choose one of {list(STORE_IDS)}")
        return value

    @field_validator("zero_sales")
    @classmethod
    def _known_zero_sales(cls, value: str) -> str:
        if value not in ZERO_SALES:
            raise ValueError(f"unknown zero_sales {value!r}; choose one of {list(ZERO_SALES)}")
        return value


# --------------------------------------------------------------------------------------
# fitting one category (runs on a worker)

#: Compiled models of this process, by (model kind, number of groups, sampler settings).
#: A worker is a single-threaded process, so one cache per process is safe.
_COMPILED: dict[tuple, object] = {}


def _sampler(config: FitManyConfig, model=None) -> dict:
    """The sampler settings of a category: the config's, else the book's defaults for the model kind."""
    given = {k: getattr(config, k) for k in ("draws", "tune", "chains", "target_accept")
             if getattr(config, k) is not None}
    if model is None:
        return {**{k: SAMPLING_DEFAULTS[k] for k in ("draws", "tune", "chains", "target_accept")}, **given}
    chosen = sampling_settings(model, **given)
    return {k: chosen[k] for k in ("nuts_sampler", "draws", "tune", "chains", "target_accept")}


def _fit_rebuilt(data: ModelData, config: FitManyConfig, seed: int) -> tuple:
    """Today's ``fit``: build the model for this category's data, compile it and sample."""
    model = build_model(config.model, data)
    settings = _sampler(config, model)
    idata = fit(model, random_seed=seed, **settings)
    return idata, {"reused_compiled_model": False, **settings}


def region_bucket(n_regions: int, bucket: int) -> int:
    """How many regions the compiled model of a category with ``n_regions`` regions has.

    Categories are bucketed by their number of regions rounded up to a multiple of
    ``bucket`` (``bucket=1``: one compiled model per number of regions), so that a
    catalogue whose categories have 7 to 16 regions compiles two models, not ten.
    """
    if n_regions < 1 or bucket < 1:
        raise ValueError(f"n_regions and bucket must be positive, got {n_regions} and {bucket}")
    return -(-int(n_regions) // int(bucket)) * int(bucket)


def multilevel_shared_data(data: ModelData, n_regions: int | None = None) -> dict[str, np.ndarray]:
    """The shared data of the multilevel model (marginal form) for ``data``, padded to ``n_regions`` regions.

    The values to give ``with_data`` (nutpie) or :func:`pymc.set_data` of a model built with
    ``build_model("multilevel", ..., "marginal", shared_data=True)``: the region statistics
    ``stat_*``, the centring constants ``centre_*`` and the standardised incomes
    ``income_std``. Padded regions have no rows: every statistic is 0, so their marginal
    log-likelihood term (:func:`~elasticity_lib.models.likelihoods.marginal_group_loglik`) is
    exactly 0 (``X'X = 0``, hence ``A = I`` and a zero residual) and they change nothing
    of the posterior of the real regions; their income is set to the centre (0 on the
    standardised scale), which only their own ``alpha_mean``/``beta_mean`` see. The
    centring constants are those of the real regions.
    """
    n_real = data.n_regions
    n = n_real if n_regions is None else int(n_regions)
    if n < n_real:
        raise ValueError(f"cannot pad {n_real} regions to {n}: n_regions must be at least {n_real}")
    pad = n - n_real

    def padded(values) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return np.concatenate([values, np.zeros(pad)]) if pad else values

    k = data.centring
    updates = {f"stat_{f}": padded(getattr(data.region_stats, f)) for f in STAT_FIELDS}
    updates.update({f"centre_{f.name}": np.asarray(getattr(k, f.name)) for f in dataclasses.fields(Centring)})
    updates["income_std"] = padded((np.asarray(data.income, dtype=float) - k.income) / k.income_scale)
    return updates


def _drop_padding(idata, regions) -> object:
    """Keep the first ``len(regions)`` regions of every group of ``idata`` and label them ``regions``."""
    for name in ("posterior", "sample_stats"):
        node = idata[name].dataset
        if "region" in node.dims:
            node = node.isel(region=slice(0, len(regions))).assign_coords(region=list(regions))
            idata[name] = type(idata)(node)
    return idata


def _fit_multilevel_reused(data: ModelData, config: FitManyConfig, seed: int) -> tuple:
    """The multilevel model (marginal form) compiled once per bucket of region counts, its data swapped in.

    The model is the one ``build_model("multilevel", data)`` builds, with the region
    statistics, the centring constants and the standardised incomes as shared data. It is
    compiled for :func:`region_bucket` regions (``config.region_bucket``); a category with
    fewer regions is padded with regions without rows (:func:`multilevel_shared_data`),
    which add exactly nothing to the log density, and the padded regions are dropped from
    the draws. A later category of the same bucket only replaces the data (nutpie's
    ``with_data``), exactly as :class:`~elasticity_lib.validation.holdout.HoldoutRefitter`
    refits. The marginalised region effects are drawn afterwards as
    :func:`~elasticity_lib.inference.fit` draws them, and the result records the model's
    specification as ``fit`` does.
    """
    import nutpie

    from elasticity_lib.inference import add_group_effects

    if not config.reuse_compiled:
        return _fit_rebuilt(data, config, seed)
    n_model = region_bucket(data.n_regions, config.region_bucket)
    key = ("multilevel", n_model)
    compiled = _COMPILED.get(key)
    reused = compiled is not None
    if compiled is None:
        template = data if n_model == data.n_regions else _padded_template(data, n_model)
        with exact_numba_arithmetic(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PyTensor's note about BLAS
            compiled = nutpie.compile_pymc_model(build_model("multilevel", template, "marginal", shared_data=True))
        _COMPILED[key] = compiled
    settings = _sampler(config)
    with exact_numba_arithmetic():
        idata = nutpie.sample(compiled.with_data(**multilevel_shared_data(data, n_model)), cores=1, seed=int(seed),
                              progress_bar=False, save_warmup=False, **settings)
    # the compiled model carries the region labels (and padding) of the category it was compiled on
    idata = _drop_padding(idata, data.coords["region"])
    spec = ModelSpec(kind="multilevel", likelihood="marginal", data=data)
    idata = add_group_effects(idata, spec, seed=np.random.SeedSequence(seed).spawn(1)[0])
    attrs = spec_attributes(spec)
    idata.attrs.update(attrs)
    idata["posterior"].attrs.update(attrs)
    return idata, {"reused_compiled_model": reused, "nuts_sampler": "nutpie", "model_regions": n_model, **settings}


def _padded_template(data: ModelData, n_regions: int) -> ModelData:
    """A copy of ``data`` with regions without rows appended, to compile a padded model on.

    Only the model's shape and the region labels matter: every category's own values
    (:func:`multilevel_shared_data`) replace these before sampling. The centring is that
    of the real regions.
    """
    pad = n_regions - data.n_regions
    updates = multilevel_shared_data(data, n_regions)
    real = list(data.coords["region"])
    if all(isinstance(r, str) for r in real):
        extra = [f"padding-{i}" for i in range(pad)]
    else:  # numeric labels: the sampler's coordinates must all be of one type
        extra = [int(max(real)) + 1 + i for i in range(pad)]
    labels = [*real, *extra]
    income = np.concatenate([np.asarray(data.income, dtype=float), np.full(pad, float(data.centring.income))])
    template = dataclasses.replace(data, coords={**data.coords, "region": labels}, income=income)
    # frozen dataclass with cached properties: set them as cached_property would
    object.__setattr__(template, "region_stats", type(data.region_stats)(*(updates[f"stat_{f}"] for f in STAT_FIELDS)))
    object.__setattr__(template, "centring", data.centring)
    return template


def _z_scaled(x: np.ndarray) -> np.ndarray:
    """ArviZ's rank normalisation (``_z_scale``) of each leading slice of ``x`` at once."""
    from scipy import stats

    flat = x.reshape(x.shape[0], -1)
    ranks = stats.rankdata(flat, method="average", axis=1)
    c = 3 / 8  # Blom's offset, as ArviZ's _backtransform_ranks
    return stats.norm.ppf((ranks - c) / (flat.shape[1] - 2 * c + 1)).reshape(x.shape)


def _split_rhat(z: np.ndarray) -> np.ndarray:
    """ArviZ's ``_rhat`` of each leading slice of ``z`` (slices of shape (chains, draws))."""
    n = z.shape[2]
    chain_mean = z.mean(axis=2)
    within = z.var(axis=2, ddof=1).mean(axis=1)
    between = n * chain_mean.var(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant elements give NaN, as in ArviZ
        return np.sqrt((between / within + n - 1) / n)


def _geyer_ess(rho: list[float], n_chain: int, n_draw: int) -> float:
    """ArviZ's ``_ess`` from the autocorrelations ``rho`` (lag 0, 1, ...) of one element, step by step.

    Geyer's initial positive and initial monotone sequences, exactly as
    ``arviz_stats.base.diagnostics._DiagnosticsBase._ess`` truncates and smooths them.
    """
    rho_t = [0.0] * n_draw
    rho_t[0] = even = 1.0
    rho_t[1] = odd = rho[1]
    t = 1
    while t < (n_draw - 3) and (even + odd) > 0.0:
        even, odd = rho[t + 1], rho[t + 2]
        if (even + odd) >= 0:
            rho_t[t + 1], rho_t[t + 2] = even, odd
        t += 2
    max_t = t - 2
    if even > 0:
        rho_t[max_t + 1] = even
    t = 1
    while t <= max_t - 2:
        if (rho_t[t + 1] + rho_t[t + 2]) > (rho_t[t - 1] + rho_t[t]):
            rho_t[t + 1] = (rho_t[t - 1] + rho_t[t]) / 2.0
            rho_t[t + 2] = rho_t[t + 1]
        t += 2
    ess = n_chain * n_draw
    tau = -1.0 + 2.0 * float(np.sum(rho_t[: max_t + 1])) + float(np.sum(rho_t[max_t + 1: max_t + 2]))
    tau = max(tau, 1 / np.log10(ess))
    return np.nan if np.isnan(rho_t).any() else ess / tau


def _ess_many(a: np.ndarray) -> np.ndarray:
    """ArviZ's ``_ess`` of each leading slice of ``a`` (slices of shape (chains, draws)), FFTs at once."""
    from arviz_stats.base import array_stats

    a = np.asarray(a, dtype=float)
    n_el, n_chain, n_draw = a.shape
    acov = array_stats.autocov(a, axis=2).mean(axis=1)  # mean over chains, every lag
    mean_var = acov[:, 0] * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + a.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant elements: handled below
        rho = 1.0 - (mean_var[:, None] - acov) / var_plus[:, None]
    constant = (a.max(axis=(1, 2)) - a.min(axis=(1, 2))) < np.finfo(float).resolution
    return np.array([float(n_chain * n_draw) if constant[k] else _geyer_ess(rho[k].tolist(), n_chain, n_draw)
                     for k in range(n_el)])


def element_diagnostics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised r_hat, bulk ESS and tail ESS of each element of ``x`` (element, chain, draw).

    ArviZ's definitions (``arviz_stats`` ``rhat(method="rank")``, ``ess(method="bulk")``,
    ``ess(method="tail")`` at its default probability), computed for all elements at once:
    one rank normalisation, one batch of FFTs for the autocovariances, then Geyer's
    truncation per element. Elements with non-finite draws, or too few chains or draws,
    go through ArviZ's element-wise functions (which return NaN for them).
    """
    from arviz_stats.base import array_stats
    from arviz_stats.validate import validate_ci_prob

    x = np.asarray(x, dtype=float)
    n_el, n_chain, n_draw = x.shape
    rhat = np.full(n_el, np.nan)
    bulk = np.full(n_el, np.nan)
    tail = np.full(n_el, np.nan)
    prob = validate_ci_prob(None)
    finite = np.isfinite(x).all(axis=(1, 2))
    if n_chain >= 2 and n_draw >= 4:
        half = n_draw // 2
        split = np.concatenate((x[finite, :, :half], x[finite, :, -half:]), axis=1)
        z = _z_scaled(split)
        folded = np.abs(split - np.median(split.reshape(len(split), -1), axis=1)[:, None, None])
        rhat[finite] = np.maximum(_split_rhat(z), _split_rhat(_z_scaled(folded)))
        bulk[finite] = _ess_many(z)
        flat = x[finite].reshape(len(split), -1)
        lo, hi = sorted((prob, 1 - prob))
        below = [x[finite] <= np.quantile(flat, q, axis=1)[:, None, None] for q in (lo, hi)]
        tail[finite] = np.minimum(*(_ess_many(np.concatenate((b[:, :, :half], b[:, :, -half:]), axis=1))
                                    for b in below))
    rest = np.flatnonzero(~finite) if n_chain >= 2 and n_draw >= 4 else np.arange(n_el)
    for k in rest:  # ArviZ's element-wise path (NaN for broken or too short chains)
        rhat[k] = array_stats.rhat(x[k])
        bulk[k] = array_stats.ess(x[k], method="bulk")
        tail[k] = array_stats.ess(x[k], method="tail", prob=prob)
    return rhat, bulk, tail


def array_convergence_report(idata) -> object:
    """:func:`~elasticity_lib.inference.convergence_report` computed on the stacked draws at once.

    The same report, value for value: divergences, the rank-normalised split r_hat
    (bulk and folded), bulk and tail ESS of every posterior element with ArviZ's
    definitions, over the elements that vary across draws, the worst named as there. The
    report of ``convergence_report`` goes through ArviZ's xarray interface once per
    variable and diagnostic and element, and redoes the rank normalisation for r_hat and
    bulk ESS; here every element's draws are stacked into one array and
    :func:`element_diagnostics` computes all elements at once. For many small fits
    (:func:`fit_many`) the report is a large share of a category's time.
    """
    import xarray as xr

    from elasticity_lib.inference import ConvergenceReport, _worst

    post = idata["posterior"].dataset
    names = list(post.data_vars)
    blocks, shapes = [], {}
    for name in names:
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        values = np.asarray(da.transpose("chain", "draw", *extra).values, dtype=float)
        shapes[name] = (extra, values.shape[2:])
        blocks.append(values.reshape(values.shape[0], values.shape[1], -1))
    x = np.moveaxis(np.concatenate(blocks, axis=2), 2, 0)  # (element, chain, draw)
    rhat, bulk, tail = element_diagnostics(x)
    varying = ~(x.std(axis=(1, 2)) == 0)

    def dataset(flat: np.ndarray) -> xr.Dataset:
        out, start = {}, 0
        for name in names:
            dims, shape = shapes[name]
            size = int(np.prod(shape, dtype=int))
            coords = {d: post[name][d].values for d in dims if d in post[name].coords}
            out[name] = xr.DataArray(flat[start:start + size].reshape(shape), dims=dims, coords=coords)
            start += size
        return xr.Dataset(out)

    mask = dataset(varying)
    max_rhat, worst_rhat = _worst(dataset(rhat), mask, "max")
    min_bulk, worst_bulk = _worst(dataset(bulk), mask, "min")
    min_tail, _ = _worst(dataset(tail), mask, "min")
    diverging = idata["sample_stats"].dataset["diverging"]
    return ConvergenceReport(divergences=int(diverging.sum()), max_rhat=max_rhat, min_ess_bulk=min_bulk,
                             min_ess_tail=min_tail, worst_rhat=worst_rhat, worst_ess_bulk=worst_bulk)


#: How each model kind is fitted to one category: ``fitter(data, config, seed)`` returns the
#: fitted ``DataTree`` and a dict of notes for the report. Every kind of
#: :data:`~elasticity_lib.models.MODEL_KINDS` is fitted as ``fit`` fits it, except the
#: multilevel model, whose compiled form is reused across categories. Another model kind
#: (a multi-product model, say) adds its own entry, and :class:`FitManyConfig` accepts it.
CATEGORY_FITTERS: dict[str, Callable] = {kind: _fit_rebuilt for kind in MODEL_KINDS}
CATEGORY_FITTERS["multilevel"] = _fit_multilevel_reused


def category_dir(out_dir: str | os.PathLike, category) -> Path:
    """The folder of one category's results: its name, percent-encoded to be a safe file name."""
    name = quote(str(category), safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return Path(out_dir) / name


def _report_gates(report, config: FitManyConfig) -> list[str]:
    """Which gates a fit fails: divergences above the threshold, r_hat and ESS (the book's bounds)."""
    failed = []
    if report.divergences > config.max_divergences:
        failed.append(f"{report.divergences} divergences (more than {config.max_divergences})")
    if not report.max_rhat <= 1.01:
        failed.append(f"max r_hat {report.max_rhat:.3f} > 1.01 ({report.worst_rhat})")
    if not report.min_ess_bulk >= 400:
        failed.append(f"min bulk ESS {report.min_ess_bulk:.0f} < 400 ({report.worst_ess_bulk})")
    if not report.min_ess_tail >= 400:
        failed.append(f"min tail ESS {report.min_ess_tail:.0f} < 400")
    return failed


def _json(obj) -> str:
    return json.dumps(obj, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)) + "\n"


def _summary_row(category, folder: Path, status: str, reason: str = "", **values) -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(category=category, status=status, reason=reason, folder=folder.name, **values)
    return row


def _write_failure(folder: Path, row: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write({folder / FAILURE_FILE: lambda fh: fh.write(_json(row))})


def fit_category(category, table: pd.DataFrame | Callable[[], pd.DataFrame], out_dir: str | os.PathLike,
                 config: FitManyConfig, seed: int, source: str = "") -> dict:
    """Validate, fit and write one category; return its row of the summary (never raises for its data).

    ``table`` is the category's sales table (or a function that loads it, so that a worker
    reads its own rows). Bad data (:func:`~elasticity_lib.data.prepare.prepare_data`'s errors,
    too little data) and errors of the fit are recorded in ``failed.json`` with their reason
    and returned as ``bad_data`` or ``error``; a fitted category writes
    :data:`CATEGORY_FILES` atomically, the report last. A category whose report already
    exists is not fitted again (``skipped``): a task that runs twice writes once.
    """
    folder = category_dir(out_dir, category)
    report_path = folder / CATEGORY_FILES["report"]
    if report_path.exists():
        return _summary_from_report(category, folder)
    start, cpu_start = time.perf_counter(), time.process_time()
    # temporary files of an attempt whose worker was killed while writing
    for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
        stale.unlink(missing_ok=True)
    try:
        frame = table() if callable(table) else table
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always", NoPriceVariationWarning)
            data = prepare_data(frame, store_ids=config.store_ids, zero_sales=config.zero_sales)
            data.require_enough_data(MIN_REGIONS.get(config.model, 2))
    except (ValueError, TypeError, InputError) as err:
        row = _summary_row(category, folder, "bad_data", " ".join(str(err).split()),
                           seconds=time.perf_counter() - start)
        _write_failure(folder, row)
        return row
    try:
        idata, notes = CATEGORY_FITTERS[config.model](data, config, seed)
        report = array_convergence_report(idata)
        result = CsvFit(path=Path(source or str(category)), model=config.model, data=data, idata=idata,
                        table=elasticity_table(idata, data, report), report=report,
                        settings={"random_seed": int(seed), **notes},
                        source=SalesFile(frame, sep="", decimal="", renamed={}))
    except Exception as err:  # a failed fit must not stop the other categories
        reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
        row = _summary_row(category, folder, "error", reason, n_rows=data.n_obs, n_regions=data.n_regions,
                           seconds=time.perf_counter() - start)
        _write_failure(folder, {**row, "traceback": traceback.format_exc(limit=8)})
        return row
    failed = _report_gates(report, config)
    status = "unconverged" if failed else "ok"
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    report_dict = {**result.report_dict(), "category": category, "status": status, "reason": "; ".join(failed),
                   "max_divergences": config.max_divergences, "seconds": seconds, "cpu_seconds": cpu_seconds}
    spec = {k[len(SPEC_PREFIX):]: v for k, v in idata.attrs.items() if k.startswith(SPEC_PREFIX)}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write({
        folder / CATEGORY_FILES["table"]: lambda fh: result.table.to_csv(fh, index=False, float_format="%.6g"),
        folder / CATEGORY_FILES["spec"]: lambda fh: fh.write(_json({"category": category, **spec})),
        report_path: lambda fh: fh.write(_json(report_dict)),
    })
    (folder / FAILURE_FILE).unlink(missing_ok=True)
    return _summary_row(category, folder, status, report_dict["reason"], n_rows=data.n_obs,
                        n_regions=data.n_regions, divergences=report.divergences, max_rhat=report.max_rhat,
                        min_ess_bulk=report.min_ess_bulk, min_ess_tail=report.min_ess_tail, seconds=seconds,
                        cpu_seconds=cpu_seconds)


def _summary_from_report(category, folder: Path) -> dict:
    """The summary row of a category finished in an earlier run, read from its report."""
    report = json.loads((folder / CATEGORY_FILES["report"]).read_text())
    return _summary_row(category, folder, "skipped", f"finished earlier: {report.get('status', '')}",
                        n_rows=report.get("n_rows"), n_regions=report.get("n_regions"),
                        divergences=report.get("divergences"), max_rhat=report.get("max_rhat"),
                        min_ess_bulk=report.get("min_ess_bulk"), min_ess_tail=report.get("min_ess_tail"),
                        seconds=report.get("seconds"), cpu_seconds=report.get("cpu_seconds"))


# --------------------------------------------------------------------------------------
# where the categories come from


def _check_by(df: pd.DataFrame, by: str, where: str) -> None:
    if by not in df.columns:
        raise InputError(f"{where}: no column {by!r} to split categories by; the columns are {list(df.columns)}")
    missing = df[by].isna().to_numpy()
    if missing.any():
        rows = list(df.index[missing][:5])
        raise InputError(f"{where}: column {by!r} has missing values in rows {rows}"
                         f"{f' (first 5 of {int(missing.sum())})' if missing.sum() > 5 else ''}; "
                         "every row needs a category")


def _split_frame(df: pd.DataFrame, by: str, where: str) -> dict:
    _check_by(df, by, where)
    return {key: part.drop(columns=[by]) for key, part in df.groupby(by, sort=True)}


def _read_csv_dir(path: Path, files: list[Path], by: str) -> dict:
    """Every CSV file, read as ``fit`` reads one; rows are named ``file:line`` in errors."""
    parts = []
    for file in files:
        table = read_sales_csv(file).table
        table.index = [f"{file.relative_to(path)}:{line}" for line in table.index]
        parts.append(table)
    return _split_frame(pd.concat(parts), by, str(path))


def _parquet_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def load_parquet_category(path: str | os.PathLike, by: str, category) -> pd.DataFrame:
    """The rows of one category from a Parquet data set, rows named ``file:row`` (row from 0).

    Reads only the files that hold the category: with a hive-partitioned data set
    (``category=A/part-0.parquet``) the others are never opened. Runs on the worker that
    fits the category, so the rows never pass through the client.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = Path(path)
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    field = ds.field(by)
    parts = []
    for fragment in dataset.get_fragments(filter=field == category):
        table = fragment.to_table(schema=dataset.schema)
        mask = pc.equal(table[by], category).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(mask)
        if rows.size:
            frame = table.take(rows).to_pandas()
            name = Path(fragment.path).relative_to(path) if Path(fragment.path).is_absolute() else fragment.path
            frame.index = [f"{name}:{r}" for r in rows]
            parts.append(frame.drop(columns=[by]))
    if not parts:
        raise ValueError(f"no rows of category {category!r} in {path}")
    return pd.concat(parts)


def _parquet_categories(path: Path, by: str) -> list:
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    if by not in dataset.schema.names:
        raise InputError(f"{path}: no column {by!r} to split categories by; the columns are {dataset.schema.names}")
    values = dataset.to_table(columns=[by])[by]
    if values.null_count:
        raise InputError(f"{path}: column {by!r} has {values.null_count} missing values; every row needs a category")
    return sorted(pd.unique(values.to_pandas()).tolist())


def _categories(data, by: str) -> tuple[dict, str]:
    """``{category: table or loader}`` and a description of the source."""
    if isinstance(data, pd.DataFrame):
        return _split_frame(data, by, "the table"), "a table in memory"
    path = Path(data)
    if not path.exists():
        raise InputError(f"data not found: {path}")
    if path.is_file():
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            table.index = [f"{path.name}:{r}" for r in range(len(table))]
            return _split_frame(table, by, str(path)), str(path)
        return _read_csv_dir(path.parent, [path], by), str(path)
    parquet = _parquet_files(path)
    if parquet:
        from functools import partial

        return {c: partial(load_parquet_category, path, by, c) for c in _parquet_categories(path, by)}, \
            f"{path} ({len(parquet)} Parquet files)"
    csvs = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".txt"))
    if not csvs:
        raise InputError(f"{path} holds no Parquet (*.parquet) or CSV (*.csv, *.tsv, *.txt) files")
    return _read_csv_dir(path, csvs, by), f"{path} ({len(csvs)} CSV files)"


# --------------------------------------------------------------------------------------
# the cluster

try:  # the plugin base class, when distributed is installed
    from distributed.diagnostics.plugin import NannyPlugin as _NannyPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    _NannyPlugin = object


class PytensorCompileDirs(_NannyPlugin):
    """Give every Dask worker process its own PyTensor compilation directory, and one thread.

    PyTensor compiles C and Numba code into a directory shared by default by every process
    of a user, guarded by a lock; worker processes that compile at once wait for each other
    or, through JAX and PyTensor's own caches, can trip over each other. A nanny plugin runs
    in the nanny, before it starts (or restarts) its worker process, so the flag is in the
    worker's environment before PyTensor is imported: ``compiledir=<base>/worker-<name>``
    on top of the user's own ``PYTENSOR_FLAGS``. Numba, OpenMP and BLAS get one thread each.
    Registering the plugin restarts running workers so that they start with it; workers
    started without a nanny (``dask worker --no-nanny``) cannot be given it, so start
    cluster workers with their nannies (the default).
    """

    restart = True
    idempotent = True
    name = "elasticity-pytensor-compiledirs"

    def __init__(self, base: str | os.PathLike | None = None):
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elasticity_lib" / "pytensor"
        self.base = str(base or default)

    def setup(self, nanny):
        """Set the worker's environment in the nanny, before the worker process starts."""
        name = nanny.name if nanny.name is not None else nanny.address
        folder = Path(self.base) / ("worker-" + quote(str(name), safe=""))
        flags = [f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith("compiledir=")]
        nanny.env.update({
            "PYTENSOR_FLAGS": ",".join([*flags, f"compiledir={folder}"]),
            "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        })


def start_client(scheduler: str | None = None, n_workers: int | None = None, compile_base=None):
    """A Dask client: to the scheduler at ``scheduler``, or to a new :class:`~distributed.LocalCluster`.

    The local cluster has ``n_workers`` single-threaded worker processes (default: one per
    core). Either way every worker gets its own PyTensor compilation directory
    (:class:`PytensorCompileDirs`). Close the client (and its cluster) with ``client.close()``;
    a local cluster closes with its client.
    """
    from distributed import Client, LocalCluster

    plugin = PytensorCompileDirs(compile_base)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {' '.join(str(err).split())}") from None
        client.register_plugin(plugin)
        return client
    n = n_workers or os.cpu_count() or 1
    if n < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers}")
    cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.register_plugin(plugin)  # before any worker starts, so none needs a restart
    cluster.scale(n)
    client.wait_for_workers(n, timeout=300)
    client._elasticity_owns_cluster = True
    return client


def _close(client) -> None:
    cluster = client.cluster if getattr(client, "_elasticity_owns_cluster", False) else None
    client.close()
    if cluster is not None:
        cluster.close()


# --------------------------------------------------------------------------------------
# many categories


@dataclasses.dataclass
class FitManyResult:
    """What :func:`fit_many` did: one summary row per category, and where the results are."""

    summary: pd.DataFrame
    out_dir: Path
    source: str

    def counts(self) -> dict[str, int]:
        """How many categories ended in each status."""
        return {s: int(n) for s, n in self.summary["status"].value_counts().items()}

    def failures(self) -> pd.DataFrame:
        """The categories that were not fitted, or did not converge (in this run or an earlier one), with reasons."""
        earlier = self.summary["reason"].fillna("").str.startswith("finished earlier: unconverged")
        bad = ~self.summary["status"].isin(["ok", "skipped"]) | earlier
        return self.summary.loc[bad, ["category", "status", "reason"]].reset_index(drop=True)

    def elasticities(self, level: str = "region") -> pd.DataFrame:
        """The elasticity tables of every fitted category (this run's and earlier ones), stacked."""
        parts = []
        for category, folder in zip(self.summary["category"], self.summary["folder"]):
            file = self.out_dir / folder / CATEGORY_FILES["table"]
            if file.exists():
                table = pd.read_csv(file)
                parts.append(table.loc[table["level"] == level].assign(category=category))
        if not parts:
            return pd.DataFrame(columns=["category"])
        out = pd.concat(parts, ignore_index=True)
        return out[["category", *[c for c in out.columns if c != "category"]]]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="category", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def fit_many(data, *, by: str = "category", out_dir: str | os.PathLike, model: str = "multilevel",
             client=None, scheduler: str | None = None, n_workers: int | None = None,
             categories: Iterable | None = None, progress: bool = True, **settings) -> FitManyResult:
    """Fit one model per category on a Dask cluster, writing each category's results as it finishes.

    Parameters
    ----------
    data : pandas.DataFrame, or a path
        The sales of every category in the tidy schema of
        :func:`~elasticity_lib.data.prepare.validate_table` plus the column ``by``: a table, a
        Parquet file or data set (a folder of ``*.parquet`` files, hive-partitioned by
        ``by`` or not; each worker reads its own category's rows), or a CSV file or folder
        of CSV files (read as ``fit`` reads them). Rows are named ``file:line`` in errors.
    by : str
        The column that names the category.
    out_dir : path
        Where each category's folder (:func:`category_dir`) and :data:`SUMMARY_FILE` go;
        created if missing.
    model : str
        The model kind (:data:`CATEGORY_FITTERS`).
    client : distributed.Client, optional
        A client to submit to. Without one, :func:`start_client` starts one (to
        ``scheduler``, or a local cluster of ``n_workers`` processes) and closes it after.
    categories : iterable, optional
        Fit only these categories.
    progress : bool
        Show a progress bar of categories finished, failed and left.
    **settings
        Fields of :class:`FitManyConfig` (``draws``, ``tune``, ``chains``,
        ``target_accept``, ``max_divergences``, ``store_ids``, ``zero_sales``, ...).

    Returns
    -------
    FitManyResult
        The summary (one row per category: status, reason, diagnostics, seconds), also
        written to ``out_dir / SUMMARY_FILE``.

    Raises
    ------
    InputError
        When the data cannot be used at all (not found, no files, no ``by`` column,
        categories missing), before anything is fitted. Bad data within one category
        is that category's failure only.
    """
    config = FitManyConfig(model=model, **settings)
    sources, described = _categories(data, by)
    if categories is not None:
        wanted = list(categories)
        unknown = [c for c in wanted if c not in sources]
        if unknown:
            raise InputError(f"categories {unknown[:5]} are not in the data; it has {list(sources)[:10]}")
        sources = {c: sources[c] for c in wanted}
    if not sources:
        raise InputError(f"{described}: no categories to fit")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file, not a folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"output folder's parent {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    folders = {c: category_dir(out_dir, c) for c in sources}
    clash = pd.Series([f.name for f in folders.values()]).duplicated()
    if clash.any():
        raise InputError(f"two categories map to the folder {list(folders.values())[int(np.flatnonzero(clash)[0])].name}")
    rows = {c: _summary_from_report(c, f) for c, f in folders.items() if (f / CATEGORY_FILES["report"]).exists()}
    todo = [c for c in sources if c not in rows]
    bar = _progress(len(sources), len(rows), progress)
    owned = client is None and todo
    futures: dict = {}
    try:
        if todo:
            client = start_client(scheduler, n_workers) if client is None else client
            from distributed import as_completed

            for c in todo:
                seed = sampler_seed(f"{config.seed_stream}:{c}")
                futures[client.submit(fit_category, c, sources[c], str(out_dir), config, seed, described,
                                      key=f"fit_category-{folders[c].name}-{seed}", pure=False)] = c
            failed = done = 0
            for future in as_completed(futures):
                c = futures[future]
                try:
                    row = future.result()
                except Exception as err:  # the worker died on it again and again, or the task could not run
                    row = _summary_row(c, folders[c], "error", f"{type(err).__name__}: {' '.join(str(err).split())}")
                    _write_failure(folders[c], row)
                rows[c] = row
                failed += row["status"] in ("bad_data", "error", "unconverged")
                done += 1
                bar.update(1)
                bar.set_postfix(failed=failed, left=len(todo) - done, refresh=False)
    except KeyboardInterrupt:
        # stop handing out categories; a category being written is either renamed into
        # place completely or left unfinished (no report), and a rerun fits it again
        if client is not None and futures:
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
        raise
    finally:
        bar.close()
        if owned and client is not None:
            _close(client)
            # the workers are gone: temporary files of a write they did not finish go too
            for stale in out_dir.glob("*/.*.tmp"):
                stale.unlink(missing_ok=True)
    summary = pd.DataFrame([rows[c] for c in sources if c in rows], columns=SUMMARY_COLUMNS)
    atomic_write({out_dir / SUMMARY_FILE: lambda fh: summary.to_csv(fh, index=False, float_format="%.6g")})
    return FitManyResult(summary=summary, out_dir=out_dir, source=described)


def simulate_catalogue(n_categories: int, config=None, *, seed: int, by: str = "category", prefix: str = "cat",
                       with_truth: bool = False):
    """A catalogue of ``n_categories`` simulated markets, one per category, in one tidy table.

    Category ``i`` is named ``{prefix}-0000i`` (zero-padded, so names sort in order) and
    drawn by :func:`~elasticity_lib.data.simulation.simulate_market` with its own seed spawned
    from ``seed``; ``config`` (a :class:`~elasticity_lib.data.simulation.SimulationConfig`) is the
    book's market by default. With ``with_truth``, also returns the true elasticity of every
    region of every category (columns ``by``, ``region_id``, ``intercept``, ``elasticity``).
    """
    from elasticity_lib.data.simulation import simulate_market

    if not isinstance(n_categories, (int, np.integer)) or n_categories < 1:
        raise ValueError(f"n_categories must be a positive integer, got {n_categories!r}")
    width = max(5, len(str(n_categories - 1)))
    seeds = np.random.SeedSequence(seed).spawn(int(n_categories))
    parts, truths = [], []
    for i, s in enumerate(seeds):
        name = f"{prefix}-{i:0{width}d}"
        market = simulate_market(config, seed=np.random.default_rng(s))
        parts.append(market.to_dataframe().assign(**{by: name}))
        truths.append(market.truth.region_table().reset_index().assign(**{by: name}))
    table = pd.concat(parts, ignore_index=True)
    if not with_truth:
        return table
    truth = pd.concat(truths, ignore_index=True)
    return table, truth[[by, "region_id", "intercept", "elasticity"]]


# --------------------------------------------------------------------------------------
# command line: python -m elasticity_lib fit-many DATA_DIR --by category --out OUT_DIR

FIT_MANY_EXIT = {
    0: "every category was fitted and converged (in this run or an earlier one)",
    1: "the data cannot be used at all (not found, no files, no category column); nothing is fitted",
    2: "wrong command line",
    3: "some categories failed (bad data, a crash) or did not converge; the others are written; "
       f"see {SUMMARY_FILE} and each category's {FAILURE_FILE}",
    130: "interrupted; finished categories are kept, a rerun fits the rest",
}


def add_fit_many_parser(sub, epilog: dict) -> None:
    """Add the ``fit-many`` subcommand to the command line's subparsers."""
    import argparse

    text = "exit status:\n" + "\n".join(f"  {code:>3}  {t}" for code, t in FIT_MANY_EXIT.items())
    p = sub.add_parser(
        "fit-many", help="fit one model per category on a Dask cluster (local by default), resuming a stopped run",
        epilog=text, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit one model per category. DATA is a folder of Parquet files (hive-partitioned by the "
                    "category or not), a folder of CSV files, or one file, in the tidy schema plus the category "
                    "column. Each category's results go to OUT/<category>/ as they finish; a rerun skips finished "
                    "categories.")
    p.add_argument("data", type=Path, help="folder (or file) of sales in the tidy schema with a category column")
    p.add_argument("--by", default="category", help="the column naming the category (default: category)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--model", choices=list(CATEGORY_FITTERS), default="multilevel",
                   help="model kind (default: multilevel)")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--store-ids", choices=STORE_IDS, default="global", help="as for fit")
    p.add_argument("--zero-sales", choices=ZERO_SALES, default="error", help="as for fit")
    p.add_argument("--draws", type=int, default=None, help="draws per chain (default: the model's, as for fit)")
    p.add_argument("--tune", type=int, default=None, help="tuning steps per chain (default: the model's)")
    p.add_argument("--chains", type=int, default=None, help="number of chains (default: the model's)")
    p.add_argument("--max-divergences", type=int, default=0,
                   help="divergences a category may have and still count as converged (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_fit_many(parser, args) -> int:
    """Run ``fit-many`` from parsed arguments; return the exit status (:data:`FIT_MANY_EXIT`)."""
    for name in ("draws", "tune", "chains", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    if args.max_divergences < 0:
        parser.error(f"--max-divergences must be 0 or more, got {args.max_divergences}")
    try:
        result = fit_many(args.data, by=args.by, out_dir=args.out, model=args.model, scheduler=args.scheduler,
                          n_workers=args.workers, progress=not args.no_progress, draws=args.draws, tune=args.tune,
                          chains=args.chains, max_divergences=args.max_divergences, store_ids=args.store_ids,
                          zero_sales=args.zero_sales)
    except InputError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        done = len(list(Path(args.out).glob(f"*/{CATEGORY_FILES['report']}"))) if Path(args.out).is_dir() else 0
        print(f"error: interrupted; the {done} finished categories in {args.out} are kept, "
              "the same command again fits the rest", file=sys.stderr)
        return 130
    counts = result.counts()
    print(f"read {result.source}: {len(result.summary)} categories; "
          + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    print(f"wrote {result.out_dir / SUMMARY_FILE}")
    failures = result.failures()
    if len(failures):
        print(f"warning: {len(failures)} categories failed or did not converge:", file=sys.stderr)
        for row in failures.itertuples():
            print(f"  {row.category}: {row.status}: {row.reason}", file=sys.stderr)
        return 3
    return 0
