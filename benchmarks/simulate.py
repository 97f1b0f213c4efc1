"""Benchmark: simulating a market with one probabilistic-library call per store vs one vectorised generator.

The reference approach calls ``pm.draw`` for every region (store count, income, region
effects) and, inside it, for every store (number of time steps, prices, log quantities).
Each call builds and compiles a small graph, so the cost grows with the number of stores.
``simulate_market`` draws every quantity for all regions, stores and rows at once from one
NumPy generator.

Both produce a validated :class:`~elasticity_lib.data.entities.Market` from the same
configuration (the reference values by default) and are timed end to end. Imports and
one untimed warm-up run of each approach (which compiles and caches what can be cached)
are left out, so the reference is timed at its most favourable. Prints a table of
medians over repeats and, on its last line, ``speedup: <ratio>`` (reference median over
vectorised median).

Usage: ``python benchmarks/simulate.py [--ref-repeats 3] [--vec-repeats 20] [--seed N]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import time
import warnings

import numpy as np
import pymc as pm
from environment import machine

from elasticity_lib.data.entities import Market, Region, Sku, Store
from elasticity_lib.data.simulation import REFERENCE_SEED, SimulationConfig, simulate_market, store_deviation_price

warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")


def reference_simulate(config: SimulationConfig, seed: int) -> Market:
    """The reference's call pattern: ``pm.draw`` once per region quantity and per store series.

    Region effects are drawn once per region (the reference drew them at every time step,
    which only adds calls); store deviations are drawn per store when their sds are positive,
    independent at the log of ``store_deviation_price`` as in ``simulate_market``.
    """
    c = config
    x_ref = float(np.log(store_deviation_price(c)))
    rng = np.random.default_rng(seed)
    regions = []
    store_id = 0
    for region_id in range(c.n_regions):
        n_stores = int(pm.draw(pm.NegativeBinomial.dist(mu=c.stores_mu, alpha=c.stores_alpha), random_seed=rng)) + c.min_stores
        income = float(pm.draw(pm.Gamma.dist(mu=c.income_mu, sigma=c.income_sigma), random_seed=rng)) + c.income_offset
        alpha = float(pm.draw(pm.Normal.dist(mu=c.intercept_base + c.intercept_income_slope * income, sigma=c.intercept_sd), random_seed=rng))
        beta = float(pm.draw(pm.Normal.dist(mu=c.elasticity_base + c.elasticity_income_slope * income, sigma=c.elasticity_sd), random_seed=rng))
        stores = []
        for _ in range(n_stores):
            n_steps = int(pm.draw(pm.NegativeBinomial.dist(mu=c.time_steps_mu, alpha=c.time_steps_alpha), random_seed=rng)) + c.min_time_steps
            # deviations independent at the reference log price, as in simulate_market
            dev_a = dev_b = 0.0
            if c.store_intercept_sd > 0:
                dev_a = float(pm.draw(pm.Normal.dist(mu=0.0, sigma=c.store_intercept_sd), random_seed=rng))
            if c.store_elasticity_sd > 0:
                dev_b = float(pm.draw(pm.Normal.dist(mu=0.0, sigma=c.store_elasticity_sd), random_seed=rng))
            store_alpha = alpha + dev_a - x_ref * dev_b
            store_beta = beta + dev_b
            prices = pm.draw(pm.Gamma.dist(mu=c.price_mu, sigma=c.price_sigma), draws=n_steps, random_seed=rng)
            log_q = pm.draw(pm.Normal.dist(mu=store_alpha + store_beta * np.log(prices), sigma=c.noise_sd), random_seed=rng)
            sku = Sku(id=c.item_id, prices=tuple(prices.tolist()), quantities=tuple(np.exp(log_q).tolist()))
            stores.append(Store(id=store_id, skus=(sku,)))
            store_id += 1
        regions.append(Region(id=region_id, median_income=income, stores=tuple(stores)))
    return Market(regions=tuple(regions))


def time_runs(fn, repeats: int) -> tuple[list[float], Market]:
    times = []
    market = None
    for _ in range(repeats):
        start = time.perf_counter()
        market = fn()
        times.append(time.perf_counter() - start)
    return times, market


def size(market: Market) -> tuple[int, int, int]:
    n_stores = sum(len(r.stores) for r in market.regions)
    n_rows = sum(len(k.prices) for r in market.regions for s in r.stores for k in s.skus)
    return len(market.regions), n_stores, n_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--vec-repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=REFERENCE_SEED)
    args = parser.parse_args()
    config = SimulationConfig()

    print("# Market simulation: per-store pm.draw (reference) vs vectorised NumPy (simulate_market)")
    print(f"# date: {dt.date.today().isoformat()}")
    info = machine()
    print(f"# machine: {info['platform']}, {info['processor']}, {info['cpus']} CPUs")
    print(f"# python {platform.python_version()}, numpy {np.__version__}, pymc {pm.__version__}")
    print(f"# config: reference values, seed {args.seed}; imports and one warm-up run of each approach excluded")

    # warm-up: compile and cache what each approach can reuse (a one-region market)
    warm = SimulationConfig(n_regions=1)
    reference_simulate(warm, args.seed)
    simulate_market(warm, seed=args.seed)

    ref_times, ref_market = time_runs(lambda: reference_simulate(config, args.seed), args.ref_repeats)
    vec_times, vec_market = time_runs(lambda: simulate_market(config, seed=args.seed), args.vec_repeats)

    rows = [("reference (pm.draw per store)", ref_times, ref_market), ("simulate_market (vectorised)", vec_times, vec_market)]
    print()
    print(f"| {'approach':<30} | {'repeats':>7} | {'median s':>10} | {'min s':>10} | {'max s':>10} | {'regions':>7} | {'stores':>6} | {'rows':>6} |")
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 12}|{'-' * 12}|{'-' * 12}|{'-' * 9}|{'-' * 8}|{'-' * 8}|")
    for name, times, market in rows:
        n_regions, n_stores, n_rows = size(market)
        print(
            f"| {name:<30} | {len(times):>7} | {statistics.median(times):>10.4f} | {min(times):>10.4f} | "
            f"{max(times):>10.4f} | {n_regions:>7} | {n_stores:>6} | {n_rows:>6} |"
        )
    print()
    n_calls = 4 * len(ref_market.regions) + 3 * size(ref_market)[1]
    print(f"# reference pm.draw calls per run: {n_calls}; vectorised generator calls per run: 9")
    print(f"speedup: {statistics.median(ref_times) / statistics.median(vec_times):.0f}")


if __name__ == "__main__":
    main()
