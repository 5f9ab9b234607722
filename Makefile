# The two set-up commands of the README: `make train` and `make test`; `make docs` builds
# the documentation and `make test-min-deps` tests the library at its lowest versions.
# Each creates the virtual environment on first use (jax CPU build; `make cuda` for NVIDIA GPUs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: train test test-fast lint data cuda docs test-min-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,test]"
	touch $@

# Debian's dataset-fashion-mnist (offline Fashion-MNIST IDX files), when we may install it.
data:
	@if [ ! -f $(FASHION_MNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "note: could not install dataset-fashion-mnist; real-data tests will skip"; \
	fi

train: $(VENV)/.installed data
	$(PY) -m train

test: $(VENV)/.installed data
	$(PY) -m pytest -n 2 --dist worksteal -q

# The edit loop: the library, the models and the unit tests, without the tests marked slow
# (no subprocesses, no training on real data).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

cuda: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[cuda]"

# The documentation site, into docs/_build/html; a warning fails the build.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	rm -rf docs/_build
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html
	$(PY) docs/check_docs.py
	@echo "docs: docs/_build/html/index.html"

# The library's tests in a fresh environment holding exactly the lowest versions that
# pyproject.toml allows (.ci/min_deps.py reads them): this proves those lower bounds.
MIN_DEPS_VENV ?= .venv-min-deps
test-min-deps:
	rm -rf $(MIN_DEPS_VENV)
	$(PYTHON) -m venv $(MIN_DEPS_VENV)
	$(PYTHON) .ci/min_deps.py constraints > $(MIN_DEPS_VENV)/constraints.txt
	cat $(MIN_DEPS_VENV)/constraints.txt
	$(MIN_DEPS_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_DEPS_VENV)/bin/python -m pip install -q -c $(MIN_DEPS_VENV)/constraints.txt \
	  -e . chex pytest hypothesis matplotlib
	PYTHONPATH=.ci $(MIN_DEPS_VENV)/bin/python -m pytest -q -p min_deps_compat \
	  -o addopts="--doctest-modules -p no:cacheprovider" $$($(PYTHON) .ci/min_deps.py tests)
