# The two set-up commands of the README: `make train` and `make test`.
# Each creates the virtual environment on first use (jax CPU build; `make cuda` for NVIDIA GPUs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: train test test-fast lint data cuda

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
