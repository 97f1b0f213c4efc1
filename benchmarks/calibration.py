"""Simulation-based calibration of the multilevel model over many simulated markets.

Usage (from the repository root):

    .venv/bin/python benchmarks/calibration.py                 # the full study, 1,000 markets
    .venv/bin/python benchmarks/calibration.py --n-markets 50  # a quick run

Design: the reference market's stores, regions, prices and incomes
(``simulate_market(seed=REFERENCE_SEED)``); parameters and log quantities from the prior
predictive of the row-level multilevel model; each market fitted with the marginal form
(nutpie, the book's sampler settings). Writes, under ``benchmarks/results/``:

- ``calibration.csv``: one row per market and parameter (truth, rank, posterior mean and
  sd, interval hits);
- ``calibration_fits.csv``: one row per market (divergences, seconds);
- ``calibration.json``: settings, machine, date, command, timings, coverage table;
- ``calibration.txt``: the same summary as readable tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from elasticity_lib.calibration import coverage_table, rank_uniformity_pvalue, run_sbc
from elasticity_lib.prepare import prepare_data
from elasticity_lib.simulation import REFERENCE_SEED, simulate_market

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-markets", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--cores", type=int, default=1, help="threads for nutpie's chains (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    design = prepare_data(simulate_market(seed=REFERENCE_SEED).to_dataframe())
    start = time.perf_counter()

    def progress(i, n):
        if i % 50 == 0 or i == n:
            print(f"{i}/{n} markets, {time.perf_counter() - start:.0f} s", flush=True)

    result = run_sbc(design, args.n_markets, seed=args.seed, cores=args.cores, progress=progress)
    wall = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    result.ranks.to_csv(args.out / "calibration.csv", index=False, float_format="%.6g")
    result.fits.to_csv(args.out / "calibration_fits.csv", index=False, float_format="%.4g")

    cov = coverage_table(result.ranks)
    cov_each = coverage_table(result.ranks, by="parameter")
    pvalues = {name: rank_uniformity_pvalue(g["rank"].to_numpy(), result.n_ranked)
               for name, g in result.ranks.groupby("parameter", sort=False)}
    summary = {
        "study": "simulation-based calibration of the multilevel model (marginal form)",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "design": "simulate_market(seed=REFERENCE_SEED): stores, regions, prices and incomes held fixed",
        "settings": result.settings,
        "compile_seconds": round(result.compile_seconds, 2),
        "seconds_per_market": {"mean": round(float(result.fits["seconds"].mean()), 3),
                               "median": round(float(result.fits["seconds"].median()), 3)},
        "wall_seconds": round(wall, 1),
        "divergences": {"total": int(result.fits["divergences"].sum()),
                        "markets_with_any": int((result.fits["divergences"] > 0).sum())},
        "coverage": json.loads(cov.reset_index().to_json(orient="records")),
        "coverage_by_parameter": json.loads(cov_each.reset_index().to_json(orient="records")),
        "rank_uniformity_pvalues": pvalues,
    }
    (args.out / "calibration.json").write_text(json.dumps(summary, indent=2) + "\n")

    lines = [
        summary["study"],
        f"command: {summary['command']}",
        f"date: {summary['date']}",
        f"machine: {summary['machine']['processor']}, {summary['machine']['cpus']} CPUs, "
        f"{summary['machine']['platform']}, Python {summary['machine']['python']}",
        f"markets: {args.n_markets}, seed {args.seed}; draws {result.settings['draws']} x "
        f"{result.settings['chains']} chains (tune {result.settings['tune']}); ranks among "
        f"{result.n_ranked} thinned draws",
        f"compile once: {result.compile_seconds:.1f} s; per market: "
        f"{summary['seconds_per_market']['mean']:.2f} s mean; total {wall:.0f} s",
        f"divergences: {summary['divergences']['total']} in "
        f"{summary['divergences']['markets_with_any']} markets",
        "",
        "coverage (share of markets whose interval contains the truth)",
        cov.round(3).to_string(),
        "",
        "by parameter, with the chi-square p-value of uniform ranks (20 bins)",
        cov_each.assign(rank_p=[pvalues[p] for p in cov_each.index]).round(3).to_string(),
    ]
    text = "\n".join(lines) + "\n"
    (args.out / "calibration.txt").write_text(text)
    print(text)
    within = np.abs(cov["cover94"] - 0.94) <= 0.03
    print("94% intervals within 94% +/- 3%:", "yes" if within.all() else f"no: {list(cov.index[~within])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
