"""Simulation-based calibration of the multilevel, correlated and three-level models over many simulated markets.

Usage (from the repository root):

    .venv/bin/python benchmarks/calibration.py                          # the multilevel study, 1,000 markets
    .venv/bin/python benchmarks/calibration.py --kind correlated        # the correlated model, 200 markets
    .venv/bin/python benchmarks/calibration.py --kind store_multilevel  # the three-level model, 200 markets
    .venv/bin/python benchmarks/calibration.py --kind all               # the three studies, one after the other
    .venv/bin/python benchmarks/calibration.py --n-markets 50           # a quick run

Design: the reference market's stores, regions, prices and incomes
(``simulate_market(seed=REFERENCE_SEED)``); parameters and log quantities from the prior
predictive of the model's row-level form; each market fitted with the marginal form
(nutpie; the settings of :data:`STUDIES`, chosen so that each study takes about a quarter
of an hour on the two-core benchmark machine). Writes, under ``benchmarks/results/``, with
the stem ``calibration`` for the multilevel model and ``calibration_<kind>`` for the others:

- ``<stem>.csv``: one row per market and parameter (truth, rank, posterior mean and
  sd, interval hits);
- ``<stem>_fits.csv``: one row per market (divergences, seconds);
- ``<stem>.json``: settings, machine, date, command, timings, coverage table;
- ``<stem>.txt``: the same summary as readable tables.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from environment import load_average, machine, utc_now

from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.data.simulation import REFERENCE_SEED, simulate_market
from elasticity_lib.validation.calibration import (
    SBC_TARGETS,
    coverage_table,
    rank_uniformity_pvalue,
    run_sbc,
    study_stem,
)

RESULTS = Path(__file__).resolve().parent / "results"

#: Markets and sampler settings per model kind. The multilevel study keeps the book's
#: settings (4 chains of 1,000 draws after 1,000 tuning steps). The correlated model keeps
#: the target acceptance of 0.99 that its funnel needs (KIND_SAMPLING); it and the
#: three-level model sample 2 chains of 500 draws after 500 tuning steps. Ranks use 199
#: thinned draws either way (one in five of 1,000). The settings were chosen from per-market
#: times so that 200 markets take about a quarter of an hour on two otherwise idle cores;
#: a run on a busy machine takes longer, and its summary records the load average.
STUDIES: dict[str, dict] = {
    "multilevel": {"n_markets": 1000, "draws": 1000, "tune": 1000, "chains": 4, "target_accept": 0.9},
    "correlated": {"n_markets": 200, "draws": 500, "tune": 500, "chains": 2, "target_accept": 0.99},
    "store_multilevel": {"n_markets": 200, "draws": 500, "tune": 500, "chains": 2, "target_accept": 0.9},
}



def study_results(result, wall: float) -> dict:
    """The fields every SBC study's JSON shares: settings, timings, divergences, coverage and rank p-values."""
    cov, cov_each = coverage_table(result.ranks), coverage_table(result.ranks, by="parameter")
    pvalues = {p: rank_uniformity_pvalue(g["rank"].to_numpy(), result.n_ranked)
               for p, g in result.ranks.groupby("parameter", sort=False)}
    return {
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

def study(kind: str, n_markets: int | None, seed: int, cores: int, out: Path) -> bool:
    """Run one kind's study, write its four files and print its summary; True if 94% coverage is within 3 points."""
    settings = dict(STUDIES[kind])
    n_markets = n_markets or settings.pop("n_markets")
    settings.pop("n_markets", None)
    design = prepare_data(simulate_market(seed=REFERENCE_SEED).to_dataframe())
    start = time.perf_counter()

    def progress(i, n):
        if i % 10 == 0 or i == n:
            print(f"{kind}: {i}/{n} markets, {time.perf_counter() - start:.0f} s", flush=True)

    result = run_sbc(design, n_markets, kind=kind, seed=seed, cores=cores, progress=progress, **settings)
    wall = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    name = study_stem(kind)
    result.ranks.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
    result.fits.to_csv(out / f"{name}_fits.csv", index=False, float_format="%.4g")

    cov = coverage_table(result.ranks)
    cov_each = coverage_table(result.ranks, by="parameter")
    pvalues = {p: rank_uniformity_pvalue(g["rank"].to_numpy(), result.n_ranked)
               for p, g in result.ranks.groupby("parameter", sort=False)}
    model_names = {"multilevel": "the multilevel model", "correlated": "the correlated model",
                   "store_multilevel": "the three-level model"}
    summary = {
        "study": f"simulation-based calibration of {model_names[kind]} (marginal form)",
        "kind": kind,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": utc_now(),
        "machine": machine(),
        "load_average_at_end": load_average(),
        "design": "simulate_market(seed=REFERENCE_SEED): stores, regions, prices and incomes held fixed",
        **study_results(result, wall),
    }
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")

    rs = result.settings
    lines = [
        summary["study"],
        f"command: {summary['command']}",
        f"date: {summary['date']}",
        f"machine: {summary['machine']['processor']}, {summary['machine']['cpus']} CPUs, "
        f"{summary['machine']['platform']}, Python {summary['machine']['python']}; "
        f"load average at the end {summary['load_average_at_end'][1]:.1f} (5 min)",
        f"markets: {n_markets}, seed {seed}; draws {rs['draws']} x {rs['chains']} chains (tune {rs['tune']}, "
        f"target acceptance {rs['target_accept']}); ranks among {result.n_ranked} thinned draws",
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
    (out / f"{name}.txt").write_text(text)
    print(text)
    within = np.abs(cov["cover94"] - 0.94) <= 0.03
    print("94% intervals within 94% +/- 3%:", "yes" if within.all() else f"no: {list(cov.index[~within])}")
    return bool(within.all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=[*SBC_TARGETS, "all"], default="multilevel")
    parser.add_argument("--n-markets", type=int, default=None,
                        help="markets per study (default: the study's own, see STUDIES)")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--cores", type=int, default=1, help="threads for nutpie's chains (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kinds = list(SBC_TARGETS) if args.kind == "all" else [args.kind]
    for kind in kinds:
        study(kind, args.n_markets, args.seed, args.cores, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
