"""Fit the book's models to a user's own CSV file, from Python or from the command line.

From Python::

    from elasticity_lib.cli import fit_csv, write_outputs
    result = fit_csv("sales.csv", model="multilevel")
    result.table                  # elasticities per region (and per store)
    write_outputs(result, "elasticities.csv")

From a shell::

    python -m elasticity_lib fit sales.csv --model multilevel --out elasticities.csv
    python -m elasticity_lib validate sales.csv

The CSV follows the tidy schema of :func:`elasticity_lib.prepare.validate_table`: one row
per store and time step, with columns ``region_id``, ``store_id``, ``price``,
``quantities`` and ``median_income`` (other columns are allowed and ignored). Rows in
error messages are numbered as lines of the file, the header being line 1.

Outputs are replaced atomically: each file is written in full to a temporary file in the
same directory and then renamed over the target, so an interrupted run leaves any earlier
output exactly as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .inference import SAMPLING_DEFAULTS, ConvergenceReport, convergence_report, fit, sampling_settings
from .models import MODEL_KINDS, build_model
from .prepare import STORE_IDS, ModelData, check_option, prepare_data

__all__ = [
    "InputError",
    "CsvFit",
    "read_sales_csv",
    "elasticity_table",
    "fit_csv",
    "write_outputs",
    "atomic_write",
    "report_path_for",
    "main",
]

#: Exit statuses of the command line.
EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Columns of the elasticity table written by :func:`write_outputs`.
TABLE_COLUMNS = ["level", "region_id", "store_id", "n_obs", "elasticity_mean", "elasticity_sd",
                 "hdi94_low", "hdi94_high"]


class InputError(ValueError):
    """A user's file cannot be used: unreadable, not a CSV, or not in the tidy schema."""


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def read_sales_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sales CSV, with the index set to each row's line number in the file.

    Blank lines are kept (as rows of missing values) so that nothing is dropped silently
    and line numbers stay exact. Raises :class:`InputError` for a missing, unreadable,
    empty or non-text file.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, skip_blank_lines=False, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a CSV file") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty: expected a header line and data rows") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not a UTF-8 text CSV file (undecodable byte at position {err.start})") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path} is not a valid CSV file: {_one_line(err)}") from None
    except OSError as err:
        raise InputError(f"{path} cannot be read: {_one_line(err.strerror or err)}") from None
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    return df


def _prepare(df: pd.DataFrame, store_ids: str = "global") -> ModelData:
    try:
        return prepare_data(df, store_ids=store_ids)
    except ValueError as err:
        raise InputError(_one_line(err)) from None


@dataclasses.dataclass
class CsvFit:
    """A fitted model on a user's file: the elasticity table, the sampler report and the draws."""

    path: Path
    model: str
    data: ModelData
    idata: xr.DataTree
    table: pd.DataFrame
    report: ConvergenceReport
    settings: dict

    def report_dict(self) -> dict:
        """The convergence report as plain JSON-ready values."""
        from . import __version__

        return {
            "input": str(self.path),
            "model": self.model,
            "n_rows": self.data.n_obs,
            "n_regions": self.data.n_regions,
            "n_stores": self.data.n_stores,
            "sampler": self.settings,
            **dataclasses.asdict(self.report),
            "ok": self.report.ok(),
            "ok_means": "no divergences, max r_hat <= 1.01, min bulk and tail ESS >= 400",
            "elasticity_lib_version": __version__,
        }


def _interval_stats(draws: xr.DataArray, dim: str) -> pd.DataFrame:
    import arviz as az

    hdi = az.hdi(draws, prob=0.94)
    return pd.DataFrame({
        "elasticity_mean": draws.mean(("chain", "draw")).to_numpy(),
        "elasticity_sd": draws.std(("chain", "draw"), ddof=1).to_numpy(),
        "hdi94_low": hdi.sel(ci_bound="lower").to_numpy(),
        "hdi94_high": hdi.sel(ci_bound="upper").to_numpy(),
    }, index=pd.Index(draws[dim].to_numpy(), name=dim))


def elasticity_table(idata: xr.DataTree, data: ModelData) -> pd.DataFrame:
    """Posterior mean, sd and 94% HDI of the elasticity of each region, then of each store.

    Store rows appear only when the posterior has ``beta_store`` (the store-level model).
    """
    post = idata["posterior"].dataset
    n_region = np.bincount(data.region_idx, minlength=data.n_regions)
    regions = _interval_stats(post["beta"], "region")
    out = regions.reset_index(drop=True).assign(level="region", region_id=data.coords["region"],
                                                store_id=pd.NA, n_obs=n_region)
    parts = [out]
    if "beta_store" in post:
        stores = _interval_stats(post["beta_store"], "store")
        ids = data.table.drop_duplicates("region_store_id").set_index("region_store_id")
        labels = data.coords["store"]
        parts.append(stores.reset_index(drop=True).assign(
            level="store",
            region_id=[data.coords["region"][r] for r in data.store_region_idx],
            store_id=ids.loc[labels, "store_id"].to_numpy(),
            n_obs=np.bincount(data.store_idx, minlength=data.n_stores),
        ))
    return pd.concat(parts, ignore_index=True)[TABLE_COLUMNS]


