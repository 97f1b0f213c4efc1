"""Per-group sufficient statistics of a Parquet data set larger than memory, with Dask.

The book's fast models see the data only through each group's count, means and centred
sums (:class:`~elasticity_lib.data.prepare.GroupStats`). Those are sums over rows, so they can be
computed piece by piece: :func:`dataset_stats` reads a Parquet data set one row group at a
time (a :mod:`dask.dataframe` partition each), validates every row as
:func:`~elasticity_lib.data.prepare.prepare_data` does, and aggregates per store with a Dask
group-by, in two passes like :meth:`GroupStats.from_arrays <elasticity_lib.data.prepare.GroupStats.from_arrays>`:
store means first, then centred sums around them. Region statistics are combined exactly
from their stores' (the parallel form of the centred sums). Memory stays bounded by a few
row groups per worker, whatever the size of the data set.

Bad rows are never dropped: they are reported with their file and row (numbered from 0
within the file) and the problem, and :class:`BadRowsError` is raised before any statistic
is returned.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from elasticity_lib.data.entities import store_label
from elasticity_lib.data.prepare import (
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    STORE_IDS,
    ZERO_SALES,
    GroupStats,
    check_option,
)

__all__ = ["BadRowsError", "DatasetStats", "parquet_pieces", "read_parquet_rows", "dataset_stats",
           "combine_stats"]

_SHOW = 5
_KEYS = ["region_id", "store_id"]


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


class BadRowsError(ValueError):
    """Rows of a data set break the schema; ``problems`` lists file, row, column and problem."""

    def __init__(self, message: str, problems: pd.DataFrame):
        super().__init__(message)
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Piece:
    """One row group of one Parquet file: a partition of the Dask data frame."""

    file: str
    row_group: int
    first_row: int
    index: int


def parquet_pieces(path: str | os.PathLike) -> list[Piece]:
    """The row groups of every ``*.parquet`` file under ``path`` (or of one file), in file order."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise ValueError(f"{path} holds no Parquet (*.parquet) files")
    pieces = []
    for file in files:
        meta = pq.ParquetFile(file).metadata
        first = 0
        for g in range(meta.num_row_groups):
            pieces.append(Piece(str(file), g, first, len(pieces)))
            first += meta.row_group(g).num_rows
    return pieces


def _read_piece(piece: Piece, columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(piece.file)
    have = [c for c in columns if c in handle.schema_arrow.names]
    frame = handle.read_row_group(piece.row_group, columns=have).to_pandas()
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"{piece.file}: missing required column {column!r}; it has {handle.schema_arrow.names}")
    frame = frame[columns]
    frame["piece"] = np.int32(piece.index)
    frame["row"] = np.arange(piece.first_row, piece.first_row + len(frame), dtype=np.int64)
    return frame


def read_parquet_rows(path: str | os.PathLike, columns: list[str] | None = None):
    """A Dask data frame of a Parquet data set, one partition per row group, with ``piece`` and ``row``.

    ``row`` numbers each row within its file from 0; ``piece`` indexes :func:`parquet_pieces`,
    so a row's file is ``pieces[piece].file``. Returns ``(frame, pieces)``.
    """
    import dask.dataframe as dd

    pieces = parquet_pieces(path)
    columns = list(columns or REQUIRED_COLUMNS)
    meta = _read_piece(pieces[0], columns).iloc[:0]
    return dd.from_map(partial(_read_piece, columns=columns), pieces, meta=meta, enforce_metadata=False), pieces


