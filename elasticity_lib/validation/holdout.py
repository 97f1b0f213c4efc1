"""Predictions for regions that were never observed, and held-out checks of them.

A multilevel model says how regions differ: each region's intercept and elasticity sit
on a line in median income plus a region deviation drawn from a fitted distribution.
A region never observed is therefore predicted by drawing, for every posterior draw,

    alpha_new = a0 + a1 * income + dev_a,    beta_new = b0 + b1 * income + dev_b,

with ``(dev_a, dev_b)`` a fresh deviation: independent ``Normal(0, sigma_a)`` and
``Normal(0, sigma_b)`` for the ``multilevel`` (and ``store_multilevel``) models, and
``L z`` with ``L`` the posterior draw of the Cholesky factor for the ``correlated`` model.

The known regions are *not* re-drawn: their effects are the posterior draws themselves.
(Changing a model's region coordinate and calling posterior predictive sampling would
re-draw every region's deviation from its prior; see the book's chapter on new regions.)

:class:`HoldoutRefitter` refits a region-level model on part of the data, compiling the
model once and swapping data between refits, so that every region of many markets can be
held out in turn in a few seconds. :func:`cross_validate` builds the book's held-out
checks on it, one mechanism with different splits of the rows: leave-one-region-out
(:func:`leave_region_out`), leave-store-out (:func:`leave_store_out`) and the time
hold-out that fits on the past and predicts the future (:func:`time_holdout`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from elasticity_lib._checks import check_probability, posterior_dataset
from elasticity_lib.data.prepare import STAT_FIELDS, Centring, ModelData, prepare_data
from elasticity_lib.inference import KIND_SAMPLING, SAMPLING_DEFAULTS, add_group_effects, exact_numba_arithmetic
from elasticity_lib.models.builder import (
    MIN_REGIONS,
    SPEC_PREFIX,
    WEIGHTED_FORMS,
    ModelSpec,
    build_model,
    fitted_kind,
    recorded,
    region_cholesky,
)
from elasticity_lib.reproducibility import sampler_seed

__all__ = [
    "PREDICTABLE_KINDS",
    "new_region_draws",
    "predict_regions",
    "HoldoutRefitter",
    "holdout_coverage",
    "region_folds",
    "store_folds",
    "time_holdout_fold",
    "CrossValidation",
    "cross_validate",
    "leave_region_out",
    "leave_store_out",
    "time_holdout",
    "compare_cross_validations",
]

#: Model kinds with a population distribution of regions, hence able to predict a new one.
PREDICTABLE_KINDS: tuple[str, ...] = ("multilevel", "correlated", "store_multilevel")

_SAMPLE_DIMS = ("chain", "draw")


def _check_incomes(new_incomes: Mapping) -> tuple[list, np.ndarray]:
    if not isinstance(new_incomes, Mapping) or len(new_incomes) == 0:
        raise ValueError("new_incomes must be a non-empty mapping {region name: median income}")
    names = list(new_incomes)
    incomes = np.array([float(new_incomes[n]) for n in names])
    for name, value in zip(names, incomes):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"new_incomes[{name!r}] must be a finite, strictly positive income, got {value}")
    return names, incomes


def new_region_draws(idata, new_incomes: Mapping, *, kind: str | None = None, seed=None,
                     log_price_center: float | None = None) -> xr.Dataset:
    """Posterior predictive draws of intercept and elasticity for regions never observed.

    ``new_incomes`` maps a name for each new region to its median income (original
    scale). Returns a Dataset with ``alpha`` and ``beta`` of dims ``(chain, draw,
    region)``, one fresh region deviation per posterior draw, plus ``income`` on the
    ``region`` dim. ``kind`` defaults to the kind recorded on the fit, ``seed`` to
    ``sampler_seed("new_regions")``, ``log_price_center`` (the log price at which the
    model defines region deviations) to the one recorded on the fit.
    """
    kind = fitted_kind(idata) if kind is None else kind
    x_c = float(recorded(idata, "log_price_center")) if log_price_center is None else float(log_price_center)
    seed = sampler_seed("new_regions") if seed is None else seed
    if kind not in PREDICTABLE_KINDS:
        raise ValueError(
            f"kind {kind!r} has no population distribution of regions to predict from; "
            f"choose one of {list(PREDICTABLE_KINDS)}"
        )
    post = posterior_dataset(idata)
    names, incomes = _check_incomes(new_incomes)
    needed = ["a0", "a1", "b0", "b1"] + (["chol_region"] if kind == "correlated" else ["sigma_a", "sigma_b"])
    missing = [v for v in needed if v not in post]
    if missing:
        raise ValueError(f"the posterior lacks {missing}, needed to predict a new region with kind={kind!r}")
    inc = xr.DataArray(incomes, dims="region", coords={"region": names})
    line_a = post["a0"] + post["a1"] * inc
    line_b = post["b0"] + post["b1"] * inc
    rng = np.random.default_rng(seed)
    shape = (post.sizes["chain"], post.sizes["draw"], len(names))
    z = [xr.DataArray(rng.standard_normal(shape), dims=(*_SAMPLE_DIMS, "region"), coords={"region": names})
         for _ in range(2)]
    if kind == "correlated":
        l00, l10, l11 = region_cholesky(post)
        dev_a, dev_b = l00 * z[0], l10 * z[0] + l11 * z[1]
    else:
        dev_a, dev_b = post["sigma_a"] * z[0], post["sigma_b"] * z[1]
    # deviations are defined at the centre of log price; the intercept is reported at log price 0
    out = xr.Dataset({"alpha": line_a + dev_a - x_c * dev_b, "beta": line_b + dev_b})
    return out.transpose(*_SAMPLE_DIMS, "region").assign_coords(income=inc)


def predict_regions(idata, new_incomes: Mapping | None = None, *, kind: str | None = None, seed=None) -> xr.Dataset:
    """Intercepts and elasticities of the fitted regions and of new regions, per draw.

    Fitted regions keep exactly their posterior draws of ``alpha`` and ``beta``; new
    regions (``new_incomes``: name -> median income) get posterior predictive draws from
    :func:`new_region_draws`. ``sigma`` is carried along for demand predictions, and the
    boolean coordinate ``observed`` tells the two kinds of region apart. Region labels
    are returned as strings (fitted region 7 becomes ``"7"``). ``kind`` defaults to the
    kind recorded on the fit (:func:`~elasticity_lib.models.fitted_kind`).
    """
    if kind is None and new_incomes:
        kind = fitted_kind(idata)
    post = posterior_dataset(idata)
    for var in ("alpha", "beta", "sigma"):
        if var not in post:
            raise ValueError(f"the posterior lacks {var!r}; fit a region-level model with elasticity_lib.fit")
    known = post[["alpha", "beta"]]
    known = known.assign_coords(observed=("region", np.ones(known.sizes["region"], dtype=bool)))
    parts = [known]
    if new_incomes:
        fitted = {str(r) for r in known["region"].values.tolist()}
        clash = [n for n in new_incomes if str(n) in fitted]
        if clash:
            raise ValueError(f"new region names {clash} are already fitted regions; pick other names")
        x_c = float(recorded(idata, "log_price_center"))
        new = new_region_draws(post, new_incomes, kind=kind, seed=seed, log_price_center=x_c).drop_vars("income")
        parts.append(new.assign_coords(observed=("region", np.zeros(new.sizes["region"], dtype=bool))))
    # one index of strings for fitted and new regions (a mixed index of ints and strings
    # cannot be selected from with a list of labels)
    parts = [p.assign_coords(region=[str(r) for r in p["region"].values.tolist()]) for p in parts]
    out = xr.concat(parts, dim="region", join="exact") if len(parts) > 1 else parts[0]
    return out.assign(sigma=post["sigma"])


class HoldoutRefitter:
    """Refit a region-level model on part of the data, compiling the model only once.

    The first fit compiles the model of ``kind`` (``"baseline"``, ``"multilevel"`` or
    ``"correlated"``) in its fast form with shared data and region weights
    (``build_model(..., shared_data=True, group_weights=...)``, :data:`~elasticity_lib.models.WEIGHTED_FORMS`)
    with nutpie (a few seconds); every later call swaps in the statistics of the rows it
    fits on with nutpie's ``with_data`` and only samples. Any market with the same number of
    regions can be refitted. A region without rows to fit on gets weight 0, and log price,
    log quantity and income are centred on the rows fitted on (and the incomes of their
    regions), exactly as ``build_model`` centres the reduced table, so a refit *is* the fit
    of the reduced table.

    The sampler settings default to those of :func:`~elasticity_lib.inference.fit` for the
    kind (:data:`~elasticity_lib.inference.SAMPLING_DEFAULTS` and
    :data:`~elasticity_lib.inference.KIND_SAMPLING`); any of them can be given.
    """

    def __init__(self, draws: int | None = None, tune: int | None = None, chains: int | None = None,
                 target_accept: float | None = None, *, kind: str = "multilevel"):
        kinds = [k for k, _ in WEIGHTED_FORMS]
        if kind not in kinds:
            raise ValueError(f"HoldoutRefitter refits the kinds {kinds}, not {kind!r}")
        given = dict(draws=draws, tune=tune, chains=chains, target_accept=target_accept)
        defaults = {**SAMPLING_DEFAULTS, **KIND_SAMPLING.get(kind, {})}
        self.kind = kind
        self.likelihood = dict(WEIGHTED_FORMS)[kind]
        self.sample_kwargs = {name: defaults[name] if value is None else value for name, value in given.items()}
        self._compiled = None
        self._n_regions: int | None = None

    def _compile(self, data: ModelData):
        import nutpie

        if self._compiled is None:
            with exact_numba_arithmetic():
                model = build_model(self.kind, data, self.likelihood, shared_data=True,
                                    group_weights=np.ones(data.n_regions))
                self._compiled = nutpie.compile_pymc_model(model)
            self._n_regions = data.n_regions
        if data.n_regions != self._n_regions:
            raise ValueError(
                f"this refitter was compiled for {self._n_regions} regions; the data have {data.n_regions}"
            )
        return self._compiled

    def fit_rows(self, data: ModelData, train, *, seed: int, effects_seed: int | None = None) -> xr.DataTree:
        """Posterior of the model given only the rows of ``data`` where ``train`` is true.

        ``train`` is a boolean mask over the rows. A region left without rows is fitted
        with weight 0. With ``effects_seed``, the marginal models' region effects ``alpha``
        and ``beta`` are drawn from their conditional posterior given the rows fitted on
        (:func:`~elasticity_lib.inference.add_group_effects`); for a region without rows
        that conditional is its population distribution given its income, that is the
        prediction of a new region (:func:`new_region_draws` draws from the same
        distribution). The baseline model samples ``alpha`` and ``beta`` directly.
        """
        import nutpie

        train_data = data.subset(train)
        weight = (train_data.region_stats.n > 0).astype(float)
        if weight.sum() < MIN_REGIONS[self.kind]:
            raise ValueError(f"the {self.kind} model needs rows in at least {MIN_REGIONS[self.kind]} regions; "
                             f"the rows fitted on cover {int(weight.sum())}")
        compiled = self._compile(data)
        k = train_data.centring
        updates = {f"stat_{f}": getattr(train_data.region_stats, f) for f in STAT_FIELDS}
        updates.update({f"centre_{f.name}": np.asarray(getattr(k, f.name)) for f in dataclasses.fields(Centring)})
        updates.update(group_weight=weight, income_std=(data.income - k.income) / k.income_scale)
        # the compiled model keeps only the data its density uses (the baseline has no income)
        used = {var.name for var in compiled.shared_var_keys}
        updates = {name: value for name, value in updates.items() if name in used}
        with exact_numba_arithmetic():
            idata = nutpie.sample(compiled.with_data(**updates), seed=int(seed), progress_bar=False,
                                  **self.sample_kwargs)
        if effects_seed is not None and self.likelihood == "marginal":
            idata = add_group_effects(idata, ModelSpec(self.kind, self.likelihood, train_data), seed=int(effects_seed))
        # what was fitted, as fit() records it (the model kind and where deviations are defined)
        idata.attrs.update({SPEC_PREFIX + "kind": self.kind, SPEC_PREFIX + "log_price_center": k.log_price})
        idata["posterior"].attrs.update(idata.attrs)
        return idata

    def fit(self, data: ModelData, held_out, *, seed: int) -> xr.DataTree:
        """Posterior of the model given every region of ``data`` but ``held_out``."""
        regions = list(data.coords["region"])
        if held_out not in regions:
            raise ValueError(f"held_out region {held_out!r} is not one of the regions {regions}")
        return self.fit_rows(data, data.region_idx != regions.index(held_out), seed=seed)


def holdout_coverage(markets: Sequence, *, prob: float = 0.94, seed: int,
                     refitter: HoldoutRefitter | None = None) -> pd.DataFrame:
    """Hold out each region of each market in turn and check its predictive interval.

    ``markets`` is a sequence of ``(label, Market)`` pairs of simulated markets (their
    ``truth`` gives the true elasticities). For every region the multilevel model is
    refitted without that region's rows, the region's elasticity is predicted from its
    income alone, and the table records the equal-tailed ``prob`` interval and whether
    it holds the true value.
    """
    check_probability(prob)
    refitter = refitter or HoldoutRefitter()
    tail = (1 - prob) / 2
    rng = np.random.default_rng(seed)
    rows = []
    for label, market in markets:
        if market.truth is None:
            raise ValueError(f"market {label!r} has no simulation truth to compare with")
        data = prepare_data(market.to_dataframe())
        truth = market.truth.region_elasticities
        for j, region in enumerate(data.coords["region"]):
            idata = refitter.fit(data, region, seed=int(rng.integers(2**31)))
            pred = new_region_draws(idata, {"held_out": data.income[j]}, kind="multilevel", seed=int(rng.integers(2**31)))
            draws = pred["beta"].values.ravel()
            lower, upper = np.quantile(draws, [tail, 1 - tail])
            true = truth[int(region)]
            rows.append({
                "market": label,
                "region": region,
                "income": data.income[j],
                "n_obs": int(data.region_stats.n[j]),
                "true_elasticity": true,
                "pred_mean": draws.mean(),
                "pred_sd": draws.std(),
                "lower": lower,
                "upper": upper,
                "covered": bool(lower <= true <= upper),
                "divergences": int(idata["sample_stats"]["diverging"].sum()),
            })
    return pd.DataFrame(rows)


Fold = tuple[str, np.ndarray]


def region_folds(data: ModelData) -> list[Fold]:
    """One fold per region: its rows are held out (leave-one-region-out).

    Returns ``(label, held_out)`` pairs, ``held_out`` a boolean mask over the rows; the
    label is ``"region <id>"``.
    """
    return [(f"region {region}", data.region_idx == j) for j, region in enumerate(data.coords["region"])]


def store_folds(data: ModelData, n_folds: int | None = None, *, seed: int | None = None) -> list[Fold]:
    """Folds of whole stores: each store's rows are held out together.

    ``n_folds=None`` gives one fold per store (exact leave-one-store-out, labels
    ``"store <label>"``). With ``n_folds`` the stores are split into that many groups
    (grouped K-fold, labels ``"fold <i>"``): the stores of each region are shuffled with
    ``seed`` and dealt out in turn, continuing where the previous region stopped, so every
    fold takes stores from across the regions, fold sizes differ by at most one store, and
    a region loses all its stores in one fold only if it has a single store.
    """
    if n_folds is None:
        return [(f"store {store}", data.store_idx == s) for s, store in enumerate(data.coords["store"])]
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= data.n_stores:
        raise ValueError(f"n_folds must be a whole number from 2 to the number of stores ({data.n_stores}), "
                         f"got {n_folds!r}")
    if seed is None:
        raise ValueError("store_folds with n_folds needs a seed for the shuffle of stores")
    rng = np.random.default_rng(seed)
    fold_of_store = np.empty(data.n_stores, dtype=int)
    dealt = 0
    for j in range(data.n_regions):
        stores = rng.permutation(np.flatnonzero(data.store_region_idx == j))
        fold_of_store[stores] = (dealt + np.arange(len(stores))) % n_folds
        dealt += len(stores)
    fold_of_row = fold_of_store[data.store_idx]
    return [(f"fold {i}", fold_of_row == i) for i in range(n_folds)]


def time_holdout_fold(data: ModelData, k: int, *, min_train: int = 2) -> list[Fold]:
    """One fold that holds out the last ``k`` time steps of every store: fit on the past, predict the future.

    A store keeps at least ``min_train`` rows to fit on, so a store with fewer than
    ``k + min_train`` rows gives up only its last ``n - min_train`` (none if it has
    ``min_train`` rows or fewer). The table needs a ``time_step`` column; a store's steps
    are ordered by it. Raises ``ValueError`` for a ``k`` or ``min_train`` that is not a whole
    number of at least 1, a table without time steps, or when no store has enough
    periods to hold any out.
    """
    for name, value in (("k", k), ("min_train", min_train)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if "time_step" not in data.table.columns:
        raise ValueError("the table has no 'time_step' column, so there is no past and future to split")
    steps = pd.to_numeric(data.table["time_step"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(steps).all():
        raise ValueError("column 'time_step' must hold finite numbers to order each store's rows")
    # rank of each row from the end of its store's history: 0 for the last step
    from_end = pd.Series(-steps).groupby(data.store_idx).rank(method="first").to_numpy().astype(int) - 1
    n_rows = np.bincount(data.store_idx, minlength=data.n_stores)[data.store_idx]
    held_out = from_end < np.minimum(k, n_rows - min_train)
    if not held_out.any():
        raise ValueError(f"no store has more than min_train={min_train} rows, so none has a period to hold out "
                         f"(the longest history has {int(n_rows.max())} rows)")
    return [(f"last {k} steps", held_out)]


@dataclasses.dataclass(frozen=True)
class CrossValidation:
    """Held-out log predictive densities of one model under one split of the data.

    ``pointwise`` has one row per held-out row: ``row`` (its position in the data),
    ``fold``, ``region``, ``store`` and ``elpd``, the row's log predictive density
    ``log mean_s p(y_i | theta_s)`` under the fit without its fold. ``folds`` has one row
    per fold: held-out ``rows``, ``elpd`` (their sum), ``mcse`` (its Monte Carlo error) and
    the refit's ``divergences``. ``unit`` names the column of ``pointwise`` whose groups are
    treated as exchangeable draws from the population of data for the standard error
    (``"region"``, ``"store"`` or ``"row"``).
    """

    kind: str
    pointwise: pd.DataFrame
    folds: pd.DataFrame
    unit: str

    def by_unit(self) -> pd.Series:
        """The elpd summed over the held-out rows of each unit."""
        return self.pointwise.groupby(self.unit, sort=False)["elpd"].sum()

    @property
    def elpd(self) -> float:
        """The elpd of all held-out rows."""
        return float(self.pointwise["elpd"].sum())

    @property
    def se(self) -> float:
        """Standard error of :attr:`elpd` from the finite data: ``sqrt(G var(elpd_g))`` over the G units.

        Like ArviZ's ``se`` of ``elpd_loo`` with units in place of rows (and the unbiased
        variance, which matters with few units). It is the uncertainty that no sampler seed changes.
        """
        per_unit = self.by_unit()
        return float(np.sqrt(len(per_unit) * per_unit.var(ddof=1)))

    @property
    def mcse(self) -> float:
        """Monte Carlo error of :attr:`elpd`: the folds' errors combined (their refits are independent)."""
        return float(np.sqrt((self.folds["mcse"] ** 2).sum()))


