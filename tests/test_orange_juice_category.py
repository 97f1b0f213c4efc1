"""The orange-juice category table and unit costs: what the multi-product chapter feeds the model.

The tests on small tables of their own always run; those on the real panel need the local
copy that ``make orange-juice-data`` builds and are skipped, saying so, without it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from elasticity_lib.data.orange_juice import (
    BRANDS,
    CATEGORY_COVARIATES,
    DEFAULT_DIR,
    DEMOGRAPHICS,
    SALES_FILE,
    STORES_FILE,
    build_orange_juice,
    category_table,
    load_orange_juice,
    unit_costs,
)
from elasticity_lib.models.products import least_squares, prepare_product_data

HAVE_COPY = (DEFAULT_DIR / SALES_FILE).is_file() and (DEFAULT_DIR / STORES_FILE).is_file()
needs_copy = pytest.mark.skipif(not HAVE_COPY, reason=f"no local copy of the orange-juice data in {DEFAULT_DIR}: "
                                "run `make orange-juice-data`")


def tiny(stores=(2, 5, 8), weeks=(40, 41, 42, 43)):
    """A complete miniature of bayesm's tables with demographics that differ by store."""
    rng = np.random.default_rng(1)
    rows = []
    for s in stores:
        for w in weeks:
            shelf = rng.uniform(0.01, 0.06, size=11)
            for b in range(1, 12):
                rows.append({"store": s, "brand": b, "week": w, "logmove": float(rng.normal(8, 1)),
                             **{f"price{k}": shelf[k - 1] for k in range(1, 12)},
                             "deal": int(rng.integers(0, 2)), "feat": float(rng.uniform()),
                             "profit": float(rng.uniform(0, 60))})
    demo = pd.DataFrame({"STORE": list(stores), **{c: rng.uniform(0.1, 0.9, len(stores)) for c in DEMOGRAPHICS}})
    return build_orange_juice(pd.DataFrame(rows), demo)


def test_category_table_carries_each_stores_demographics_on_every_row():
    oj = tiny()
    table = category_table(oj)
    assert len(table) == len(oj.sales)
    pd.testing.assert_frame_equal(table[oj.sales.columns], oj.sales)
    for col in CATEGORY_COVARIATES:
        expected = oj.stores[col].reindex(table["store"]).to_numpy()
        np.testing.assert_array_equal(table[col].to_numpy(), expected)
    assert not (set(DEMOGRAPHICS) - set(CATEGORY_COVARIATES)) & set(table.columns)


def test_category_table_feeds_the_product_model_with_raw_units_standardised_there():
    oj = tiny()
    data = prepare_product_data(category_table(oj, ["INCOME", "CPDIST5"]), promotions=["deal", "feature"],
                                covariates=["INCOME", "CPDIST5"])
    assert data.n_products == 11 and data.n_stores == 3 and data.n_obs == len(oj.sales)
    assert sorted(data.products) == sorted(BRANDS)
    np.testing.assert_allclose(data.covariates_raw[:, 0], oj.stores["INCOME"].to_numpy())
    np.testing.assert_allclose(data.covariates_std.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.covariates_std.std(axis=0), 1)


@pytest.mark.parametrize("covariates, match", [(["INCOME", "MONEY"], "unknown store variable.*MONEY"),
                                               (["INCOME", "INCOME"], "more than once")])
def test_category_table_names_a_bad_covariate(covariates, match):
    with pytest.raises(ValueError, match=match):
        category_table(tiny(), covariates)


def test_unit_costs_back_out_the_margin():
    sales = pd.DataFrame({"price": [0.02, 0.04, 0.03], "profit": [25.0, 0.0, 50.0]})
    np.testing.assert_allclose(unit_costs(sales).to_numpy(), [0.015, 0.04, 0.015])
    # the margin recovered from the cost is the one given
    np.testing.assert_allclose(100 * (1 - unit_costs(sales) / sales["price"]), sales["profit"])


@pytest.mark.parametrize("profit", [100.0, 120.0, np.nan])
def test_unit_costs_refuse_a_margin_that_leaves_no_positive_cost(profit):
    sales = pd.DataFrame({"store": [1, 1], "week": [40, 41], "product": ["a", "a"], "price": [0.02, 0.03],
                          "profit": [30.0, profit]})
    with pytest.raises(ValueError, match=r"below 100.*1 row"):
        unit_costs(sales)


@needs_copy
def test_the_real_category_table_is_complete_and_every_store_has_a_regression():
    oj = load_orange_juice()
    table = category_table(oj)
    assert len(table) == len(oj.sales) == 106_139
    data = prepare_product_data(table, promotions=["deal", "feature"], covariates=list(CATEGORY_COVARIATES))
    assert (data.n_stores, data.n_products) == (83, 11)
    assert np.all(np.isfinite(least_squares(data)))
    assert np.all(unit_costs(table) > 0)
