# Two commands do everything on a fresh machine:
#   make demo   installs into .venv and runs everyscale's main job (the scaling ladder)
#   make test   installs into .venv and runs the test suite
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch that these machines carry; a plain `torch` would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# --resume: a second `make demo` reuses the finished runs (and a killed one continues).
demo: install
	$(VENV)/bin/everyscale ladder --budget small --out runs/ladder-demo --resume

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The quick benchmarks (a few minutes); the transfer sweeps take an hour on 2 cores and are
# run one by one: `$(PY) benchmarks/transfer_sweeps.py width|depth|mlp [--quick]`.
bench: install
	for b in optim_step train_throughput laws_fit; do \
		echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done
	$(PY) benchmarks/transfer_sweeps.py width --quick --out runs/transfer-width-quick

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
