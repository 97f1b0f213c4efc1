"""Benchmark of inference: the reference set-up against the book's fast defaults, and scaling.

Run from the repository root::

    .venv/bin/python benchmarks/inference.py

Every case runs in a fresh Python process, so each time includes the compilation a new
session pays, and each peak memory is that process's own maximum resident set size.

Part 1 fits each model of the book (baseline, multilevel, correlated) on the reference
market (``simulate_market(seed=REFERENCE_SEED)``) twice, with the same chains, draws,
tuning steps, target acceptance and seed:

(a) the reference set-up: one Normal term per row, raw (uncentred) income, NumPyro's
    NUTS through ``pm.sample(nuts_sampler="numpyro")``, as the reference notebook ran it
    (no persistent compilation cache);
(b) the book's defaults: ``fit(build_model(kind, data))``, once as a session on this
    machine finds it (JAX's compilation cache filled by an earlier run) and, for the
    multilevel model, once with an empty cache (the first run on a new machine).

It prints the wall time of the fit (building, compiling and sampling), the sampling time
the sampler itself reports (NumPyro's includes its JIT compilation; nutpie's does not),
the smallest bulk effective sample size over the parameters both set-ups report, that
ESS per second of wall time, divergences and the largest r_hat, then the ratios (a)/(b).

Part 2 fits the multilevel model on the reference market with each sampler (nutpie,
NumPyro, PyMC's own NUTS) and each likelihood form (rows, sufficient statistics,
marginal); this is the measurement behind the defaults.

Part 3 fits the multilevel model (9 regions) on 10k, 100k and 1M rows, and the
store-level model on 1k and 10k stores (1M rows each), with the book's defaults.

The output is also written to ``benchmarks/results/inference.txt`` with the machine and
the date in its header; the book prints that file as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from environment import format_load, header_lines

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "inference.txt"
MODELS = ["baseline", "multilevel", "correlated"]
#: Parameters of the book whose ESS and r_hat are compared (when a model has them).
BOOK_PARAMETERS = ["a0", "a1", "b0", "b1", "sigma_a", "sigma_b", "rho", "sigma", "alpha", "beta",
                   "alpha_store", "beta_store", "sigma_store_a", "sigma_store_b"]
CASE_TIMEOUT_S = 1500


# --- one case, in a child process ------------------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _diagnostics(idata) -> dict:
    import arviz as az

    post = idata["posterior"].dataset
    names = [n for n in BOOK_PARAMETERS if n in post.data_vars]
    summary = az.summary(idata, var_names=names, kind="diagnostics", round_to="none")
    stats = idata["sample_stats"].dataset
    steps = float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan")
    return {
        "steps": steps,
        "min_ess_bulk": float(summary["ess_bulk"].min()),
        "worst": str(summary["ess_bulk"].idxmin()),
        "max_rhat": float(summary["r_hat"].max()),
        "divergences": int(stats["diverging"].sum()),
        "sampling_s": float(idata["posterior"].attrs.get("sampling_time", float("nan"))),
    }


def run_compare_case(kind: str, setup: str, sampler: str | None = None, likelihood: str | None = None) -> dict:
    t0 = time.perf_counter()
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.data.simulation import REFERENCE_SEED, simulate_market
    from elasticity_lib.inference import SAMPLING_DEFAULTS, fit
    from elasticity_lib.models import build_model
    from elasticity_lib.reproducibility import sampler_seed

    data = prepare_data(simulate_market(seed=REFERENCE_SEED).to_dataframe())
    t1 = time.perf_counter()
    if setup == "reference":
        import pymc as pm
        import pymc.sampling.jax  # noqa: F401  (one XLA device per chain, before JAX starts)

        model = build_model(kind, data, likelihood="rows", centre_income=False)
        same = {k: SAMPLING_DEFAULTS[k] for k in ("chains", "draws", "tune", "target_accept", "progressbar")} | {"random_seed": sampler_seed()}
        with model:
            idata = pm.sample(nuts_sampler="numpyro", **same)
    elif setup == "sampler":
        model = build_model(kind, data, likelihood=likelihood)
        idata = fit(model, nuts_sampler=sampler, **({"cores": 2} if sampler == "pymc" else {}))
    else:
        model = build_model(kind, data)
        idata = fit(model)
    t2 = time.perf_counter()
    out = _diagnostics(idata)
    out.update(rows=data.n_obs, setup_s=t1 - t0, wall_s=t2 - t1, peak_rss_mb=_peak_rss_mb())
    return out


def run_scale_case(kind: str, config: dict, seed: int) -> dict:
    t0 = time.perf_counter()
    from elasticity_lib.data.prepare import prepare_data
    from elasticity_lib.data.simulation import SimulationConfig, simulate_market
    from elasticity_lib.inference import fit
    from elasticity_lib.models import build_model

    t1 = time.perf_counter()
    data = prepare_data(simulate_market(SimulationConfig(**config), seed=seed).to_dataframe())
    t2 = time.perf_counter()
    idata = fit(build_model(kind, data))
    t3 = time.perf_counter()
    out = _diagnostics(idata)
    out.update(rows=data.n_obs, regions=data.n_regions, stores=data.n_stores, import_s=t1 - t0,
               data_s=t2 - t1, wall_s=t3 - t2, peak_rss_mb=_peak_rss_mb())
    return out


def run_imports_only() -> dict:
    from elasticity_lib.inference import fit  # noqa: F401
    from elasticity_lib.models import build_model  # noqa: F401

    return {"peak_rss_mb": _peak_rss_mb()}


# --- the driver ------------------------------------------------------------------------


def in_child(case: dict, env: dict | None = None) -> dict:
    """Run one case in a fresh interpreter and return its JSON result (or the failure)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CASE_TIMEOUT_S, cwd=ROOT,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CASE_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = time.perf_counter() - start
    return result


