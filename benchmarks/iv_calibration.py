"""Simulation-based calibration of the instrumental-variable model over many simulated markets.

Usage (from the repository root):

    .venv/bin/python benchmarks/iv_calibration.py                 # the study, 200 markets
    .venv/bin/python benchmarks/iv_calibration.py --n-markets 20  # a quick run

Design: the stores, regions, incomes, cost shifter, promotions and seasons of the market
of the chapter "When prices are not random" (``simulate_priced_market(CHAPTER_SETTING,
seed=CHAPTER_SEED)``); parameters, log prices and log quantities from the prior predictive
of the model with every control (:func:`elasticity_lib.models.instruments.simulate_iv_markets`);
each market fitted with the sufficient form (nutpie, compiled once). Writes, under
``benchmarks/results/``:

- ``iv_calibration.csv``: one row per market and parameter (truth, rank, posterior mean
  and sd, interval hits);
- ``iv_calibration_fits.csv``: one row per market (divergences, seconds);
- ``iv_calibration.json``: settings, machine, date, command, timings, coverage table;
- ``iv_calibration.txt``: the same summary as readable tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from calibration import study_results
from environment import machine, utc_now

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.price_setting import CHAPTER_SEED, CHAPTER_SETTING, simulate_priced_market
from elasticity_lib.models.instruments import CONTROLS, IVConfig, IVDesign, run_iv_sbc
from elasticity_lib.validation.calibration import calibration_checks, coverage_table, rank_uniformity_pvalue

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-markets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2014)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--cores", type=int, default=1, help="threads for nutpie's chains (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.ERROR)

    data = prepare_data(simulate_priced_market(CHAPTER_SETTING, seed=CHAPTER_SEED).to_dataframe())
    design = IVDesign.of(data, IVConfig(controls=CONTROLS))
    start = time.perf_counter()

    def progress(i, n):
        if i % 10 == 0 or i == n:
            print(f"{i}/{n} markets, {time.perf_counter() - start:.0f} s", flush=True)

    result = run_iv_sbc(data, design, args.n_markets, seed=args.seed, draws=args.draws, tune=args.tune,
                        cores=args.cores, progress=progress)
    wall = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    result.ranks.to_csv(args.out / "iv_calibration.csv", index=False, float_format="%.6g")
    result.fits.to_csv(args.out / "iv_calibration_fits.csv", index=False, float_format="%.4g")
    cov = coverage_table(result.ranks)
    cov_each = coverage_table(result.ranks, by="parameter")
    pvalues = {name: rank_uniformity_pvalue(g["rank"].to_numpy(), result.n_ranked)
               for name, g in result.ranks.groupby("parameter", sort=False)}
    summary = {
        "study": "simulation-based calibration of the instrumental-variable model (sufficient form, every control)",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": utc_now(),
        "machine": machine(),
        "design": "simulate_priced_market(CHAPTER_SETTING, seed=CHAPTER_SEED): stores, regions, incomes, "
                  "cost shifter, promotions and seasons held fixed",
        **study_results(result, wall),
    }
    (args.out / "iv_calibration.json").write_text(json.dumps(summary, indent=2) + "\n")
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
        f"divergences: {summary['divergences']['total']} in {summary['divergences']['markets_with_any']} markets",
        "",
        "coverage (share of markets whose interval contains the truth)",
        cov.round(3).to_string(),
        "",
        "by parameter, with the chi-square p-value of uniform ranks (20 bins)",
        cov_each.assign(rank_p=[pvalues[p] for p in cov_each.index]).round(3).to_string(),
    ]
    text = "\n".join(lines) + "\n"
    (args.out / "iv_calibration.txt").write_text(text)
    print(text)
    # one test per parameter (coverage from both sides and uniform ranks, Bonferroni over all):
    # the pooled rows share markets, so their binomial standard errors understate the noise
    checks = calibration_checks(result.ranks, result.n_ranked, false_alarm=1e-3)
    print("calibration checks (false alarm 1e-3 in all):",
          "all pass" if checks["ok"].all() else f"fail: {list(checks.index[~checks['ok']])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
