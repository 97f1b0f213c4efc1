"""Out-of-core statistics from a Parquet data set equal prepare_data's in memory, and bad rows are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from elasticity_lib.data.outofcore import BadRowsError, combine_stats, dataset_stats, parquet_pieces
from elasticity_lib.data.prepare import STAT_FIELDS, GroupStats, prepare_data
from elasticity_lib.data.simulation import SimulationConfig, simulate_market

CONFIG = SimulationConfig(n_regions=5, stores_mu=4.0, time_steps_mu=12.0)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return simulate_market(CONFIG, seed=7).to_dataframe()


def write_parts(df: pd.DataFrame, folder, n_files: int = 3, row_group_size: int = 50) -> list:
    """Shuffle the rows across files (stores appear in several files) and write them with small row groups."""
    order = np.random.default_rng(0).permutation(len(df))
    df = df.iloc[order].reset_index(drop=True)
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(df)), n_files)):
        path = folder / f"part-{i}.parquet"
        df.iloc[rows].to_parquet(path, row_group_size=row_group_size, index=False)
        paths.append(path)
    return df, paths


def assert_same_stats(got: GroupStats, want: GroupStats) -> None:
    for f in STAT_FIELDS:
        np.testing.assert_allclose(getattr(got, f), getattr(want, f), rtol=1e-10, atol=1e-10, err_msg=f)


def test_statistics_equal_prepare_data(table, tmp_path):
    shuffled, _ = write_parts(table, tmp_path)
    got = dataset_stats(tmp_path, scheduler="synchronous")
    want = prepare_data(shuffled)
    assert got.pieces > 3  # several row groups per file, each a partition
    assert got.coords["region"] == want.coords["region"]
    assert got.coords["store"] == want.coords["store"]
    np.testing.assert_array_equal(got.store_region_idx, want.store_region_idx)
    np.testing.assert_array_equal(got.income, want.income)
    assert got.n_rows == want.n_obs
    assert_same_stats(got.store_stats, want.store_stats)
    assert_same_stats(got.region_stats, want.region_stats)


def test_zero_sales_dropped_and_counted(table, tmp_path):
    df = table.copy()
    df.loc[[3, 4, 40], "quantities"] = 0
    shuffled, _ = write_parts(df, tmp_path, n_files=2)
    got = dataset_stats(tmp_path, zero_sales="drop", scheduler="synchronous")
    want = prepare_data(shuffled, zero_sales="drop")
    assert got.zero_sales_dropped == dict(sorted(want.zero_sales_dropped.items()))
    assert_same_stats(got.store_stats, want.store_stats)
    with pytest.raises(BadRowsError, match="quantities.*3 rows"):
        dataset_stats(tmp_path, scheduler="synchronous")


def test_combine_stats_matches_pooled_rows():
    rng = np.random.default_rng(1)
    group = rng.integers(0, 6, 400)
    x, y = rng.normal(3, 1, 400), rng.normal(-2, 2, 400)
    union = np.array([0, 0, 1, 1, 1, 2])
    parts = GroupStats.from_arrays(group, x, y, 6)
    assert_same_stats(combine_stats(parts, union, 3), GroupStats.from_arrays(union[group], x, y, 3))


def test_bad_rows_are_named_by_file_and_row(table, tmp_path):
    shuffled, paths = write_parts(table, tmp_path)
    second = pd.read_parquet(paths[1])
    second.loc[[5, 70], "price"] = -1.0
    second.loc[9, "median_income"] = np.nan
    second.to_parquet(paths[1], row_group_size=50, index=False)
    with pytest.raises(BadRowsError) as err:
        dataset_stats(tmp_path, scheduler="synchronous")
    message = str(err.value)
    assert "column 'price'" in message and "2 rows" in message
    assert "part-1.parquet row 5" in message and "part-1.parquet row 70" in message
    assert "column 'median_income'" in message and "part-1.parquet row 9" in message
    problems = err.value.problems
    assert set(problems["row"]) == {5, 9, 70}
    assert problems["file"].str.endswith("part-1.parquet").all()


def test_store_in_two_regions_and_varying_income(table, tmp_path):
    df = table.copy()
    store = df["store_id"].iloc[0]
    other = next(r for r in df["region_id"].unique() if r != df["region_id"].iloc[0])
    df.loc[len(df) - 1, "store_id"] = store  # the last row's store moves; its region stays
    df.loc[len(df) - 1, "region_id"] = other
    df.loc[len(df) - 1, "median_income"] = df.loc[df["region_id"] == other, "median_income"].iloc[0]
    df.to_parquet(tmp_path / "a.parquet", index=False)
    with pytest.raises(BadRowsError, match=rf"store {int(store)} has most of its rows in region.*a.parquet row {len(df) - 1}\)"):
        dataset_stats(tmp_path, scheduler="synchronous")
    # the same rows are fine when stores are numbered within regions
    dataset_stats(tmp_path, store_ids="per-region", scheduler="synchronous")
    df = table.copy()
    df.loc[10, "median_income"] += 1.0
    df.to_parquet(tmp_path / "a.parquet", index=False)
    with pytest.raises(BadRowsError, match="median_income.*differs within region"):
        dataset_stats(tmp_path, scheduler="synchronous")


def test_no_parquet_files(tmp_path):
    with pytest.raises(ValueError, match="no Parquet"):
        parquet_pieces(tmp_path)


def test_repeated_time_step_is_named_by_file_and_row(table, tmp_path):
    assert "time_step" in table.columns
    shuffled, paths = write_parts(table, tmp_path)
    dataset_stats(tmp_path, scheduler="synchronous")  # no repeated step: fine
    # a row of the second file gets the time step of another row of its store, in the third file
    second, third = pd.read_parquet(paths[1]), pd.read_parquet(paths[2])
    row = 7
    store = second.loc[row, ["region_id", "store_id"]]
    other = third.index[(third["region_id"] == store["region_id"]) & (third["store_id"] == store["store_id"])
                        & (third["time_step"] != second.loc[row, "time_step"])][0]
    third.loc[other, "time_step"] = second.loc[row, "time_step"]
    third.to_parquet(paths[2], row_group_size=50, index=False)
    with pytest.raises(ValueError, match="has 2 rows for time step") as memory:
        prepare_data(pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True))
    with pytest.raises(BadRowsError) as err:
        dataset_stats(tmp_path, scheduler="synchronous")
    message = str(err.value)
    assert f"column 'time_step': store {int(store['store_id'])} of region {int(store['region_id'])}" in message
    assert f"time step {int(second.loc[row, 'time_step'])} repeated" in message and "in 2 rows" in message
    assert f"part-1.parquet row {row}" in message and f"part-2.parquet row {other}" in message
    assert set(zip(err.value.problems["file"].map(lambda f: f.rsplit("/", 1)[-1]), err.value.problems["row"])) == {
        ("part-1.parquet", row), ("part-2.parquet", other)}
    assert f"store {int(store['store_id'])} of region {int(store['region_id'])}" in str(memory.value)
