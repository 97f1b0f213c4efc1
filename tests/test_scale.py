"""fit_many on Dask: outputs, resume, bad data, a killed worker, the command line, compiled-model reuse.

Tests that sample use tiny categories (the shared small market's size), few draws and one
local cluster of two worker processes for the whole module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_CONFIG
from pydantic import ValidationError

from elasticity_lib import cli
from elasticity_lib.data.prepare import prepare_data
from elasticity_lib.scale import (
    _COMPILED,
    CATEGORY_FILES,
    FAILURE_FILE,
    SUMMARY_FILE,
    FitManyConfig,
    PytensorCompileDirs,
    _fit_multilevel_reused,
    category_dir,
    fit_category,
    fit_many,
    load_parquet_category,
    simulate_catalogue,
    start_client,
)
from elasticity_lib.workflow import InputError

SETTINGS = {"draws": 150, "tune": 150, "chains": 2}
FITTED = {"ok", "unconverged"}


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return simulate_catalogue(5, SMALL_CONFIG, seed=11)


@pytest.fixture(scope="module")
def client():
    c = start_client(n_workers=2)
    yield c
    c.close()
    c.cluster.close()


def category_files(out) -> dict:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in out.iterdir() if d.is_dir()}


def with_bad_prices(catalogue: pd.DataFrame, category: str) -> pd.DataFrame:
    bad = catalogue.copy()
    rows = bad.index[bad["category"] == category][[1, 4]]
    bad.loc[rows, "price"] = 0.0
    return bad


# ---------------------------------------------------------------- fast: no sampling

def test_category_dir_is_a_safe_name(tmp_path):
    assert category_dir(tmp_path, "a/b").name == "a%2Fb"
    assert category_dir(tmp_path, "..").name == "%2E."
    assert category_dir(tmp_path, 7).name == "7"


def test_config_names_the_choices():
    with pytest.raises(ValidationError, match="unknown model 'nope'"):
        FitManyConfig(model="nope")
    with pytest.raises(ValidationError, match="target_accept"):
        FitManyConfig(target_accept=1.5)


def test_sampler_settings_default_to_the_kind(small_data):
    from elasticity_lib.inference import KIND_SAMPLING, SAMPLING_DEFAULTS
    from elasticity_lib.models import build_model
    from elasticity_lib.scale import _sampler

    correlated = _sampler(FitManyConfig(model="correlated"), build_model("correlated", small_data))
    assert correlated["draws"] == KIND_SAMPLING["correlated"]["draws"]
    assert _sampler(FitManyConfig(draws=50), build_model("correlated", small_data))["draws"] == 50
    assert _sampler(FitManyConfig())["draws"] == SAMPLING_DEFAULTS["draws"]


def test_unusable_data_is_rejected_before_any_fit(catalogue, tmp_path):
    with pytest.raises(InputError, match="no column 'segment'"):
        fit_many(catalogue, by="segment", out_dir=tmp_path / "out")
    holes = catalogue.copy()
    holes.loc[[3, 8], "category"] = None
    with pytest.raises(InputError, match=r"missing values in rows \[3, 8\]"):
        fit_many(holes, out_dir=tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        fit_many(tmp_path / "nowhere", out_dir=tmp_path / "out")
    with pytest.raises(InputError, match="not in the data"):
        fit_many(catalogue, out_dir=tmp_path / "out", categories=["cat-99999"])


def test_bad_category_is_recorded_with_its_reason(catalogue, tmp_path):
    part = with_bad_prices(catalogue, "cat-00001").query("category == 'cat-00001'").drop(columns="category")
    row = fit_category("cat-00001", part, tmp_path, FitManyConfig(**SETTINGS), seed=1)
    assert row["status"] == "bad_data"
    assert "column 'price' must be strictly positive" in row["reason"]
    failure = json.loads((tmp_path / "cat-00001" / FAILURE_FILE).read_text())
    assert failure["reason"] == row["reason"]
    assert not (tmp_path / "cat-00001" / CATEGORY_FILES["report"]).exists()


def test_finished_category_is_not_loaded_again(tmp_path):
    folder = category_dir(tmp_path, "done")
    folder.mkdir()
    (folder / CATEGORY_FILES["report"]).write_text(json.dumps({"status": "ok", "n_rows": 10, "divergences": 0}))

    def loader():
        raise AssertionError("a finished category was loaded again")

    row = fit_category("done", loader, tmp_path, FitManyConfig(), seed=1)
    assert row["status"] == "skipped" and row["n_rows"] == 10


def test_failures_include_earlier_unconverged_fits(tmp_path):
    from elasticity_lib.scale import SUMMARY_COLUMNS, FitManyResult

    summary = pd.DataFrame([
        {"category": "a", "status": "skipped", "reason": "finished earlier: ok"},
        {"category": "b", "status": "skipped", "reason": "finished earlier: unconverged"},
        {"category": "c", "status": "ok", "reason": ""},
        {"category": "d", "status": "error", "reason": "KilledWorker: ..."},
    ], columns=SUMMARY_COLUMNS)
    result = FitManyResult(summary, tmp_path, "a table")
    assert result.failures()["category"].tolist() == ["b", "d"]
    assert result.counts() == {"skipped": 2, "ok": 1, "error": 1}


@pytest.mark.parametrize("hive", [True, False])
def test_parquet_category_rows_named_by_file_and_row(catalogue, tmp_path, hive):
    if hive:
        catalogue.to_parquet(tmp_path, partition_cols=["category"], index=False)
    else:
        for i, rows in enumerate(np.array_split(np.arange(len(catalogue)), 3)):
            catalogue.iloc[rows].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    got = load_parquet_category(tmp_path, "category", "cat-00002")
    want = catalogue[catalogue["category"] == "cat-00002"].drop(columns="category")
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["price"].to_numpy(), want["price"].to_numpy())
    file, row = got.index[0].rsplit(":", 1)
    assert (tmp_path / file).exists() and int(row) >= 0


def test_compile_dirs_differ_per_worker(monkeypatch, tmp_path):
    class Nanny:
        def __init__(self, name):
            self.name, self.address, self.env = name, f"tcp://h:{name}", {}

    monkeypatch.setenv("PYTENSOR_FLAGS", "floatX=float64,compiledir=/elsewhere")
    plugin = PytensorCompileDirs(tmp_path)
    nannies = [Nanny(0), Nanny(1)]
    for n in nannies:
        plugin.setup(n)
    flags = [n.env["PYTENSOR_FLAGS"] for n in nannies]
    assert flags[0] != flags[1]
    assert all(f.startswith("floatX=float64,compiledir=") and "/elsewhere" not in f for f in flags)
    assert nannies[0].env["NUMBA_NUM_THREADS"] == "1"


def test_command_line_errors(tmp_path, capsys):
    assert cli.main(["fit-many", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 1
    assert "error: data not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["fit-many", str(tmp_path), "--out", str(tmp_path / "out"), "--draws", "0"])
    assert stop.value.code == 2


# ---------------------------------------------------------------- slow: sampling on a local cluster


@pytest.mark.slow
def test_reused_compiled_model_gives_the_fresh_fit(catalogue):
    """Swapping a category's data into a model compiled on another gives the draws of a fresh compile."""
    config = FitManyConfig(**SETTINGS)
    parts = {c: prepare_data(t.drop(columns="category")) for c, t in catalogue.groupby("category")}
    first, second = [d for d in parts.values() if d.n_regions == SMALL_CONFIG.n_regions][:2]
    _COMPILED.clear()
    _fit_multilevel_reused(first, config, seed=1)
    reused, notes = _fit_multilevel_reused(second, config, seed=2)
    assert notes["reused_compiled_model"]
    _COMPILED.clear()
    fresh, notes = _fit_multilevel_reused(second, config, seed=2)
    assert not notes["reused_compiled_model"]
    for name in ("b0", "b1", "sigma", "sigma_b", "beta", "alpha"):
        np.testing.assert_allclose(reused["posterior"][name].values, fresh["posterior"][name].values, rtol=1e-10)
    assert list(reused["posterior"]["region"].values) == list(second.coords["region"])


