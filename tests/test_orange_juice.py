"""The Dominick's orange-juice panel: the checks on bayesm's tables, the loader and the local copy.

The validation tests build small tables of their own and always run. The tests on the real
panel need the local copy that ``make orange-juice-data`` builds from the Debian package
r-cran-bayesm (the set-up of ``make test`` does it); without it they are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from elasticity_lib.data.orange_juice import (
    BRANDS,
    DEFAULT_DIR,
    DEMOGRAPHICS,
    SALES_FILE,
    SIZES_OZ,
    STORES_FILE,
    build_orange_juice,
    load_orange_juice,
    price_ranges,
    read_raw,
    store_week_coverage,
    validate_orange_juice,
)

ROOT = Path(__file__).resolve().parents[1]
HAVE_COPY = (DEFAULT_DIR / SALES_FILE).is_file() and (DEFAULT_DIR / STORES_FILE).is_file()
needs_copy = pytest.mark.skipif(
    not HAVE_COPY,
    reason=f"no local copy of the orange-juice data in {DEFAULT_DIR}: run `make orange-juice-data` "
           "(installs the Debian package r-cran-bayesm and builds it)",
)


def tiny_tables(stores=(2, 5), weeks=(40, 41)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A complete miniature of bayesm's yx and storedemo: every store-week has the 11 brands."""
    rng = np.random.default_rng(0)
    rows = []
    for s in stores:
        for w in weeks:
            shelf = rng.uniform(0.01, 0.06, size=11)
            for b in range(1, 12):
                units = SIZES_OZ[b - 1] * int(rng.integers(1, 200))
                rows.append({"store": s, "brand": b, "week": w, "logmove": np.log(units),
                             **{f"price{k}": shelf[k - 1] for k in range(1, 12)},
                             "deal": int(rng.integers(0, 2)), "feat": float(rng.uniform()), "profit": 30.0})
    yx = pd.DataFrame(rows)
    demo = pd.DataFrame({"STORE": list(stores), **{c: rng.uniform(0.1, 0.9, size=len(stores)) for c in DEMOGRAPHICS}})
    return yx, demo


def test_tiny_tables_load_with_own_price_units_and_names():
    yx, demo = tiny_tables()
    oj = build_orange_juice(yx, demo)
    assert len(oj.sales) == 44 and list(oj.prices.columns) == list(BRANDS)
    row = oj.sales[(oj.sales["store"] == 5) & (oj.sales["week"] == 41) & (oj.sales["brand"] == 7)].iloc[0]
    raw = yx[(yx["store"] == 5) & (yx["week"] == 41) & (yx["brand"] == 7)].iloc[0]
    assert row["product"] == "Citrus Hill 64 oz" and row["size_oz"] == 64
    assert row["price"] == raw["price7"] == oj.prices.loc[(5, 41), "Citrus Hill 64 oz"]
    assert row["quantity"] == pytest.approx(np.exp(raw["logmove"]))
    assert oj.stores.index.name == "store" and list(oj.stores.columns) == list(DEMOGRAPHICS)
    # the input is not modified and its row order does not matter
    shuffled = build_orange_juice(yx.sample(frac=1.0, random_state=1), demo)
    pd.testing.assert_frame_equal(shuffled.sales, oj.sales)


def test_frozen():
    oj = build_orange_juice(*tiny_tables())
    with pytest.raises(AttributeError):
        oj.sales = oj.sales.head()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda yx, d: yx.drop(columns="profit"), r"yx table lacks the columns \['profit'\]"),
        (lambda yx, d: yx.assign(price3=yx["price3"].where(yx.index != 4)), r"missing values in 'price3'"),
        (lambda yx, d: yx.assign(logmove=yx["logmove"].where(yx.index != 4, np.inf)), r"infinite values in 'logmove'"),
        (lambda yx, d: yx.assign(price2=yx["price2"].where(yx["store"] != 5, 0.0)), r"prices must be > 0; price2"),
        (lambda yx, d: yx.assign(brand=yx["brand"].replace(11, 12)), r"brand must be one of 1-11"),
        (lambda yx, d: yx.assign(deal=yx["deal"].where(yx.index != 0, 2)), r"deal must be 0 or 1"),
        (lambda yx, d: yx.assign(feat=yx["feat"].where(yx.index != 0, 1.5)), r"feat must lie in \[0, 1\]"),
        (lambda yx, d: pd.concat([yx, yx.iloc[[3]]]), r"store-week-brand appears more than once"),
        (lambda yx, d: yx.assign(price9=yx["price9"].where(yx.index != 13, 0.05123)),
         r"equal on all rows of a store-week; 1 store-week\(s\) differ, e.g. store 2 week 41 in \['price9'\]"),
    ],
)
def test_bad_sales_tables_are_rejected_with_the_reason(change, message):
    yx, demo = tiny_tables()
    with pytest.raises(ValueError, match=message):
        validate_orange_juice(change(yx, demo), demo)


def test_missing_brands_are_listed_by_store_week():
    yx, demo = tiny_tables()
    gone = (yx["store"] == 5) & (yx["week"] == 40) & yx["brand"].isin([2, 10])
    with pytest.raises(ValueError, match=r"1 store-week\(s\) lack some of the 11 brands:\n  store 5 week 40: "
                                         r"missing \['Tropicana Premium 96 oz', 'Dominicks 64 oz'\]"):
        validate_orange_juice(yx[~gone], demo)
    # a whole store-week absent is not an error: the panel is unbalanced in weeks, not in brands
    validate_orange_juice(yx[~((yx["store"] == 5) & (yx["week"] == 40))], demo)


