"""A real multi-product panel: refrigerated orange juice in 83 Dominick's stores, weeks 40-160.

The data are the ``orangeJuice`` panel of the R package bayesm (Rossi, Allenby and
McCulloch), taken from Montgomery (1997), built from the Dominick's Finer Foods scanner
data of the James M. Kilts Center for Marketing, University of Chicago Booth School of
Business. Their terms do not clearly allow redistribution, so the package does not ship
them: ``make orange-juice-data`` (or ``elasticity_lib/data/make_orange_juice.py``) writes a
local copy from the Debian package ``r-cran-bayesm`` into ``elasticity_lib/data/local/``,
which git ignores. ``elasticity_lib/data/README.md`` gives the source, the terms and what
each column means.

:func:`load_orange_juice` reads that copy, checks it (:func:`validate_orange_juice`) and
returns an :class:`OrangeJuice` with

- ``sales``: one row per store, week and brand, with the brand's own price per ounce, the
  ounces sold, the promotion variables and the gross margin;
- ``prices``: all 11 brands' prices for each store-week (what a cross-price model needs);
- ``stores``: the 11 store demographics and competition measures, one row per store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "BRANDS",
    "SIZES_OZ",
    "DEMOGRAPHICS",
    "SALES_FILE",
    "STORES_FILE",
    "DEFAULT_DIR",
    "OrangeJuice",
    "load_orange_juice",
    "read_raw",
    "validate_orange_juice",
    "build_orange_juice",
    "store_week_coverage",
    "price_ranges",
    "CATEGORY_COVARIATES",
    "CATEGORY_PROMOTIONS",
    "category_table",
    "unit_costs",
]

#: The 11 brands in bayesm's numbering (``brand`` 1-11 and ``price1``-``price11``), as its
#: help page names them.
BRANDS = (
    "Tropicana Premium 64 oz",
    "Tropicana Premium 96 oz",
    "Florida's Natural 64 oz",
    "Tropicana 64 oz",
    "Minute Maid 64 oz",
    "Minute Maid 96 oz",
    "Citrus Hill 64 oz",
    "Tree Fresh 64 oz",
    "Florida Gold 64 oz",
    "Dominicks 64 oz",
    "Dominicks 128 oz",
)
#: Carton size of each brand in ounces, read from its name. Units sold are ounces: every
#: ``exp(logmove)`` is a whole multiple of the brand's size (see data/README.md).
SIZES_OZ = (64, 96, 64, 64, 64, 96, 64, 64, 64, 64, 128)
#: The store variables of ``storedemo``, named as bayesm documents them.
DEMOGRAPHICS = ("AGE60", "EDUC", "ETHNIC", "INCOME", "HHLARGE", "WORKWOM", "HVAL150",
                "SSTRDIST", "SSTRVOL", "CPDIST5", "CPWVOL5")
#: The store variables the category model explains price sensitivity with (see
#: :func:`category_table`): the four classic demographic dimensions (income, education,
#: ethnicity, household size) and one measure of competition (the mean distance to the
#: nearest five supermarkets). Over the 83 stores no two of them correlate more than
#: income and ethnicity do (r = -0.72). The six others are left out because they largely
#: repeat these (``HVAL150`` correlates 0.89 with ``EDUC``, ``WORKWOM`` 0.55 with it) or
#: each other, and because every covariate adds one slope per coefficient and brand (44
#: with two promotion columns), which 83 stores inform only weakly.
CATEGORY_COVARIATES = ("INCOME", "EDUC", "ETHNIC", "HHLARGE", "CPDIST5")
#: The promotion columns of :attr:`OrangeJuice.sales` the category model gives a lift each.
CATEGORY_PROMOTIONS = ("deal", "feature")
PRICE_COLUMNS = tuple(f"price{k}" for k in range(1, 12))
YX_COLUMNS = ("store", "brand", "week", "logmove", *PRICE_COLUMNS, "deal", "feat", "profit")
STOREDEMO_COLUMNS = ("STORE", *DEMOGRAPHICS)

#: File names written by ``make_orange_juice.py`` (bayesm's ``yx`` and ``storedemo``).
SALES_FILE = "orange_juice_yx.csv.gz"
STORES_FILE = "orange_juice_storedemo.csv"
#: Where ``make orange-juice-data`` puts the local copy (ignored by git).
DEFAULT_DIR = Path(__file__).resolve().parent / "local"

_HOW_TO_GET = """the Dominick's orange-juice data are not shipped with this package (their terms do not clearly
allow redistribution); build a local copy once, offline, from bayesm's orangeJuice.rda:
  - Debian/Ubuntu:  sudo apt-get install r-cran-bayesm && make orange-juice-data
    (or: .venv/bin/python elasticity_lib/data/make_orange_juice.py, which needs the 'rdata' package)
  - any system with R: install.packages("bayesm") in R, then
    .venv/bin/python elasticity_lib/data/make_orange_juice.py --rda \\
      "$(Rscript -e 'cat(system.file("data", "orangeJuice.rda", package = "bayesm"))')"
  - the original Dominick's files (not this aggregation) come from the James M. Kilts Center for
    Marketing, University of Chicago Booth School of Business:
    https://www.chicagobooth.edu/research/kilts/research-data/dominicks
