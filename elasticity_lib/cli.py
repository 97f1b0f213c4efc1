"""The command line: ``python -m elasticity_lib`` (argument parsing only).

::

    python -m elasticity_lib fit sales.csv --model multilevel --out elasticities.csv
    python -m elasticity_lib validate sales.csv
    python -m elasticity_lib fit-many ...

The work is done by :mod:`elasticity_lib.workflow` (reading, validating and fitting a
sales CSV, writing the outputs atomically) and :mod:`elasticity_lib.scale` (``fit-many``).

Exit statuses (:data:`EXIT_STATUSES`):

- 0: success;
- 1: the file cannot be used (unreadable, not in the schema, or too little data); nothing is fitted;
- 2: wrong command line;
- 3: the fit failed the convergence gates (:func:`~elasticity_lib.workflow.converged`); the
  outputs are written all the same, marked ``converged`` false in the table and the report;
- 130: interrupted; existing outputs are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

from elasticity_lib.data.prepare import STORE_IDS, ZERO_SALES, ModelData, NoPriceVariationWarning
from elasticity_lib.inference import SAMPLING_DEFAULTS
from elasticity_lib.models.builder import MODEL_KINDS
from elasticity_lib.workflow import (
    DECIMALS,
    InputError,
    _check_format,
    _check_output,
    _fit_prepared,
    _one_line,
    allowed_divergences,
    prepare_csv,
    report_path_for,
    write_outputs,
)

__all__ = ["main", "EXIT_STATUSES"]

#: Exit statuses of the command line.
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_UNCONVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_BAD_INPUT: "the file cannot be used (unreadable, not in the schema, or too little data); nothing is fitted",
    EXIT_USAGE: "wrong command line",
    EXIT_UNCONVERGED: "the fit failed the convergence gates; the outputs are written, marked converged=false",
    EXIT_INTERRUPTED: "interrupted; existing outputs are unchanged",
}


def _separator(text: str) -> str:
    r"""``--sep``: one character; ``tab`` or ``\t`` for a tab."""
    sep = "\t" if text in ("tab", "\\t") else text
    try:
        _check_format(sep, None)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return sep


def _parser() -> argparse.ArgumentParser:
    epilog = {"epilog": "exit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_STATUSES.items()),
              "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser = argparse.ArgumentParser(
        prog="python -m elasticity_lib",
        description="Fit Bayesian multilevel price elasticities to a sales CSV in the tidy schema.",
        **epilog,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # the input file and how to read it, shared by fit and validate
    table_p = argparse.ArgumentParser(add_help=False)
    table_p.add_argument("csv", type=Path, help="sales table: region_id, store_id, price, quantities, median_income")
    table_p.add_argument("--model", choices=MODEL_KINDS, default="multilevel", help="model kind (default: multilevel)")
    table_p.add_argument("--sep", type=_separator, default=None,
                         help="column separator, e.g. ',' ';' or 'tab' (default: detected from the first lines)")
    table_p.add_argument("--decimal", choices=DECIMALS, default=None,
                         help="decimal mark of the numbers (default: detected from the first lines)")
    table_p.add_argument("--store-ids", choices=STORE_IDS, default="global",
                         help="'global' (default): a store_id names one store in the whole file, and an id "
                              "in two regions is an error; 'per-region': stores are numbered within each "
                              "region, and a store is the pair (region_id, store_id)")
    table_p.add_argument("--zero-sales", choices=ZERO_SALES, default="error",
                         help="rows whose quantities are 0: 'error' (default) or 'drop' them, reporting how many "
                              "per store (negative quantities are always an error)")
    fit_p = sub.add_parser("fit", parents=[table_p], **epilog,
                           help="validate a CSV, fit a model, write elasticities and a convergence report")
    fit_p.add_argument("--out", type=Path, required=True, help="where to write the elasticity table (CSV)")
    fit_p.add_argument("--report", type=Path, default=None,
                       help="where to write the convergence report (JSON); default: next to --out, "
                            "named <out stem>.convergence.json")
    fit_p.add_argument("--draws", type=int, default=SAMPLING_DEFAULTS["draws"], help="draws per chain")
    fit_p.add_argument("--tune", type=int, default=SAMPLING_DEFAULTS["tune"], help="tuning steps per chain")
    fit_p.add_argument("--chains", type=int, default=SAMPLING_DEFAULTS["chains"], help="number of chains")
    fit_p.add_argument("--seed", type=int, default=None,
                       help="sampler seed (default: $ELASTICITY_SAMPLER_SEED, else 4242)")
    fit_p.add_argument("--no-progress", action="store_true", help="hide the sampler's progress bar")
    sub.add_parser("validate", parents=[table_p], **epilog,
                   help="check a CSV against the tidy schema, and against what --model needs, without fitting")
    from elasticity_lib.scale import add_fit_many_parser

    add_fit_many_parser(sub, epilog)
    return parser


def _positive(parser: argparse.ArgumentParser, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m elasticity_lib``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    with _data_warnings_on_stderr():
        return _run(parser, args)


@contextlib.contextmanager
def _data_warnings_on_stderr():
    """Print warnings about the data as ``warning: ...`` lines on stderr as they come; others as usual."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", NoPriceVariationWarning)
        show = warnings.showwarning

        def show_data_warnings(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, NoPriceVariationWarning):
                print(f"warning: {_one_line(message)}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_data_warnings
        yield


def _dropped_zero_sales(data: ModelData, show: int = 5) -> str:
    """One line: how many rows of zero sales were dropped, and from which stores."""
    dropped = data.zero_sales_dropped
    line = f"dropped {sum(dropped.values())} rows with zero sales (--zero-sales drop)"
    if dropped:
        per_store = [f"{label} {n}" for label, n in dropped.items()]
        more = f", and {len(per_store) - show} more stores (all in the report)" if len(per_store) > show else ""
        line += f"; rows per store: {', '.join(per_store[:show])}{more}"
    return line


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "fit-many":
        from elasticity_lib.scale import run_fit_many

        return run_fit_many(parser, args)
    try:
        if args.command == "fit":
            _positive(parser, draws=args.draws, tune=args.tune, chains=args.chains)
            report = args.report if args.report is not None else report_path_for(args.out)
            for target in (args.out, report):
                _check_output(target)
        source, data = prepare_csv(args.csv, args.model, sep=args.sep, decimal=args.decimal,
                                   store_ids=args.store_ids, zero_sales=args.zero_sales)
        print(f"read {args.csv}: {source.describe()}")
        if data.zero_sales == "drop":
            print(_dropped_zero_sales(data))
        if args.command == "validate":
            print(f"{args.csv}: OK, {data.n_obs} rows, {data.n_regions} regions, {data.n_stores} stores")
            return EXIT_OK
        result = _fit_prepared(args.csv, source, data, args.model, draws=args.draws, tune=args.tune,
                               chains=args.chains, random_seed=args.seed, progressbar=not args.no_progress)
        out, report = write_outputs(result, args.out, report)
    except InputError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; existing outputs are unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED
    shown = result.table.loc[result.table["level"] == "region"].drop(
        columns=["level", "store_id", "informed_by_own_prices", "converged"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {out} ({len(result.table)} rows) and {report}")
    if not result.converged:
        print(f"warning: the sampler did not converge cleanly (divergences {result.report.divergences}, "
              f"at most {allowed_divergences(result.idata)} allowed, "
              f"max r_hat {result.report.max_rhat:.3f}, min ESS bulk {result.report.min_ess_bulk:.0f}); "
              f"the outputs are marked converged=false (exit status {EXIT_UNCONVERGED}); see {report}",
              file=sys.stderr)
        return EXIT_UNCONVERGED
    return EXIT_OK
