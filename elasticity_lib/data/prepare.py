"""Turn a tidy sales table, simulated or a user's own, into validated model inputs.

A user's table is checked before anything is fitted: every problem raises a ``ValueError``
that names the column and the first offending rows, and no row is ever dropped or
altered silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from dataclasses import replace as dataclass_replace
from functools import cached_property

import numpy as np
import pandas as pd

from elasticity_lib.data.entities import store_label

__all__ = [
    "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "NUMERIC_COLUMNS", "STORE_IDS", "ZERO_SALES", "PRICE_VARIATION_TOL",
    "MIN_ROWS", "MIN_ROWS_PER_REGION", "NoPriceVariationWarning", "GroupStats", "Centring", "ModelData", "check_option",
    "prepare_data", "require_columns", "schema_column_names", "validate_table",
]

#: Columns a sales table must have.
REQUIRED_COLUMNS = ["region_id", "store_id", "price", "quantities", "median_income"]
#: Columns the schema uses when present; any other column is allowed and ignored.
OPTIONAL_COLUMNS = ["region_store_id", "time_step", "item_id", "log_price", "log_quantities"]
#: How ``store_id`` identifies a store. ``"global"``: one id per store in the whole table,
#: so an id found in two regions is an error. ``"per-region"``: stores are numbered within
#: each region, and a store is the pair (``region_id``, ``store_id``).
STORE_IDS = ("global", "per-region")
#: What to do with rows whose ``quantities`` are 0 (the log-log models cannot use them):
#: ``"error"`` rejects them, ``"drop"`` drops them and counts them per store. Negative
#: quantities are an error either way.
ZERO_SALES = ("error", "drop")
#: Columns that must hold finite, strictly positive numbers.
NUMERIC_COLUMNS = ["price", "quantities", "median_income"]
#: A group's prices count as never varying when the root-mean-square deviation of its log
#: prices from their mean is at most this, that is when its prices differ by less than
#: about one part in a billion (``sqrt(cxx / n) <= tol``; a group of one row never varies).
PRICE_VARIATION_TOL = 1e-9
#: The least data a fit needs: rows in all, and rows in every region (a line through one
#: point has no slope; with two points in all, no residual scale).
MIN_ROWS, MIN_ROWS_PER_REGION = 3, 2
_SHOW = 5


class NoPriceVariationWarning(UserWarning):
    """Some groups' prices never vary: their elasticities come from the prior and pooling alone."""


def _py(value):
    """A NumPy scalar as the plain Python value, so messages read ``0`` not ``np.int64(0)``."""
    return value.item() if isinstance(value, np.generic) else value


def _shown(items: list) -> str:
    """The first few items, and how many there are when some are left out."""
    shown = ", ".join(str(b) for b in items[:_SHOW])
    more = f" (first {_SHOW} of {len(items)})" if len(items) > _SHOW else ""
    return f"[{shown}]{more}"


def _rows(index: pd.Index, mask: np.ndarray) -> str:
    return f"rows {_shown(list(index[np.asarray(mask)]))}"


