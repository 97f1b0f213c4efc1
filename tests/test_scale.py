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
    client.wait_for_workers(2, timeout=120)


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
