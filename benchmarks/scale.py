"""Benchmark of scale: many categories with fit_many, out-of-core statistics, the 10,000-store model.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py                      # everything, full size
    .venv/bin/python benchmarks/scale.py --categories 100 --rows 10000000 --stores 0   # smaller

Part 1 fits ``--categories`` simulated categories of the book's size (one product, 9
regions, about 2,400 rows each; :func:`elasticity_lib.scale.simulate_catalogue`) with
``fit_many`` on a local Dask cluster of ``--workers`` single-threaded processes, and fits
``--sequential`` of the same categories with a loop of today's ``fit`` in this process
(``prepare_data``, ``build_model("multilevel")``, ``fit``, ``convergence_report``,
``elasticity_table``: what ``python -m elasticity_lib fit`` does), both with the book's
sampler settings (4 chains of 1,000 draws after 1,000 tuning steps). It prints wall time,
categories per minute, the share that passed the convergence gates, and the ratio. The
``fit_many`` time includes starting the cluster and compiling the models. Because the
machine may be shared, it also prints the CPU seconds each category took in its worker
and projects the idle-machine time as cluster start + total CPU seconds / workers.

Part 2 writes a Parquet data set of ``--rows`` rows (10,000 stores in 100 regions, files of
5 million rows in row groups of 1 million, written one file at a time to a temporary folder
under ``$TMPDIR`` or ``/tmp``, deleted afterwards; about 1.9 GiB for 100 million rows, and
the run stops if the first file projects more than ``--max-gib``) and computes its per-store and per-region
statistics with :func:`elasticity_lib.data.outofcore.dataset_stats` in a fresh process (Dask's
threaded scheduler, one thread per core), reporting rows per second and the process's peak
resident memory; for comparison ``prepare_data`` reads ``--in-memory-rows`` rows of it into
memory in another fresh process.

Part 3 fits the store-level model at ``--stores`` stores (about 1 million rows; the case of
``benchmarks/inference.py``) with today's configuration (``fit(build_model(...))``: nutpie,
4 chains of 1,000 draws) and the other configurations of :data:`STORE_CONFIGS` (sampler,
parameterisation, chains and draws), in one run, with the diagnostics of each and the
draws its ESS says are needed for a bulk ESS of 400. There is no GPU here; the benchmark
says so.

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
    from elasticity_lib.scale import fit_many, simulate_catalogue, start_client

    catalogue = simulate_catalogue(args.categories, seed=2026)
    names = sorted(catalogue["category"].unique())
    say(f"\n## Part 1: {args.categories} categories, {len(catalogue):,} rows "
        f"({len(catalogue) / args.categories:,.0f} per category)")
    say(f"before: {load()}")
    # today: a loop of fit in one process
    t0, c0 = time.perf_counter(), time.process_time()
    ok = 0
    for name in names[: args.sequential]:
        ok += today_fit(catalogue[catalogue["category"] == name].drop(columns="category"))
    seq_s, seq_cpu = time.perf_counter() - t0, time.process_time() - c0
    say(f"after the loop: {load()}")
    # fit_many on a local cluster (its start is part of the time)
    out = Path(tempfile.mkdtemp(prefix="scale_fit_many_"))
    t0 = time.perf_counter()
    client = start_client(n_workers=args.workers)
    start_s = time.perf_counter() - t0
    try:
        result = fit_many(catalogue, out_dir=out, client=client, progress=not args.no_progress,
                          region_bucket=args.region_bucket)
    finally:
        client.close()
        client.cluster.close()
    many_s = time.perf_counter() - t0
    counts = result.counts()
    summary = result.summary
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
    say(f"fit_many statuses: {counts}; max r_hat {summary['max_rhat'].max():.4f}, min bulk ESS "
        f"{summary['min_ess_bulk'].min():.0f}, min tail ESS {summary['min_ess_tail'].min():.0f}, "
        f"divergences {int(summary['divergences'].sum())}")
    # what an idle machine would take: the CPU time the work needs, spread over the workers
    cpu = summary["cpu_seconds"].astype(float)
    wall = summary["seconds"].astype(float)
    say(f"per category in the workers: wall median {wall.median():.2f} s, CPU median {cpu.median():.2f} s "
        f"(first of each worker, with compiling: {cpu.max():.1f} s CPU); cluster start {start_s:.1f} s")
    projected = start_s + cpu.sum() / args.workers
    say(f"projected on an idle machine (cluster start + CPU seconds / {args.workers} workers): "
        f"fit_many {projected / 60:.1f} min for {args.categories} categories; the loop "
        f"{args.categories * seq_cpu / args.sequential / 60:.1f} min at its CPU time "
        f"({seq_cpu / args.sequential:.1f} s CPU per category, several threads)")
    say(f"after: {load()}")
    return {"ratio": ratio}


# ---------------------------------------------------------------- part 2: statistics out of core

N_STORES, N_REGIONS, FILE_ROWS, GROUP_ROWS = 10_000, 100, 5_000_000, 1_000_000


def write_dataset(folder: Path, n_rows: int, seed: int = 7, max_gib: float = 5.0) -> None:
    """Write the data set one file of ``FILE_ROWS`` rows at a time (memory bounded by one file).

    After the first file, the size of the whole data set is projected from it; above
    ``max_gib`` nothing more is written and the run stops (the caller deletes the folder).
    """
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
        if i == 0:
            projected = (folder / "part-0000.parquet").stat().st_size * n_rows / n / 2**30
            free = shutil.disk_usage(folder).free / 2**30
            if projected > max_gib or projected > 0.8 * free:
                raise SystemExit(f"the data set would take about {projected:.1f} GiB in {folder} "
                                 f"(limit {max_gib} GiB, {free:.0f} GiB free); use fewer --rows or a larger --max-gib")


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
        say(f"writing to {folder} (deleted afterwards), files of {FILE_ROWS:,} rows one at a time")
        write_dataset(folder, args.rows, max_gib=args.max_gib)
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

#: Configurations of the store-level model measured in part 3: (name, likelihood, fit keywords).
#: ``"today"`` is ``fit(build_model("store_multilevel", data))`` as the book runs it.
STORE_CONFIGS = {
    "today": ("marginal", {}),
    "nutpie-2x2000": ("marginal", {"chains": 2, "draws": 2000}),
    "nutpie-2x500-tune500": ("marginal", {"chains": 2, "draws": 500, "tune": 500}),
    "nutpie-2x300-tune300": ("marginal", {"chains": 2, "draws": 300, "tune": 300}),
    "nutpie-2x1000-tune500": ("marginal", {"chains": 2, "draws": 1000, "tune": 500}),
    "numpyro-4x1000": ("marginal", {"nuts_sampler": "numpyro"}),
    "numpyro-2x500-tune500": ("marginal", {"nuts_sampler": "numpyro", "chains": 2, "draws": 500, "tune": 500}),
    "noncentred-nutpie": ("sufficient", {"nuts_sampler": "nutpie"}),
}


def part_stores(args) -> None:
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.data.simulation import SimulationConfig, simulate_market
    from elasticity_lib.inference import convergence_report, fit
    from elasticity_lib.models import build_model
    from elasticity_lib.scale import array_convergence_report

    n_regions = max(2, args.stores // 100)
    config = SimulationConfig(n_regions=n_regions, stores_mu=args.stores / n_regions - 2, time_steps_mu=100.0,
                              store_intercept_sd=0.05, store_elasticity_sd=0.1)
    data = prepare_data(simulate_market(config, seed=5).to_dataframe())
    say(f"\n## Part 3: store-level model, {data.n_stores:,} stores, {data.n_regions} regions, {data.n_obs:,} rows")
    say("no GPU on this machine: CPU only (JAX runs numpyro on the CPU)")
    say(f"configurations: {', '.join(args.store_configs)} (defined in STORE_CONFIGS; 'today' is "
        "fit(build_model('store_multilevel', data)): nutpie, marginal form with store and region effects "
        "integrated out, 4 chains x 1000 draws after 1000 tuning steps, chains 2 at a time on 2 cores)")
    say(f"before: {load()}")
    rows = []
    for name in args.store_configs:
        likelihood, settings = STORE_CONFIGS[name]
        t0 = time.perf_counter()
        idata = fit(build_model("store_multilevel", data, likelihood), **settings)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        r = array_convergence_report(idata) if args.fast_report else convergence_report(idata)
        report_s = time.perf_counter() - t1
        post = idata["posterior"].dataset
        total = post.sizes["chain"] * post.sizes["draw"]
        ok = r.divergences == 0 and r.max_rhat <= 1.01 and r.min_ess_bulk >= 400
        rows.append({"configuration": name, "wall s": wall, "report s": report_s, "divergences": r.divergences,
                     "max r_hat": r.max_rhat, "min bulk ESS": r.min_ess_bulk, "min tail ESS": r.min_ess_tail,
                     "draws": total, "draws for bulk ESS 400": int(np.ceil(400 * total / r.min_ess_bulk)),
                     "passes": ok, "load": os.getloadavg()[0]})
        say(f"  {name}: {wall:.1f} s, {r.divergences} divergences, max r_hat {r.max_rhat:.4f}, min bulk ESS "
            f"{r.min_ess_bulk:.0f} ({r.worst_ess_bulk}), {load()}")
        del idata
    table = pd.DataFrame(rows).set_index("configuration")
    say(table.to_string(float_format=lambda v: f"{v:,.3f}"))
    if "today" in table.index:
        ratio = table.loc["today", "wall s"] / table["wall s"]
        say("ratio today / configuration, wall time: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items() if k != "today"))
        good = table[table["passes"]]
        if len(good):
            best = good["wall s"].idxmin()
            say(f"fastest that passes (0 divergences, r_hat <= 1.01, bulk ESS >= 400): {best}, "
                f"{table.loc['today', 'wall s'] / good.loc[best, 'wall s']:.2f}x faster than today")
    say(f"after: {load()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", type=int, default=1000, help="categories for fit_many (0: skip part 1)")
    parser.add_argument("--sequential", type=int, default=20, help="categories for the loop of today's fit")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes of fit_many")
    parser.add_argument("--rows", type=int, default=100_000_000, help="rows of the Parquet data set (0: skip part 2)")
    parser.add_argument("--max-gib", type=float, default=5.0, help="largest data set part 2 may write (GiB)")
    parser.add_argument("--in-memory-rows", type=int, default=5_000_000, help="rows prepare_data reads into memory")
    parser.add_argument("--stores", type=int, default=10_000, help="stores of the store-level model (0: skip part 3)")
    parser.add_argument("--region-bucket", type=int, default=4,
                        help="fit_many compiles one model per number of regions rounded up to a multiple of this")
    parser.add_argument("--store-configs", nargs="+", default=list(STORE_CONFIGS), choices=list(STORE_CONFIGS),
                        help="configurations of the store-level model to measure (default: all)")
    parser.add_argument("--fast-report", action="store_true",
                        help="part 3: diagnostics with array_convergence_report (same values, faster)")
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