def test_store_demographics_must_be_one_row_per_store_and_match_the_sales():
    yx, demo = tiny_tables()
    varying = pd.concat([demo, demo.iloc[[1]].assign(INCOME=10.0)])
    with pytest.raises(ValueError, match=r"store 5 has several values of \['INCOME'\]"):
        validate_orange_juice(yx, varying)
    with pytest.raises(ValueError, match=r"one row of demographics"):
        validate_orange_juice(yx, pd.concat([demo, demo.iloc[[0]]]))
    with pytest.raises(ValueError, match=r"stores without demographics: \[5\]"):
        validate_orange_juice(yx, demo.iloc[[0]])
    with pytest.raises(ValueError, match=r"stores with demographics but no sales: \[9\]"):
        validate_orange_juice(yx, pd.concat([demo, demo.iloc[[0]].assign(STORE=9)]))
    with pytest.raises(ValueError, match=r"storedemo table has missing values in 'EDUC'"):
        validate_orange_juice(yx, demo.assign(EDUC=[0.2, np.nan]))


def test_absent_copy_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_raw(tmp_path)
    text = str(err.value)
    for hint in ("r-cran-bayesm", "make orange-juice-data", 'install.packages("bayesm")', "--rda", "Kilts Center"):
        assert hint in text


def _make_script():
    path = ROOT / "elasticity_lib" / "data" / "make_orange_juice.py"
    spec = importlib.util.spec_from_file_location("make_orange_juice", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuild_script_reports_a_missing_rda(tmp_path, capsys):
    script = _make_script()
    assert script.main(["--rda", str(tmp_path / "none.rda"), "--out", str(tmp_path)]) == 1
    assert "r-cran-bayesm" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_rebuild_script_round_trips_the_rda_exactly(tmp_path):
    script = _make_script()
    if not script.DEBIAN_RDA.is_file():
        pytest.skip(f"{script.DEBIAN_RDA} absent: install the Debian package r-cran-bayesm")
    pytest.importorskip("rdata", reason="the rebuild script needs the 'data' extra (rdata)")
    yx, demo = script.read_rda(script.DEBIAN_RDA)
    script.write(yx, demo, tmp_path)
    back_yx, back_demo = read_raw(tmp_path)
    np.testing.assert_array_equal(back_yx.to_numpy(dtype=float), yx.to_numpy(dtype=float))
    np.testing.assert_array_equal(back_demo.to_numpy(dtype=float), demo.to_numpy(dtype=float))
    # the loader's sales are the rda's rows: the own price and exp(logmove) of every row
    oj = build_orange_juice(back_yx, back_demo)
    key = ["store", "week", "brand"]
    raw = yx.sort_values(key).reset_index(drop=True)
    own = raw[[f"price{k}" for k in range(1, 12)]].to_numpy()[np.arange(len(raw)), raw["brand"].to_numpy() - 1]
    np.testing.assert_array_equal(oj.sales["price"].to_numpy(), own)
    np.testing.assert_allclose(oj.sales["quantity"].to_numpy(), np.exp(raw["logmove"].to_numpy()), rtol=1e-15)


@pytest.fixture(scope="module")
def oj():
    return load_orange_juice()


@needs_copy
def test_panel_shape_and_completeness(oj):
    sales = oj.sales
    assert len(sales) == 106_139
    assert sales["store"].nunique() == 83 and len(oj.stores) == 83
    assert sorted(sales["week"].unique()) == list(range(40, 161))  # 121 weeks, none missing overall
    assert list(sales["product"].drop_duplicates()) == list(BRANDS)
    # every store-week present has the 11 brands: 9,649 of the 83 x 121 = 10,043 possible store-weeks
    assert len(oj.prices) == 9_649 and len(sales) == 11 * len(oj.prices)
    coverage = store_week_coverage(oj)
    assert coverage["weeks"].sum() == 9_649 and coverage["weeks"].max() == 121
    assert coverage.loc[134, "first_week"] == 67 and coverage["weeks"].min() == 87


@needs_copy
def test_units_are_ounces_and_prices_dollars_per_ounce(oj):
    sales = oj.sales
    units = np.round(sales["quantity"])
    # exp(logmove) is a whole number (to the 10 decimals logmove is stored with) ...
    assert np.max(np.abs(sales["quantity"] - units) / sales["quantity"]) < 1e-9
    # ... and always a whole number of cartons: the unit is the ounce
    assert (units % sales["size_oz"] == 0).all()
    # prices per ounce times the carton size give shelf prices such as $2.99 for 64 oz Tropicana Premium
    ranges = price_ranges(oj)
    assert ranges.loc["Tropicana Premium 64 oz", "per_carton_median"] == pytest.approx(2.99)
    assert (ranges["per_oz_min"] > 0).all() and (ranges["per_oz_max"] < 0.07).all()
    # the wide prices hold each row's own price
    wide = oj.prices.stack().rename("wide").reset_index()
    merged = sales.merge(wide, on=["store", "week", "product"], validate="one_to_one")
    np.testing.assert_array_equal(merged["price"], merged["wide"])


@needs_copy
def test_promotion_margin_and_demographic_ranges(oj):
    sales, stores = oj.sales, oj.stores
    assert set(sales["deal"].unique()) == {0, 1}
    assert sales["feature"].between(0, 1).all()
    assert sales["profit"].between(0, 100).all()
    shares = ["AGE60", "EDUC", "ETHNIC", "HHLARGE", "WORKWOM", "HVAL150"]
    assert stores[shares].stack().between(0, 1).all()  # fractions, not percentages
    # INCOME is the log of median income: 9.87-11.24, i.e. about $19,000-$76,000
    assert stores["INCOME"].between(9.5, 11.5).all()
