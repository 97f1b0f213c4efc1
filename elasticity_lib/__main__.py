"""``python -m elasticity_lib``: fit the book's models to a sales CSV (see :mod:`elasticity_lib.cli`)."""

import sys

from elasticity_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