def machine_header() -> list[str]:
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ["pymc", "pytensor", "nutpie", "numpyro", "jax", "numba"])
    return header_lines("Inference benchmark (benchmarks/inference.py)", versions)


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def _row(label: str, setup: str, r: dict) -> str:
    if "error" in r:
        return f"{label:<11} {setup:<17} {r['error']}"
    r["ess_per_s"] = r["min_ess_bulk"] / r["wall_s"]
    return (f"{label:<11} {setup:<17} {r['wall_s']:>7.1f} {r['sampling_s']:>10.2f} {r['steps']:>6.0f} {r['min_ess_bulk']:>8.0f} "
            f"{r['ess_per_s']:>8.1f} {r['divergences']:>4} {r['max_rhat']:>9.3f}  {r['worst']}")


COMPARE_HEADER = (f"{'model':<11} {'set-up':<17} {'wall s':>7} {'sampling s':>10} {'steps':>6} {'min ESS':>8} {'ESS/s':>8} "
                  f"{'div':>4} {'max r_hat':>9}  worst ESS")
SAMPLER_FORMS = [("nutpie", "rows"), ("nutpie", "sufficient"), ("nutpie", "marginal"),
                 ("numpyro", "rows"), ("numpyro", "sufficient"), ("numpyro", "marginal"),
                 ("pymc", "sufficient"), ("pymc", "marginal")]
