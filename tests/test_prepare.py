"""Data preparation: tidy tables become model inputs; bad tables are rejected by column and row."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from elasticity_lib.data.prepare import REQUIRED_COLUMNS, Centring, GroupStats, ModelData, prepare_data, validate_table


def user_table() -> pd.DataFrame:
    """A user's own table: plain columns, string region ids, no optional columns."""
    return pd.DataFrame(
        {
            "region_id": ["north", "north", "north", "south", "south", "east"],
            "store_id": [10, 10, 11, 20, 20, 30],
            "price": [1.0, 1.2, 0.9, 2.0, 2.5, 1.5],
            "quantities": [5.0, 4.0, 6.0, 2.0, 1.5, 3.0],
            "median_income": [4.0, 4.0, 4.0, 6.5, 6.5, 3.0],
        },
        index=pd.Index([100, 101, 102, 103, 104, 105]),
    )


def with_value(df: pd.DataFrame, col: str, rows: list, value) -> pd.DataFrame:
    out = df.copy()
    if isinstance(value, str) or value is None:
        out[col] = out[col].astype(object)
    out.loc[rows, col] = value
    return out


# Each case: how to break the user table, and a pattern the ValueError must match
# (the column, the offending row labels, and the reason).
BAD_TABLES = {
    "missing column": (lambda d: d.drop(columns="quantities"), r"missing required column\(s\) \['quantities'\]"),
    "two missing columns": (lambda d: d.drop(columns=["price", "store_id"]), r"missing required column\(s\) \['store_id', 'price'\]"),
    "empty table": (lambda d: d.iloc[:0], r"the table has no rows"),
    "NaN price": (lambda d: with_value(d, "price", [101, 104], np.nan), r"column 'price' has NaN \(missing\) values in rows \[101, 104\]"),
    "NaN income": (lambda d: with_value(d, "median_income", [105], np.nan), r"column 'median_income' has NaN \(missing\) values in rows \[105\]"),
    "inf quantity": (lambda d: with_value(d, "quantities", [102], np.inf), r"column 'quantities' has infinite values in rows \[102\]"),
    "-inf price": (lambda d: with_value(d, "price", [100], -np.inf), r"column 'price' has infinite values in rows \[100\]"),
    "zero price": (lambda d: with_value(d, "price", [103], 0.0), r"column 'price' must be strictly positive; values <= 0 in rows \[103\]"),
    "negative quantity": (lambda d: with_value(d, "quantities", [100, 105], -2.0), r"column 'quantities' must be strictly positive; values <= 0 in rows \[100, 105\]"),
    "zero quantity": (lambda d: with_value(d, "quantities", [104], 0.0), r"column 'quantities' must be strictly positive; values <= 0 in rows \[104\]"),
    "non-positive income": (lambda d: with_value(d, "median_income", [105], -3.0), r"column 'median_income' must be strictly positive; values <= 0 in rows \[105\]"),
    "non-numeric price": (lambda d: with_value(d, "price", [102], "cheap"), r"column 'price' has non-numeric values \(e.g. 'cheap'\) in rows \[102\]"),
    "boolean quantities": (lambda d: d.assign(quantities=True), r"column 'quantities' must be numeric, got booleans"),
    "store in two regions": (
        lambda d: with_value(d, "region_id", [101], "south"),
        r"column 'store_id': store 10 appears in more than one region \['north', 'south'\]; most of its rows "
        r"are in region 'north', the others are rows \[101\]",
    ),
    "income varying within region": (
        lambda d: with_value(d, "median_income", [104], 6.0),
        r"column 'median_income' differs within region 'south' \(values \[6.0, 6.5\]\) in rows \[103, 104\]",
    ),
    "bad region_store_id": (
        lambda d: d.assign(region_store_id=["r-north_s-10", "r-north_s-10", "r-north_s-11", "r-south_s-20", "s-20", "r-east_s-30"]),
        r"column 'region_store_id' must equal 'r-\{region_id\}_s-\{store_id\}'; it disagrees in rows \[104\] \(e.g. 's-20' for 'r-south_s-20'\)",
    ),
    "repeated time step": (
        lambda d: d.assign(time_step=[1, 1, 1, 1, 2, 1]),
        r"column 'time_step': store 10 of region 'north' has 2 rows for time step 1, rows \[100, 101\]; "
        r"a store has one row per time step: remove or merge the repeated rows",
    ),
    "repeated time steps in two stores": (
        lambda d: d.assign(time_step=[1, 1, 1, 2, 2, 1]),
        r"store 10 of region 'north' has 2 rows for time step 1, rows \[100, 101\]; 2 \(store, time step\) pairs are "
        r"repeated in all",
    ),
    "repeated time step of an item": (
        lambda d: d.assign(time_step=[1, 2, 1, 1, 2, 1], item_id=[7, 7, 7, 7, 7, 7]).pipe(
            lambda t: with_value(t, "time_step", [104], 1)),
        r"store 20 of region 'south' \(item 7\) has 2 rows for time step 1, rows \[103, 104\]",
    ),
    "missing region id": (lambda d: with_value(d, "region_id", [103], None), r"column 'region_id' has missing ids in rows \[103\]"),
    "missing store id": (lambda d: with_value(d, "store_id", [100, 102], np.nan), r"column 'store_id' has missing ids in rows \[100, 102\]"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES), ids=list(BAD_TABLES))
