"""Benchmark of the multi-product model: the marginal form against the row-level model.

Usage (from the repository root)::

    .venv/bin/python benchmarks/multiproduct.py                         # orange juice if installed, else simulated
    .venv/bin/python benchmarks/multiproduct.py --data simulated        # 11 products, 84 stores, ~106k rows
    .venv/bin/python benchmarks/multiproduct.py --size small            # a quick check of the script

Both fits run in this process on the same data with the same sampler settings (NumPyro's
NUTS through ``elasticity_lib.fit``: chains, draws, tuning steps, target acceptance and
seed):

(a) ``rows``: the row-level model with every store's coefficient vector sampled
    (non-centred), one Normal term per row;
(b) ``marginal``: the book's fast form, store vectors integrated out analytically from
    per-(store, product) sufficient statistics and drawn exactly afterwards.

Each wall time covers building, compiling, sampling and (for the marginal form) the
exact draws of the store vectors. The table gives the wall time, divergences, the largest
r_hat and the smallest bulk and tail ESS over the population parameters (coefficient
means and covariate slopes, the elasticity matrix, store sds, residual sds), and whether
the fit meets the book's gates (0 divergences, r_hat <= 1.01, bulk ESS >= 400). The last
line is ``multiproduct speedup: X``, the ratio of the wall times (a)/(b). ``--skip-rows``
times the marginal form alone (no ratio). The output also goes to
``benchmarks/results/multiproduct.txt`` and ``.json`` with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import machine, utc_now  # noqa: E402

import elasticity_lib as el  # noqa: E402
from elasticity_lib.data.product_simulation import ProductMarketConfig, simulate_products  # noqa: E402
from elasticity_lib.models.products import population_parameters, prepare_product_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: A simulated category the size of the orange-juice panel: 11 brands, 84 stores, 115 weeks.
SIZES = {
    "oj": ProductMarketConfig(n_products=11, n_tiers=3, n_regions=7, stores_per_region=12, n_weeks=115,
                              substitute_within_tier=0.3, substitute_across_tiers=0.05),
    "small": ProductMarketConfig(n_products=3, n_tiers=2, n_regions=2, stores_per_region=5, n_weeks=30),
}


def load(kind: str, size: str, covariates: list[str]):
    """The table and a description; ``kind`` is 'orange-juice', 'simulated' or 'auto'."""
    if kind in ("orange-juice", "auto"):
        try:
            from elasticity_lib.data.orange_juice import load_orange_juice
        except ImportError:
            if kind == "orange-juice":
                raise SystemExit("elasticity_lib.data.orange_juice is not installed: run with --data simulated") from None
        else:
            oj = load_orange_juice()
            table = oj.sales.merge(oj.stores, on="store")
            # demographics are matched ignoring case (the package spells them INCOME, EDUC, ...)
            by_lower = {str(c).lower(): c for c in table.columns}
            return table, "orange juice (bayesm orangeJuice)", [by_lower.get(c.lower(), c) for c in covariates]
    market = simulate_products(SIZES[size], seed=2026)
    return market.table(), f"simulated: {SIZES[size]!r}, seed 2026", ["income"]


def one_fit(data, likelihood: str, settings: dict, store_varying=None) -> dict:
    t0 = time.perf_counter()
    model = el.build_model("multiproduct", data, likelihood, store_varying=store_varying)
    idata = el.fit(model, **settings)
    wall = time.perf_counter() - t0
    report = el.convergence_report(idata, population_parameters(idata))
    return {"likelihood": likelihood, "wall_s": round(wall, 2), "divergences": report.divergences,
            "max_rhat": round(report.max_rhat, 4), "worst_rhat": report.worst_rhat,
            "min_ess_bulk": round(report.min_ess_bulk, 0), "worst_ess_bulk": report.worst_ess_bulk,
            "min_ess_tail": round(report.min_ess_tail, 0),
            "gates_ok": bool(report.divergences == 0 and report.max_rhat <= 1.01 and report.min_ess_bulk >= 400)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["auto", "orange-juice", "simulated"], default="auto")
    parser.add_argument("--size", choices=list(SIZES), default="oj", help="size of the simulated category")
    parser.add_argument("--promotions", nargs="*", default=["deal", "feature"])
    parser.add_argument("--covariates", nargs="*", default=["income"], help="store covariates (orange juice)")
    parser.add_argument("--covariates-on", nargs="*", default=None, metavar="COEFFICIENT",
                        help="store coefficients the covariates shift (default: all; the orange-juice chapter "
                             "uses: intercept own_price)")
    parser.add_argument("--store-varying", nargs="*", default=None, metavar="COEFFICIENT",
                        help="coefficients that vary by store (default: all; the orange-juice chapter uses: "
                             "intercept own_price)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--skip-rows", action="store_true", help="time the marginal form only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    table, source, covariates = load(args.data, args.size, args.covariates)
    data = prepare_product_data(table, promotions=args.promotions, covariates=covariates,
                                covariate_coefficients=args.covariates_on or None)
    settings = {"nuts_sampler": "numpyro", "chains": args.chains, "draws": args.draws, "tune": args.tune,
                "random_seed": args.seed, "target_accept": el.SAMPLING_DEFAULTS["target_accept"]}
    store_varying = args.store_varying or None
    results = [one_fit(data, "marginal", settings, store_varying)]
    if not args.skip_rows:
        results.insert(0, one_fit(data, "rows", settings, store_varying))
    cols = ["likelihood", "wall_s", "divergences", "max_rhat", "min_ess_bulk", "min_ess_tail", "gates_ok"]
    header = f"{'form':<10}{'wall s':>10}{'div':>6}{'max r_hat':>11}{'min ESS bulk':>14}{'min ESS tail':>14}  gates"
    lines = [
        "multi-product model: row-level (store vectors sampled) vs marginal (integrated out), NumPyro",
        f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}",
        f"date: {utc_now()}",
        f"machine: {machine()}",
        f"data: {source}; {data.n_products} products, {data.n_stores} stores, {data.n_obs} rows; "
        f"promotions {data.promotions}, covariates {data.covariates} on {data.shifted_coefficients}; "
        f"store-varying: {store_varying or 'all'}",
        f"settings: {settings}",
        "",
        header,
    ]
    for r in results:
        lines.append(f"{r['likelihood']:<10}{r['wall_s']:>10.1f}{r['divergences']:>6}{r['max_rhat']:>11.4f}"
                     f"{r['min_ess_bulk']:>14.0f}{r['min_ess_tail']:>14.0f}  {'ok' if r['gates_ok'] else 'FAIL'}")
    for r in results:
        lines.append(f"  {r['likelihood']}: worst r_hat {r['worst_rhat']}, worst bulk ESS {r['worst_ess_bulk']}")
    speedup = results[0]["wall_s"] / results[-1]["wall_s"] if len(results) == 2 else None
    if speedup is not None:
        lines.append(f"multiproduct speedup: {speedup:.1f}")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "multiproduct" if args.size == "oj" or args.data == "orange-juice" else f"multiproduct_{args.size}"
    (args.out / f"{stem}.txt").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"source": source, "settings": settings, "results": [{k: r[k] for k in r} for r in results],
         "speedup": speedup, "machine": machine(), "n_rows": data.n_obs, "columns": cols,
         "date": utc_now()}, indent=2) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