See elasticity_lib/data/README.md for the terms."""


@dataclass(frozen=True)
class OrangeJuice:
    """The orange-juice panel, checked and in the library's units.

    Attributes
    ----------
    sales : pandas.DataFrame
        One row per store, week and brand, sorted in that order. Columns: ``store`` and
        ``week`` (int, Dominick's numbers), ``brand`` (int 1-11), ``product`` (brand name,
        :data:`BRANDS`), ``size_oz`` (int), ``price`` (the brand's own price, dollars per
        ounce), ``quantity`` (ounces sold, ``exp(logmove)``), ``deal`` (0/1, in-store coupon
        or bonus-buy activity), ``feature`` (share of the brand featured in the week's
        advertising, 0-1 and fractional in 1.5% of rows, as in the data) and ``profit``
        (documented only as "profit"; read as Dominick's gross margin in percent of the
        price, see ``data/README.md``).
    prices : pandas.DataFrame
        Every brand's price (dollars per ounce) for each store-week: index ``(store, week)``,
        one column per brand name in :data:`BRANDS` order.
    stores : pandas.DataFrame
        One row per store, indexed by ``store``, with the columns of :data:`DEMOGRAPHICS`.
    """

    sales: pd.DataFrame
    prices: pd.DataFrame
    stores: pd.DataFrame


def read_raw(directory: Path | str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The local copy of bayesm's ``yx`` and ``storedemo`` tables, unchanged.

    Raises ``FileNotFoundError`` saying how to build the copy when it is absent.
    """
    directory = DEFAULT_DIR if directory is None else Path(directory)
    sales_path, stores_path = directory / SALES_FILE, directory / STORES_FILE
    absent = [str(p) for p in (sales_path, stores_path) if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{', '.join(absent)} not found: {_HOW_TO_GET}")
    return pd.read_csv(sales_path), pd.read_csv(stores_path)


def _rows(frame: pd.DataFrame, mask, columns, limit: int = 5) -> str:
    """The first offending rows of ``frame`` as text, with how many there are in all."""
    bad = frame.loc[np.asarray(mask), list(columns)]
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} row(s), e.g.\n{bad.head(limit).to_string()}{more}"