@pytest.mark.slow
def test_padded_fit_gives_the_unpadded_draws(catalogue):
    """A category fitted in a model padded with empty regions has the draws of its own-size model."""
    data = prepare_data(catalogue[catalogue["category"] == "cat-00003"].drop(columns="category"))
    _COMPILED.clear()
    plain, notes = _fit_multilevel_reused(data, FitManyConfig(**SETTINGS, region_bucket=1), seed=3)
    assert notes["model_regions"] == data.n_regions
    padded, notes = _fit_multilevel_reused(data, FitManyConfig(**SETTINGS, region_bucket=data.n_regions + 2), seed=3)
    assert notes["model_regions"] == data.n_regions + 2
    for name in ("b0", "b1", "sigma", "sigma_a", "sigma_b", "alpha_mean", "beta", "alpha"):
        np.testing.assert_allclose(padded["posterior"][name].values, plain["posterior"][name].values, rtol=1e-8)
    assert list(padded["posterior"]["region"].values) == list(data.coords["region"])


@pytest.mark.slow
def test_stop_resume_and_bad_category(client, catalogue, tmp_path):
    out = tmp_path / "out"
    bad = with_bad_prices(catalogue, "cat-00002")
    categories = sorted(catalogue["category"].unique())
    # a run stopped after two categories
    first = fit_many(bad, out_dir=out, client=client, categories=categories[:2], progress=False, **SETTINGS)
    assert set(first.summary["status"]) <= FITTED
    stamps = {c: (category_dir(out, c) / CATEGORY_FILES["report"]).stat().st_mtime_ns for c in categories[:2]}
    # the rerun skips them, records the bad category and fits the others
    second = fit_many(bad, out_dir=out, client=client, progress=False, **SETTINGS)
    status = dict(zip(second.summary["category"], second.summary["status"]))
    assert [status[c] for c in categories[:2]] == ["skipped", "skipped"]
    assert status["cat-00002"] == "bad_data"
    assert {status[c] for c in categories[3:]} <= FITTED
    assert {c: (category_dir(out, c) / CATEGORY_FILES["report"]).stat().st_mtime_ns for c in categories[:2]} == stamps
    reason = second.failures().set_index("category").loc["cat-00002", "reason"]
    assert "column 'price' must be strictly positive" in reason
    assert category_files(out)["cat-00002"] == [FAILURE_FILE]
    summary = pd.read_csv(out / SUMMARY_FILE)
    assert summary["category"].tolist() == categories
    # once the data are fixed, only that category is fitted, and its failure record goes
    third = fit_many(catalogue, out_dir=out, client=client, progress=False, **SETTINGS)
    status = dict(zip(third.summary["category"], third.summary["status"]))
    assert status.pop("cat-00002") in FITTED and set(status.values()) == {"skipped"}
    assert category_files(out)["cat-00002"] == sorted(CATEGORY_FILES.values())
    table = third.elasticities()
    assert sorted(table["category"].unique()) == categories
    assert (table.groupby("category").size() == SMALL_CONFIG.n_regions).all()