def _score_rows(data: ModelData, idata: xr.DataTree, held_out: np.ndarray) -> tuple[np.ndarray, float]:
    """Log predictive density of each held-out row, and the Monte Carlo error of their sum.

    ``log mean_s Normal(y_i | alpha_s[r] + beta_s[r] x_i, sigma_s)`` with ``r`` the row's
    region; the error is, to first order, that of the mean over draws of
    ``sum_i p_is / mean_s p_is`` (the same linearisation as
    :func:`~elasticity_lib.reproducibility.loo_monte_carlo_error`).
    """
    import arviz as az
    from scipy import stats

    post = posterior_dataset(idata)
    fitted = [str(r) for r in post["region"].values.tolist()]
    if fitted != [str(r) for r in data.coords["region"]]:
        raise ValueError(f"the fit's regions {fitted} are not the data's {data.coords['region']}")
    alpha, beta = (post[v].transpose(*_SAMPLE_DIMS, "region").values for v in ("alpha", "beta"))
    shape = alpha.shape[:2]
    region = data.region_idx[held_out]
    alpha, beta = (v.reshape(-1, v.shape[-1])[:, region] for v in (alpha, beta))
    sigma = post["sigma"].transpose(*_SAMPLE_DIMS).values.reshape(-1, 1)
    logp = stats.norm.logpdf(data.log_quantity[held_out], alpha + beta * data.log_price[held_out], sigma)
    top = logp.max(axis=0)
    p = np.exp(logp - top)
    elpd = top + np.log(p.mean(axis=0))
    u = (p / p.mean(axis=0)).sum(axis=1).reshape(shape)
    mcse = float(az.mcse(xr.Dataset({"u": (_SAMPLE_DIMS, u)}), method="mean")["u"])
    return elpd, mcse


