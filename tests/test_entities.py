"""Entities: valid markets render to the tidy table, invalid ones are rejected by name."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from elasticity_lib.data.entities import TIDY_COLUMNS, Market, Region, Sku, Store, store_label


def sku(id=0, prices=(1.0, 2.0), quantities=(3.0, 4.0)) -> Sku:
    return Sku(id=id, prices=prices, quantities=quantities)


def store(id=0, skus=None) -> Store:
    return Store(id=id, skus=skus if skus is not None else (sku(),))


def region(id=0, income=5.0, stores=None) -> Region:
    return Region(id=id, median_income=income, stores=stores if stores is not None else (store(),))


def two_region_market() -> Market:
    return Market(
        regions=(
            region(0, 4.0, (store(0, (sku(prices=(1.0, 2.0, 1.5), quantities=(3.0, 2.0, 2.5)),)), store(1))),
            region(1, 7.0, (store(2, (sku(prices=(1.2,), quantities=(0.5,)),)),)),
        )
    )


# Each case: a constructor that must fail, and a pattern the message must contain (the
# field, with its position for element errors, and the reason).
BAD_ENTITIES = {
    "sku negative id": (lambda: sku(id=-1), r"(?s)^.*\bid\n.*greater than or equal to 0"),
    "sku empty prices": (lambda: sku(prices=(), quantities=()), r"(?s)prices\n.*at least 1 item"),
    "sku unequal lengths": (
        lambda: sku(prices=(1.0, 2.0), quantities=(1.0,)),
        r"prices and quantities must have equal length, got 2 prices and 1 quantities",
    ),
    "sku zero price": (lambda: sku(prices=(1.0, 0.0)), r"(?s)prices\.1\n.*greater than 0"),
    "sku negative price": (lambda: sku(prices=(-1.0, 1.0)), r"(?s)prices\.0\n.*greater than 0"),
    "sku infinite price": (lambda: sku(prices=(1.0, math.inf)), r"(?s)prices\.1\n.*finite number"),
    "sku NaN price": (lambda: sku(prices=(math.nan, 1.0)), r"(?s)prices\.0\n.*finite number"),
    "sku non-positive quantity": (lambda: sku(quantities=(1.0, 0.0)), r"(?s)quantities\.1\n.*greater than 0"),
    "sku NaN quantity": (lambda: sku(quantities=(1.0, math.nan)), r"(?s)quantities\.1\n.*finite number"),
    "sku extra field": (
        lambda: Sku(id=0, prices=(1.0,), quantities=(1.0,), cost=(0.5,)),
        r"(?s)cost\n.*Extra inputs are not permitted",
    ),
    "store negative id": (lambda: store(id=-3), r"(?s)^.*\bid\n.*greater than or equal to 0"),
    "store without skus": (lambda: store(skus=()), r"(?s)skus\n.*at least 1 item"),
    "store duplicate sku ids": (
        lambda: store(skus=(sku(id=4), sku(id=4))),
        r"(?s)skus\n.*sku ids must be unique, id 4 appears more than once",
    ),
    "region zero income": (lambda: region(income=0.0), r"(?s)median_income\n.*greater than 0"),
    "region negative income": (lambda: region(income=-2.0), r"(?s)median_income\n.*greater than 0"),
    "region infinite income": (lambda: region(income=math.inf), r"(?s)median_income\n.*finite number"),
    "region without stores": (lambda: region(stores=()), r"(?s)stores\n.*at least 1 item"),
    "region duplicate store ids": (
        lambda: region(stores=(store(7), store(7))),
        r"(?s)stores\n.*store ids must be unique, id 7 appears more than once",
    ),
    "region negative id": (lambda: region(id=-1), r"(?s)^.*\bid\n.*greater than or equal to 0"),
    "market without regions": (lambda: Market(regions=()), r"(?s)regions\n.*at least 1 item"),
    "market duplicate region ids": (
        lambda: Market(regions=(region(2, stores=(store(0),)), region(2, stores=(store(1),)))),
        r"(?s)regions\n.*region ids must be unique, id 2 appears more than once",
    ),
    "market store in two regions": (
        lambda: Market(regions=(region(0, stores=(store(5),)), region(1, stores=(store(5),)))),
        r"(?s)regions\n.*store 5 appears in regions 0 and 1",
    ),
    "market extra field": (
        lambda: Market(regions=(region(),), currency="EUR"),
        r"(?s)currency\n.*Extra inputs are not permitted",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ENTITIES), ids=list(BAD_ENTITIES))
def test_invalid_entities_are_rejected_with_the_field_name(case):
    build, pattern = BAD_ENTITIES[case]
    with pytest.raises(ValidationError, match=pattern):
        build()


def test_entities_are_frozen():
    s = sku()
    with pytest.raises(ValidationError, match="frozen"):
        s.id = 3


def test_to_dataframe_is_the_tidy_table():
    market = two_region_market()
    df = market.to_dataframe()
    assert list(df.columns) == TIDY_COLUMNS
    assert len(df) == 3 + 2 + 1
    for col in ["item_id", "store_id", "region_id", "region_store_id"]:
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col
    # rows of store 0: prices in order, time steps counting down to 0 at the last observation
    s0 = df[df["store_id"] == 0]
    np.testing.assert_array_equal(s0["price"], [1.0, 2.0, 1.5])
    np.testing.assert_array_equal(s0["quantities"], [3.0, 2.0, 2.5])
    np.testing.assert_array_equal(s0["time_step"], [2, 1, 0])
    np.testing.assert_allclose(df["log_price"], np.log(df["price"]))
    np.testing.assert_allclose(df["log_quantities"], np.log(df["quantities"]))
    # every row carries its own region's income and label
    np.testing.assert_array_equal(df["median_income"], [4.0] * 5 + [7.0])
    assert list(df["region_store_id"].cat.categories) == ["r-0_s-0", "r-0_s-1", "r-1_s-2"]
    assert (df["time_step"].groupby(df["region_store_id"], observed=True).min() == 0).all()


def test_store_label_format():
    assert store_label(3, 12) == "r-3_s-12"
    # the reference built the label from the store id twice; ours differs across regions
    assert store_label(1, 12) != store_label(11, 2)


@st.composite
def markets(draw):
    """Valid markets of arbitrary shape, with ids unique where the entities require it."""
    positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
    n_regions = draw(st.integers(1, 4))
    region_ids = draw(st.lists(st.integers(0, 50), min_size=n_regions, max_size=n_regions, unique=True))
    store_counts = draw(st.lists(st.integers(1, 3), min_size=n_regions, max_size=n_regions))
    store_ids = iter(draw(st.lists(st.integers(0, 500), min_size=sum(store_counts), max_size=sum(store_counts), unique=True)))
    regions = []
    for rid, count in zip(region_ids, store_counts):
        stores = []
        for _ in range(count):
            n = draw(st.integers(1, 5))
            prices = tuple(draw(st.lists(positive, min_size=n, max_size=n)))
            quantities = tuple(draw(st.lists(positive, min_size=n, max_size=n)))
            stores.append(Store(id=next(store_ids), skus=(Sku(id=0, prices=prices, quantities=quantities),)))
        regions.append(Region(id=rid, median_income=draw(positive), stores=tuple(stores)))
    return Market(regions=tuple(regions))


@given(markets())
def test_any_valid_market_renders_every_observation_once(market):
    df = market.to_dataframe()
    n_rows = sum(len(k.prices) for r in market.regions for s in r.stores for k in s.skus)
    assert len(df) == n_rows
    assert df["region_store_id"].nunique() == sum(len(r.stores) for r in market.regions)
    # each label names its own region and store
    for label, rid, sid in df[["region_store_id", "region_id", "store_id"]].drop_duplicates().itertuples(index=False):
        assert label == store_label(rid, sid)
    assert np.isfinite(df[["log_price", "log_quantities"]].to_numpy()).all()


@given(st.floats(max_value=0.0, allow_nan=False) | st.sampled_from([math.nan, math.inf, -math.inf]))
def test_any_non_positive_or_non_finite_price_is_rejected(bad):
    with pytest.raises(ValidationError, match=r"prices\.1"):
        sku(prices=(1.0, bad))


def test_truth_tables_follow_ids(small_market):
    truth = small_market.truth
    regions = truth.region_table()
    assert list(regions.index) == [r.id for r in small_market.regions]
    assert list(regions.columns) == ["intercept", "elasticity"]
    stores = truth.store_table()
    labels = [store_label(r.id, s.id) for r in small_market.regions for s in r.stores]
    assert list(stores.index) == labels
