"""Simulation-based calibration of the multi-product model (marginal form) over many simulated markets.

Usage (from the repository root)::

    .venv/bin/python benchmarks/multiproduct_sbc.py                   # 200 markets
    .venv/bin/python benchmarks/multiproduct_sbc.py --n-markets 20    # a quick run
    .venv/bin/python benchmarks/multiproduct_sbc.py --resume          # continue a stopped run

Design: a small category held fixed (``simulate_products`` with 3 products, 10 stores in
2 regions, 30 weeks, one promotion column and store income: prices, promotions and
incomes); parameters and log quantities drawn from the prior predictive of the row-level
form of the model (:func:`pymc.sample_prior_predictive`); each market fitted with the
marginal form, compiled once by nutpie with ``Xᵀy`` and ``yᵀy`` as shared data
(``with_data``), and the store vectors drawn exactly afterwards. The model is the one
chapter 15 fits: intercepts and own-price elasticities vary by store, promotion lifts by
product only (``store_varying`` = :data:`~elasticity_lib.models.products.BOOK_STORE_VARYING`).
Checked: every population parameter (coefficient means and covariate slopes, cross-price
elasticities, store sds, residual sds) and the own-price elasticities of three stores.

``--resume`` reads the files of a stopped run (same settings, checked) and continues
from the first market they lack; the prior draws and per-market seeds do not depend on
where a run starts, so a resumed study equals an uninterrupted one.

Writes under ``benchmarks/results/`` (or ``--out``), rewritten after every market so that
a run stopped early leaves its results so far:

- ``multiproduct_sbc.csv``: one row per market and parameter (truth, rank, posterior mean
  and sd, interval hits);
- ``multiproduct_sbc_fits.csv``: one row per market (divergences, seconds);
- ``multiproduct_sbc.json``: settings, machine, date, command, timings, divergences,
  coverage by parameter group and rank-uniformity p-values.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import machine, utc_now  # noqa: E402

from elasticity_lib.data.product_simulation import ProductMarketConfig, simulate_products  # noqa: E402
from elasticity_lib.inference import SAMPLING_DEFAULTS, exact_numba_arithmetic  # noqa: E402
from elasticity_lib.models import ModelSpec  # noqa: E402
from elasticity_lib.models.products import (  # noqa: E402
    BOOK_STORE_VARYING,
    add_store_effects,
    build_product_model,
    prepare_product_data,
)
from elasticity_lib.validation.calibration import (  # noqa: E402
    coverage_table,
    interval_covers,
    rank_uniformity_pvalue,
    sbc_rank,
    thin_draws,
)

RESULTS = Path(__file__).resolve().parent / "results"
DESIGN = ProductMarketConfig(n_products=3, n_tiers=2, n_regions=2, stores_per_region=5, n_weeks=30)
DESIGN_SEED = 2026
#: stores whose own-price elasticities are ranked too
RANKED_STORES = (0, 4, 9)
#: settings that must match for --resume to continue a run
RESUME_KEYS = ("n_markets", "seed", "fit_seed", "draws", "tune", "chains", "n_ranked", "store_varying")
RANK_COLUMNS = ["market", "parameter", "truth", "rank", "post_mean", "post_sd", "in50", "in94"]
FIT_COLUMNS = ["market", "divergences", "seconds"]


def design_data():
    market = simulate_products(DESIGN, seed=DESIGN_SEED)
    return prepare_product_data(market.table(), promotions=["deal"], covariates=["income"])


def flatten(post_or_prior, data) -> dict[str, np.ndarray]:
    """The checked quantities as ``{name: (n_samples,)}`` from a posterior or prior Dataset."""
    def values(name):
        da = post_or_prior[name]
        return da.transpose("chain", "draw", ...).values.reshape(-1, *da.shape[2:])

    out = {}
    coefs, products = data.coefficients, data.products
    cm, cc = values("coef_mean"), values("coef_covariate")
    sd, sigma = values("store_sd"), values("sigma")
    sd_names = [str(c) for c in post_or_prior["store_sd"][post_or_prior["store_sd"].dims[-1]].values]
    e = values("elasticity")
    for k, p in enumerate(products):
        for d, c in enumerate(coefs):
            out[f"coef_mean[{p},{c}]"] = cm[:, k, d]
            out[f"coef_income[{p},{c}]"] = cc[:, k, d, 0]
        for d, c in enumerate(sd_names):
            out[f"store_sd[{p},{c}]"] = sd[:, k, d]
        out[f"sigma[{p}]"] = sigma[:, k]
        for j, q in enumerate(products):
            if j != k:
                out[f"cross[{p},{q}]"] = e[:, k, j]
    own = values("store_coef")[..., 1]
    for s in RANKED_STORES:
        for k, p in enumerate(products):
            out[f"store_own[{data.stores[s]},{p}]"] = own[:, s, k]
    return out


def resume(args, settings, names) -> tuple[list, list, float]:
    """Rows, fits and wall seconds of the stopped run in ``args.out``, checked against ``settings``.

    Keeps the markets that have both their ranks and their fit recorded and every checked
    parameter; raises ``SystemExit`` naming what does not match.
    """
    paths = {n: args.out / f"multiproduct_sbc{n}" for n in (".csv", "_fits.csv", ".json")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise SystemExit(f"--resume: no stopped run to continue, missing {missing}")
    previous = json.loads(paths[".json"].read_text())
    differ = {k: (previous["settings"].get(k), settings[k]) for k in RESUME_KEYS
              if previous["settings"].get(k) != settings[k]}
    if differ:
        raise SystemExit(f"--resume: settings differ from the stopped run (stopped, now): {differ}")
    ranks = pd.read_csv(paths[".csv"])[RANK_COLUMNS]
    fits = pd.read_csv(paths["_fits.csv"])[FIT_COLUMNS]
    unknown = sorted(set(ranks["parameter"]) - set(names))
    if unknown:
        raise SystemExit(f"--resume: the stopped run checked other parameters, e.g. {unknown[:3]}")
    done = sorted(set(fits["market"]) & set(ranks["market"]))
    if done != list(range(len(done))):
        raise SystemExit(f"--resume: the stopped run's markets are not 0..n-1: {done[:5]}...")
    complete = ranks[ranks["market"].isin(done)].groupby("market")["parameter"].nunique()
    if (complete != len(names)).any():
        raise SystemExit(f"--resume: markets {list(complete.index[complete != len(names)])} lack parameters")
    ranks, fits = ranks[ranks["market"].isin(done)].copy(), fits[fits["market"].isin(done)]
    for col in ("in50", "in94"):
        ranks[col] = ranks[col].astype(bool)
    return ([tuple(r) for r in ranks.itertuples(index=False)], [tuple(r) for r in fits.itertuples(index=False)],
            float(previous.get("wall_seconds", 0.0)))


def summarise(rows, fits, settings, start, args, earlier_seconds: float = 0.0) -> dict:
    ranks = pd.DataFrame(rows, columns=RANK_COLUMNS)
    ranks["in94_hdi"] = ranks["in94"]  # coverage_table reads it; central intervals only here
    ranks["group"] = ranks["parameter"].str.replace(r"\[.*\]$", "", regex=True)
    fits = pd.DataFrame(fits, columns=FIT_COLUMNS)
    args.out.mkdir(parents=True, exist_ok=True)
    ranks.to_csv(args.out / "multiproduct_sbc.csv", index=False, float_format="%.6g")
    fits.to_csv(args.out / "multiproduct_sbc_fits.csv", index=False, float_format="%.6g")
    cov = coverage_table(ranks).drop(columns="cover94_hdi")
    pvalues = {name: rank_uniformity_pvalue(g["rank"].to_numpy(), settings["n_ranked"])
               for name, g in ranks.groupby("group", sort=False)}
    pvalues_each = [rank_uniformity_pvalue(g["rank"].to_numpy(), settings["n_ranked"])
                    for _, g in ranks.groupby("parameter", sort=False)]
    summary = {
        "study": "simulation-based calibration of the multi-product model (marginal form)",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": utc_now(),
        "machine": machine(),
        "design": f"simulate_products({DESIGN!r}, seed={DESIGN_SEED}), promotions ['deal'], covariates ['income']",
        "settings": settings,
        "markets_done": int(fits.shape[0]),
        "wall_seconds": round(earlier_seconds + time.perf_counter() - start, 1),
        "seconds_per_market": {"mean": round(float(fits["seconds"].mean()), 3),
                               "median": round(float(fits["seconds"].median()), 3)},
        "divergences": {"total": int(fits["divergences"].sum()), "markets_with_any": int((fits["divergences"] > 0).sum())},
        "coverage": json.loads(cov.reset_index().to_json(orient="records")),
        "rank_uniformity_pvalues": pvalues,
        "rank_uniformity_pvalues_by_parameter": {"n": len(pvalues_each), "min": float(min(pvalues_each)),
                                                 "below_0.01": int(sum(p < 0.01 for p in pvalues_each))},
    }
    (args.out / "multiproduct_sbc.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    import nutpie

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-markets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--fit-seed", type=int, default=4242)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--n-ranked", type=int, default=99)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true",
                        help="continue the stopped run in --out from its first missing market (same settings)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    design = design_data()
    with build_product_model(design, "rows", store_varying=BOOK_STORE_VARYING):
        prior = pm.sample_prior_predictive(draws=args.n_markets, random_seed=args.seed)
    truth_post = prior["prior"].dataset
    log_q = prior["prior_predictive"].dataset["log_quantity"].values[0]
    truths = flatten(truth_post, design)
    names = list(truths)
    settings = {"n_markets": args.n_markets, "seed": args.seed, "fit_seed": args.fit_seed, "draws": args.draws,
                "tune": args.tune, "chains": args.chains, "n_ranked": args.n_ranked, "sampler": "nutpie",
                "target_accept": SAMPLING_DEFAULTS["target_accept"], "likelihood": "marginal",
                "store_varying": list(BOOK_STORE_VARYING),
                "n_products": design.n_products, "n_stores": design.n_stores, "n_rows": design.n_obs,
                "n_parameters_checked": len(names)}
    # checked before compiling, so that a mismatch is reported at once
    rows, fits, earlier = resume(args, settings, names) if args.resume else ([], [], 0.0)
    t0 = time.perf_counter()
    with exact_numba_arithmetic():
        compiled = nutpie.compile_pymc_model(build_product_model(design, "marginal", shared_data=True,
                                                                 store_varying=BOOK_STORE_VARYING))
    settings["compile_seconds"] = round(time.perf_counter() - t0, 2)
    seeds = np.random.SeedSequence([args.seed, args.fit_seed]).spawn(args.n_markets)
    if fits:
        print(f"resuming after {len(fits)} markets", flush=True)
    for i in range(len(fits), args.n_markets):
        t0 = time.perf_counter()
        data = design.with_log_quantity(log_q[i])
        sample_seed, effects_seed = (int(s) for s in seeds[i].generate_state(2))
        with exact_numba_arithmetic():
            idata = nutpie.sample(compiled.with_data(stat_xy=data.stats_xy, stat_yy=data.stats_yy), draws=args.draws,
                                  tune=args.tune, chains=args.chains, cores=1, seed=sample_seed, progress_bar=False,
                                  target_accept=SAMPLING_DEFAULTS["target_accept"])
        idata = add_store_effects(idata, ModelSpec("multiproduct", "marginal", data), seed=effects_seed)
        post = flatten(idata["posterior"].dataset, data)
        flat = np.column_stack([post[n] for n in names])
        true = np.array([truths[n][i] for n in names])
        ranks = sbc_rank(true, thin_draws(flat, args.n_ranked))
        in50, in94 = interval_covers(true, flat, 0.5), interval_covers(true, flat, 0.94)
        for k, name in enumerate(names):
            rows.append((i, name, true[k], int(ranks[k]), flat[:, k].mean(), flat[:, k].std(ddof=1), bool(in50[k]),
                         bool(in94[k])))
        fits.append((i, int(idata["sample_stats"].dataset["diverging"].sum()), time.perf_counter() - t0))
        s = summarise(rows, fits, settings, start, args, earlier)
        if (i + 1) % 10 == 0 or i + 1 == args.n_markets:
            print(f"{i + 1}/{args.n_markets} markets, {s['wall_seconds']:.0f} s, divergences "
                  f"{s['divergences']['total']}", flush=True)
    s = summarise(rows, fits, settings, start, args, earlier)
    print(json.dumps(s["coverage"], indent=1))
    print(json.dumps(s["rank_uniformity_pvalues"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