def cross_validate(data: ModelData, folds: Sequence[Fold], *, refitter: HoldoutRefitter, unit: str,
                   seed_stream: str) -> CrossValidation:
    """Refit the model without each fold in turn and score the fold's rows by their log predictive density.

    ``folds`` are ``(label, held_out)`` pairs as made by :func:`region_folds`,
    :func:`store_folds` or :func:`time_holdout_fold` (or any boolean masks over the rows);
    one mechanism serves every split. For each fold the ``refitter`` fits the model to the
    other rows (:meth:`HoldoutRefitter.fit_rows`); each held-out row is predicted by its
    region's effects: drawn from their posterior given the rows fitted on, which for a
    region with no rows left is the population distribution at its income (the
    prediction of a new region). The baseline model has no such distribution, so a fold
    that holds out a whole region is an error for it. Seeds come from
    ``sampler_seed(f"{seed_stream}_fit_<label>")`` and ``..._effects_<label>``; ``unit``
    is the column (``"region"``, ``"store"`` or ``"row"``) over which the standard error is
    computed (:class:`CrossValidation`).
    """
    if unit not in ("region", "store", "row"):
        raise ValueError(f"unit must be 'region', 'store' or 'row', got {unit!r}")
    labels = [label for label, _ in folds]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"folds must be a non-empty sequence with distinct labels, got {labels}")
    points, summaries = [], []
    for label, held_out in folds:
        held_out = np.asarray(held_out)
        if held_out.dtype != bool or held_out.shape != (data.n_obs,) or not held_out.any():
            raise ValueError(f"fold {label!r}: held_out must be a boolean mask of length {data.n_obs} "
                             "holding out at least one row")
        if refitter.kind == "baseline":
            lost = sorted(set(data.region_idx[held_out]) - set(data.region_idx[~held_out]))
            if lost:
                raise ValueError(f"fold {label!r} holds out every row of regions "
                                 f"{[data.coords['region'][j] for j in lost]}; the baseline model has no "
                                 "prediction for a region without rows to fit on")
        idata = refitter.fit_rows(data, ~held_out, seed=sampler_seed(f"{seed_stream}_fit_{label}"),
                                  effects_seed=sampler_seed(f"{seed_stream}_effects_{label}"))
        elpd, mcse = _score_rows(data, idata, held_out)
        rows = np.flatnonzero(held_out)
        points.append(pd.DataFrame({
            "row": rows, "fold": label,
            "region": np.asarray(data.coords["region"], dtype=object)[data.region_idx[rows]],
            "store": np.asarray(data.coords["store"], dtype=object)[data.store_idx[rows]],
            "elpd": elpd,
        }))
        summaries.append({"fold": label, "rows": len(rows), "elpd": float(elpd.sum()), "mcse": mcse,
                          "divergences": int(idata["sample_stats"]["diverging"].sum())})
    pointwise = pd.concat(points, ignore_index=True)
    if pointwise["row"].duplicated().any():
        raise ValueError("the folds overlap: some rows are held out in more than one fold")
    return CrossValidation(kind=refitter.kind, pointwise=pointwise.assign(row=pointwise["row"].astype(int)),
                           folds=pd.DataFrame(summaries).set_index("fold"),
                           unit=unit)


