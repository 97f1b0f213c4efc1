"""Fit the book's models to a user's own CSV file from Python: the workflow behind the command line.

::

    from elasticity_lib.workflow import fit_csv, write_outputs
    result = fit_csv("sales.csv", model="multilevel")
    result.table                  # elasticities per region (and per store)
    write_outputs(result, "elasticities.csv")

The command line (:mod:`elasticity_lib.cli`, ``python -m elasticity_lib``) parses its
arguments and calls these functions.

The CSV follows the tidy schema of :func:`elasticity_lib.data.prepare.validate_table`: one row
per store and time step, with columns ``region_id``, ``store_id``, ``price``,
``quantities`` and ``median_income`` (other columns are allowed and ignored). Rows in
error messages are numbered as lines of the file, the header being line 1.

Files are taken as spreadsheets export them (:func:`read_sales_csv`): the separator
(comma, semicolon or tab) and the decimal mark (point or comma) are detected unless given
(``--sep``, ``--decimal``), header names are matched after trimming spaces and ignoring
case, and the command line says which format it read and which columns it renamed.
``--store-ids per-region`` accepts stores numbered within each region. Before sampling,
a file with too little data is rejected, and groups whose prices never vary are named
in a warning.

Outputs are replaced atomically: each file is written in full to a temporary file in the
same directory and then renamed over the target, so an interrupted run leaves any earlier
output exactly as it was.

Exit statuses of the command line (:data:`elasticity_lib.cli.EXIT_STATUSES`):

- 0: success;
- 1: the file cannot be used (unreadable, not in the schema, or too little data); nothing is fitted;
- 2: wrong command line;
- 3: the fit failed the convergence gates (:func:`converged`: max r_hat <= 1.01, bulk and tail
  ESS >= 400, and no more divergences than :func:`allowed_divergences`); the outputs are
  written all the same, marked ``converged`` false in the table and the report;
- 130: interrupted; existing outputs are unchanged.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from elasticity_lib.data.prepare import (
    NUMERIC_COLUMNS,
    STORE_IDS,
    ZERO_SALES,
    ModelData,
    check_option,
    prepare_data,
    schema_column_names,
)
from elasticity_lib.inference import ConvergenceReport, convergence_report, fit, sampling_settings
from elasticity_lib.models.builder import MIN_REGIONS, MODEL_KINDS, build_model
from elasticity_lib.reproducibility import max_divergences

__all__ = [
    "InputError",
    "CsvFit",
    "SalesFile",
    "read_sales_csv",
    "prepare_csv",
    "elasticity_table",
    "fit_csv",
    "write_outputs",
    "atomic_write",
    "report_path_for",
    "allowed_divergences",
    "converged",
]

#: Columns of the elasticity table written by :func:`write_outputs`.
#: ``informed_by_own_prices`` is false for a group whose prices never vary: its elasticity
#: comes from the prior and from pooling alone (:meth:`~elasticity_lib.data.prepare.ModelData.informed_by_own_prices`).
#: ``converged`` repeats the fit's verdict (:func:`converged`) on every row.
TABLE_COLUMNS = ["level", "region_id", "store_id", "n_obs", "elasticity_mean", "elasticity_sd",
                 "hdi94_low", "hdi94_high", "informed_by_own_prices", "converged"]


def allowed_divergences(idata: xr.DataTree) -> int:
    """The most divergent transitions a fit may show and still pass the convergence gate.

    A healthy fit of a small market diverges now and then (a three-region market: a few
    divergences in 2,000 draws on some seeds), and its numbers agree with those of clean
    runs; a fit whose posterior the sampler cannot explore diverges by the dozen. The gate
    is :func:`elasticity_lib.reproducibility.max_divergences` of the number of transitions
    (chains x draws): if at most one transition in a thousand diverges, more divergences
    than this happen in fewer than one fit in a thousand. It is the allowance the book's
    chapters use for the command line's fits: 11 for the default 4 chains of 1,000 draws.
    """
    transitions = int(idata["sample_stats"].dataset["diverging"].size)
    return max_divergences(transitions)


def converged(report: ConvergenceReport, idata: xr.DataTree) -> bool:
    """The command line's convergence verdict on a fit.

    Max r_hat <= 1.01, bulk and tail ESS >= 400, and at most :func:`allowed_divergences`
    divergent transitions.
    """
    return report.ok(max_divergences=allowed_divergences(idata))


class InputError(ValueError):
    """A user's file cannot be used: unreadable, not a CSV, or not in the tidy schema."""


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


