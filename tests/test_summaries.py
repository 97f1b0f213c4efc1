"""One posterior table, one set of quantity bands, one per-group least-squares fit.

Each of these replaced several functions that computed the same thing. The tests check
the new functions against direct NumPy computations, and check that they reproduce the
replaced functions exactly on fixed arrays: the ``_legacy_*`` functions below are verbatim
copies of the replaced code (only renamed), kept as references so that a later change of
the new functions that alters a result fails here.
"""

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from elasticity_lib import predict
from elasticity_lib.baselines import no_pooling_fits
from elasticity_lib.data.cigar import cigar_tidy, load_cigar
from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.predict import (
    posterior_predictive_draws,
    predictive_bands,
    price_grid,
    quantity_bands,
    row_effects,
)
from elasticity_lib.store_estimates import store_errors
from elasticity_lib.summaries import interval_columns, posterior_table
from elasticity_lib.validation.recovery import recovery_table
from elasticity_lib.workflow import _interval_stats

# --------------------------------------------------------------------------------------
# verbatim copies of the replaced functions (references for "results did not change")
# --------------------------------------------------------------------------------------


def _legacy_real_data_interval_table(draws, dim: str, prob: float = 0.94) -> pd.DataFrame:
    """Was ``elasticity_lib.real_data.interval_table``."""
    hdi = az.hdi(draws, prob=prob)
    pct = int(round(100 * prob))
    return pd.DataFrame({
        "mean": draws.mean(("chain", "draw")).to_numpy(),
        "sd": draws.std(("chain", "draw"), ddof=1).to_numpy(),
        f"hdi{pct}_low": hdi.sel(ci_bound="lower").to_numpy(),
        f"hdi{pct}_high": hdi.sel(ci_bound="upper").to_numpy(),
    }, index=pd.Index(draws[dim].to_numpy(), name=dim))


def _legacy_cli_interval_stats(draws: xr.DataArray, dim: str) -> pd.DataFrame:
    """Was ``elasticity_lib.cli._interval_stats``."""
    hdi = az.hdi(draws, prob=0.94)
    return pd.DataFrame({
        "elasticity_mean": draws.mean(("chain", "draw")).to_numpy(),
        "elasticity_sd": draws.std(("chain", "draw"), ddof=1).to_numpy(),
        "hdi94_low": hdi.sel(ci_bound="lower").to_numpy(),
        "hdi94_high": hdi.sel(ci_bound="upper").to_numpy(),
    }, index=pd.Index(draws[dim].to_numpy(), name=dim))


def _legacy_posterior_estimates(draws: xr.DataArray, prob: float = 0.94, dim: str = "store") -> pd.DataFrame:
    """Was ``elasticity_lib.stores.posterior_estimates``."""
    draws = draws.as_numpy()
    tail = (1 - prob) / 2
    q = draws.quantile([tail, 1 - tail], dim=("chain", "draw"))
    return pd.DataFrame(
        {
            "estimate": draws.mean(("chain", "draw")).transpose(dim).values,
            "lower": q.isel(quantile=0).transpose(dim).values,
            "upper": q.isel(quantile=1).transpose(dim).values,
        },
        index=pd.Index(draws[dim].values.tolist(), name=dim),
    )


def _legacy_recovery_interval_table(idata, truth, prob: float = 0.94) -> pd.DataFrame:
    """Was ``elasticity_lib.recovery.interval_table`` (argument checks left out)."""
    post = idata["posterior"].to_dataset().as_numpy()
    rows = []
    for name, value in truth.items():
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        true = np.atleast_1d(np.asarray(value, dtype=float))
        hdi = az.hdi(da, prob=prob)
        mean = da.mean(("chain", "draw"))
        labels = [name] if not extra else [f"{name}[{c}]" for c in da[extra[0]].values]
        lower = np.atleast_1d(hdi.sel(ci_bound="lower").values)
        upper = np.atleast_1d(hdi.sel(ci_bound="upper").values)
        for i, label in enumerate(labels):
            rows.append({"parameter": label, "true": true[i], "mean": float(np.atleast_1d(mean.values)[i]),
                         "hdi_lower": float(lower[i]), "hdi_upper": float(upper[i]),
                         "covered": bool(lower[i] <= true[i] <= upper[i])})
    return pd.DataFrame(rows).set_index("parameter")


