"""Which cells of a chapter change their output when the sampler seed changes?

    python scripts/output_drift.py chapters/05_multilevel.ipynb --seeds 7 8

Executes the notebook once per sampler seed (``ELASTICITY_SAMPLER_SEED``) into a
temporary copy and compares every code cell's text output, after nbval's sanitising
rules, with the output stored in the notebook. It prints one line per cell whose output
changed, with its ``nbval-ignore-output`` tag, and ends with the two lists that matter:
cells whose output changed but are compared byte for byte by nbval (they will fail on a
reader's machine) and tagged cells whose output never changed (candidates for exact
comparison, unless their output only looks stable because it is rounded).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
IGNORE_TAG = "nbval-ignore-output"
TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "image/svg+xml", "text/latex")


def sanitizers() -> list[tuple[re.Pattern, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "nbval_sanitize.cfg")
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def cell_text(cell, rules) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        data = out.get("data", {})
        for key in TEXT_KEYS:
            if key in data:
                parts.append(data[key] if isinstance(data[key], str) else "".join(data[key]))
        if "application/papermill.record/text/plain" in data:
            parts.append("glue:" + str(data["application/papermill.record/text/plain"]))
    text = "\n".join(parts)
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def execute(notebook: Path, seed: int, target: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["ELASTICITY_SAMPLER_SEED"] = str(seed)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.timeout=1200", f"--output={target}", str(notebook)],
                   check=True, env=env, cwd=notebook.parent, capture_output=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    args = parser.parse_args(argv)
    notebook = args.notebook.resolve()
    rules = sanitizers()
    stored = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    changed: set[int] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            target = Path(tmp) / f"seed{seed}.ipynb"
            execute(notebook, seed, target)
            rerun = [c for c in nbformat.read(target, as_version=4).cells if c.cell_type == "code"]
            for i, (a, b) in enumerate(zip(stored, rerun, strict=True)):
                if cell_text(a, rules) != cell_text(b, rules):
                    changed.add(i)
                    tagged = IGNORE_TAG in a.metadata.get("tags", [])
                    print(f"seed {seed}: code cell {i} changed ({'tagged' if tagged else 'COMPARED'})")
    tagged = {i for i, c in enumerate(stored) if IGNORE_TAG in c.metadata.get("tags", [])}
    exposed = sorted(changed - tagged)
    stable = sorted(tagged - changed)
    print(f"{notebook.name}: changed and compared byte for byte: {exposed or 'none'}")
    print(f"{notebook.name}: tagged but unchanged under seeds {args.seeds}: {stable or 'none'}")
    return 1 if exposed else 0


if __name__ == "__main__":
    sys.exit(main())