def validate_orange_juice(yx: pd.DataFrame, storedemo: pd.DataFrame) -> None:
    """Check bayesm's two orange-juice tables; raise ``ValueError`` naming what is wrong.

    Checks: the documented columns are there; no value is missing or infinite; ``brand`` is
    one of 1-11 and no store-week-brand appears twice; every price is > 0; ``deal`` is 0 or
    1 and ``feat`` lies in [0, 1]; the 11 price columns are the same on the 11 rows of a
    store-week (they describe the shelf, not the row); every store-week present has all 11
    brands (else the missing brands are listed); each store has one set of demographics;
    and the stores of the two tables are the same. Nothing is dropped or repaired.
    """
    for frame, name, cols in ((yx, "yx", YX_COLUMNS), (storedemo, "storedemo", STOREDEMO_COLUMNS)):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"the {name} table lacks the columns {missing}")
        values = frame[list(cols)]
        na = values.isna()
        if na.any().any():
            col = na.any().idxmax()
            raise ValueError(f"the {name} table has missing values in {col!r}: {_rows(frame, na[col], cols[:4])}")
        nonfinite = ~np.isfinite(values.to_numpy(dtype=float))
        if nonfinite.any():
            col = cols[int(nonfinite.any(axis=0).argmax())]
            raise ValueError(f"the {name} table has infinite values in {col!r}: {_rows(frame, nonfinite.any(axis=1), cols[:4])}")

    bad = ~yx["brand"].isin(range(1, 12))
    if bad.any():
        raise ValueError(f"brand must be one of 1-11: {_rows(yx, bad, ['store', 'week', 'brand'])}")
    dup = yx.duplicated(["store", "week", "brand"], keep=False)
    if dup.any():
        raise ValueError(f"a store-week-brand appears more than once: {_rows(yx, dup, ['store', 'week', 'brand'])}")
    for col in PRICE_COLUMNS:
        bad = yx[col] <= 0
        if bad.any():
            raise ValueError(f"prices must be > 0; {col} is not: {_rows(yx, bad, ['store', 'week', 'brand', col])}")
    bad = ~yx["deal"].isin([0, 1])
    if bad.any():
        raise ValueError(f"deal must be 0 or 1: {_rows(yx, bad, ['store', 'week', 'brand', 'deal'])}")
    bad = (yx["feat"] < 0) | (yx["feat"] > 1)
    if bad.any():
        raise ValueError(f"feat must lie in [0, 1]: {_rows(yx, bad, ['store', 'week', 'brand', 'feat'])}")

    spread = yx.groupby(["store", "week"])[list(PRICE_COLUMNS)].nunique()
    varying = spread[(spread > 1).any(axis=1)]
    if len(varying):
        (store, week), row = next(iter(varying.iterrows()))
        cols = [c for c in PRICE_COLUMNS if row[c] > 1]
        raise ValueError(f"the price columns must be equal on all rows of a store-week; {len(varying)} store-week(s) "
                         f"differ, e.g. store {store} week {week} in {cols}")
    # brands are 1-11 and unique within a store-week (checked above), so fewer than 11 rows means missing brands
    counts = yx.groupby(["store", "week"]).size()
    incomplete = counts[counts < len(BRANDS)]
    if len(incomplete):
        present = yx.set_index(["store", "week"])["brand"]
        lines = [f"store {s} week {w}: missing {[BRANDS[b - 1] for b in range(1, 12) if b not in set(present.loc[[(s, w)]])]}"
                 for (s, w) in incomplete.head(5).index]
        more = f"\n  (and {len(incomplete) - 5} more)" if len(incomplete) > 5 else ""
        raise ValueError(f"{len(incomplete)} store-week(s) lack some of the 11 brands:\n  " + "\n  ".join(lines) + more)

    spread = storedemo.groupby("STORE")[list(DEMOGRAPHICS)].nunique()
    varying = spread[(spread > 1).any(axis=1)]
    if len(varying):
        store, row = next(iter(varying.iterrows()))
        cols = [c for c in DEMOGRAPHICS if row[c] > 1]
        raise ValueError(f"store demographics must be constant within a store; store {store} has several values of {cols}")
    dup = storedemo["STORE"].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"each store must have one row of demographics: {_rows(storedemo, dup, ['STORE'])}")
    in_sales, in_demo = set(yx["store"]), set(storedemo["STORE"])
    if in_sales - in_demo:
        raise ValueError(f"stores without demographics: {sorted(in_sales - in_demo)}")
    if in_demo - in_sales:
        raise ValueError(f"stores with demographics but no sales: {sorted(in_demo - in_sales)}")


def build_orange_juice(yx: pd.DataFrame, storedemo: pd.DataFrame) -> OrangeJuice:
    """Validate bayesm's two tables (:func:`validate_orange_juice`) and put them in the library's form."""
    validate_orange_juice(yx, storedemo)
    yx = yx.sort_values(["store", "week", "brand"]).reset_index(drop=True)
    brand = yx["brand"].to_numpy(dtype=np.int64)
    own_price = yx[list(PRICE_COLUMNS)].to_numpy(dtype=float)[np.arange(len(yx)), brand - 1]
    sales = pd.DataFrame({
        "store": yx["store"].to_numpy(dtype=np.int64),
        "week": yx["week"].to_numpy(dtype=np.int64),
        "brand": brand,
        "product": np.asarray(BRANDS, dtype=object)[brand - 1],
        "size_oz": np.asarray(SIZES_OZ, dtype=np.int64)[brand - 1],
        "price": own_price,
        "quantity": np.exp(yx["logmove"].to_numpy(dtype=float)),
        "deal": yx["deal"].to_numpy(dtype=np.int64),
        "feature": yx["feat"].to_numpy(dtype=float),
        "profit": yx["profit"].to_numpy(dtype=float),
    })
    prices = (yx.drop_duplicates(["store", "week"]).set_index(["store", "week"])[list(PRICE_COLUMNS)]
              .rename(columns=dict(zip(PRICE_COLUMNS, BRANDS))).astype(float))
    prices.columns.name = "product"
    stores = (storedemo.rename(columns={"STORE": "store"}).astype({"store": np.int64})
              .set_index("store").sort_index()[list(DEMOGRAPHICS)].astype(float))
    return OrangeJuice(sales=sales, prices=prices, stores=stores)