@pytest.mark.slow
def test_worker_killed_mid_run(client, catalogue, tmp_path):
    """Dask reruns the killed worker's category elsewhere; every category is written once, completely."""
    out = tmp_path / "out"
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            if list(out.glob(f"*/{CATEGORY_FILES['report']}")):
                busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    result = fit_many(catalogue, out_dir=out, client=client, progress=False, **SETTINGS)
    killer.join(timeout=5)
    assert killed, "no worker was busy after the first category finished"
    assert result.summary["category"].tolist() == sorted(catalogue["category"].unique())
    # a category whose task ran twice would show as skipped (found finished) rather than fitted again
    assert set(result.summary["status"]) <= FITTED | {"skipped"}
    files = category_files(out)
    assert all(names == sorted(CATEGORY_FILES.values()) for names in files.values()), files
    assert not list(out.rglob("*.tmp"))
    client.wait_for_workers(2, timeout=300)  # a restarted worker imports PyTensor again: slow on a busy machine


@pytest.mark.slow
def test_command_line_on_a_parquet_data_set(client, catalogue, tmp_path, capsys):
    data = tmp_path / "sales"
    with_bad_prices(catalogue, "cat-00001").to_parquet(data, partition_cols=["category"], index=False)
    out = tmp_path / "out"
    argv = ["fit-many", str(data), "--by", "category", "--out", str(out), "--scheduler", client.scheduler.address,
            "--draws", "150", "--tune", "150", "--chains", "2", "--max-divergences", "1000", "--no-progress"]
    assert cli.main(argv) == 3
    text = capsys.readouterr()
    assert "5 categories" in text.out
    assert "cat-00001: bad_data: column 'price' must be strictly positive" in text.err
    assert "category=cat-00001" in text.err  # rows are named by file and row
    report = json.loads((out / "cat-00000" / CATEGORY_FILES["report"]).read_text())
    assert report["status"] in FITTED and report["category"] == "cat-00000"
    spec = json.loads((out / "cat-00000" / CATEGORY_FILES["spec"]).read_text())
    assert spec["kind"] == "multilevel" and len(spec["regions"]) == SMALL_CONFIG.n_regions


