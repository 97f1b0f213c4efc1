"""Figures, each a function that returns a titled matplotlib ``Figure`` (or ``Axes``).

- :mod:`~elasticity_lib.plots.market`: demand curves and the simulated or observed market;
- :mod:`~elasticity_lib.plots.posterior`: prior and posterior predictive checks, traces,
  forests, pair plots and estimates per group;
- :mod:`~elasticity_lib.plots.graphs`: model graphs (Graphviz) in a reproducible layout.

Submodules are imported on first use.
"""

from importlib import import_module

_SUBMODULES = {'market', 'posterior', 'graphs'}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