def _problems(frame: pd.DataFrame, zero_sales: str) -> pd.DataFrame:
    """Bad rows of one partition: the first few per (column, problem); ``count`` on the first is how many."""
    found = []

    def add(mask: np.ndarray, column: str, problem: str) -> None:
        if mask.any():
            rows = frame.loc[mask, ["piece", "row"]].head(_SHOW)
            count = np.zeros(len(rows), dtype=np.int64)
            count[0] = mask.sum()  # the partition's total, once
            found.append(rows.assign(column=column, problem=problem, count=count))

    for column in _KEYS:
        add(frame[column].isna().to_numpy(), column, "missing id")
    for column in NUMERIC_COLUMNS:
        raw = frame[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        add(np.isnan(values) & raw.notna().to_numpy(), column, "non-numeric value")
        add(raw.isna().to_numpy(), column, "NaN (missing) value")
        add(np.isinf(values), column, "infinite value")
        if column == "quantities" and zero_sales == "drop":
            add(values < 0, column, "negative value (zero_sales='drop' drops only zero quantities)")
        else:
            add(values <= 0, column, "value <= 0 (must be strictly positive)"
                + ("; zero sales can be dropped with zero_sales='drop'" if column == "quantities" else ""))
    columns = ["piece", "row", "column", "problem", "count"]
    return pd.concat(found, ignore_index=True)[columns] if found else pd.DataFrame(columns=columns)


def _with_logs(frame: pd.DataFrame, zero_sales: str) -> pd.DataFrame:
    q = pd.to_numeric(frame["quantities"], errors="coerce").to_numpy(dtype=float)
    p = pd.to_numeric(frame["price"], errors="coerce").to_numpy(dtype=float)
    keep = q != 0 if zero_sales == "drop" else np.ones(len(frame), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = frame.loc[keep, [*_KEYS, "median_income", "piece", "row"]].assign(x=np.log(p[keep]), y=np.log(q[keep]))
    out["median_income"] = pd.to_numeric(out["median_income"], errors="coerce")
    out["order"] = out["piece"].to_numpy(dtype=np.int64) * (1 << 40) + out["row"].to_numpy(dtype=np.int64)
    return out


def _zero_counts(frame: pd.DataFrame) -> pd.DataFrame:
    q = pd.to_numeric(frame["quantities"], errors="coerce")
    return frame.loc[(q == 0).to_numpy(), _KEYS].assign(zero=1)


def _deviations(frame: pd.DataFrame, means: pd.DataFrame) -> pd.DataFrame:
    joined = frame[[*_KEYS, "x", "y"]].merge(means, left_on=_KEYS, right_index=True, how="left")
    dx = joined["x"].to_numpy() - joined["mx"].to_numpy()
    dy = joined["y"].to_numpy() - joined["my"].to_numpy()
    return joined[_KEYS].assign(cxx=dx * dx, cxy=dx * dy, cyy=dy * dy)


def combine_stats(stats: GroupStats, group: np.ndarray, n_groups: int) -> GroupStats:
    """Statistics of unions of groups (``group[i]`` is the union group ``i`` belongs to), exactly.

    The centred sums of a union are those of its parts plus each part's count times the
    squared (or cross) deviation of its means from the union's: the parallel form of the
    two-pass sums, so no precision is lost however large the parts.
    """
    n = np.bincount(group, weights=stats.n, minlength=n_groups)
    safe = np.where(n > 0, n, 1.0)
    mx = np.bincount(group, weights=stats.n * stats.mx, minlength=n_groups) / safe
    my = np.bincount(group, weights=stats.n * stats.my, minlength=n_groups) / safe
    dx, dy = stats.mx - mx[group], stats.my - my[group]

    def total(part: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=part + stats.n * extra, minlength=n_groups)

    return GroupStats(n=n, mx=mx, my=my, cxx=total(stats.cxx, dx * dx), cxy=total(stats.cxy, dx * dy),
                      cyy=total(stats.cyy, dy * dy))


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What the models need from a data set, computed out of core.

    ``coords``, ``income``, ``store_region_idx`` and both :class:`GroupStats` are ordered as
    :func:`~elasticity_lib.data.prepare.prepare_data` orders them (regions sorted, stores by
    region then first appearance), so they can be compared with, and stand in for, its
    ``region_stats`` and ``store_stats``.
    """

    coords: dict[str, list]
    income: np.ndarray
    store_region_idx: np.ndarray
    region_stats: GroupStats
    store_stats: GroupStats
    n_rows: int
    zero_sales_dropped: dict[str, int]
    pieces: int


def _located(problems: pd.DataFrame, pieces: list[Piece]) -> pd.DataFrame:
    files = [p.file for p in pieces]
    return problems.assign(file=[files[i] for i in problems["piece"]]).drop(columns="piece")[
        ["file", "row", "column", "problem", "count"]]


def _raise_problems(problems: pd.DataFrame) -> None:
    totals = problems.groupby(["column", "problem"], sort=False)["count"].sum()
    lines = []
    for (column, problem), total in totals.items():
        rows = problems[(problems["column"] == column) & (problems["problem"] == problem)].head(_SHOW)
        where = ", ".join(f"{Path(f).name} row {r}" for f, r in zip(rows["file"], rows["row"]))
        lines.append(f"column {column!r}: {problem} in {int(total)} row{'s' if total != 1 else ''} (e.g. {where})")
    raise BadRowsError("bad rows, nothing was computed: " + "; ".join(lines), problems)


def _rows_where(ddf, mask_of, pieces, column, problem) -> pd.DataFrame:
    rows = ddf[mask_of(ddf)][["piece", "row"]].head(_SHOW, npartitions=-1)
    count = np.zeros(len(rows), dtype=np.int64)
    count[:1] = len(rows)
    return _located(rows.assign(column=column, problem=problem, count=count), pieces)


def _step_columns(pieces: list[Piece]) -> list[str]:
    """``time_step`` (and ``item_id``) when the data set has them: the key of one store's row per step."""
    import pyarrow.parquet as pq

    names = pq.read_schema(pieces[0].file).names
    return ["time_step", *(["item_id"] if "item_id" in names else [])] if "time_step" in names else []


def _repeated_steps(ddf, pieces: list[Piece], step_key: list[str]):
    """The repeated (store, time step[, item]) pairs, counted with a Dask group-by in bounded memory.

    The group-by's output is as long as the data (one row per store and step), so it is
    split over as many output partitions as the data has (``split_out``); only the pairs
    seen more than once come back.
    """
    key = [*_KEYS, *step_key]
    sizes = ddf[key].assign(one=np.int8(1)).groupby(key, dropna=False)["one"].count(split_out=ddf.npartitions)
    return sizes[sizes > 1]


def _raise_repeated_steps(repeated: pd.Series, ddf, pieces: list[Piece], step_key: list[str]) -> None:
    """Name the rows of the first repeated (store, time step) pair by file and row, as prepare_data does."""
    repeated = repeated.sort_index()
    first = repeated.index[0]
    values = dict(zip([*_KEYS, *step_key], first))
    item = f" (item {_py(values['item_id'])!r})" if "item_id" in values else ""
    more = f"; {len(repeated)} (store, time step) pairs are repeated in all" if len(repeated) > 1 else ""

    def mask(d):
        out = d[_KEYS[0]] == values[_KEYS[0]]
        for column in [*_KEYS[1:], *step_key]:
            out = out & (d[column] == values[column])
        return out

    found = _rows_where(ddf, mask, pieces, "time_step",
                        f"store {_py(values['store_id'])!r} of region {_py(values['region_id'])!r}{item}: time step "
                        f"{_py(values['time_step'])!r} repeated (a store has one row per time step; remove or merge "
                        f"the repeats){more},")
    found["count"] = [int(repeated.iloc[0])] + [0] * (len(found) - 1)  # the pair's rows, once
    _raise_problems(found)


def dataset_stats(path: str | os.PathLike, *, store_ids: str = "global", zero_sales: str = "error",
                  scheduler=None) -> DatasetStats:
    """Validate a Parquet data set in the tidy schema and compute its per-store and per-region statistics.

    Parameters
    ----------
    path : path
        A Parquet file or a folder of them (every ``*.parquet`` below it).
    store_ids, zero_sales : str
        As for :func:`~elasticity_lib.data.prepare.prepare_data`.
    scheduler : optional
        Passed to :func:`dask.compute` (``"threads"``, ``"synchronous"``, a ``distributed.Client``);
        Dask's default otherwise.

    Raises
    ------
    BadRowsError
        For rows with a missing id or a missing, non-numeric, infinite or non-positive price,
        quantity or income, a store in two regions (global store ids), a region whose income
        differs between rows, or (when the data set has a ``time_step`` column) a store with
        two rows for one time step (per ``item_id``, when there is one), naming the file and
        row of the first few of each kind.
    """
    import dask

    check_option("store_ids", store_ids, STORE_IDS)
    check_option("zero_sales", zero_sales, ZERO_SALES)
    step_key = _step_columns(parquet_pieces(path))
    ddf, pieces = read_parquet_rows(path, [*REQUIRED_COLUMNS, *step_key])
    compute = {} if scheduler is None else {"scheduler": scheduler}
    meta_problems = _problems(ddf._meta, zero_sales)
    problems = ddf.map_partitions(_problems, zero_sales, meta=meta_problems)
    rows = ddf.map_partitions(_with_logs, zero_sales)
    first = rows.groupby(_KEYS).agg(n=("x", "count"), sx=("x", "sum"), sy=("y", "sum"), first=("order", "min"),
                                    income_min=("median_income", "min"), income_max=("median_income", "max"))
    zeros = ddf.map_partitions(_zero_counts).groupby(_KEYS)["zero"].sum() if zero_sales == "drop" else None
    repeated = _repeated_steps(ddf, pieces, step_key) if step_key else None
    found, per_store, dropped, repeated = dask.compute(problems, first, zeros, repeated, **compute)
    if len(found):
        _raise_problems(_located(found, pieces))
    if repeated is not None and len(repeated):
        _raise_repeated_steps(repeated, ddf, pieces, step_key)
    per_store = per_store.sort_index()
    if store_ids == "global":
        regions_per_store = per_store.reset_index().groupby("store_id")["region_id"].nunique()
        shared = regions_per_store[regions_per_store > 1]
        if len(shared):
            store = shared.index[0]
            counts = per_store.xs(store, level="store_id")["n"]
            main = counts.idxmax()
            found = _rows_where(ddf, lambda d: (d["store_id"] == store) & (d["region_id"] != main), pieces,
                                "store_id", f"store {_py(store)!r} has most of its rows in region {_py(main)!r} "
                                "and these in another; a store belongs to one region (pass store_ids='per-region' "
                                "if stores are numbered within regions)")
            _raise_problems(found)
    income = per_store.groupby(level="region_id").agg(lo=("income_min", "min"), hi=("income_max", "max"))
    varying = income[income["lo"] != income["hi"]]
    if len(varying):
        region = varying.index[0]
        found = _rows_where(ddf, lambda d: d["region_id"] == region, pieces, "median_income",
                            f"differs within region {_py(region)!r}; a region has one median income")
        _raise_problems(found)
    n = per_store["n"].to_numpy(dtype=float)
    if not (n > 0).any():
        raise ValueError("every row has zero sales; nothing is left to fit")
    per_store = per_store[n > 0]
    means = pd.DataFrame({"mx": per_store["sx"] / per_store["n"], "my": per_store["sy"] / per_store["n"]})
    centred = rows.map_partitions(_deviations, means).groupby(_KEYS)[["cxx", "cxy", "cyy"]].sum()
    (centred,) = dask.compute(centred, **compute)
    table = per_store.join(means).join(centred)
    # prepare_data's order: regions sorted, stores by region then first appearance
    table = table.reset_index().sort_values(["region_id", "first"], kind="stable").reset_index(drop=True)
    regions = sorted(table["region_id"].unique().tolist())
    region_idx = np.searchsorted(np.asarray(regions, dtype=object), table["region_id"].to_numpy(dtype=object))
    store_stats = GroupStats(n=table["n"].to_numpy(float), mx=table["mx"].to_numpy(float),
                             my=table["my"].to_numpy(float), cxx=table["cxx"].to_numpy(float),
                             cxy=table["cxy"].to_numpy(float), cyy=table["cyy"].to_numpy(float))
    labels = [store_label(r, s) for r, s in zip(table["region_id"], table["store_id"])]
    dropped_map = {}
    if dropped is not None and len(dropped):
        dropped_map = {store_label(r, s): int(v) for (r, s), v in dropped.items()}
    return DatasetStats(
        coords={"region": regions, "store": labels},
        income=income.loc[regions, "lo"].to_numpy(dtype=float),
        store_region_idx=region_idx.astype(np.int64),
        region_stats=combine_stats(store_stats, region_idx, len(regions)),
        store_stats=store_stats,
        n_rows=int(table["n"].sum()),
        zero_sales_dropped=dropped_map,
        pieces=len(pieces),
    )