# ---------------------------------------------------------------- compiled models padded to a bucket


def test_region_bucket_rounds_up():
    from elasticity_lib.scale import region_bucket

    assert [region_bucket(n, 4) for n in (1, 4, 5, 9)] == [4, 4, 8, 12]
    assert region_bucket(9, 1) == 9
    with pytest.raises(ValueError, match="positive"):
        region_bucket(0, 4)


def test_padded_model_has_the_unpadded_log_density(catalogue):
    """Regions without rows add exactly nothing: the padded model's log density is the unpadded one's.

    The padded model is compiled on one category and given another's data, as fit_many does.
    """
    import pymc as pm

    from elasticity_lib.models import build_model
    from elasticity_lib.scale import _padded_template, multilevel_shared_data

    parts = [prepare_data(t.drop(columns="category")) for _, t in catalogue.groupby("category")]
    first, second = parts[0], parts[1]
    n = second.n_regions + 3
    plain = build_model("multilevel", second, "marginal", shared_data=True)
    padded = build_model("multilevel", _padded_template(first, n), "marginal", shared_data=True)
    updates = multilevel_shared_data(second, n)
    assert len(updates["stat_n"]) == n and updates["stat_n"][-3:].tolist() == [0.0, 0.0, 0.0]
    with padded:
        pm.set_data(updates)
    rng = np.random.default_rng(3)
    logp_plain, logp_padded = plain.compile_logp(), padded.compile_logp()
    point = plain.initial_point()
    for _ in range(5):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in point.items()}
        assert logp_padded(point) == pytest.approx(logp_plain(point), rel=1e-12, abs=1e-9)
    # a padded region that had rows would change it: the test can fail
    updates["stat_n"][-1], updates["stat_cyy"][-1] = 3.0, 1.0
    with padded:
        pm.set_data(updates)
    assert padded.compile_logp()(point) != pytest.approx(logp_plain(point), rel=1e-6)
    with pytest.raises(ValueError, match="at least"):
        multilevel_shared_data(second, second.n_regions - 1)


# ---------------------------------------------------------------- diagnostics on stacked arrays


