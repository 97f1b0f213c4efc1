# Two commands are all the set-up a user needs:
#   make test   -- create .venv if needed, install, run unit tests and nbval over every chapter
#   make book   -- create .venv if needed, install, execute the chapters, build _build/html
#   make test-seed SEED=n -- run the chapters that sample again with another sampler seed
# make test and make book also build the local copy of the orange-juice data (make orange-juice-data).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
# Chapters with sampler output: the ones that tag cells nbval-ignore-output and check them
# statistically instead. make test-seed reruns them with another sampler seed.
SAMPLER_NOTEBOOKS := $(patsubst %.md,%.ipynb,$(shell grep -l 'nbval-ignore-output' $(CHAPTERS)))
SEED ?= 20261128
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 600
# apt waits for a package manager that holds the lock instead of failing at once
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

# A Python >= 3.12 (PyMC 6 needs it). pyenv honours .python-version; otherwise try the
# usual names. Never fall back silently to an older interpreter.
PYTHON ?= $(shell for c in python3.14 python3.13 python3.12 python3; do \
	if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	echo $$c; break; fi; done)

.PHONY: test test-seed quick lint check-install book notebooks references bench clean check-python check-graphviz \
	orange-juice-data

check-python:
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: this project needs Python >= 3.12 and none was found on PATH."; \
	  echo "  with pyenv:   pyenv install 3.12 && pyenv local 3.12"; \
	  echo "  on Debian/Ubuntu: apt-get install python3.12 python3.12-venv"; \
	  echo "  or pass one explicitly: make test PYTHON=/path/to/python3.12"; \
	  exit 1; fi

check-graphviz:
	@if ! command -v dot >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing graphviz (needed for model graphs)"; \
	    ($(APT_GET) update -qq || true) && $(APT_GET) install -y -qq graphviz >/dev/null; \
	  else \
	    echo "error: Graphviz's 'dot' is needed to draw model graphs. Install it with:"; \
	    echo "  sudo apt-get install -y graphviz      (Debian/Ubuntu)"; \
	    echo "  brew install graphviz                 (macOS)"; \
	    exit 1; \
	  fi; fi

$(STAMP): requirements.txt pyproject.toml | check-python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
	  { echo "error: $(VENV) uses Python < 3.12; remove it (rm -rf $(VENV)) and rerun"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# The Dominick's orange-juice panel (bayesm's orangeJuice) is not redistributed with the
# book; its terms are in elasticity_lib/data/README.md. This builds a local copy, offline,
# from the Debian package r-cran-bayesm (installed here when run as root) into
# elasticity_lib/data/local/, which git ignores. With bayesm installed from CRAN instead:
#   make orange-juice-data ORANGE_JUICE_RDA="$$(Rscript -e 'cat(system.file("data", "orangeJuice.rda", package = "bayesm"))')"
ORANGE_JUICE_RDA ?= /usr/lib/R/site-library/bayesm/data/orangeJuice.rda
ORANGE_JUICE := elasticity_lib/data/local/orange_juice_yx.csv.gz

orange-juice-data: $(ORANGE_JUICE)

$(ORANGE_JUICE): elasticity_lib/data/make_orange_juice.py | $(STAMP)
	@if [ ! -f "$(ORANGE_JUICE_RDA)" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing r-cran-bayesm (the orange-juice data)"; \
	    ($(APT_GET) update -qq || true) && $(APT_GET) install -y -qq --no-install-recommends r-cran-bayesm >/dev/null; \
	  else \
	    echo "error: the orange-juice data come from the R package bayesm, which is not installed. Either:"; \
	    echo "  sudo apt-get install r-cran-bayesm        (Debian/Ubuntu), then rerun make"; \
	    echo "  or install bayesm from CRAN in R and pass ORANGE_JUICE_RDA=.../bayesm/data/orangeJuice.rda"; \
	    echo "  (the original Dominick's files: James M. Kilts Center, University of Chicago Booth)"; \
	    exit 1; \
	  fi; fi
	$(BIN)/python elasticity_lib/data/make_orange_juice.py --rda "$(ORANGE_JUICE_RDA)"

# Kernels must use the inline backend to produce the figures stored in the notebooks, so a
# MPLBACKEND from the environment (CI sets Agg) is removed for the notebook runs.
test: $(STAMP) check-graphviz $(ORANGE_JUICE)
	env -u MPLBACKEND $(BIN)/python -m pytest tests $(NOTEBOOKS) $(NBVAL)

# The sampler-dependent chapters with another sampler seed: what a reader's machine does.
test-seed: $(STAMP) check-graphviz $(ORANGE_JUICE)
	env -u MPLBACKEND ELASTICITY_SAMPLER_SEED=$(SEED) $(BIN)/python -m pytest $(SAMPLER_NOTEBOOKS) $(NBVAL)

# Re-execute every chapter from its MyST source and refresh the paired .ipynb with outputs.
notebooks: $(STAMP) check-graphviz $(ORANGE_JUICE)
	@for md in $(CHAPTERS); do echo "executing $$md"; \
	  env -u MPLBACKEND $(BIN)/jupytext --sync --execute "$$md" || exit 1; done

# The fast loop while editing the library: unit tests that do not sample (under a minute).
quick: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check elasticity_lib tests benchmarks scripts

# Install the package alone (pyproject.toml's dependencies, nothing from requirements.txt)
# into a fresh virtual environment and import every module: an undeclared dependency fails.
FRESH := $(or $(TMPDIR),/tmp)/elasticity-fresh-venv
check-install: check-python
	rm -rf $(FRESH) && $(PYTHON) -m venv $(FRESH)
	$(FRESH)/bin/python -m pip install --quiet --upgrade pip
	$(FRESH)/bin/python -m pip install --quiet .
	cd $(FRESH) && $(FRESH)/bin/python $(CURDIR)/scripts/import_all.py
	rm -rf $(FRESH) build elasticity_lib.egg-info

# Re-execute every chapter and write its reference Monte Carlo summaries
# (chapters/references/*.json) with the default sampler seed; commit both.
references: $(STAMP) check-graphviz $(ORANGE_JUICE)
	@for md in $(CHAPTERS); do echo "executing $$md (recording references)"; \
	  env -u MPLBACKEND -u ELASTICITY_SAMPLER_SEED ELASTICITY_RECORD_REFERENCES=1 \
	  $(BIN)/jupytext --sync --execute "$$md" || exit 1; done

book: $(STAMP) check-graphviz $(ORANGE_JUICE)
	env -u MPLBACKEND $(BIN)/jupyter-book build . -W --keep-going
	@echo "open _build/html/index.html"

# Every benchmark script (the calibration studies are the long ones: three models, each about a
# quarter of an hour on two idle cores; CALIBRATION_MARKETS=50 for a shorter run of each).
CALIBRATION_MARKETS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/holdout.py
	$(BIN)/python benchmarks/calibration.py --kind all $(if $(CALIBRATION_MARKETS),--n-markets $(CALIBRATION_MARKETS))

clean:
	rm -rf _build .pytest_cache
