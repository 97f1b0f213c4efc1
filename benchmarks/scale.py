"""Benchmark of scale: many categories with fit_many, out-of-core statistics, the 10,000-store model.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py                      # everything, full size
    .venv/bin/python benchmarks/scale.py --categories 100 --rows 10000000 --stores 0   # smaller

Part 1 fits ``--categories`` simulated categories of the book's size (one product, 9
regions, about 2,000 rows each; :func:`elasticity_lib.scale.simulate_catalogue`) with
``fit_many`` on a local Dask cluster of ``--workers`` single-threaded processes, and fits
``--sequential`` of the same categories with a loop of today's ``fit`` in this process
(``prepare_data``, ``build_model("multilevel")``, ``fit``, ``convergence_report``,
``elasticity_table``: what ``python -m elasticity_lib fit`` does), both with the book's
sampler settings (4 chains of 1,000 draws after 1,000 tuning steps). It prints wall time,
categories per minute, the share that passed the convergence gates, and the ratio. The
``fit_many`` time includes starting the cluster and compiling the models.

Part 2 writes a Parquet data set of ``--rows`` rows (10,000 stores in 100 regions, files of
5 million rows in row groups of 1 million) and computes its per-store and per-region
statistics with :func:`elasticity_lib.data.outofcore.dataset_stats` in a fresh process (Dask's
threaded scheduler, one thread per core), reporting rows per second and the process's peak
resident memory; for comparison ``prepare_data`` reads ``--in-memory-rows`` rows of it into
memory in another fresh process.

Part 3 fits the store-level model at ``--stores`` stores (about 1 million rows; the case of
``benchmarks/inference.py``) with today's configuration (``fit(build_model(...))``: nutpie,
4 chains of 1,000 draws) and with one chain per core and as many draws in all, in one run.

The machine is shared with other jobs while this runs, so every table is headed by the
load average (1, 5 and 15 minutes) before and after. The output is also written to
``benchmarks/results/scale.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from environment import cpu_name, format_load

RESULTS = Path(__file__).resolve().parent / "results" / "scale.txt"
LINES: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


def load() -> str:
    return "load average " + format_load(digits=1, sep=" ")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- part 1: many categories

def today_fit(table: pd.DataFrame) -> bool:
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.inference import convergence_report, fit
    from elasticity_lib.models import build_model
    from elasticity_lib.workflow import elasticity_table

    data = prepare_data(table)
    idata = fit(build_model("multilevel", data))
    report = convergence_report(idata)
    elasticity_table(idata, data, report)
    return report.ok()


def part_fits(args) -> dict:
    from elasticity_lib.scale import fit_many, simulate_catalogue

    catalogue = simulate_catalogue(args.categories, seed=2026)
    names = sorted(catalogue["category"].unique())
    say(f"\n## Part 1: {args.categories} categories, {len(catalogue):,} rows "
        f"({len(catalogue) / args.categories:,.0f} per category)")
    say(f"before: {load()}")
    # today: a loop of fit in one process
    t0 = time.perf_counter()
    ok = 0
    for name in names[: args.sequential]:
        ok += today_fit(catalogue[catalogue["category"] == name].drop(columns="category"))
    seq_s = time.perf_counter() - t0
    # fit_many on a local cluster
    out = Path(tempfile.mkdtemp(prefix="scale_fit_many_"))
    t0 = time.perf_counter()
    result = fit_many(catalogue, out_dir=out, n_workers=args.workers, progress=not args.no_progress)
    many_s = time.perf_counter() - t0
    counts = result.counts()
    shutil.rmtree(out, ignore_errors=True)
    rows = [
        {"approach": "loop of today's fit (1 process)", "categories": args.sequential, "wall s": seq_s,
         "per category s": seq_s / args.sequential, "categories/min": 60 * args.sequential / seq_s,
         "converged": f"{ok}/{args.sequential}"},
        {"approach": f"fit_many ({args.workers} workers)", "categories": args.categories, "wall s": many_s,
         "per category s": many_s / args.categories, "categories/min": 60 * args.categories / many_s,
         "converged": f"{counts.get('ok', 0)}/{args.categories}"},
    ]
    table = pd.DataFrame(rows).set_index("approach")
    say(table.to_string(float_format=lambda v: f"{v:,.2f}"))
    ratio = table["categories/min"].iloc[1] / table["categories/min"].iloc[0]
    say(f"ratio fit_many / loop of fit, categories per minute: {ratio:.1f}x")
    say(f"time for {args.categories} categories: fit_many {many_s / 60:.1f} min; "
        f"the loop at its measured rate {args.categories * seq_s / args.sequential / 60:.1f} min")
    say(f"fit_many statuses: {counts}")
    say(f"after: {load()}")
    return {"ratio": ratio}


# ---------------------------------------------------------------- part 2: statistics out of core

N_STORES, N_REGIONS, FILE_ROWS, GROUP_ROWS = 10_000, 100, 5_000_000, 1_000_000


def write_dataset(folder: Path, n_rows: int, seed: int = 7) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    income = rng.gamma(5.0, 1.0, N_REGIONS) + 1.0
    store_region = rng.integers(0, N_REGIONS, N_STORES)
    store_alpha = rng.normal(1.0, 0.2, N_STORES)
    store_beta = rng.normal(-1.0, 0.3, N_STORES)
    written = 0
    for i in range((n_rows + FILE_ROWS - 1) // FILE_ROWS):
        n = min(FILE_ROWS, n_rows - written)
        store = rng.integers(0, N_STORES, n)
        price = np.exp(rng.normal(0.4, 0.25, n))
        quantity = np.exp(store_alpha[store] + store_beta[store] * np.log(price) + rng.normal(0, 0.3, n))
        region = store_region[store]
        table = pa.table({"region_id": region, "store_id": store, "price": price, "quantities": quantity,
                          "median_income": income[region]})
        pq.write_table(table, folder / f"part-{i:04d}.parquet", row_group_size=GROUP_ROWS)
        written += n


def stats_child(folder: str, mode: str, n_rows: int) -> None:
    t0 = time.perf_counter()
    if mode == "dask":
        from elasticity_lib.data.outofcore import dataset_stats

        stats = dataset_stats(folder, scheduler="threads")
        rows = stats.n_rows
    else:
        from elasticity_lib.data.prepare import prepare_data

        files = sorted(Path(folder).glob("*.parquet"))
        parts, have = [], 0
        for f in files:
            part = pd.read_parquet(f)
            parts.append(part.iloc[: n_rows - have])
            have += len(parts[-1])
            if have >= n_rows:
                break
        data = prepare_data(pd.concat(parts, ignore_index=True))
        data.store_stats  # noqa: B018 - the statistics are what is measured
        data.region_stats  # noqa: B018
        rows = data.n_obs
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows, "peak_mib": peak_rss_mib()}))


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_stats(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="scale_parquet_"))
    try:
        say(f"\n## Part 2: statistics of a Parquet data set of {args.rows:,} rows "
            f"({N_STORES:,} stores, {N_REGIONS} regions; files of {FILE_ROWS:,} rows, row groups of {GROUP_ROWS:,})")
        t0 = time.perf_counter()
        write_dataset(folder, args.rows)
        size = sum(f.stat().st_size for f in folder.glob("*.parquet"))
        say(f"written in {time.perf_counter() - t0:.0f} s, {size / 2**30:.2f} GiB on disk")
        say(f"before: {load()}")
        rows = []
        dask_run = run_child("--stats-child", str(folder), "dask", str(args.rows))
        rows.append({"approach": "dataset_stats (Dask, out of core)", **dask_run})
        small = min(args.in_memory_rows, args.rows)
        mem_run = run_child("--stats-child", str(folder), "memory", str(small))
        rows.append({"approach": "prepare_data (pandas, in memory)", **mem_run})
        table = pd.DataFrame(rows).set_index("approach")
        table["rows/s"] = table["rows"] / table["seconds"]
        table["MiB per million rows"] = table["peak_mib"] / (table["rows"] / 1e6)
        say(table.rename(columns={"peak_mib": "peak MiB"}).to_string(float_format=lambda v: f"{v:,.1f}"))
        say(f"peak memory: out of core {dask_run['peak_mib']:,.0f} MiB for {dask_run['rows']:,} rows; in memory "
            f"{mem_run['peak_mib']:,.0f} MiB for {mem_run['rows']:,} rows, so about "
            f"{mem_run['peak_mib'] / mem_run['rows'] * args.rows / 1024:,.0f} GiB for all {args.rows:,}")
        say(f"after: {load()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- part 3: the store-level model

def part_stores(args) -> None:
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.data.simulation import SimulationConfig, simulate_market
    from elasticity_lib.inference import convergence_report, fit
    from elasticity_lib.models import build_model

    n_regions = max(2, args.stores // 100)
    config = SimulationConfig(n_regions=n_regions, stores_mu=args.stores / n_regions - 2, time_steps_mu=100.0,
                              store_intercept_sd=0.05, store_elasticity_sd=0.1)
    data = prepare_data(simulate_market(config, seed=5).to_dataframe())
    say(f"\n## Part 3: store-level model, {data.n_stores:,} stores, {data.n_regions} regions, {data.n_obs:,} rows")
    say(f"before: {load()}")
    cores = os.cpu_count() or 1
    layouts = [("today: 4 chains x 1000 draws", {}),
               (f"{cores} chains x {4000 // cores} draws", {"chains": cores, "draws": 4000 // cores})]
    rows = []
    for name, settings in layouts:
        t0 = time.perf_counter()
        idata = fit(build_model("store_multilevel", data), **settings)
        wall = time.perf_counter() - t0
        r = convergence_report(idata)
        rows.append({"configuration": name, "wall s": wall, "divergences": r.divergences, "max r_hat": r.max_rhat,
                     "min bulk ESS": r.min_ess_bulk, "bulk ESS/s": r.min_ess_bulk / wall})
    table = pd.DataFrame(rows).set_index("configuration")
    say(table.to_string(float_format=lambda v: f"{v:,.3f}"))
    say(f"ratio today / other, wall time: {table['wall s'].iloc[0] / table['wall s'].iloc[1]:.2f}x")
    say(f"after: {load()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", type=int, default=1000, help="categories for fit_many (0: skip part 1)")
    parser.add_argument("--sequential", type=int, default=20, help="categories for the loop of today's fit")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes of fit_many")
    parser.add_argument("--rows", type=int, default=100_000_000, help="rows of the Parquet data set (0: skip part 2)")
    parser.add_argument("--in-memory-rows", type=int, default=5_000_000, help="rows prepare_data reads into memory")
    parser.add_argument("--stores", type=int, default=10_000, help="stores of the store-level model (0: skip part 3)")
    parser.add_argument("--no-progress", action="store_true", help="hide fit_many's progress bar")
    parser.add_argument("--stats-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stats_child:
        folder, mode, n = args.stats_child
        stats_child(folder, mode, int(n))
        return 0
    say(f"# benchmarks/scale.py, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    say(f"machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; the machine is shared: see the load averages")
    say(f"arguments: {' '.join(sys.argv[1:]) or '(defaults)'}")
    if args.categories:
        part_fits(args)
    if args.rows:
        part_stats(args)
    if args.stores:
        part_stores(args)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