def test_element_diagnostics_equal_arviz():
    import arviz as az
    import xarray as xr

    from elasticity_lib.scale import element_diagnostics

    rng = np.random.default_rng(4)
    x = np.cumsum(rng.normal(size=(12, 4, 300)), axis=2) * 0.1 + rng.normal(size=(12, 4, 300))
    x[2] = 1.5  # constant
    x[3, 1, 7] = np.nan  # broken chain
    x[4] = rng.integers(0, 3, size=(4, 300))  # ties
    x[5, :2] += 3.0  # chains that disagree
    ds = xr.Dataset({"v": (("chain", "draw", "k"), np.moveaxis(x, 0, 2))})
    got = element_diagnostics(x)
    want = (az.rhat(ds)["v"].values, az.ess(ds, method="bulk")["v"].values, az.ess(ds, method="tail")["v"].values)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=1e-10)
    assert got[0][5] > 1.1  # the disagreement shows


def test_array_report_equals_convergence_report():
    from arviz_base import from_dict

    from elasticity_lib.inference import convergence_report
    from elasticity_lib.scale import array_convergence_report

    rng = np.random.default_rng(5)
    draws = {"mu": rng.normal(size=(4, 200)), "theta": np.cumsum(rng.normal(size=(4, 200, 3)), axis=1),
             "corr": np.ones((4, 200, 2))}
    stats = {"diverging": rng.random((4, 200)) < 0.01}
    idata = from_dict({"posterior": draws, "sample_stats": stats}, dims={"theta": ["group"], "corr": ["k"]},
                      coords={"group": ["a", "b", "c"]})
    assert array_convergence_report(idata) == convergence_report(idata)
    assert "theta[" in convergence_report(idata).worst_rhat


# ---------------------------------------------------------------- interrupting the command line


@pytest.mark.slow
def test_sigint_stops_the_command_line_and_a_rerun_resumes(client, tmp_path, capsys):
    """Ctrl-C mid-run: exit status 130 with a message, finished categories kept whole, no temporary files."""
    import subprocess
    import sys
    from pathlib import Path

    from elasticity_lib.scale import FIT_MANY_EXIT

    data = tmp_path / "sales"
    simulate_catalogue(30, SMALL_CONFIG, seed=12).to_parquet(data, partition_cols=["category"], index=False)
    out = tmp_path / "out"
    argv = ["fit-many", str(data), "--out", str(out), "--draws", "150", "--tune", "150", "--chains", "2",
            "--max-divergences", "1000", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # a shell that starts a job in the background (CI scripts, nohup ... &) makes it ignore SIGINT,
    # and Python then keeps ignoring it; a terminal's Ctrl-C reaches a process that does not
    proc = subprocess.Popen([sys.executable, "-m", "elasticity_lib", *argv, "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("*/convergence.json")):
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and 130 in FIT_MANY_EXIT
    assert "error: interrupted; the" in err and "the same command again fits the rest" in err
    files = category_files(out)
    finished = {c for c, names in files.items() if CATEGORY_FILES["report"] in names}
    assert 0 < len(finished) < 30, "the run was not stopped mid-way"
    assert all(files[c] == sorted(CATEGORY_FILES.values()) for c in finished), files
    assert not list(out.rglob("*.tmp"))
    stamps = {c: (out / c / CATEGORY_FILES["report"]).stat().st_mtime_ns for c in finished}
    # the same command again resumes: finished categories are skipped, the others fitted
    assert cli.main([*argv, "--scheduler", client.scheduler.address]) in (0, 3)
    summary = pd.read_csv(out / SUMMARY_FILE)
    assert len(summary) == 30
    status = dict(zip(summary["folder"], summary["status"]))
    assert {status[c] for c in finished} == {"skipped"}
    assert {s for c, s in status.items() if c not in finished} <= FITTED
    assert {c: (out / c / CATEGORY_FILES["report"]).stat().st_mtime_ns for c in finished} == stamps