SCALE_CASES = [
    ("multilevel", dict(n_regions=9, stores_mu=10.0, time_steps_mu=90.0), 1),
    ("multilevel", dict(n_regions=9, stores_mu=10.0, time_steps_mu=900.0), 2),
    ("multilevel", dict(n_regions=9, stores_mu=10.0, time_steps_mu=9000.0), 3),
    ("store_multilevel", dict(n_regions=50, stores_mu=18.0, time_steps_mu=1000.0,
                              store_intercept_sd=0.05, store_elasticity_sd=0.1), 4),
    ("store_multilevel", dict(n_regions=100, stores_mu=98.0, time_steps_mu=100.0,
                              store_intercept_sd=0.05, store_elasticity_sd=0.1), 5),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--skip-reference", action="store_true", help="fit only the fast defaults in part 1")
    parser.add_argument("--skip-samplers", action="store_true", help="leave out part 2")
    parser.add_argument("--skip-scaling", action="store_true", help="leave out part 3")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"where to write the printed tables (default: {RESULTS.relative_to(ROOT)} for a full run)")
    args = parser.parse_args(argv)
    partial = args.skip_reference or args.skip_samplers or args.skip_scaling
    if args.output is None and not partial:
        args.output = RESULTS

    if args.case:
        case = json.loads(args.case)
        what = case.pop("what")
        result = {"compare": run_compare_case, "scale": run_scale_case, "imports": run_imports_only}[what](**case)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from elasticity_lib.inference import NUTPIE_FROM_TERMS, SAMPLING_DEFAULTS
    from elasticity_lib.models import DEFAULT_LIKELIHOOD
    from elasticity_lib.reproducibility import sampler_seed

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    for line in machine_header():
        say(line)
    d = SAMPLING_DEFAULTS
    say(f"sampling everywhere: {d['chains']} chains x {d['draws']} draws after {d['tune']} tuning steps, "
        f"target_accept {d['target_accept']}, seed {sampler_seed()}")
    say("(a) reference: row-level likelihood, raw income, NumPyro via pm.sample, no persistent compilation cache")
    say(f"(b) ours: fit(build_model(kind, data)): {d['nuts_sampler']} (nutpie from {NUTPIE_FROM_TERMS} likelihood "
        "terms), likelihood " + ", ".join(f"{k} {v}" for k, v in DEFAULT_LIKELIHOOD.items()))
    say("    'ours' reads JAX's compilation cache filled by an earlier run; 'ours, empty cache' starts without it")
    say("wall: fit in a fresh process (build, compile, sample, post-process); sampling: as the sampler reports it")
    say("(NumPyro's sampling time includes its JIT compilation, nutpie's does not); ESS: smallest bulk ESS over")
    say("the book's parameters (a0, a1, b0, b1, scales, sigma, alpha, beta, rho); ESS/s: that ESS per wall second;")
    say("steps: mean leapfrog steps per draw")
    base = in_child({"what": "imports"})
    say(f"peak memory of a process that only imports the library: {_fmt(base.get('peak_rss_mb'), '.0f')} MB")
    say()

    say("Part 1. Reference set-up against ours, reference market (2,469 rows, 9 regions, 103 stores)")
    say(COMPARE_HEADER)
    say("-" * len(COMPARE_HEADER))
    results: dict[tuple[str, str], dict] = {}
    for kind in MODELS:
        runs = [("ours", {"setup": "fast"}, None)]
        if not args.skip_reference:
            runs.insert(0, ("reference", {"setup": "reference"}, None))
        if kind == "multilevel":
            runs.append(("ours, empty cache", {"setup": "fast"},
                         {"JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="jax-cache-")}))
        for label, case, env in runs:
            r = in_child({"what": "compare", "kind": kind, **case}, env=env)
            results[(kind, label)] = r
            say(_row(kind, label, r))
    say()

    if not args.skip_samplers:
        say("Part 2. Samplers and likelihood forms, multilevel model, reference market (centred income)")
        say("(PyMC's own NUTS on the row-level form is left out: several minutes)")
        say(COMPARE_HEADER)
        say("-" * len(COMPARE_HEADER))
        for sampler, likelihood in SAMPLER_FORMS:
            r = in_child({"what": "compare", "kind": "multilevel", "setup": "sampler", "sampler": sampler,
                          "likelihood": likelihood})
            say(_row("multilevel", f"{sampler} {likelihood}", r))
        say()

    if not args.skip_scaling:
        say("Part 3. Scaling with the book's defaults (fresh process per case)")
        header = (f"{'model':<17} {'rows':>9} {'regions':>7} {'stores':>6} {'data s':>6} {'fit s':>6} "
                  f"{'sampling s':>10} {'peak MB':>7} {'min ESS':>7} {'div':>4} {'max r_hat':>9}")
        say(header)
        say("-" * len(header))
        for kind, config, seed in SCALE_CASES:
            r = in_child({"what": "scale", "kind": kind, "config": config, "seed": seed})
            if "error" in r:
                say(f"{kind:<17} {r['error']}")
                continue
            say(f"{kind:<17} {r['rows']:>9,} {r['regions']:>7} {r['stores']:>6} {r['data_s']:>6.1f} {r['wall_s']:>6.1f} "
                f"{r['sampling_s']:>10.2f} {r['peak_rss_mb']:>7.0f} {r['min_ess_bulk']:>7.0f} {r['divergences']:>4} "
                f"{r['max_rhat']:>9.3f}")
        say("data s: simulate the market, build its table, prepare the model inputs; fit s: build, compile, sample,")
        say("draw the integrated-out effects; peak MB: the process's maximum resident memory")
        say()

    say(f"load average at end (1, 5, 15 min): {format_load()}")
    speedup = None
    if not args.skip_reference:
        say("Ratios reference / ours: wall time of the fit, and ESS per second")
        for kind in MODELS:
            a = results.get((kind, "reference"), {})
            for label in ("ours", "ours, empty cache"):
                b = results.get((kind, label), {})
                if "wall_s" in a and "wall_s" in b:
                    ratio = a["wall_s"] / b["wall_s"]
                    say(f"  {kind:<11} {label:<17} wall {ratio:6.1f}x   ESS/s {b['ess_per_s'] / a['ess_per_s']:6.1f}x")
                    if kind == "multilevel" and label == "ours":
                        speedup = ratio
                elif (kind, label) in results:
                    say(f"  {kind:<11} {label:<17} not available")
        say(f"multilevel speedup: {speedup:.1f}" if speedup is not None else "multilevel speedup: not available")

    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