def _legacy_demand_bands(effects: xr.Dataset, prices, *, prob: float = 0.94, seed=None) -> pd.DataFrame:
    """Was ``elasticity_lib.new_regions.demand_bands`` (argument checks left out)."""
    prices = np.asarray(prices, dtype=float)
    tree = xr.DataTree.from_dict({"posterior": effects[["alpha", "beta", "sigma"]].as_numpy()})
    n_regions = effects.sizes["region"]
    dims = ("grid_region", "price_point")
    group = xr.DataArray(np.repeat(np.arange(n_regions), prices.size).reshape(n_regions, -1), dims=dims)
    log_price = xr.DataArray(np.broadcast_to(np.log(prices), group.shape).copy(), dims=dims)
    mu, sigma = row_effects(tree, group, log_price)
    draws = posterior_predictive_draws(tree, group, log_price, seed)
    tail = (1 - prob) / 2
    sample = ("chain", "draw")
    curve = np.exp(mu).quantile([tail, 0.5, 1 - tail], dim=sample).transpose("quantile", *dims).values
    pred = np.exp(draws).quantile([tail, 1 - tail], dim=sample).transpose("quantile", *dims).values
    expected = np.exp(mu + sigma**2 / 2).mean(sample).transpose(*dims).values
    regions = effects["region"].values
    return pd.DataFrame({
        "region": np.repeat(regions, prices.size),
        "price": np.tile(prices, n_regions),
        "curve_median": curve[1].ravel(),
        "curve_lower": curve[0].ravel(),
        "curve_upper": curve[2].ravel(),
        "pred_lower": pred[0].ravel(),
        "pred_upper": pred[1].ravel(),
        "expected": expected.ravel(),
    })


def _legacy_predictive_bands(idata, data, *, n_points: int = 30, prob: float = 0.94, seed=None) -> xr.Dataset:
    """Was ``elasticity_lib.predictive.predictive_bands`` (argument checks left out)."""
    grid = price_grid(data, n_points)
    row_dims = ("grid_region", "point")
    group = xr.DataArray(np.broadcast_to(np.arange(data.n_regions)[:, None], grid.shape).copy(), dims=row_dims)
    log_price = xr.DataArray(np.log(grid.values), dims=row_dims)
    mu, _ = row_effects(idata, group, log_price)
    draws = posterior_predictive_draws(idata, group, log_price, seed)
    q = [(1 - prob) / 2, 0.5, (1 + prob) / 2]
    sample = ("chain", "draw")
    curve = np.exp(mu).quantile(q, dim=sample)
    pred = np.exp(draws).quantile([q[0], q[2]], dim=sample)
    out = xr.Dataset(
        {
            "price": grid.rename({"region": "grid_region"}).drop_vars(["grid_region", "point"]),
            "median": curve.isel(quantile=1).drop_vars("quantile"),
            "curve_lower": curve.isel(quantile=0).drop_vars("quantile"),
            "curve_upper": curve.isel(quantile=2).drop_vars("quantile"),
            "pred_lower": pred.isel(quantile=0).drop_vars("quantile"),
            "pred_upper": pred.isel(quantile=1).drop_vars("quantile"),
        }
    )
    out = out.rename({"grid_region": "region"}).assign_coords(region=grid["region"], point=grid["point"])
    out.attrs["prob"] = prob
    return out


def _legacy_per_state_ols(df: pd.DataFrame) -> pd.DataFrame:
    """Was ``elasticity_lib.real_data.per_state_ols``."""
    import statsmodels.api as sm

    rows = []
    for state, one in df.groupby("state_abbr", sort=True):
        x = sm.add_constant(np.log(one["real_price"].to_numpy()))
        res = sm.OLS(np.log(one["packs"].to_numpy()), x).fit()
        rows.append((state, one["census_division"].iloc[0], float(res.params[1]), float(res.bse[1]), len(one)))
    return pd.DataFrame(rows, columns=["state", "division", "elasticity", "se", "n_obs"]).set_index("state")


# --------------------------------------------------------------------------------------
# fixed arrays
# --------------------------------------------------------------------------------------


def _draws(seed=0, chains=4, draws=250, groups=("a", "b", "c", "d"), dim="g", skew=True):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(chains, draws, len(groups))) * np.linspace(0.5, 2.0, len(groups))
    if skew:  # skewed draws: HDI and equal-tailed intervals differ
        values = np.exp(values)
    return xr.DataArray(values, dims=("chain", "draw", dim), coords={dim: list(groups)}, name="x")


