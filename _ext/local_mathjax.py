"""Serve MathJax from the built book itself, so that math renders without internet access.

MathJax 3 comes from the pinned PyPI package ``django-static-mathjax`` (import name
``mathjax``). After an HTML build, this extension copies its browser bundle
``es5/tex-mml-chtml.js``, the CommonHTML fonts and the components that bundle loads on
demand into ``_static/mathjax/``; ``_config.yml`` points ``mathjax_path`` at
``mathjax/tex-mml-chtml.js``, which Sphinx resolves relative to ``_static``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

#: The bundle the pages load; the other prebuilt bundles and the SVG output are not needed.
ENTRY = "tex-mml-chtml.js"
TARGET = Path("_static") / "mathjax"


def mathjax_es5_dir() -> Path:
    """Directory of the MathJax 3 browser build shipped by ``django-static-mathjax``."""
    try:
        import mathjax
    except ImportError as err:
        raise ExtensionError(
            "MathJax is not installed: pip install -r requirements.txt (package django-static-mathjax)"
        ) from err
    root = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (root / ENTRY).is_file():
        raise ExtensionError(f"MathJax bundle {ENTRY} not found under {root}")
    return root


def _skip(directory: str, names: list[str]) -> list[str]:
    here = Path(directory)
    skipped = []
    for name in names:
        path = here / name
        is_other_bundle = here.name == "es5" and path.suffix == ".js" and name != ENTRY
        is_svg_output = here.name == "output" and name.startswith("svg")
        if is_other_bundle or is_svg_output:
            skipped.append(name)
    return skipped


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    destination = Path(app.outdir) / TARGET
    shutil.copytree(mathjax_es5_dir(), destination, ignore=_skip, dirs_exist_ok=True)


def check_config(app: Sphinx, config) -> None:
    expected = f"mathjax/{ENTRY}"
    if config.mathjax_path != expected:
        raise ExtensionError(f"set sphinx.config.mathjax_path to {expected!r} in _config.yml, got {config.mathjax_path!r}")
    mathjax_es5_dir()  # fail early, before any notebook is executed


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", check_config)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
