"""Cost of refitting the multilevel model with one region held out.

Usage (from the repository root):

    .venv/bin/python benchmarks/holdout.py            # hold out 3 regions of the reference market
    .venv/bin/python benchmarks/holdout.py --n 9      # all nine

Compares two ways of refitting without region j:

- rebuild: ``prepare_data`` on the table without region j, ``build_model("multilevel")``
  and ``fit`` (a new model is built and compiled, or loaded from the sampler's cache,
  for every refit);
- reuse: :class:`elasticity_lib.validation.holdout.HoldoutRefitter`, which compiles once and
  swaps the data of later refits with nutpie's ``with_data``.

Prints a table of wall-clock seconds per refit and the posterior mean of b1 of both
ways (the same model, so they agree up to Monte Carlo error).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.simulation import REFERENCE_SEED, simulate_market
from elasticity_lib.inference import fit
from elasticity_lib.models import build_model
from elasticity_lib.validation.holdout import HoldoutRefitter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="number of regions to hold out, in turn")
    args = parser.parse_args(argv)
    df = simulate_market(seed=REFERENCE_SEED).to_dataframe()
    data = prepare_data(df)
    regions = list(data.coords["region"])[: args.n]
    refitter = HoldoutRefitter()
    rows = []
    for j, region in enumerate(regions):
        t0 = time.perf_counter()
        rebuilt = fit(build_model("multilevel", prepare_data(df[df["region_id"] != region])), random_seed=100 + j)
        t1 = time.perf_counter()
        reused = refitter.fit(data, region, seed=100 + j)
        t2 = time.perf_counter()
        rows.append({"held out": region, "rebuild s": t1 - t0, "reuse s": t2 - t1,
                     "b1 rebuild": float(rebuilt["posterior"]["b1"].mean()),
                     "b1 reuse": float(reused["posterior"]["b1"].mean())})
    table = pd.DataFrame(rows).set_index("held out")
    print(table.round(3).to_string())
    later = table.iloc[1:] if len(table) > 1 else table
    print(f"\nmean seconds per refit after the first: rebuild {later['rebuild s'].mean():.2f}, "
          f"reuse {later['reuse s'].mean():.2f}")
    print(f"first refit (includes compilation): rebuild {table['rebuild s'].iloc[0]:.2f}, "
          f"reuse {table['reuse s'].iloc[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
