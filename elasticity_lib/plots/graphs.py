"""Drawings of a model's graph (Graphviz), in a layout that does not change between runs.

Kept apart from the figures of :mod:`elasticity_lib.plots.posterior` because it needs
Graphviz (the Python package, and its ``dot`` program to render).
"""

from __future__ import annotations

import graphviz
import pymc as pm

__all__ = ["canonical_graph", "model_graph"]


def canonical_graph(graph: graphviz.Digraph) -> graphviz.Digraph:
    """The same graph with its statements in a fixed order.

    :func:`pymc.model_to_graphviz` emits nodes, plates and edges in the order of Python
    sets, which changes between interpreter sessions; Graphviz then numbers the elements
    of its SVG differently and a notebook's output changes from run to run. Sorting the
    top-level nodes, the plates (and the nodes inside each) and the edges gives a stable
    drawing of the identical graph.
    """
    nodes, edges, plates, other = [], [], [], []
    block: list[str] | None = None
    for line in graph.body:
        if block is not None:
            block.append(line)
            if line.strip() == "}":
                plates.append(block)
                block = None
        elif line.lstrip().startswith("subgraph"):
            block = [line]
        elif " -> " in line:
            edges.append(line)
        elif "[" in line:
            nodes.append(line)
        else:
            other.append(line)
    if block is not None:
        raise ValueError("unterminated subgraph in the graph body")

    def sorted_plate(lines: list[str]) -> list[str]:
        head, inner, tail = lines[0], lines[1:-1], lines[-1]
        members = sorted(ln for ln in inner if not ln.strip().startswith("label="))
        labels = [ln for ln in inner if ln.strip().startswith("label=")]
        return [head, *members, *labels, tail]

    out = graph.copy()
    out.body = [*other, *sorted(nodes), *(ln for p in sorted(plates) for ln in sorted_plate(p)), *sorted(edges)]
    return out


def model_graph(model: pm.Model) -> graphviz.Digraph:
    """:func:`pymc.model_to_graphviz` with a reproducible layout (see :func:`canonical_graph`)."""
    return canonical_graph(pm.model_to_graphviz(model))