#: Separators tried, in this order of preference, when none is given.
SEPARATORS = (",", ";", "\t")
#: Decimal marks a file may use.
DECIMALS = (".", ",")
#: How much of the top of a file is looked at to detect its separator and decimal mark.
SNIFF_LINES, SNIFF_BYTES = 100, 1 << 16
_DECIMAL_COMMA = re.compile(r"\s*[+-]?\d+,\d+(?:[eE][+-]?\d+)?\s*")
_DECIMAL_POINT = re.compile(r"\s*[+-]?\d*\.\d+(?:[eE][+-]?\d+)?\s*")


@dataclasses.dataclass(frozen=True)
class SalesFile:
    """A sales CSV as read: the table, the separator and decimal mark used, the columns renamed.

    ``table`` is indexed by each row's line number in the file; ``renamed`` maps each
    header name that was matched to a schema column after trimming spaces and ignoring
    case (``" Price"``) to that column (``"price"``).
    """

    table: pd.DataFrame
    sep: str
    decimal: str
    renamed: dict[str, str]

    def describe(self) -> str:
        """The format read, as one line: ``separator ';', decimal ','``, and any renamed columns."""
        text = f"separator {self.sep!r}, decimal {self.decimal!r}"
        if self.renamed:
            text += "; renamed columns: " + ", ".join(f"{k!r} -> {v!r}" for k, v in self.renamed.items())
        return text


def _split(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep), [])


