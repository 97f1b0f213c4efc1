"""Every chapter's MyST source and its paired notebook hold the same cells, with outputs.

The book is built from ``chapters/*.md`` while ``make test`` runs nbval on the paired
``.ipynb``; the two must not drift apart, and the notebooks must carry the outputs of a
complete top-to-bottom run so that nbval has something to compare.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
SOURCES = sorted(CHAPTERS.glob("*.md"))
#: cell metadata written by the kernel run, not by the author
RUN_METADATA = {"execution", "collapsed", "scrolled"}


def cell_signature(notebook: nbformat.NotebookNode) -> list[tuple[str, str, dict]]:
    """The authored content of each cell: type, source and metadata (run metadata excluded)."""
    return [
        (cell.cell_type, cell.source, {k: v for k, v in cell.metadata.items() if k not in RUN_METADATA})
        for cell in notebook.cells
    ]


def sync_differences(md_path: Path, ipynb_path: Path) -> list[str]:
    """Human-readable differences between the cells of a MyST file and of its notebook."""
    md, ipynb = cell_signature(jupytext.read(md_path)), cell_signature(jupytext.read(ipynb_path))
    problems = []
    if len(md) != len(ipynb):
        problems.append(f"{md_path.name} has {len(md)} cells, {ipynb_path.name} has {len(ipynb)}")
    for i, (a, b) in enumerate(zip(md, ipynb)):
        for what, x, y in zip(("type", "source", "metadata"), a, b, strict=True):
            if x != y:
                problems.append(f"cell {i}: {what} differs:\n--- {md_path.name}\n{x!r}\n--- {ipynb_path.name}\n{y!r}")
    return problems


def execution_problems(ipynb_path: Path) -> list[str]:
    """Code cells without a stored run, or stored runs not in top-to-bottom order from 1."""
    notebook = nbformat.read(ipynb_path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    problems = [f"code cell {i} was never executed" for i, n in enumerate(counts) if n is None]
    if not problems and counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts {counts} are not 1..{len(code)}: rerun the notebook top to bottom")
    return problems


def test_there_are_chapters():
    assert SOURCES, f"no chapters/*.md found in {CHAPTERS}"


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_markdown_and_notebook_are_in_sync(md_path: Path):
    ipynb_path = md_path.with_suffix(".ipynb")
    assert ipynb_path.exists(), f"{md_path.name} has no paired notebook; run jupytext --sync --execute {md_path}"
    problems = sync_differences(md_path, ipynb_path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_has_committed_outputs(md_path: Path):
    ipynb_path = md_path.with_suffix(".ipynb")
    assert ipynb_path.exists(), f"{md_path.name} has no paired notebook"
    problems = execution_problems(ipynb_path)
    assert not problems, f"{ipynb_path.name}: " + "; ".join(problems)


def test_every_notebook_has_a_source():
    orphans = [p.name for p in CHAPTERS.glob("*.ipynb") if not p.with_suffix(".md").exists()]
    assert not orphans, f"notebooks without a MyST source: {orphans}"


# The checks above must be able to fail: feed them notebooks that drifted.

def _pair(tmp_path: Path, md_text: str) -> tuple[Path, Path]:
    md_path = tmp_path / "chapter.md"
    md_path.write_text(md_text)
    notebook = jupytext.read(md_path)
    for count, cell in enumerate((c for c in notebook.cells if c.cell_type == "code"), start=1):
        cell.execution_count = count
        cell.outputs = []
    ipynb_path = tmp_path / "chapter.ipynb"
    jupytext.write(notebook, ipynb_path)
    return md_path, ipynb_path


MYST = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

```{code-cell} ipython3
x = 1
```

Some text.

```{code-cell} ipython3
x + 1
```
"""


def test_sync_check_passes_on_a_fresh_pair(tmp_path):
    md_path, ipynb_path = _pair(tmp_path, MYST)
    assert sync_differences(md_path, ipynb_path) == []
    assert execution_problems(ipynb_path) == []


def test_sync_check_catches_an_edited_source(tmp_path):
    md_path, ipynb_path = _pair(tmp_path, MYST)
    md_path.write_text(MYST.replace("x = 1", "x = 2"))
    problems = sync_differences(md_path, ipynb_path)
    assert len(problems) == 1 and "source differs" in problems[0] and "x = 2" in problems[0]


def test_sync_check_catches_an_added_cell_and_a_changed_type(tmp_path):
    md_path, ipynb_path = _pair(tmp_path, MYST)
    md_path.write_text(MYST + "\nMore text.\n")
    assert any("cells" in p for p in sync_differences(md_path, ipynb_path))
    md_path.write_text(MYST.replace("Some text.", "```{code-cell} ipython3\nSome text.\n```"))
    problems = sync_differences(md_path, ipynb_path)
    assert len(problems) == 1 and problems[0].startswith("cell 2: type differs")


def test_sync_check_catches_changed_tags(tmp_path):
    md_path, ipynb_path = _pair(tmp_path, MYST)
    md_path.write_text(MYST.replace("```{code-cell} ipython3\nx = 1", "```{code-cell} ipython3\n:tags: [hide-input]\n\nx = 1"))
    assert any("metadata differs" in p for p in sync_differences(md_path, ipynb_path))


def test_execution_check_catches_unexecuted_and_out_of_order_cells(tmp_path):
    _, ipynb_path = _pair(tmp_path, MYST)
    notebook = nbformat.read(ipynb_path, as_version=4)
    notebook.cells[1].execution_count = None
    nbformat.write(notebook, ipynb_path)
    assert execution_problems(ipynb_path) == ["code cell 0 was never executed"]
    notebook.cells[1].execution_count = 5
    nbformat.write(notebook, ipynb_path)
    assert "not 1..2" in execution_problems(ipynb_path)[0]