def _refitter(refitter: HoldoutRefitter | None, kind: str) -> HoldoutRefitter:
    if refitter is None:
        return HoldoutRefitter(kind=kind)
    if refitter.kind != kind:
        raise ValueError(f"the refitter fits the {refitter.kind} model, not the {kind} model")
    return refitter


def leave_region_out(data: ModelData, *, kind: str = "multilevel", refitter: HoldoutRefitter | None = None,
                     seed_stream: str = "loro") -> CrossValidation:
    """Leave-one-region-out cross-validation: how well a model predicts a region it has never seen.

    Each region in turn is left out, the model is refitted on the others and the region's
    rows are scored from its income alone (the income lines plus a region deviation drawn
    from the fitted population of regions). Only models with a population of regions
    (:data:`PREDICTABLE_KINDS`) can do this. The standard error treats regions as the
    units. See :func:`cross_validate`.
    """
    if kind not in PREDICTABLE_KINDS:
        raise ValueError(f"kind {kind!r} has no population distribution of regions to predict a left-out region "
                         f"from; choose one of {list(PREDICTABLE_KINDS)}")
    return cross_validate(data, region_folds(data), refitter=_refitter(refitter, kind), unit="region",
                          seed_stream=seed_stream)


def leave_store_out(data: ModelData, *, kind: str = "multilevel", n_folds: int | None = None,
                    fold_seed: int | None = None, refitter: HoldoutRefitter | None = None,
                    seed_stream: str = "loso") -> CrossValidation:
    """Leave-store-out cross-validation: how well a model predicts a store it has never seen.

    A region-level model has no store effects, so a new store is predicted by its
    region's parameters, fitted on the region's other stores. ``n_folds=None`` refits once
    per store (exact); otherwise stores are grouped into ``n_folds`` folds by a shuffle
    seeded with ``fold_seed`` (:func:`store_folds`). The standard error treats stores as the units.
    See :func:`cross_validate`.
    """
    folds = store_folds(data, n_folds, seed=fold_seed)
    return cross_validate(data, folds, refitter=_refitter(refitter, kind), unit="store", seed_stream=seed_stream)


