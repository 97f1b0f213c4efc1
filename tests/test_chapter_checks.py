"""How the chapters are checked: exact output where it is deterministic, statistics elsewhere.

nbval compares every code cell's stored output byte for byte, except cells tagged
``nbval-ignore-output``. Those hold sampler output, which differs in its last digits from
one machine to the next; each such cell must check its numbers statistically instead (an
``assert`` or a :class:`~elasticity_lib.reproducibility.ReferenceSummaries` check). The
tests here keep that rule from eroding, and keep the prose's glued numbers defined.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
SOURCES = sorted(CHAPTERS.glob("*.md"))
IGNORE_TAG = "nbval-ignore-output"
#: what counts as a statistical check in a cell whose output nbval does not compare
CHECK = re.compile(r"^\s*assert\b|\.check_(posterior|estimates|values)\(|\.require\(\)", re.MULTILINE)
#: a literal seed handed to a call; only data simulation may fix one (sampler calls take
#: sampler_seed(...), which ELASTICITY_SAMPLER_SEED changes)
LITERAL_SEED = re.compile(r"\b(random_seed|seed)\s*=\s*\d")
DATA_SEED_CALLS = ("simulate_market(", "run_sbc(", "simulate_")
GLUE_USE = re.compile(r"\{glue(?::text|:md)?\}`([A-Za-z0-9_]+)")
GLUE_DEF = re.compile(r"\bglue\(\s*[\"']([A-Za-z0-9_]+)[\"']")


def code_cells(md_path: Path):
    return [c for c in jupytext.read(md_path).cells if c.cell_type == "code"]


def tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def ignored_cells_without_check(md_path: Path) -> list[int]:
    """Tagged cells with no check in them nor in the code cell right after (a hidden check cell)."""
    cells = code_cells(md_path)
    checked = [bool(CHECK.search(c.source)) for c in cells] + [False]
    return [i for i, c in enumerate(cells) if IGNORE_TAG in tags(c) and not (checked[i] or checked[i + 1])]


def literal_sampler_seeds(md_path: Path) -> list[str]:
    lines = []
    for cell in code_cells(md_path):
        for line in cell.source.splitlines():
            if LITERAL_SEED.search(line) and not any(call in line for call in DATA_SEED_CALLS):
                lines.append(line.strip())
    return lines


def undefined_glue(md_path: Path) -> set[str]:
    text = md_path.read_text()
    return set(GLUE_USE.findall(text)) - set(GLUE_DEF.findall(text))


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_unchecked_output_is_checked_statistically(md_path):
    missing = ignored_cells_without_check(md_path)
    assert not missing, (f"{md_path.name}: code cells {missing} are tagged {IGNORE_TAG} but hold no assert "
                         "or reference check")


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_no_cell_escapes_nbval_another_way(md_path):
    for i, cell in enumerate(code_cells(md_path)):
        assert "NBVAL_" not in cell.source, f"{md_path.name} cell {i}: use the {IGNORE_TAG} tag with a check"
        assert not {"nbval-skip", "raises-exception"} & set(tags(cell)), f"{md_path.name} cell {i} is skipped"


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_sampler_calls_take_the_sampler_seed(md_path):
    lines = literal_sampler_seeds(md_path)
    assert not lines, f"{md_path.name}: literal seeds outside data simulation (use sampler_seed): {lines}"


@pytest.mark.parametrize("md_path", SOURCES, ids=[p.stem for p in SOURCES])
def test_glued_numbers_are_defined(md_path):
    missing = undefined_glue(md_path)
    assert not missing, f"{md_path.name}: the text uses glue keys that no cell defines: {sorted(missing)}"


# The checks must be able to fail.

def test_the_checks_catch_what_they_should(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n    format_version: 0.13\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "Text {glue:text}`nowhere:.2f`.\n\n"
        "```{code-cell} ipython3\n:tags: [nbval-ignore-output]\n\nprint(fit(model, random_seed=3))\n```\n\n"
        "```{code-cell} ipython3\nmarket = simulate_market(seed=5)\n```\n\n"
        "```{code-cell} ipython3\n:tags: [nbval-ignore-output]\n\nprint(idata)\n```\n\n"
        "```{code-cell} ipython3\nassert idata is not None\n```\n"
    )
    assert ignored_cells_without_check(bad) == [0]
    assert literal_sampler_seeds(bad) == ["print(fit(model, random_seed=3))"]
    assert undefined_glue(bad) == {"nowhere"}
