"""How well the chapter-15 category mixes with and without store-varying promotion lifts.

Usage (from the repository root)::

    .venv/bin/python benchmarks/multiproduct_mixing.py                       # seeds 4242 7 20261128 11
    .venv/bin/python benchmarks/multiproduct_mixing.py --seeds 7 --draws 1000

Fits the book's simulated category (``simulate_products`` with the default
configuration, deal and feature, store income) with the book's sampler settings for
each sampler seed and each variant, all in one run:

- ``all store-varying``: every coefficient varies by store (the default of
  :func:`~elasticity_lib.models.products.build_product_model`);
- ``promotion scale 0.2``: the same with a half-Normal(0.2) prior on the promotion
  lifts' store sds instead of :data:`~elasticity_lib.models.products.PRODUCT_PRIORS`' 0.5;
- ``lifts by product``: ``store_varying=BOOK_STORE_VARYING`` (the chapter's model).

Prints one row per (variant, seed): seconds, divergences, the worst r_hat and the
smallest bulk and tail ESS over the population parameters (with the parameter), bulk
ESS per second and per 1,000 gradient evaluations, and last the ratio of the median
bulk ESS per second of the chapter's model to the default's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import pandas as pd


def worst(ds, largest: bool):
    """(value, 'name[coords]') of the smallest (or largest) entry of a Dataset."""
    found = []
    for name in ds.data_vars:
        s = ds[name].to_series().dropna()
        if len(s):
            idx = s.idxmax() if largest else s.idxmin()
            found.append((float(s[idx]), f"{name}{list(idx) if isinstance(idx, tuple) else [idx]}"))
    return max(found) if largest else min(found)


def main(argv: list[str] | None = None) -> int:
    import arviz as az

    from elasticity_lib import products
    from elasticity_lib.data.product_simulation import PRODUCT_SEED, ProductMarketConfig, simulate_products
    from elasticity_lib.inference import fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4242, 7, 20261128, 11])
    parser.add_argument("--draws", type=int, default=None, help="draws per chain (default: the book's)")
    args = parser.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.ERROR)

    market = simulate_products(ProductMarketConfig(), seed=PRODUCT_SEED)
    data = products.prepare_product_data(market.table(), promotions=["deal", "feature"], covariates=["income"])
    variants = {"all store-varying": ({}, {}), "promotion scale 0.2": ({}, {"store_promotion_sd": 0.2}),
                "lifts by product": ({"store_varying": products.BOOK_STORE_VARYING}, {})}
    default_priors = dict(products.PRODUCT_PRIORS)
    rows = []
    for name, (options, priors) in variants.items():
        for seed in args.seeds:
            products.PRODUCT_PRIORS.update({**default_priors, **priors})
            try:
                model = products.build_product_model(data, **options)
            finally:
                products.PRODUCT_PRIORS.update(default_priors)
            overrides = {"random_seed": seed, **({"draws": args.draws} if args.draws else {})}
            start = time.perf_counter()
            idata = fit(model, **overrides)
            seconds = time.perf_counter() - start
            post = idata["posterior"].dataset[products.population_parameters(idata)]
            bulk, tail = az.ess(post, method="bulk"), az.ess(post, method="tail")
            rhat = az.rhat(post)
            steps = float(idata["sample_stats"]["n_steps"].sum()) if "n_steps" in idata["sample_stats"] else np.nan
            (b, b_at), (t, t_at), (r, r_at) = worst(bulk, False), worst(tail, False), worst(rhat, True)
            rows.append({"variant": name, "seed": seed, "seconds": round(seconds, 1),
                         "divergences": int(idata["sample_stats"]["diverging"].sum()), "max r_hat": round(r, 4),
                         "at": r_at, "min bulk ESS": round(b), "bulk at": b_at, "min tail ESS": round(t),
                         "tail at": t_at, "bulk ESS/s": round(b / seconds, 2),
                         "bulk ESS/1k grads": round(1000 * b / steps, 2)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False))
    per_s = table.groupby("variant")["bulk ESS/s"].median()
    print(f"lifts by product / all store-varying, median bulk ESS per second: "
          f"{per_s['lifts by product'] / per_s['all store-varying']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