def test_bad_tables_are_rejected_naming_column_and_rows(case):
    breaker, pattern = BAD_TABLES[case]
    bad = breaker(user_table())
    with pytest.raises(ValueError, match=pattern):
        validate_table(bad)
    with pytest.raises(ValueError, match=pattern):
        prepare_data(bad)


def test_many_bad_rows_are_summarised():
    df = user_table().assign(median_income=0.0)
    df = pd.concat([df, df.set_axis(df.index + 10)])
    with pytest.raises(ValueError, match=r"rows \[100, 101, 102, 103, 104\] \(first 5 of 12\)"):
        validate_table(df)


def test_not_a_dataframe_is_a_type_error():
    with pytest.raises(TypeError, match="expected a pandas DataFrame, got dict"):
        prepare_data(user_table().to_dict())


def test_validation_does_not_modify_the_input():
    df = user_table()
    before = df.copy()
    validate_table(df)
    pd.testing.assert_frame_equal(df, before)


def test_user_table_is_prepared_without_dropping_rows():
    df = user_table()
    data = prepare_data(df)
    assert isinstance(data, ModelData)
    assert data.n_obs == len(df)
    assert data.coords["region"] == ["east", "north", "south"]
    assert data.coords["store"] == ["r-east_s-30", "r-north_s-10", "r-north_s-11", "r-south_s-20"]
    assert data.coords["obs"] == list(range(6))
    np.testing.assert_array_equal(data.region_idx, [1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(data.store_idx, [1, 1, 2, 3, 3, 0])
    np.testing.assert_array_equal(data.store_region_idx, [0, 1, 1, 2])
    np.testing.assert_array_equal(data.income, [3.0, 4.0, 6.5])
    assert data.income_center == pytest.approx(np.mean([3.0, 4.0, 6.5]))
    np.testing.assert_allclose(data.log_price, np.log(df["price"].to_numpy()))
    np.testing.assert_allclose(data.log_quantity, np.log(df["quantities"].to_numpy()))
    assert list(data.table["region_store_id"]) == ["r-north_s-10"] * 2 + ["r-north_s-11", "r-south_s-20", "r-south_s-20", "r-east_s-30"]


def test_numeric_strings_are_read_as_numbers():
    df = user_table()
    df["price"] = df["price"].astype(str)
    np.testing.assert_allclose(prepare_data(df).log_price, np.log(user_table()["price"].to_numpy()))


def test_simulated_table_round_trips_through_csv(small_table, small_data):
    buffer = io.StringIO()
    small_table.to_csv(buffer, index=False)
    buffer.seek(0)
    from_csv = prepare_data(pd.read_csv(buffer))
    assert from_csv.coords["region"] == small_data.coords["region"]
    assert from_csv.coords["store"] == small_data.coords["store"]
    np.testing.assert_array_equal(from_csv.region_idx, small_data.region_idx)
    np.testing.assert_array_equal(from_csv.store_idx, small_data.store_idx)
    np.testing.assert_allclose(from_csv.log_quantity, small_data.log_quantity, rtol=1e-12)


def test_indices_agree_with_the_table(small_market, small_data):
    table = small_data.table
    regions = np.asarray(small_data.coords["region"])
    stores = np.asarray(small_data.coords["store"])
    np.testing.assert_array_equal(regions[small_data.region_idx], table["region_id"].astype(int))
    np.testing.assert_array_equal(stores[small_data.store_idx], table["region_store_id"].astype(str))
    # each store's region index points at the region of its rows
    np.testing.assert_array_equal(small_data.store_region_idx[small_data.store_idx], small_data.region_idx)
    # each region's income is its own
    for region in small_market.regions:
        j = small_data.coords["region"].index(region.id)
        assert small_data.income[j] == region.median_income


def raw_group_stats(group, x, y, n_groups):
    """Per-group count, means and centred sums by a plain loop (the definition)."""
    out = {k: np.zeros(n_groups) for k in ["n", "mx", "my", "cxx", "cxy", "cyy"]}
    for g in range(n_groups):
        xs, ys = x[group == g], y[group == g]
        out["n"][g] = len(xs)
        out["mx"][g], out["my"][g] = xs.mean(), ys.mean()
        out["cxx"][g] = np.sum((xs - xs.mean()) ** 2)
        out["cxy"][g] = np.sum((xs - xs.mean()) * (ys - ys.mean()))
        out["cyy"][g] = np.sum((ys - ys.mean()) ** 2)
    return out


def test_group_stats_match_their_definition(small_data):
    for stats, idx, n in [
        (small_data.region_stats, small_data.region_idx, small_data.n_regions),
        (small_data.store_stats, small_data.store_idx, small_data.n_stores),
    ]:
        expected = raw_group_stats(idx, small_data.log_price, small_data.log_quantity, n)
        for name, value in expected.items():
            np.testing.assert_allclose(getattr(stats, name), value, rtol=1e-10, atol=1e-12, err_msg=name)
    assert small_data.region_stats.n.sum() == small_data.n_obs
    sub = small_data.store_stats.subset(np.array([2, 0]))
    assert sub.n[0] == small_data.store_stats.n[2] and sub.cxy[1] == small_data.store_stats.cxy[0]


def test_group_stats_are_accurate_far_from_zero():
    # centred sums avoid the cancellation of sum(x^2) - n mean^2 when values are large
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(0, 1e-3, size=1000)
    stats = GroupStats.from_arrays(np.zeros(1000, dtype=int), x, x, 1)
    np.testing.assert_allclose(stats.cxx, np.sum((x - x.mean()) ** 2), rtol=1e-6)


@given(st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_statistics(small_table, random):
    # shuffling rows permutes obs but every group's statistics stay the same
    order = list(range(len(small_table)))
    random.shuffle(order)
    base = prepare_data(small_table)
    shuffled = prepare_data(small_table.iloc[order])
    assert shuffled.coords["region"] == base.coords["region"]
    assert sorted(shuffled.coords["store"]) == sorted(base.coords["store"])
    perm = [shuffled.coords["store"].index(s) for s in base.coords["store"]]
    for name in ["n", "mx", "my", "cxx", "cxy", "cyy"]:
        np.testing.assert_allclose(getattr(shuffled.region_stats, name), getattr(base.region_stats, name), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(getattr(shuffled.store_stats, name)[perm], getattr(base.store_stats, name), rtol=1e-9, atol=1e-12)


@given(
    column=st.sampled_from(["price", "quantities", "median_income"]),
    row=st.integers(0, 5),
    value=st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.5]),
)
def test_any_bad_cell_is_reported_by_column_and_row(column, row, value):
    df = user_table()
    label = df.index[row]
    df.loc[label, column] = value
    with pytest.raises(ValueError, match=rf"column '{column}' .*rows \[{label}\]"):
        validate_table(df)


def test_required_columns_are_documented():
    assert REQUIRED_COLUMNS == ["region_id", "store_id", "price", "quantities", "median_income"]


def test_log_columns_that_disagree_with_price_are_rejected(small_table):
    from elasticity_lib.data.prepare import validate_table

    bad = small_table.copy()
    bad["log_price"] = bad["log_price"].astype(float)
    bad.loc[bad.index[3], "log_price"] += 0.5
    with pytest.raises(ValueError, match=r"log_price.*log\(price\).*rows \[3\]"):
        validate_table(bad)


# --------------------------------------------------------------------------- stores numbered per region


def per_region_table() -> pd.DataFrame:
    """Stores numbered 0, 1, ... within each region: store 0 of north is not store 0 of south."""
    df = user_table()
    df["store_id"] = [0, 0, 1, 0, 0, 0]
    return df


def test_store_ids_shared_between_regions_are_rejected_by_default_naming_the_option():
    with pytest.raises(ValueError, match=r"store 0 appears in more than one region .*"
                                         r"pass store_ids='per-region' \(command line: --store-ids per-region\)"):
        prepare_data(per_region_table())


def test_store_ids_per_region_identify_a_store_by_region_and_store():
    data = prepare_data(per_region_table(), store_ids="per-region")
    assert data.coords["store"] == ["r-east_s-0", "r-north_s-0", "r-north_s-1", "r-south_s-0"]
    np.testing.assert_array_equal(data.store_idx, [1, 1, 2, 3, 3, 0])
    np.testing.assert_array_equal(data.store_region_idx, [0, 1, 1, 2])
    # the same table with global ids gives the same structure
    glob = prepare_data(user_table())
    np.testing.assert_array_equal(data.store_idx, glob.store_idx)
    np.testing.assert_array_equal(data.store_region_idx, glob.store_region_idx)


def test_store_ids_per_region_still_checks_everything_else():
    bad = with_value(per_region_table(), "price", [102], 0.0)
    with pytest.raises(ValueError, match=r"column 'price' must be strictly positive; values <= 0 in rows \[102\]"):
        validate_table(bad, store_ids="per-region")


@pytest.mark.parametrize("function", [validate_table, prepare_data])
def test_unknown_store_ids_option_is_rejected(function):
    with pytest.raises(ValueError, match=r"unknown store_ids 'regional'; choose one of \['global', 'per-region'\]"):
        function(user_table(), store_ids="regional")


def test_schema_column_names_match_after_trimming_and_ignoring_case():
    from elasticity_lib.data.prepare import schema_column_names

    names = [" Region_ID", "store_id", "PRICE", "Quantities ", "median_income", "Time_step", "notes"]
    assert schema_column_names(names) == {" Region_ID": "region_id", "store_id": "store_id", "PRICE": "price",
                                          "Quantities ": "quantities", "median_income": "median_income",
                                          "Time_step": "time_step"}
    with pytest.raises(ValueError, match=r"columns 'price', ' Price' and 'PRICE' all stand for column 'price'"):
        schema_column_names(["price", " Price", "PRICE"])


def test_time_steps_repeat_across_stores_items_and_per_region_numbering():
    # every store has its own time steps 0, 1, ...: nothing is repeated
    steps = user_table().assign(time_step=[0, 1, 0, 0, 1, 0])
    assert len(validate_table(steps)) == 6
    # two items of one store at one time step are two series, not a repeat
    items = steps.assign(item_id=[1, 2, 1, 1, 1, 1], time_step=[0, 0, 0, 0, 1, 0])
    assert len(validate_table(items)) == 6
    # store 0 of north and store 0 of south are different stores when numbered per region
    per_region = per_region_table().assign(time_step=[0, 1, 0, 0, 1, 0])
    assert len(validate_table(per_region, store_ids="per-region")) == 6


# --------------------------------------------------------------------------- prices that never vary


def test_groups_whose_prices_never_vary_are_found_per_level():
    # east has one row; store 11 of north has one row; the other stores' prices vary
    data = prepare_data(user_table())
    assert data.without_price_variation() == {"region": ["east"]}
    assert data.without_price_variation(store_level=True) == {"region": ["east"], "store": ["r-east_s-30", "r-north_s-11"]}
    informed = data.informed_by_own_prices(store_level=True)
    np.testing.assert_array_equal(informed["region"], [False, True, True])
    np.testing.assert_array_equal(informed["store"], [False, True, False, True])


def test_a_region_whose_stores_each_keep_one_price_informs_only_the_region_level_models():
    # north's two stores charge different prices, but each keeps its own: store intercepts absorb that
    df = with_value(user_table(), "price", [101], 1.0)
    data = prepare_data(df)
    assert "north" not in data.without_price_variation()["region"]
    assert data.without_price_variation(store_level=True) == {
        "region": ["east", "north"], "store": ["r-east_s-30", "r-north_s-10", "r-north_s-11"]}


@pytest.mark.parametrize(("relative_change", "varies"), [(1e-12, False), (1e-6, True)])
def test_price_variation_has_a_small_relative_tolerance(relative_change, varies):
    df = with_value(user_table(), "price", [104], 2.0 * (1 + relative_change))
    df = with_value(df, "price", [103], 2.0)
    assert ("south" not in prepare_data(df).without_price_variation()["region"]) is varies


def test_groups_whose_prices_never_vary_are_warned_about_by_name():
    from elasticity_lib.data.prepare import NoPriceVariationWarning

    data = prepare_data(user_table())
    with pytest.warns(NoPriceVariationWarning, match=r"^prices never vary within regions \['east'\] and stores "
                                                     r"\['r-east_s-30', 'r-north_s-11'\]: the elasticities of these "
                                                     r"groups are not informed by their own rows"):
        assert data.warn_without_price_variation(store_level=True)["store"] == ["r-east_s-30", "r-north_s-11"]


def test_no_warning_when_every_price_varies(small_data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert small_data.warn_without_price_variation(store_level=True) == {"region": [], "store": []}


# --------------------------------------------------------------------------- too little data


def test_too_little_data_names_every_shortfall():
    one = prepare_data(user_table().iloc[[0]])
    with pytest.raises(ValueError, match=r"^too little data to fit: 1 row in all, at least 3 are needed; regions with "
                                         r"fewer than 2 rows: \['north' \(1 row\)\]; 1 region, and a model that pools "
                                         r"regions needs at least 2 \(the baseline model does not pool\)$"):
        one.require_enough_data(min_regions=2)
    data = prepare_data(user_table())  # east has one row
    with pytest.raises(ValueError, match=r"^too little data to fit: regions with fewer than 2 rows: \['east' \(1 row\)\]$"):
        data.require_enough_data()


def test_enough_data_passes():
    data = prepare_data(user_table().iloc[:5])  # north 3 rows, south 2
    data.require_enough_data(min_regions=2)
    north = prepare_data(user_table().iloc[:3])
    north.require_enough_data(min_regions=1)
    with pytest.raises(ValueError, match=r"^too little data to fit: 1 region, and"):
        north.require_enough_data(min_regions=2)


# --------------------------------------------------------------------------- zero sales


def test_zero_sales_are_rejected_naming_the_remedy():
    with pytest.raises(ValueError, match=r"column 'quantities' must be strictly positive; values <= 0 in rows \[104\]; "
                                         r"rows with zero sales can be dropped with zero_sales='drop' "
                                         r"\(command line: --zero-sales drop\)$"):
        prepare_data(with_value(user_table(), "quantities", [104], 0.0))
    both = with_value(with_value(user_table(), "quantities", [104], 0.0), "quantities", [100], -1.0)
    with pytest.raises(ValueError, match=r"values <= 0 in rows \[100, 104\]; rows with zero sales can be dropped .*"
                                         r"--zero-sales drop\), negative quantities cannot$"):
        prepare_data(both)


def test_zero_sales_can_be_dropped_and_are_counted_per_store():
    df = with_value(user_table(), "quantities", [100, 101, 104], 0.0)
    data = prepare_data(df, zero_sales="drop")
    assert data.zero_sales == "drop"
    assert data.zero_sales_dropped == {"r-north_s-10": 2, "r-south_s-20": 1}
    assert list(data.table.index) == [102, 103, 105]
    assert data.coords["store"] == ["r-east_s-30", "r-north_s-11", "r-south_s-20"]
    np.testing.assert_allclose(data.log_quantity, np.log([6.0, 2.0, 3.0]))
    assert list(validate_table(df, zero_sales="drop").index) == [102, 103, 105]


def test_dropping_zero_sales_changes_nothing_without_them():
    kept = prepare_data(user_table(), zero_sales="drop")
    assert kept.zero_sales_dropped == {} and kept.n_obs == 6
    assert prepare_data(user_table()).zero_sales_dropped == {}


@pytest.mark.parametrize(("breaker", "pattern"), [
    (lambda d: with_value(d, "quantities", [100, 105], -2.0),
     r"column 'quantities' must not be negative; values < 0 in rows \[100, 105\] \(zero_sales='drop' drops only "
     r"rows with zero quantities\)"),
    (lambda d: with_value(d, "price", [103], 0.0), r"column 'price' must be strictly positive; values <= 0 in rows \[103\]$"),
    (lambda d: d.assign(quantities=0.0), r"column 'quantities': every row has zero sales \(6 rows\); nothing is left to fit"),
], ids=["negative quantities", "zero price", "all zero"])
def test_dropping_zero_sales_keeps_every_other_rule(breaker, pattern):
    with pytest.raises(ValueError, match=pattern):
        prepare_data(breaker(user_table()), zero_sales="drop")


@pytest.mark.parametrize("function", [validate_table, prepare_data])
def test_unknown_zero_sales_option_is_rejected(function):
    with pytest.raises(ValueError, match=r"unknown zero_sales 'skip'; choose one of \['error', 'drop'\]"):
        function(user_table(), zero_sales="skip")


def test_subset_keeps_groups_and_centres_on_its_rows(small_table):
    data = prepare_data(small_table)
    region = data.coords["region"][1]
    keep = (small_table["region_id"] != region).to_numpy() & (np.arange(len(small_table)) % 3 != 0)
    sub = data.subset(keep)
    reduced = prepare_data(small_table[keep])
    assert sub.coords["region"] == data.coords["region"] and sub.coords["store"] == data.coords["store"]
    assert sub.n_obs == keep.sum() and sub.region_stats.n[1] == 0
    # the regions with rows have the statistics, and the subset the centring, of the reduced table
    np.testing.assert_allclose(np.delete(sub.region_stats.my, 1), reduced.region_stats.my, rtol=1e-12)
    assert sub.centring == reduced.centring
    assert data.centring == Centring.of(data.region_stats, data.income, np.ones(data.n_regions))
    with pytest.raises(ValueError, match="boolean mask of length"):
        data.subset(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="selects no row"):
        data.subset(np.zeros(data.n_obs, dtype=bool))