def time_holdout(data: ModelData, k: int, *, kind: str = "multilevel", min_train: int = 2,
                 refitter: HoldoutRefitter | None = None, seed_stream: str = "time_holdout") -> CrossValidation:
    """Fit on the past, predict the future: the last ``k`` time steps of every store held out.

    Stores keep at least ``min_train`` rows to fit on (:func:`time_holdout_fold`). One
    refit. The standard error treats stores as the units, since a store's future rows
    share its departure from its region. See :func:`cross_validate`.
    """
    folds = time_holdout_fold(data, k, min_train=min_train)
    return cross_validate(data, folds, refitter=_refitter(refitter, kind), unit="store", seed_stream=seed_stream)


def compare_cross_validations(results: Mapping[str, CrossValidation]) -> pd.DataFrame:
    """Models side by side under one split, best first, with differences to the best.

    Every result must hold out the same rows with the same unit. Columns: ``elpd``,
    ``se``, ``mcse``; ``elpd_diff`` (best minus this model, 0 for the best), ``dse``
    (standard error of that difference, from the paired per-unit differences:
    ``sqrt(G var(d_g))``, as ``arviz.compare`` does per row), ``diff_mcse`` (Monte Carlo
    error of the difference; the refits of the two models are independent).
    """
    if not results:
        raise ValueError("results must name at least one cross-validation")
    names = list(results)
    first = results[names[0]]
    for name in names[1:]:
        other = results[name]
        if other.unit != first.unit or set(other.pointwise["row"]) != set(first.pointwise["row"]):
            raise ValueError(f"{name!r} and {names[0]!r} do not hold out the same rows with the same unit")
    per_unit = pd.DataFrame({name: res.by_unit() for name, res in results.items()})
    table = pd.DataFrame({"elpd": {n: r.elpd for n, r in results.items()},
                          "se": {n: r.se for n, r in results.items()},
                          "mcse": {n: r.mcse for n, r in results.items()}}).sort_values("elpd", ascending=False)
    best = table.index[0]
    diff = per_unit[best].to_numpy()[:, None] - per_unit[table.index].to_numpy()
    table["elpd_diff"] = diff.sum(axis=0)
    table["dse"] = np.sqrt(len(per_unit) * diff.var(axis=0, ddof=1))
    table["diff_mcse"] = np.sqrt(table["mcse"] ** 2 + np.where(table.index == best, 0.0, table.loc[best, "mcse"] ** 2))
    return table
