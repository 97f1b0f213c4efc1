"""The data side of the book: entities, simulated markets, model inputs and the bundled data sets.

- :mod:`~elasticity_lib.data.entities`: validated business entities (SKU, store, region, market);
- :mod:`~elasticity_lib.data.simulation`: the data generating process of one product;
- :mod:`~elasticity_lib.data.product_simulation`: many products, with cross-price effects;
- :mod:`~elasticity_lib.data.price_setting`: prices set with an eye on demand (endogeneity);
- :mod:`~elasticity_lib.data.prepare`: from a tidy sales table to validated model inputs;
- :mod:`~elasticity_lib.data.outofcore`: the same sufficient statistics for data larger than memory;
- :mod:`~elasticity_lib.data.cigar`: the cigarette panel (bundled ``cigar.csv``), loaded and tidied;
- :mod:`~elasticity_lib.data.orange_juice`: the Dominick's orange-juice panel (a local copy built
  by ``make_orange_juice.py``; see ``README.md`` here).

Submodules are imported on first use (``elasticity_lib.data.cigar`` works after
``import elasticity_lib.data``).
"""

from elasticity_lib._checks import lazy_submodules

_SUBMODULES = {'entities', 'simulation', 'product_simulation', 'price_setting', 'prepare', 'outofcore', 'cigar', 'orange_juice'}

__getattr__ = lazy_submodules(__name__, _SUBMODULES)
