"""Figures of fitted models: panels, titles, labels and overlays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from elasticity_lib.models import build_model
from elasticity_lib.plots.graphs import canonical_graph, model_graph
from elasticity_lib.plots.posterior import (
    plot_forest,
    plot_population_pair,
    plot_ppc_models,
    plot_predictive_bands,
    plot_prior_predictive,
    plot_prior_vs_posterior,
    plot_trace,
    ppc_tree,
)
from elasticity_lib.predict import add_posterior_predictive, predictive_bands, sample_prior_predictive


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def prior(small_data):
    return sample_prior_predictive("multilevel", small_data, draws=200, random_seed=4)


def _as_fit(prior_tree, chains=2):
    """Prior draws reshaped into a 'posterior' with several chains (plots need no real fit)."""
    ds = prior_tree["prior"].to_dataset()
    draws = ds.sizes["draw"] // chains
    out = {}
    for name, da in ds.data_vars.items():
        values = da.values[0, : chains * draws].reshape(chains, draws, *da.shape[2:])
        out[name] = xr.DataArray(values, dims=da.dims, coords={d: da[d] for d in da.dims[2:] if d in da.coords})
    return xr.DataTree.from_dict({"posterior": xr.Dataset(out).assign_coords(chain=np.arange(chains),
                                                                           draw=np.arange(draws))})


@pytest.fixture(scope="module")
def fake_fit(prior):
    return _as_fit(prior)


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def test_prior_predictive_figure(prior, small_data):
    fig = plot_prior_predictive(prior, small_data, num_draws=20, title="Prior check")
    axes = fig.axes
    assert len(axes) == 2
    assert fig._suptitle.get_text() == "Prior check"
    assert [ax.get_xlabel() for ax in axes] == ["log quantity", "log price"]
    assert [ax.get_ylabel() for ax in axes] == ["density", "log quantity"]
    assert all(ax.get_title() for ax in axes)
    # 20 simulated data sets + the observed one; 20 prior lines
    assert len(axes[0].lines) == 21
    assert len(axes[1].lines) == 20
    smallest = int(np.argmin(np.bincount(small_data.region_idx)))
    assert axes[1].get_title().endswith(f"region {small_data.coords['region'][smallest]}")
    assert len(axes[1].collections[0].get_offsets()) == int((small_data.region_idx == smallest).sum())


def test_prior_predictive_rejects_bad_input(prior, small_data):
    with pytest.raises(ValueError, match="unknown region"):
        plot_prior_predictive(prior, small_data, region=99)
    with pytest.raises(ValueError, match="num_draws"):
        plot_prior_predictive(prior, small_data, num_draws=0)
    with pytest.raises(ValueError, match="prior_predictive"):
        plot_prior_predictive(xr.DataTree.from_dict({"prior": prior["prior"].to_dataset()}), small_data)


def test_predictive_bands_figure(fake_fit, small_data):
    bands = predictive_bands(fake_fit, small_data, n_points=5, seed=1)
    fig = plot_predictive_bands(bands, data=small_data, col_wrap=3)
    axes = fig.axes
    assert len(axes) == small_data.n_regions  # the unused panel of the 2x3 grid is removed
    assert fig._suptitle.get_text()
    for i, ax in enumerate(axes):
        assert ax.get_xlabel() == "price"
        assert ax.get_ylabel() == "quantity (thousands)"
        assert ax.get_title().startswith(f"region {small_data.coords['region'][i]} ")
        n_obs = int((small_data.region_idx == i).sum())
        assert len(ax.collections[-1].get_offsets()) == n_obs
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["94% predictive band", "94% band of the curve", "median curve", "observed"]


def test_predictive_bands_figure_rejects_foreign_bands(small_data):
    with pytest.raises(ValueError, match="lack variables"):
        plot_predictive_bands(xr.Dataset({"price": ("region", [1.0])}), small_data)


@pytest.mark.slow
def test_trace_figure(fake_fit):
    fig = plot_trace(fake_fit, ["b1", "sigma", "beta"], title="Trace of the multilevel model")
    assert fig._suptitle.get_text() == "Trace of the multilevel model"
    # two columns (density | trace) for each of three variables
    assert len(_visible_axes(fig)) == 6
    assert any(ax.get_xlabel() == "b1" or ax.get_ylabel() == "b1" for ax in fig.axes)


def test_forest_of_several_models_with_truth(fake_fit, small_data):
    other = fake_fit.copy()
    other["posterior"] = other["posterior"].to_dataset() + 0.5
    truth = np.linspace(-3, -1, small_data.n_regions)
    fig = plot_forest({"one": fake_fit, "two": other}, "beta", truth=truth, title="Elasticities")
    assert fig._suptitle.get_text() == "Elasticities"
    forest = [ax for ax in fig.axes if ax.get_xlabel() == "elasticity"]
    assert len(forest) == 1
    ax = forest[0]
    segments = [ln for ln in ax.lines if ln.get_gid() == "truth"]
    assert len(segments) == small_data.n_regions
    np.testing.assert_allclose([ln.get_xdata()[0] for ln in segments], truth)
    np.testing.assert_allclose([ln.get_xdata()[1] for ln in segments], truth)
    # each segment spans the rows of both models' point estimates for its region, and no others
    points = [c.get_offsets()[0] for c in ax.collections if len(c.get_offsets()) == 1]
    assert len(points) == 2 * small_data.n_regions
    for ln in segments:
        low, high = sorted(ln.get_ydata())
        assert sum(low <= p[1] <= high for p in points) == 2
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"one", "two"}


def test_forest_rejects_bad_truth_and_names(fake_fit):
    with pytest.raises(ValueError, match="one value per"):
        plot_forest(fake_fit, "beta", truth=[1.0, 2.0])
    with pytest.raises(ValueError, match="no posterior variable"):
        plot_forest(fake_fit, "elasticity")


@pytest.mark.slow
def test_population_pair_marks_truth(fake_fit):
    truth = {"a0": 1.0, "a1": 0.3, "b0": -0.1, "b1": -0.6}
    fig = plot_population_pair(fake_fit, truth)
    assert fig._suptitle.get_text()
    axes = _visible_axes(fig)
    assert len(axes) == 10  # lower triangle with diagonal of a 4x4 matrix
    vlines = [ln for ax in axes for ln in ax.lines if ln.get_gid() == "truth"]
    assert sorted(ln.get_xdata()[0] for ln in vlines) == sorted(truth.values())
    points = [c.get_offsets()[0] for ax in axes for c in ax.collections if c.get_gid() == "truth"]
    assert len(points) == 6  # one per pair below the diagonal
    assert {tuple(p) for p in points} == {(truth[x], truth[y]) for i, x in enumerate(truth)
                                          for y in list(truth)[i + 1:]}
    labelled = {ax.get_xlabel() for ax in axes} | {ax.get_ylabel() for ax in axes}
    assert set(truth) <= labelled
    with pytest.raises(ValueError, match="truth lacks"):
        plot_population_pair(fake_fit, {"a0": 1.0})


@pytest.mark.slow
def test_ppc_models_one_panel_per_model(fake_fit, small_data):
    fits = {name: add_posterior_predictive(fake_fit.copy(), small_data, seed=i)
            for i, name in enumerate(["baseline", "multilevel", "correlated"])}
    tree = ppc_tree(fits)
    assert list(tree["posterior_predictive"].data_vars) == ["baseline", "multilevel", "correlated"]
    fig = plot_ppc_models(fits, num_samples=10)
    axes = _visible_axes(fig)
    assert len(axes) == 3
    assert {ax.get_title() for ax in axes} == {"baseline", "multilevel", "correlated"}
    assert all(ax.get_xlabel() == "log quantity" and ax.get_ylabel() == "density" for ax in axes)
    assert fig._suptitle.get_text() == "Posterior predictive checks"


def test_ppc_models_needs_predictive_groups(fake_fit):
    with pytest.raises(ValueError, match="add_posterior_predictive"):
        plot_ppc_models({"bare": fake_fit})


def test_prior_vs_posterior_one_panel_per_variable(prior, fake_fit):
    fig = plot_prior_vs_posterior(prior, fake_fit, ["b1", "sigma"], title="Prior and posterior")
    axes = _visible_axes(fig)
    assert len(axes) == 2
    assert [ax.get_xlabel() for ax in axes] == ["b1", "sigma"]
    assert all(ax.get_ylabel() == "density" for ax in axes)
    assert all(len(ax.lines) == 2 for ax in axes)  # one prior and one posterior curve each
    assert fig._suptitle.get_text() == "Prior and posterior"
    assert "prior" not in fake_fit.children
    with pytest.raises(ValueError, match="missing"):
        plot_prior_vs_posterior(prior, fake_fit, ["rho"])


def _shuffled(graph, seed):
    """The graph with nodes, plate members and edges in another order (as another session gives)."""
    rng = np.random.default_rng(seed)
    body = list(graph.body)
    edges = [i for i, ln in enumerate(body) if " -> " in ln]
    tops = [i for i, ln in enumerate(body) if ln.startswith("\t") and not ln.startswith("\t\t")
            and "[" in ln and " -> " not in ln]
    for idx in (edges, tops):
        values = [body[i] for i in idx]
        for i, j in zip(idx, rng.permutation(len(values))):
            body[i] = values[j]
    out = graph.copy()
    out.body = body
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["baseline", "multilevel", "correlated"])
def test_model_graph_is_canonical(small_data, kind):
    import pymc as pm

    model = build_model(kind, small_data, likelihood="rows")
    raw = pm.model_to_graphviz(model)
    graph = model_graph(model)
    assert sorted(graph.body) == sorted(raw.body)  # the same statements, reordered
    for seed in range(3):
        assert canonical_graph(_shuffled(raw, seed)).source == graph.source
    edges = [ln for ln in graph.body if " -> " in ln]
    assert edges == sorted(edges)
    assert graph.pipe(format="svg") == model_graph(model).pipe(format="svg")