def fit_csv(path: str | os.PathLike, model: str = "multilevel", *, store_ids: str = "global",
            draws: int | None = None, tune: int | None = None, chains: int | None = None,
            random_seed: int | None = None, progressbar: bool = False) -> CsvFit:
    """Validate a sales CSV, fit one of the book's models and tabulate its elasticities.

    ``model`` is one of :data:`~elasticity_lib.models.MODEL_KINDS`; ``store_ids`` is
    ``"global"`` or ``"per-region"`` (see :func:`~elasticity_lib.prepare.validate_table`);
    sampler settings left at ``None`` take the book's defaults. A file that cannot be used
    raises :class:`InputError` (a ``ValueError``) naming the problem, the column and the
    lines, before anything is fitted.
    """
    check_option("model", model, MODEL_KINDS)
    check_option("store_ids", store_ids, STORE_IDS)
    path = Path(path)
    data = _prepare(read_sales_csv(path), store_ids)
    settings = {k: v for k, v in {"draws": draws, "tune": tune, "chains": chains,
                                  "random_seed": random_seed}.items() if v is not None}
    built = build_model(model, data)
    idata = fit(built, progressbar=progressbar, **settings)
    chosen = sampling_settings(built, **settings)
    used = {k: chosen[k] for k in ("nuts_sampler", "draws", "tune", "chains", "target_accept", "random_seed")}
    return CsvFit(path=path, model=model, data=data, idata=idata, table=elasticity_table(idata, data),
                  report=convergence_report(idata), settings=used)


def _new_file_mode(target: Path) -> int:
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(writers: dict[Path, Callable]) -> None:
    """Write several files so that each either keeps its old content or gets its full new one.

    ``writers`` maps each target path to a function that writes the content to an open
    text file. Every file is written to a temporary file in the target's directory first;
    only when all are complete are they renamed over the targets (``os.replace``). On any
    error or interruption, the temporary files are removed and the targets are untouched.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for target, write in writers.items():
            target = Path(target)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temps.append((tmp, target))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _new_file_mode(target))
        for tmp, target in temps:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def report_path_for(out: str | os.PathLike) -> Path:
    """Default place of the convergence report: ``elasticities.csv`` -> ``elasticities.convergence.json``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.convergence.json")


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise InputError(f"output {out} is a directory; give a file name such as {out / 'elasticities.csv'}")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory {parent} is not writable")


def write_outputs(result: CsvFit, out: str | os.PathLike, report: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the elasticity table (CSV) and the convergence report (JSON), atomically."""
    out = Path(out)
    report = Path(report) if report is not None else report_path_for(out)
    for target in (out, report):
        _check_output(target)
    atomic_write({
        out: lambda fh: result.table.to_csv(fh, index=False, float_format="%.6g"),
        report: lambda fh: fh.write(json.dumps(result.report_dict(), indent=2) + "\n"),
    })
    return out, report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m elasticity_lib",
        description="Fit Bayesian multilevel price elasticities to a sales CSV in the tidy schema.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # options of the input table, shared by fit and validate
    table_p = argparse.ArgumentParser(add_help=False)
    table_p.add_argument("--store-ids", choices=STORE_IDS, default="global",
                         help="'global' (default): a store_id names one store in the whole file, and an id "
                              "in two regions is an error; 'per-region': stores are numbered within each "
                              "region, and a store is the pair (region_id, store_id)")
    fit_p = sub.add_parser("fit", parents=[table_p],
                           help="validate a CSV, fit a model, write elasticities and a convergence report")
    fit_p.add_argument("csv", type=Path, help="sales table: region_id, store_id, price, quantities, median_income")
    fit_p.add_argument("--model", choices=MODEL_KINDS, default="multilevel", help="model kind (default: multilevel)")
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
    val_p = sub.add_parser("validate", parents=[table_p], help="check a CSV against the tidy schema without fitting")
    val_p.add_argument("csv", type=Path)
    return parser


def _positive(parser: argparse.ArgumentParser, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m elasticity_lib``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            data = _prepare(read_sales_csv(args.csv), args.store_ids)
            print(f"{args.csv}: OK, {data.n_obs} rows, {data.n_regions} regions, {data.n_stores} stores")
            return EXIT_OK
        _positive(parser, draws=args.draws, tune=args.tune, chains=args.chains)
        report = args.report if args.report is not None else report_path_for(args.out)
        for target in (args.out, report):
            _check_output(target)
        result = fit_csv(args.csv, args.model, store_ids=args.store_ids, draws=args.draws, tune=args.tune, chains=args.chains,
                         random_seed=args.seed, progressbar=not args.no_progress)
        out, report = write_outputs(result, args.out, report)
    except InputError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; existing outputs are unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED
    shown = result.table.loc[result.table["level"] == "region"].drop(columns=["level", "store_id"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {out} ({len(result.table)} rows) and {report}")
    if not result.report.ok():
        print(f"warning: the sampler did not converge cleanly (divergences {result.report.divergences}, "
              f"max r_hat {result.report.max_rhat:.3f}, min ESS bulk {result.report.min_ess_bulk:.0f}); "
              f"see {report}", file=sys.stderr)
    return EXIT_OK