def load_orange_juice(directory: Path | str | None = None) -> OrangeJuice:
    """The orange-juice panel from the local copy (default ``elasticity_lib/data/local``).

    Reads the files written by ``make orange-juice-data``, checks them and returns an
    :class:`OrangeJuice`. Raises ``FileNotFoundError`` explaining how to build the copy
    (Debian package, CRAN bayesm or the Kilts Center) when it is absent.
    """
    return build_orange_juice(*read_raw(directory))


def store_week_coverage(oj: OrangeJuice) -> pd.DataFrame:
    """Per store: the weeks it has data for, its first and last week and the weeks missing in between.

    Every store-week present has all 11 brands (checked on loading), so coverage is a
    matter of whole weeks. ``weeks_absent`` counts the panel's weeks (the union over stores)
    for which the store has no rows.
    """
    weeks = oj.sales.groupby("store")["week"]
    all_weeks = oj.sales["week"].nunique()
    out = pd.DataFrame({
        "weeks": weeks.nunique(),
        "first_week": weeks.min(),
        "last_week": weeks.max(),
    })
    out["weeks_absent"] = all_weeks - out["weeks"]
    out["gaps_inside"] = out["last_week"] - out["first_week"] + 1 - out["weeks"]
    return out


def price_ranges(oj: OrangeJuice) -> pd.DataFrame:
    """Per brand: the range and median of its own price, per ounce and per carton (dollars)."""
    g = oj.sales.groupby("product", sort=False)
    out = g["price"].agg(["min", "median", "max"]).add_prefix("per_oz_")
    size = g["size_oz"].first()
    for stat in ("min", "median", "max"):
        out[f"per_carton_{stat}"] = out[f"per_oz_{stat}"] * size
    out.insert(0, "size_oz", size)
    return out.loc[list(BRANDS)]


def category_table(oj: OrangeJuice, covariates=CATEGORY_COVARIATES) -> pd.DataFrame:
    """The long table :func:`~elasticity_lib.models.products.prepare_product_data` takes, with the chosen store covariates.

    One row per store, week and brand: the columns of :attr:`OrangeJuice.sales` (``price``
    in dollars per ounce, ``quantity`` in ounces, ``deal``, ``feature``, ``profit``, ...)
    and the store variables named in ``covariates`` (default :data:`CATEGORY_COVARIATES`)
    in their own units, one value per store; the model standardises them over stores. The
    394 absent store-weeks stay absent: every store-week present has all 11 brands, which
    is what the model needs. Raises ``ValueError`` for a name that is not one of
    :data:`DEMOGRAPHICS` or that is repeated.
    """
    covariates = list(covariates)
    unknown = [c for c in covariates if c not in DEMOGRAPHICS]
    if unknown:
        raise ValueError(f"unknown store variable(s) {unknown}; choose from {list(DEMOGRAPHICS)}")
    repeated = sorted({c for c in covariates if covariates.count(c) > 1})
    if repeated:
        raise ValueError(f"covariates names {repeated} more than once")
    table = oj.sales.merge(oj.stores[covariates], left_on="store", right_index=True, how="left", validate="m:1")
    if len(table) != len(oj.sales) or table[covariates].isna().any().any():
        missing = sorted(set(oj.sales["store"]) - set(oj.stores.index))
        raise ValueError(f"stores without demographics: {missing}")
    return table


def unit_costs(sales: pd.DataFrame) -> pd.Series:
    """Unit cost per row, ``price x (1 - profit / 100)``, reading ``profit`` as the gross margin in percent.

    Same units as ``price`` (dollars per ounce). Raises ``ValueError`` naming the rows where
    the margin is not below 100% (a cost of zero or less) or is missing.
    """
    for col in ("price", "profit"):
        if col not in sales.columns:
            raise ValueError(f"sales lacks the column {col!r}")
    profit = pd.to_numeric(sales["profit"], errors="coerce")
    bad = ~np.isfinite(profit.to_numpy(dtype=float)) | (profit >= 100).to_numpy()
    if bad.any():
        cols = [c for c in ("store", "week", "product", "price", "profit") if c in sales.columns]
        raise ValueError(f"a gross margin must be a number below 100 (percent) to give a positive cost: "
                         f"{_rows(sales, bad, cols)}")
    return (sales["price"] * (1 - profit / 100)).rename("unit_cost")