def check_option(name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``, naming the option and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def schema_column_names(names) -> dict:
    """Which of ``names`` are schema columns, matched after trimming spaces and ignoring case.

    Parameters
    ----------
    names : iterable
        Column names as found, for example in a file's header.

    Returns
    -------
    dict
        ``{name: schema column}`` for every name that matches one of
        :data:`REQUIRED_COLUMNS` or :data:`OPTIONAL_COLUMNS` (``" Price"`` -> ``"price"``),
        including names that are spelled exactly so.

    Raises
    ------
    ValueError
        When two names match the same schema column, naming both.
    """
    schema = {c.lower(): c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    found: dict[str, list] = {}
    for name in names:
        column = schema.get(str(name).strip().lower())
        if column is not None:
            found.setdefault(column, []).append(name)
    for column, matches in found.items():
        if len(matches) > 1:
            listed = ", ".join(repr(m) for m in matches[:-1]) + f" and {matches[-1]!r}"
            raise ValueError(f"columns {listed} {'both' if len(matches) == 2 else 'all'} stand for column "
                             f"{column!r} (names are matched after trimming spaces and ignoring case); "
                             "remove or rename all but one")
    return {matches[0]: column for column, matches in found.items()}


def require_columns(df: pd.DataFrame, columns) -> None:
    """Check that ``df`` is a non-empty DataFrame with the given columns, naming any missing."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"missing required column(s) {missing}; the table has columns {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("the table has no rows")


def _check_ids(out: pd.DataFrame) -> None:
    for col in ["region_id", "store_id"]:
        null = out[col].astype(object).isna().to_numpy()
        if null.any():
            raise ValueError(f"column '{col}' has missing ids in {_rows(out.index, null)}")


def _check_numeric(out: pd.DataFrame, col: str, zero_ok: bool = False) -> None:
    """Turn ``col`` into finite, strictly positive floats in place (or non-negative ones with ``zero_ok``)."""
    raw = out[col]
    if pd.api.types.is_bool_dtype(raw):
        raise ValueError(f"column '{col}' must be numeric, got booleans")
    numeric = pd.to_numeric(raw, errors="coerce")
    not_numeric = (numeric.isna() & raw.notna()).to_numpy()
    if not_numeric.any():
        example = raw[not_numeric].iloc[0]
        raise ValueError(f"column '{col}' has non-numeric values (e.g. {example!r}) in {_rows(out.index, not_numeric)}")
    values = numeric.to_numpy(dtype=float)
    nan = np.isnan(values)
    if nan.any():
        raise ValueError(f"column '{col}' has NaN (missing) values in {_rows(out.index, nan)}")
    inf = np.isinf(values)
    if inf.any():
        raise ValueError(f"column '{col}' has infinite values in {_rows(out.index, inf)}")
    if zero_ok:
        negative = values < 0
        if negative.any():
            raise ValueError(f"column '{col}' must not be negative; values < 0 in {_rows(out.index, negative)} "
                             "(zero_sales='drop' drops only rows with zero quantities)")
    else:
        nonpos = values <= 0
        if nonpos.any():
            hint = ""
            if col == "quantities" and (values == 0).any():
                hint = ("; rows with zero sales can be dropped with zero_sales='drop' (command line: "
                        "--zero-sales drop)" + (", negative quantities cannot" if (values < 0).any() else ""))
            raise ValueError(f"column '{col}' must be strictly positive; values <= 0 in "
                             f"{_rows(out.index, nonpos)}{hint}")
    out[col] = values


def _check_store_regions(out: pd.DataFrame) -> None:
    """With global store ids, each store id belongs to one region."""
    regions_per_store = out.groupby("store_id", observed=True, sort=False)["region_id"].nunique()
    shared = regions_per_store[regions_per_store > 1]
    if not len(shared):
        return
    store = shared.index[0]
    mask = (out["store_id"] == store).to_numpy()
    region_of_rows = out.loc[mask, "region_id"]
    regions = [_py(r) for r in pd.unique(region_of_rows)]
    # the rows to show are those outside the store's most common region
    main_region = region_of_rows.value_counts().index[0]
    stray = mask.copy()
    stray[mask] = (region_of_rows != main_region).to_numpy()
    raise ValueError(
        f"column 'store_id': store {_py(store)!r} appears in more than one region {regions}; "
        f"most of its rows are in region {_py(main_region)!r}, the others are {_rows(out.index, stray)}; "
        "a store must belong to exactly one region. If the table numbers stores within each region, "
        "pass store_ids='per-region' (command line: --store-ids per-region)"
    )


def _check_income(out: pd.DataFrame) -> None:
    incomes = out.groupby("region_id", observed=True, sort=False)["median_income"].nunique()
    varying = incomes[incomes > 1]
    if len(varying):
        region = varying.index[0]
        mask = (out["region_id"] == region).to_numpy()
        values = [_py(v) for v in sorted(pd.unique(out.loc[mask, "median_income"]))[:_SHOW]]
        raise ValueError(
            f"column 'median_income' differs within region {_py(region)!r} (values {values}) in "
            f"{_rows(out.index, mask)}; a region has one median income"
        )


def _add_store_labels(out: pd.DataFrame) -> None:
    """Set ``region_store_id`` to each row's store label, checking a given one."""
    labels = np.array(
        [store_label(r, s) for r, s in zip(out["region_id"].astype(object), out["store_id"].astype(object))],
        dtype=object,
    )
    if "region_store_id" in out.columns:
        given = out["region_store_id"].astype(object).to_numpy()
        wrong = given != labels
        if wrong.any():
            raise ValueError(
                "column 'region_store_id' must equal 'r-{region_id}_s-{store_id}'; it disagrees in "
                f"{_rows(out.index, wrong)} (e.g. {given[wrong][0]!r} for {labels[wrong][0]!r})"
            )
    out["region_store_id"] = labels


def _check_repeated_steps(out: pd.DataFrame) -> None:
    """A store has at most one row per time step (per item, when the table has ``item_id``)."""
    if "time_step" not in out.columns:
        return
    key = ["region_store_id", "time_step"] + (["item_id"] if "item_id" in out.columns else [])
    group = out.groupby(key, sort=False, dropna=False, observed=True).ngroup().to_numpy()
    repeated = out.duplicated(subset=key, keep=False).to_numpy()
    if not repeated.any():
        return
    mask = group == group[repeated][0]
    row = out.loc[mask].iloc[0]
    item = f" (item {_py(row['item_id'])!r})" if "item_id" in key else ""
    n_keys = len(np.unique(group[repeated]))
    more = f"; {n_keys} (store, time step) pairs are repeated in all" if n_keys > 1 else ""
    raise ValueError(
        f"column 'time_step': store {_py(row['store_id'])!r} of region {_py(row['region_id'])!r}{item} has "
        f"{int(mask.sum())} rows for time step {_py(row['time_step'])!r}, {_rows(out.index, mask)}{more}; "
        "a store has one row per time step: remove or merge the repeated rows"
    )


def _add_logs(out: pd.DataFrame) -> None:
    for log_col, col in (("log_price", "price"), ("log_quantities", "quantities")):
        logged = np.log(out[col].to_numpy())
        if log_col in out.columns:
            given = pd.to_numeric(out[log_col], errors="coerce").to_numpy(dtype=float)
            wrong = ~np.isclose(given, logged, rtol=1e-9, atol=1e-9)
            if wrong.any():
                raise ValueError(
                    f"column '{log_col}' must equal log({col}); it disagrees in {_rows(out.index, wrong)}. "
                    f"Drop the column to have it computed."
                )
        out[log_col] = logged


def _validated(df: pd.DataFrame, store_ids: str, zero_sales: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The checked table, and with ``zero_sales="drop"`` the rows dropped per store label."""
    check_option("store_ids", store_ids, STORE_IDS)
    check_option("zero_sales", zero_sales, ZERO_SALES)
    require_columns(df, REQUIRED_COLUMNS)
    out = df.copy()
    _check_ids(out)
    for col in NUMERIC_COLUMNS:
        _check_numeric(out, col, zero_ok=col == "quantities" and zero_sales == "drop")
    if store_ids == "global":
        _check_store_regions(out)
    _check_income(out)
    _add_store_labels(out)
    _check_repeated_steps(out)
    zero = (out["quantities"] == 0).to_numpy()
    dropped = {label: int(n) for label, n in out[zero].groupby("region_store_id", sort=False).size().items()}
    if zero.all():
        raise ValueError(f"column 'quantities': every row has zero sales ({len(out)} rows); nothing is left to fit")
    out = out[~zero]
    _add_logs(out)
    return out, dropped


def validate_table(df: pd.DataFrame, *, store_ids: str = "global", zero_sales: str = "error") -> pd.DataFrame:
    """Check a sales table against the tidy schema and return a clean, typed copy.

    Raises ``ValueError`` naming the column and rows for: a missing column, an empty
    table, non-numeric values, NaN or infinite values, non-positive prices, quantities or
    incomes, a store that appears in two regions (with global store ids), a region whose
    income differs between rows, a ``region_store_id`` that disagrees with its region
    and store, and, when the table has a ``time_step`` column, a store with two rows for one
    time step (of one item, when the table has ``item_id``).

    Parameters
    ----------
    df : pandas.DataFrame
        The sales table; its index labels name the rows in error messages.
    store_ids : {"global", "per-region"}
        How ``store_id`` identifies a store (:data:`STORE_IDS`). ``"global"`` (default): an
        id names one store in the whole table, and an id found in two regions is an error.
        ``"per-region"``: stores are numbered within each region.
    zero_sales : {"error", "drop"}
        Rows whose ``quantities`` are 0 (:data:`ZERO_SALES`): an error (default), or left
        out of the returned table (:func:`prepare_data` counts them per store).

    Returns
    -------
    pandas.DataFrame
        A copy with the numeric columns as floats, and ``region_store_id``, ``log_price``
        and ``log_quantities`` set.
    """
    return _validated(df, store_ids, zero_sales)[0]


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of a Gaussian regression of log quantity on log price, per group.

    With a per-group intercept and slope, the likelihood of all rows of a group depends on
    the data only through its count, sums, sums of squares and cross-products. They are
    kept as means and *centred* sums (``cxx = Σ(x - mx)²`` and so on), which carry the same
    information as ``Σx, Σy, Σx², Σxy, Σy²`` but avoid cancellation when groups are large.
    A fit on these statistics costs the same for 2,000 or 2 million rows.
    """

    n: np.ndarray
    mx: np.ndarray
    my: np.ndarray
    cxx: np.ndarray
    cxy: np.ndarray
    cyy: np.ndarray

    @classmethod
    def from_arrays(cls, group: np.ndarray, x: np.ndarray, y: np.ndarray, n_groups: int) -> GroupStats:
        """Two-pass computation: group means first, then centred sums."""
        n = np.bincount(group, minlength=n_groups).astype(float)
        safe_n = np.where(n > 0, n, 1.0)
        mx = np.bincount(group, weights=x, minlength=n_groups) / safe_n
        my = np.bincount(group, weights=y, minlength=n_groups) / safe_n
        dx = x - mx[group]
        dy = y - my[group]

        def total(w: np.ndarray) -> np.ndarray:
            return np.bincount(group, weights=w, minlength=n_groups)

        return cls(n=n, mx=mx, my=my, cxx=total(dx * dx), cxy=total(dx * dy), cyy=total(dy * dy))

    def x_varies(self, tol: float = PRICE_VARIATION_TOL) -> np.ndarray:
        """Whether each group's ``x`` varies: root-mean-square deviation above ``tol``."""
        return self.cxx > self.n * tol**2

    def subset(self, index: np.ndarray) -> GroupStats:
        """Statistics of the selected groups only."""
        return GroupStats(*(getattr(self, f)[index] for f in STAT_FIELDS))


#: Names of the :class:`GroupStats` fields, in order.
STAT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GroupStats))


@dataclass(frozen=True)
class Centring:
    """Where the models centre (and scale) their data, so that results do not depend on units.

    Changing the unit of quantity or price adds a constant to log quantity or log price,
    and changing the unit of income multiplies it. The models therefore work with
    ``log q - log_quantity``, ``log p - log_price`` and ``(income - income) /
    income_scale``: the same numbers whatever the units, so the same priors mean the
    same thing on any data set, and the posterior of every unit-free quantity (the
    elasticities above all) is the same. Results are reported on the original scale.
    """

    log_price: float
    log_quantity: float
    income: float
    income_scale: float

    @classmethod
    def of(cls, stats: GroupStats, income: np.ndarray, weights: np.ndarray | None = None) -> Centring:
        """Row means of log price and log quantity, mean and sd of the region incomes.

        ``weights`` (one per region) restricts the constants to the regions with a
        positive weight, so that a fit without some regions is centred on its own data;
        by default these are the regions with rows (all of them, for data from
        :func:`prepare_data`; not all for a :meth:`ModelData.subset`).
        An income scale of zero (every region has the same income) is replaced by 1.
        """
        keep = np.asarray(stats.n) > 0 if weights is None else np.asarray(weights) > 0
        n = stats.n[keep]
        total = n.sum()
        inc = np.asarray(income, dtype=float)[keep]
        scale = float(inc.std())
        return cls(log_price=float((n * stats.mx[keep]).sum() / total),
                   log_quantity=float((n * stats.my[keep]).sum() / total),
                   income=float(inc.mean()), income_scale=scale if scale > 0 else 1.0)


@dataclass(frozen=True)
class ModelData:
    """Model inputs derived from a validated sales table.

    ``region_idx`` and ``store_idx`` map each row to its region and store; ``store_region_idx``
    maps each store to its region; ``income`` is each region's median income on the
    original scale, in the order of ``coords["region"]``. ``store_ids`` records how the
    table's ``store_id`` was read (:data:`STORE_IDS`); ``zero_sales`` what was done with rows
    of zero sales (:data:`ZERO_SALES`), and ``zero_sales_dropped`` how many rows were dropped
    per store label, in order of appearance (empty unless ``zero_sales="drop"``).
    """

    table: pd.DataFrame
    coords: dict[str, list]
    region_idx: np.ndarray
    store_idx: np.ndarray
    store_region_idx: np.ndarray
    income: np.ndarray
    log_price: np.ndarray
    log_quantity: np.ndarray
    extra: dict = field(default_factory=dict)
    store_ids: str = "global"
    zero_sales: str = "error"
    zero_sales_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return len(self.log_price)

    @property
    def n_regions(self) -> int:
        """Number of regions."""
        return len(self.coords["region"])

    @property
    def n_stores(self) -> int:
        """Number of stores."""
        return len(self.coords["store"])

    @property
    def income_center(self) -> float:
        """Mean region income: the models centre the covariate here."""
        return self.centring.income

    @cached_property
    def centring(self) -> Centring:
        """Where the models centre log price, log quantity and income (see :class:`Centring`)."""
        return Centring.of(self.region_stats, self.income)

    @cached_property
    def region_stats(self) -> GroupStats:
        """Sufficient statistics of each region's rows (computed once)."""
        return GroupStats.from_arrays(self.region_idx, self.log_price, self.log_quantity, self.n_regions)

    @cached_property
    def store_stats(self) -> GroupStats:
        """Sufficient statistics of each store's rows (computed once)."""
        return GroupStats.from_arrays(self.store_idx, self.log_price, self.log_quantity, self.n_stores)

    def subset(self, rows) -> ModelData:
        """The same market restricted to some rows: the data a held-out split fits on.

        ``rows`` is a boolean mask over the rows (length :attr:`n_obs`). Regions and stores
        keep their coordinates and their order even when none of their rows is left, so that
        results on the subset line up with the full data; such a region has zero rows in
        :attr:`region_stats`, and :attr:`centring` leaves it (and its income) out, as
        :func:`prepare_data` of the reduced table would. Row coordinates are renumbered.
        """
        rows = np.asarray(rows)
        if rows.dtype != bool or rows.shape != (self.n_obs,):
            raise ValueError(f"rows must be a boolean mask of length {self.n_obs} (one per row), "
                             f"got dtype {rows.dtype} and shape {rows.shape}")
        if not rows.any():
            raise ValueError("rows selects no row; a subset needs at least one")
        coords = {**self.coords, "obs": list(range(int(rows.sum())))}
        return dataclass_replace(self, table=self.table[rows], coords=coords, region_idx=self.region_idx[rows],
                                 store_idx=self.store_idx[rows], log_price=self.log_price[rows],
                                 log_quantity=self.log_quantity[rows])

    def require_enough_data(self, min_regions: int = 1) -> None:
        """Raise ``ValueError`` naming every shortfall when there is too little data to fit.

        A fit needs at least :data:`MIN_ROWS` rows in all, :data:`MIN_ROWS_PER_REGION` rows
        in every region and ``min_regions`` regions (2 for the models that pool regions,
        :data:`~elasticity_lib.models.MIN_REGIONS`).
        """
        short = []
        if self.n_obs < MIN_ROWS:
            short.append(f"{self.n_obs} row{'s' if self.n_obs != 1 else ''} in all, at least {MIN_ROWS} are needed")
        rows = self.region_stats.n.astype(int)
        few = [f"{_py(r)!r} ({n} row{'s' if n != 1 else ''})" for r, n in zip(self.coords["region"], rows)
               if n < MIN_ROWS_PER_REGION]
        if few:
            short.append(f"regions with fewer than {MIN_ROWS_PER_REGION} rows: {_shown(few)}")
        if self.n_regions < min_regions:
            short.append(f"{self.n_regions} region{'s' if self.n_regions != 1 else ''}, and a model that pools "
                         f"regions needs at least {min_regions} (the baseline model does not pool)")
        if short:
            raise ValueError("too little data to fit: " + "; ".join(short))

    def informed_by_own_prices(self, store_level: bool = False) -> dict[str, np.ndarray]:
        """Which groups' own rows can inform their elasticity: those whose prices vary.

        A group whose prices never vary (:data:`PRICE_VARIATION_TOL`) has an elasticity
        that comes from the prior and from pooling with other groups alone.

        Parameters
        ----------
        store_level : bool
            ``False``: regions, as the region-level models see them (a region's prices vary
            when its rows' prices do). ``True``: stores, and regions as the store-level model
            sees them (store intercepts absorb the differences between stores, so a region
            is informed only when the prices of one of its stores vary).

        Returns
        -------
        dict
            ``{"region": bool array}`` in the order of ``coords["region"]``, and with
            ``store_level``, ``"store"``: a bool array in the order of ``coords["store"]``.
        """
        if not store_level:
            return {"region": self.region_stats.x_varies()}
        store = self.store_stats.x_varies()
        region = np.bincount(self.store_region_idx, weights=store, minlength=self.n_regions) > 0
        return {"region": region, "store": store}

    def without_price_variation(self, store_level: bool = False) -> dict[str, list]:
        """The groups whose prices never vary, by level: ``{"region": [...], "store": [...]}``.

        Regions by id, stores by label; see :meth:`informed_by_own_prices`.
        """
        return {level: [_py(g) for g, ok in zip(self.coords[level], informed) if not ok]
                for level, informed in self.informed_by_own_prices(store_level).items()}

    def warn_without_price_variation(self, store_level: bool = False) -> dict[str, list]:
        """Warn (:class:`NoPriceVariationWarning`) naming the groups whose prices never vary; return them."""
        flat = self.without_price_variation(store_level)
        named = [f"{level}s {_shown([repr(g) for g in groups])}" for level, groups in flat.items() if groups]
        if named:
            warnings.warn(
                f"prices never vary within {' and '.join(named)}: the elasticities of these groups are not "
                "informed by their own rows and come from the prior and from pooling with other groups alone",
                NoPriceVariationWarning, stacklevel=2,
            )
        return flat


def prepare_data(df: pd.DataFrame, *, store_ids: str = "global", zero_sales: str = "error") -> ModelData:
    """Validate a tidy sales table and derive integer codes, coords, covariates and logs.

    A store is identified by its label ``r-{region_id}_s-{store_id}``. ``store_ids`` and
    ``zero_sales`` are those of :func:`validate_table`: ``store_ids="per-region"`` accepts
    stores numbered within each region, and ``zero_sales="drop"`` drops rows of zero sales
    and records how many per store in ``ModelData.zero_sales_dropped``.
    """
    table, dropped = _validated(df, store_ids, zero_sales)
    region_codes, regions = pd.factorize(table["region_id"].astype(object), sort=True)
    store_codes, stores = pd.factorize(table["region_store_id"], sort=False)
    # order stores by region, then by first appearance, so that coords read naturally
    first_region = np.zeros(len(stores), dtype=int)
    first_region[store_codes] = region_codes
    order = np.lexsort((np.arange(len(stores)), first_region))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    store_codes = rank[store_codes]
    stores = np.asarray(stores)[order]
    store_region_idx = first_region[order]
    income = np.zeros(len(regions))
    income[region_codes] = table["median_income"].to_numpy()
    return ModelData(
        table=table,
        coords={"region": list(regions), "store": list(stores), "obs": list(range(len(table)))},
        region_idx=region_codes.astype(np.int64),
        store_idx=store_codes.astype(np.int64),
        store_region_idx=store_region_idx.astype(np.int64),
        income=income,
        log_price=table["log_price"].to_numpy(dtype=float),
        log_quantity=table["log_quantities"].to_numpy(dtype=float),
        store_ids=store_ids,
        zero_sales=zero_sales,
        zero_sales_dropped=dropped,
    )
