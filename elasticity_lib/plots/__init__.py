"""Figures, each a function that returns a titled matplotlib ``Figure`` (or ``Axes``).

- :mod:`~elasticity_lib.plots.market`: demand curves and the simulated or observed market;
- :mod:`~elasticity_lib.plots.posterior`: prior and posterior predictive checks, traces,
  forests, pair plots and estimates per group;
- :mod:`~elasticity_lib.plots.graphs`: model graphs (Graphviz) in a reproducible layout.

Submodules are imported on first use.
"""

from elasticity_lib._checks import lazy_submodules

_SUBMODULES = {'market', 'posterior', 'graphs'}

__getattr__ = lazy_submodules(__name__, _SUBMODULES)
