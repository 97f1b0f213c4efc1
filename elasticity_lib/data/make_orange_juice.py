"""Build the local copy of the Dominick's orange-juice panel from the R package bayesm.

Run from the repository root:  .venv/bin/python elasticity_lib/data/make_orange_juice.py
(``make orange-juice-data`` installs the Debian package and runs it). It needs the
``rdata`` package (the optional ``data`` extra), which reads R's ``.rda`` files without R,
and the file ``orangeJuice.rda`` of bayesm, found

- in the Debian/Ubuntu package ``r-cran-bayesm``:
  ``/usr/lib/R/site-library/bayesm/data/orangeJuice.rda`` (the default);
- in any R installation of bayesm from CRAN: pass ``--rda`` the path printed by
  ``Rscript -e 'cat(system.file("data", "orangeJuice.rda", package = "bayesm"))'``
  (or set ``ORANGE_JUICE_RDA``).

The terms of the Dominick's data (academic research use, acknowledgement of the Kilts
Center) do not clearly allow redistribution, so the repository does not ship the data: this
script writes them into ``elasticity_lib/data/local/``, which git ignores. See
``elasticity_lib/data/README.md``. It works offline.

The two files written keep every value of bayesm's ``orangeJuice`` unchanged (the ``yx``
table without its column of ones, and ``storedemo``); the script reads them back and
checks that they equal the source exactly. Renaming and derived columns are the loader's
job (:func:`elasticity_lib.data.orange_juice.load_orange_juice`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: Where the Debian package r-cran-bayesm puts the data file.
DEBIAN_RDA = Path("/usr/lib/R/site-library/bayesm/data/orangeJuice.rda")
#: The local, git-ignored folder the loader reads by default.
LOCAL_DIR = Path(__file__).resolve().parent / "local"
SALES_FILE = "orange_juice_yx.csv.gz"
STORES_FILE = "orange_juice_storedemo.csv"

YX_COLUMNS = ["store", "brand", "week", "logmove"] + [f"price{k}" for k in range(1, 12)] + ["deal", "feat", "profit"]
STOREDEMO_COLUMNS = ["STORE", "AGE60", "EDUC", "ETHNIC", "INCOME", "HHLARGE", "WORKWOM", "HVAL150",
                     "SSTRDIST", "SSTRVOL", "CPDIST5", "CPWVOL5"]


def read_rda(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``yx`` and ``storedemo`` tables of bayesm's ``orangeJuice`` as plain pandas frames."""
    import rdata  # the optional 'data' extra; imported here so the module imports without it

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Install the Debian package r-cran-bayesm (apt-get install r-cran-bayesm), "
            "or install bayesm from CRAN in R and pass its data/orangeJuice.rda with --rda."
        )
    parsed = rdata.read_rda(str(path))
    if "orangeJuice" not in parsed:
        raise ValueError(f"{path} holds {sorted(parsed)}, not the object 'orangeJuice'")
    oj = parsed["orangeJuice"]
    yx, demo = oj["yx"], oj["storedemo"]
    missing = [c for c in YX_COLUMNS + ["constant"] if c not in yx.columns]
    missing += [c for c in STOREDEMO_COLUMNS if c not in demo.columns]
    if missing:
        raise ValueError(f"orangeJuice in {path} lacks the documented columns {missing}")
    if not (yx["constant"] == 1).all():
        raise ValueError("orangeJuice$yx$constant is not a column of ones; the file is not the documented one")
    # R's integer columns arrive as pandas nullable Int32; NA would stay NA, so check none
    for frame, name in ((yx, "yx"), (demo, "storedemo")):
        na = frame.isna().sum()
        if na.any():
            raise ValueError(f"orangeJuice${name} has missing values: {na[na > 0].to_dict()}")
    yx = yx[YX_COLUMNS].reset_index(drop=True)
    demo = demo[STOREDEMO_COLUMNS].reset_index(drop=True)
    for frame, ints in ((yx, ["store", "brand", "week", "deal"]), (demo, ["STORE"])):
        for col in ints:
            frame[col] = frame[col].astype(np.int64)
    return yx, demo


def write(yx: pd.DataFrame, demo: pd.DataFrame, directory: Path) -> tuple[Path, Path]:
    """Write both tables and check that reading them back gives exactly the same values."""
    directory.mkdir(parents=True, exist_ok=True)
    sales_path, stores_path = directory / SALES_FILE, directory / STORES_FILE
    # float_format=None writes the shortest text that reads back to the same double
    yx.to_csv(sales_path, index=False, compression={"method": "gzip", "mtime": 0})
    demo.to_csv(stores_path, index=False)
    for path, frame in ((sales_path, yx), (stores_path, demo)):
        back = pd.read_csv(path)
        pd.testing.assert_frame_equal(back, frame, check_exact=True, check_dtype=False)
    return sales_path, stores_path


def main(argv: list[str] | None = None) -> int:
    """Command line: read the ``.rda``, write the local copy; exit status 1 if the ``.rda`` is missing or wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rda", type=Path, default=Path(os.environ.get("ORANGE_JUICE_RDA", DEBIAN_RDA)),
                        help=f"bayesm's orangeJuice.rda (default: $ORANGE_JUICE_RDA or {DEBIAN_RDA})")
    parser.add_argument("--out", type=Path, default=LOCAL_DIR, help=f"output folder (default: {LOCAL_DIR})")
    args = parser.parse_args(argv)
    try:
        yx, demo = read_rda(args.rda)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in write(yx, demo, args.out):
        print(f"wrote {path}")
    print(f"{len(yx):,} rows, {yx['store'].nunique()} stores, {yx['week'].nunique()} weeks, "
          f"{yx['brand'].nunique()} brands; {len(demo)} stores with demographics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