def _effects(seed=3, regions=("1", "2", "new"), chains=2, draws=300):
    rng = np.random.default_rng(seed)
    shape = (chains, draws, len(regions))
    return xr.Dataset(
        {
            "alpha": (("chain", "draw", "region"), 2.0 + 0.3 * rng.normal(size=shape)),
            "beta": (("chain", "draw", "region"), -2.0 + 0.4 * rng.normal(size=shape)),
            "sigma": (("chain", "draw"), np.abs(0.3 + 0.05 * rng.normal(size=shape[:2]))),
        },
        coords={"region": list(regions)},
    )


def _hdi_brute_force(x: np.ndarray, prob: float) -> tuple[float, float]:
    """The narrowest window of sorted draws holding floor(prob * n) + 1 of them."""
    x = np.sort(x)
    k = int(np.floor(prob * x.size))
    widths = x[k:] - x[: x.size - k]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + k])


# --------------------------------------------------------------------------------------
# posterior_table
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prob", [0.94, 0.9, 0.5])
def test_posterior_table_matches_numpy(prob):
    draws = _draws()
    flat = draws.values.reshape(-1, draws.sizes["g"])
    for interval in ("hdi", "equal-tailed"):
        table = posterior_table(draws, "g", prob=prob, interval=interval)
        low, high = interval_columns(prob, interval)
        assert list(table.columns) == ["mean", "sd", low, high]
        assert list(table.index) == ["a", "b", "c", "d"] and table.index.name == "g"
        np.testing.assert_allclose(table["mean"], flat.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(table["sd"], flat.std(axis=0, ddof=1), rtol=1e-12)
        if interval == "hdi":
            expected = np.array([_hdi_brute_force(flat[:, j], prob) for j in range(flat.shape[1])])
        else:
            tail = (1 - prob) / 2
            expected = np.quantile(flat, [tail, 1 - tail], axis=0).T
        np.testing.assert_allclose(table[[low, high]].to_numpy(), expected, rtol=1e-12)
        assert table.attrs == {"prob": prob, "interval": interval}


def test_hdi_is_narrower_than_the_equal_tailed_interval_of_skewed_draws():
    draws = _draws()
    hdi = posterior_table(draws, "g")
    eti = posterior_table(draws, "g", interval="equal-tailed")
    assert ((hdi["hdi94_high"] - hdi["hdi94_low"]) < (eti["eti94_high"] - eti["eti94_low"])).all()


def test_posterior_table_of_a_scalar_has_one_row_named_after_it():
    scalar = _draws(groups=("only",)).isel(g=0, drop=True).rename("b1")
    table = posterior_table(scalar)
    assert list(table.index) == ["b1"] and table.index.name == "parameter"
    vector = posterior_table(_draws(groups=("only",)), "g")
    np.testing.assert_array_equal(table.to_numpy(), vector.to_numpy())


def test_posterior_table_rejects_bad_input():
    draws = _draws()
    with pytest.raises(ValueError, match="prob must be strictly between 0 and 1"):
        posterior_table(draws, "g", prob=94)
    with pytest.raises(ValueError, match="interval must be one of"):
        posterior_table(draws, "g", interval="central")
    with pytest.raises(ValueError, match="not 'store'"):
        posterior_table(draws, "store")
    with pytest.raises(ValueError, match="lack the sample dims"):
        posterior_table(draws.isel(chain=0), "g")
    with pytest.raises(ValueError, match="name the one for the rows"):
        posterior_table(draws)
    with pytest.raises(ValueError, match="rows along 'g' only"):
        posterior_table(draws.expand_dims(extra=[0, 1], axis=-1), "g")
    with pytest.raises(TypeError, match="DataArray"):
        posterior_table(draws.values, "g")


def test_interval_columns_name_kind_and_percentage():
    assert interval_columns() == ("hdi94_low", "hdi94_high")
    assert interval_columns(0.9, "equal-tailed") == ("eti90_low", "eti90_high")
    assert interval_columns(0.945) == ("hdi94.5_low", "hdi94.5_high")
    assert interval_columns(0.57) == ("hdi57_low", "hdi57_high")


@pytest.mark.parametrize("prob", [0.94, 0.9, 0.8])
def test_posterior_table_reproduces_the_replaced_tables_exactly(prob):
    draws = _draws(seed=5)
    pd.testing.assert_frame_equal(posterior_table(draws, "g", prob=prob),
                                  _legacy_real_data_interval_table(draws, "g", prob=prob))
    # store_errors reads a posterior table's mean and interval where the adapter's columns were
    legacy = _legacy_posterior_estimates(draws, prob=prob, dim="g")
    truth, n_obs = pd.Series(0.0, index=legacy.index), pd.Series(10, index=legacy.index)
    table = posterior_table(draws, "g", prob=prob, interval="equal-tailed")
    pd.testing.assert_frame_equal(store_errors({"m": table}, truth, n_obs), store_errors({"m": legacy}, truth, n_obs))


def test_cli_table_reproduces_the_replaced_table_exactly():
    draws = _draws(seed=6, dim="region")
    pd.testing.assert_frame_equal(_interval_stats(draws, "region"), _legacy_cli_interval_stats(draws, "region"))


def test_recovery_table_reproduces_the_replaced_table_exactly():
    x = _draws(seed=7, groups=("0",)).isel(g=0, drop=True)
    beta = _draws(seed=8, groups=(1, 2, 3), dim="region", skew=False) - 2.0
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": x, "beta": beta})})
    truth = {"x": 1.1, "beta": [-1.0, -2.5, -3.05]}
    for prob in (0.94, 0.8):
        pd.testing.assert_frame_equal(recovery_table(tree, truth, prob=prob),
                                      _legacy_recovery_interval_table(tree, truth, prob=prob))


# --------------------------------------------------------------------------------------
# quantity_bands
# --------------------------------------------------------------------------------------


def test_quantity_bands_match_numpy():
    effects = _effects()
    prices = np.array([0.8, 1.0, 1.7])
    bands = quantity_bands(effects, prices, prob=0.9, seed=11)
    assert dict(bands.sizes) == {"region": 3, "point": 3}
    assert list(bands["region"].values) == ["1", "2", "new"] and bands.attrs["prob"] == 0.9
    a = effects["alpha"].values.reshape(-1, 3)
    b = effects["beta"].values.reshape(-1, 3)
    s = effects["sigma"].values.reshape(-1)
    noise = np.random.default_rng(11).standard_normal((2, 300, 3, 3)).reshape(-1, 3, 3)
    for r in range(3):
        mu = a[:, r, None] + b[:, r, None] * np.log(prices)[None, :]
        q = np.quantile(np.exp(mu), [0.05, 0.5, 0.95], axis=0)
        np.testing.assert_allclose(bands["price"].values[r], prices)
        np.testing.assert_allclose(bands["curve_lower"].values[r], q[0], rtol=1e-12)
        np.testing.assert_allclose(bands["curve_median"].values[r], q[1], rtol=1e-12)
        np.testing.assert_allclose(bands["curve_upper"].values[r], q[2], rtol=1e-12)
        pred = np.quantile(np.exp(mu + s[:, None] * noise[:, r, :]), [0.05, 0.95], axis=0)
        np.testing.assert_allclose(bands["pred_lower"].values[r], pred[0], rtol=1e-12)
        np.testing.assert_allclose(bands["pred_upper"].values[r], pred[1], rtol=1e-12)
        np.testing.assert_allclose(bands["expected"].values[r], np.exp(mu + s[:, None] ** 2 / 2).mean(axis=0),
                                   rtol=1e-12)


def test_quantity_bands_take_a_grid_per_region():
    effects = _effects()
    grid = xr.DataArray([[1.0, 2.0], [1.5, 2.5], [0.5, 3.0]], dims=("region", "point"))
    bands = quantity_bands(effects, grid, seed=1)
    np.testing.assert_array_equal(bands["price"].values, grid.values)
    one = quantity_bands(effects.isel(region=[1]), [1.5, 2.5], seed=1)
    # the curve band of a region depends on its own prices only (the noise draws differ)
    np.testing.assert_allclose(bands["curve_median"].values[1], one["curve_median"].values[0], rtol=1e-12)


def test_quantity_bands_reject_bad_input(small_data):
    effects = _effects()
    with pytest.raises(ValueError, match="strictly positive prices"):
        quantity_bands(effects, [1.0, -2.0], seed=1)
    with pytest.raises(ValueError, match="prob must be strictly between 0 and 1"):
        quantity_bands(effects, [1.0], prob=1.5, seed=1)
    with pytest.raises(ValueError, match="dims"):
        quantity_bands(effects, xr.DataArray([[1.0]], dims=("region", "price")), seed=1)
    with pytest.raises(ValueError, match="2 regions but the effects have 3"):
        quantity_bands(effects, xr.DataArray(np.ones((2, 3)), dims=("region", "point")), seed=1)
    store_level = effects.rename({"alpha": "alpha_store", "beta": "beta_store", "region": "store"})
    with pytest.raises(ValueError, match="region-level effects"):
        quantity_bands(store_level, [1.0], seed=1)


@pytest.mark.parametrize("prob", [0.94, 0.8])
def test_quantity_bands_reproduce_the_replaced_demand_bands_exactly(prob):
    effects = _effects(seed=4)
    prices = np.linspace(0.7, 2.2, 5)
    bands = quantity_bands(effects, prices, prob=prob, seed=9).to_dataframe().reset_index().drop(columns="point")
    pd.testing.assert_frame_equal(bands, _legacy_demand_bands(effects, prices, prob=prob, seed=9))


@pytest.mark.parametrize("prob", [0.94, 0.8])
def test_predictive_bands_reproduce_the_replaced_bands_exactly(small_data, prob):
    rng = np.random.default_rng(2)
    shape = (2, 200, small_data.n_regions)
    post = xr.Dataset(
        {
            "alpha": (("chain", "draw", "region"), 2.0 + 0.2 * rng.normal(size=shape)),
            "beta": (("chain", "draw", "region"), -2.0 + 0.3 * rng.normal(size=shape)),
            "sigma": (("chain", "draw"), 0.3 + 0.01 * rng.random(shape[:2])),
        },
        coords={"region": small_data.coords["region"]},
    )
    tree = xr.DataTree.from_dict({"posterior": post})
    xr.testing.assert_identical(predictive_bands(tree, small_data, n_points=7, prob=prob, seed=4),
                                _legacy_predictive_bands(tree, small_data, n_points=7, prob=prob, seed=4))
    # the same numbers as quantity_bands on the data's price grid
    bands = quantity_bands(tree, price_grid(small_data, 7), prob=prob, seed=4)
    np.testing.assert_array_equal(bands["curve_median"].values,
                                  predictive_bands(tree, small_data, n_points=7, prob=prob, seed=4)["median"].values)
    assert predict.quantity_bands is quantity_bands


# --------------------------------------------------------------------------------------
# no_pooling_fits
# --------------------------------------------------------------------------------------


def test_no_pooling_fits_reproduce_the_replaced_per_state_least_squares_exactly():
    cigar = load_cigar()
    data = prepare_data(cigar_tidy(cigar))
    fits = no_pooling_fits(data)
    fits.index = [label.split("_s-")[1] for label in fits.index]
    legacy = _legacy_per_state_ols(cigar)
    fits = fits.loc[legacy.index]
    np.testing.assert_array_equal(fits["estimate"].to_numpy(), legacy["elasticity"].to_numpy())
    np.testing.assert_array_equal(fits["se"].to_numpy(), legacy["se"].to_numpy())
    np.testing.assert_array_equal(fits["n_obs"].to_numpy(), legacy["n_obs"].to_numpy())
    assert (fits["region"] == legacy["division"]).all()


def test_no_pooling_fits_match_numpy_least_squares(small_data):
    fits = no_pooling_fits(small_data, prob=0.9)
    from scipy import stats

    for k, store in enumerate(small_data.coords["store"]):
        mask = small_data.store_idx == k
        x, y = small_data.log_price[mask], small_data.log_quantity[mask]
        design = np.column_stack([np.ones_like(x), x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        cov = resid @ resid / (len(y) - 2) * np.linalg.inv(design.T @ design)
        se = np.sqrt(cov[1, 1])
        t = stats.t.ppf(0.95, len(y) - 2)
        row = fits.loc[store]
        np.testing.assert_allclose([row["intercept"], row["estimate"], row["se"]], [coef[0], coef[1], se], rtol=1e-8)
        np.testing.assert_allclose([row["lower"], row["upper"]], [coef[1] - t * se, coef[1] + t * se], rtol=1e-8)


def test_the_price_check_is_shared_by_bands_and_pricing():
    from elasticity_lib._checks import check_prices
    from elasticity_lib.pricing import expected_profit_curve

    np.testing.assert_array_equal(check_prices([1, 2.5]), [1.0, 2.5])
    for bad in ([], [1.0, 0.0], [1.0, np.nan], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="prices must be a non-empty 1-d array of finite, strictly positive"):
            check_prices(bad)
        with pytest.raises(ValueError, match="prices must be a non-empty 1-d array of finite, strictly positive"):
            quantity_bands(_effects(), bad, seed=1)
        with pytest.raises(ValueError, match="prices must be a non-empty 1-d array of finite, strictly positive"):
            expected_profit_curve(_effects(), 0.5, bad)
    grid = xr.DataArray(np.ones((3, 2)), dims=("region", "point"))
    with pytest.raises(ValueError, match="the price grid must be a non-empty 2-d array"):
        quantity_bands(_effects(), grid.where(grid.point == 0, -1.0), seed=1)
