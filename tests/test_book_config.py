"""The Jupyter Book configuration: toc entries exist, chapters execute from MyST, MathJax is local."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def _load_extension():
    spec = importlib.util.spec_from_file_location("local_mathjax", ROOT / "_ext" / "local_mathjax.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_mathjax", module)
    spec.loader.exec_module(module)
    return module


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        for value in node.values():
            files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def test_every_toc_entry_exists_once():
    files = [TOC["root"], *_toc_files(TOC.get("parts", []))]
    missing = [f for f in files if not (ROOT / f"{f}.md").exists()]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert len(files) == len(set(files)), f"_toc.yml lists a file twice: {files}"


def test_book_executes_the_myst_sources_and_fails_on_errors():
    assert "**/*.ipynb" in CONFIG["exclude_patterns"], "the book must execute the .md sources, not the .ipynb"
    assert CONFIG["execute"]["execute_notebooks"] in {"cache", "force"}
    assert CONFIG["execute"]["allow_errors"] is False
    assert CONFIG["sphinx"]["config"]["nb_execution_raise_on_error"] is True


def test_mathjax_is_served_from_the_book():
    sphinx = CONFIG["sphinx"]
    path = sphinx["config"]["mathjax_path"]
    assert not path.startswith(("http://", "https://", "//")), f"mathjax_path points off-site: {path}"
    assert "local_mathjax" in sphinx["local_extensions"]
    extension = _load_extension()
    assert path == f"mathjax/{extension.ENTRY}"
    assert (extension.mathjax_es5_dir() / extension.ENTRY).is_file()


def test_mathjax_copy_keeps_the_bundle_and_fonts_only(tmp_path):
    extension = _load_extension()
    app = SimpleNamespace(outdir=str(tmp_path), builder=SimpleNamespace(format="html"))
    extension.copy_mathjax(app, None)
    target = tmp_path / "_static" / "mathjax"
    assert (target / extension.ENTRY).is_file()
    assert list((target / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    top_level_js = sorted(p.name for p in target.glob("*.js"))
    assert top_level_js == [extension.ENTRY]
    assert not list((target / "output").glob("svg*"))


def test_mathjax_copy_skips_failed_and_non_html_builds(tmp_path):
    extension = _load_extension()
    extension.copy_mathjax(SimpleNamespace(outdir=str(tmp_path), builder=SimpleNamespace(format="html")),
                           RuntimeError("build failed"))
    extension.copy_mathjax(SimpleNamespace(outdir=str(tmp_path), builder=SimpleNamespace(format="latex")), None)
    assert not (tmp_path / "_static").exists()


def test_wrong_mathjax_path_is_rejected():
    extension = _load_extension()
    from sphinx.errors import ExtensionError

    with pytest.raises(ExtensionError, match="mathjax_path"):
        extension.check_config(None, SimpleNamespace(mathjax_path="https://cdn.example/mathjax.js"))