def _first_lines(path: Path) -> list[str]:
    """Up to :data:`SNIFF_LINES` complete lines from the top of the file (UTF-8, a BOM skipped)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    lines = re.split(r"\r\n|\r|\n", codecs.getincrementaldecoder("utf-8-sig")().decode(head))
    if len(head) == SNIFF_BYTES:  # the last line may be cut
        lines = lines[:-1]
    return lines[:SNIFF_LINES]


def _detect_separator(lines: list[str], decimal: str | None) -> str:
    """The separator that splits the header into the most columns, and every line below into as many.

    Candidates are :data:`SEPARATORS` except the decimal mark, if one is given. A
    separator under which some of the first lines have another number of fields than the
    header only wins if none keeps them all equal; ties go to the earlier candidate.
    """
    if not lines:
        return SEPARATORS[0]
    rows = [line for line in lines[1:] if line.strip()]

    def score(sep: str) -> tuple[bool, int]:
        n = len(_split(lines[0], sep))
        return n > 1 and all(len(_split(row, sep)) == n for row in rows), n

    return max((sep for sep in SEPARATORS if sep != decimal), key=score)


def _detect_decimal(lines: list[str], sep: str) -> str:
    """``","`` when the first lines hold numbers with a decimal comma (``1,25``) and none with a point."""
    if sep == ",":
        return "."
    fields = [field for line in lines[1:] for field in _split(line, sep)]
    comma = any(_DECIMAL_COMMA.fullmatch(f) for f in fields)
    point = any(_DECIMAL_POINT.fullmatch(f) for f in fields)
    return "," if comma and not point else "."


def _check_format(sep: str | None, decimal: str | None) -> None:
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n" or sep.isalnum()):
        raise ValueError(f"sep must be one character such as ',', ';' or '\\t', got {sep!r}")
    if decimal is not None:
        check_option("decimal", decimal, DECIMALS)
    if sep is not None and sep == decimal:
        raise ValueError(f"the separator and the decimal mark must differ, got {sep!r} for both")


def read_sales_csv(path: str | os.PathLike, sep: str | None = None, decimal: str | None = None) -> SalesFile:
    """Read a sales CSV, with the index set to each row's line number in the file.

    The separator (comma, semicolon or tab) and the decimal mark (point or comma) are
    detected from the header and the first :data:`SNIFF_LINES` lines unless given: the
    separator is the one that splits the header into the most columns and every line
    below it into as many (:data:`SEPARATORS` break ties in this order); the decimal mark
    is a comma when the separator is not a comma and those lines hold numbers written with a
    decimal comma (``1,25``) but none with a decimal point. Header names that match a
    schema column after trimming spaces and ignoring case are renamed to it
    (:func:`~elasticity_lib.data.prepare.schema_column_names`). The file is read as UTF-8; a
    byte-order mark is skipped.

    Blank lines are kept (as rows of missing values) so that nothing is dropped silently
    and line numbers stay exact. Raises :class:`InputError` for a missing, unreadable,
    empty or non-text file, for a header that reads as a single column (another
    separator?), for numbers with a decimal comma read with a decimal point, and for two
    header names that stand for the same schema column.
    """
    _check_format(sep, decimal)
    path = Path(path)
    try:
        lines = _first_lines(path)
        sep = sep or _detect_separator(lines, decimal)
        decimal = decimal or _detect_decimal(lines, sep)
        df = pd.read_csv(path, sep=sep, decimal=decimal, skip_blank_lines=False, encoding="utf-8-sig")
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
    if len(df.columns) == 1:
        raise InputError(f"{path}: the header has one column named {df.columns[0]!r} when read with separator "
                         f"{sep!r}: the file may use another separator; pass it with --sep (Python: sep=)")
    header = _split(lines[0], sep) if lines else []
    names = header if len(header) == len(df.columns) else [str(c) for c in df.columns]
    try:
        schema = schema_column_names(names)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None
    df.columns = [schema.get(name, column) for name, column in zip(names, df.columns)]
    if decimal == "." and sep != ",":
        _reject_decimal_commas(path, df)
    return SalesFile(df, sep, decimal, {name: column for name, column in schema.items() if name != column})


def _reject_decimal_commas(path: Path, df: pd.DataFrame) -> None:
    """A numeric column read as text because its numbers have a decimal comma means the wrong decimal mark."""
    for col in NUMERIC_COLUMNS:
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
            text = df[col].dropna().astype(str)
            comma = text[text.str.fullmatch(_DECIMAL_COMMA.pattern)]
            if len(comma):
                raise InputError(f"{path}: column {col!r} has numbers with a decimal comma (e.g. {comma.iloc[0]!r} "
                                 f"on line {comma.index[0]}) but was read with decimal '.'; "
                                 "pass --decimal ',' (Python: decimal=',')")


def prepare_csv(path: str | os.PathLike, model: str = "multilevel", *, sep: str | None = None,
                decimal: str | None = None, store_ids: str = "global",
                zero_sales: str = "error") -> tuple[SalesFile, ModelData]:
    """Read a sales CSV and check it for ``model``: everything :func:`fit_csv` does before sampling.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    model : str
        One of :data:`~elasticity_lib.models.MODEL_KINDS`.
    sep, decimal : str, optional
        Separator and decimal mark; detected when left out (see :func:`read_sales_csv`).
    store_ids : {"global", "per-region"}
        How ``store_id`` identifies a store (see :func:`~elasticity_lib.data.prepare.validate_table`).
    zero_sales : {"error", "drop"}
        Whether rows with zero quantities are an error or are dropped (and counted per store
        in ``ModelData.zero_sales_dropped``).

    Returns
    -------
    tuple of SalesFile and ModelData
        The file as read and the validated model inputs.

    Raises
    ------
    InputError
        For a file that cannot be used, naming the problem, the column and the file lines.

    Warns
    -----
    NoPriceVariationWarning
        Naming the groups whose prices never vary, whose elasticities the data cannot
        inform (:meth:`~elasticity_lib.data.prepare.ModelData.informed_by_own_prices`).
    """
    check_option("model", model, MODEL_KINDS)
    check_option("store_ids", store_ids, STORE_IDS)
    check_option("zero_sales", zero_sales, ZERO_SALES)
    source = read_sales_csv(path, sep=sep, decimal=decimal)
    try:
        data = prepare_data(source.table, store_ids=store_ids, zero_sales=zero_sales)
        data.require_enough_data(MIN_REGIONS[model])
    except ValueError as err:
        raise InputError(_one_line(err)) from None
    data.warn_without_price_variation(store_level=_store_level(model))
    return source, data


def _store_level(model: str) -> bool:
    """Whether the model has an elasticity per store."""
    return model == "store_multilevel"


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
    source: SalesFile

    @property
    def converged(self) -> bool:
        """Whether the fit passes the convergence gates (:func:`converged`)."""
        return converged(self.report, self.idata)

    def report_dict(self) -> dict:
        """The convergence report as plain JSON-ready values."""
        from elasticity_lib import __version__

        return {
            "input": str(self.path),
            "input_format": {"separator": self.source.sep, "decimal": self.source.decimal,
                             "renamed_columns": self.source.renamed},
            "store_ids": self.data.store_ids,
            "zero_sales": self.data.zero_sales,
            "zero_sales_dropped": self.data.zero_sales_dropped,
            "model": self.model,
            "groups_without_price_variation": self.data.without_price_variation(_store_level(self.model)),
            "n_rows": self.data.n_obs,
            "n_regions": self.data.n_regions,
            "n_stores": self.data.n_stores,
            "sampler": self.settings,
            **dataclasses.asdict(self.report),
            "max_divergences": allowed_divergences(self.idata),
            "converged": self.converged,
            "ok": self.converged,
            "ok_means": ("divergences <= max_divergences (a healthy fit, at most 1 transition in 1,000 diverging, "
                         "exceeds it with probability 1e-3), max r_hat <= 1.01, min bulk and tail ESS >= 400"),
            "elasticity_lib_version": __version__,
        }


def _interval_stats(draws: xr.DataArray, dim: str) -> pd.DataFrame:
    # the posterior table with the command line's column names (94% HDI)
    from elasticity_lib.summaries import posterior_table

    return posterior_table(draws, dim, prob=0.94, interval="hdi").rename(
        columns={"mean": "elasticity_mean", "sd": "elasticity_sd"})


def elasticity_table(idata: xr.DataTree, data: ModelData, report: ConvergenceReport | None = None) -> pd.DataFrame:
    """Posterior mean, sd and 94% HDI of the elasticity of each region, then of each store.

    Store rows appear only when the posterior has ``beta_store`` (the store-level model).
    ``informed_by_own_prices`` is false for a group whose prices never vary;
    ``converged`` is the verdict of :func:`converged` (``report`` is computed from ``idata``
    when not given).
    """
    report = report if report is not None else convergence_report(idata)
    post = idata["posterior"].dataset
    store_level = "beta_store" in post
    informed = data.informed_by_own_prices(store_level)
    n_region = np.bincount(data.region_idx, minlength=data.n_regions)
    regions = _interval_stats(post["beta"], "region")
    out = regions.reset_index(drop=True).assign(level="region", region_id=data.coords["region"],
                                                store_id=pd.NA, n_obs=n_region,
                                                informed_by_own_prices=informed["region"])
    parts = [out]
    if store_level:
        stores = _interval_stats(post["beta_store"], "store")
        ids = data.table.drop_duplicates("region_store_id").set_index("region_store_id")
        labels = data.coords["store"]
        parts.append(stores.reset_index(drop=True).assign(
            level="store",
            region_id=[data.coords["region"][r] for r in data.store_region_idx],
            store_id=ids.loc[labels, "store_id"].to_numpy(),
            n_obs=np.bincount(data.store_idx, minlength=data.n_stores),
            informed_by_own_prices=informed["store"],
        ))
    return pd.concat(parts, ignore_index=True).assign(converged=converged(report, idata))[TABLE_COLUMNS]


def fit_csv(path: str | os.PathLike, model: str = "multilevel", *, sep: str | None = None,
            decimal: str | None = None, store_ids: str = "global", zero_sales: str = "error",
            draws: int | None = None, tune: int | None = None, chains: int | None = None,
            random_seed: int | None = None, progressbar: bool = False) -> CsvFit:
    """Validate a sales CSV, fit one of the book's models and tabulate its elasticities.

    ``model``, ``sep``, ``decimal``, ``store_ids`` and ``zero_sales`` are those of :func:`prepare_csv`;
    sampler settings left at ``None`` take the book's defaults. A file that cannot be used
    raises :class:`InputError` (a ``ValueError``) naming the problem, the column and the
    lines, before anything is fitted.
    """
    source, data = prepare_csv(path, model, sep=sep, decimal=decimal, store_ids=store_ids, zero_sales=zero_sales)
    return _fit_prepared(Path(path), source, data, model, draws=draws, tune=tune, chains=chains,
                         random_seed=random_seed, progressbar=progressbar)


def _fit_prepared(path: Path, source: SalesFile, data: ModelData, model: str, *, progressbar: bool,
                  **sampler) -> CsvFit:
    settings = {k: v for k, v in sampler.items() if v is not None}
    built = build_model(model, data)
    idata = fit(built, progressbar=progressbar, **settings)
    chosen = sampling_settings(built, **settings)
    used = {k: chosen[k] for k in ("nuts_sampler", "draws", "tune", "chains", "target_accept", "random_seed")}
    report = convergence_report(idata)
    return CsvFit(path=path, model=model, data=data, idata=idata, table=elasticity_table(idata, data, report),
                  report=report, settings=used, source=source)


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
