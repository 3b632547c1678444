# make demo           create .venv, install (and build the native CPU kernels, ~20 s), run the
#                     main job (relax + MD of a small Cu cell)
# make test           create .venv, install with test and docs extras, lint (ruff), build the
#                     docs (strict), check the package, run the whole test suite
# make docs           build the documentation site into site/ (mkdocs --strict; the examples run)
# make package-check  sdist + wheel, twine check, the wheel in a fresh venv runs the demo
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint docs package-check install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs,kernels]"
	$(BIN)/ase-mpnn kernels --build || echo "native kernels not built: the plain torch path runs"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ase-mpnn demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check ase_mpnn tests benchmarks workflows

# every warning (a broken link, a failing example, a docstring mkdocstrings cannot read)
# fails the build; the examples run on one thread in a temporary folder
docs: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/mkdocs build --strict --clean --site-dir site

# the wheel goes into a fresh venv outside the checkout (nothing is imported from it), with
# only the core requirements, and runs the demo there
package-check: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*
	PYTHON=$(PYTHON) sh tools/package_check.sh dist

# docs and package check first, so that pytest's summary is the last line of the output
test: lint docs package-check
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not slow"

clean:
	rm -rf $(VENV) demo_output .pytest_cache build dist site *.egg-info
